"""Architecture surgery (zoo.convert) and held-out evaluation (zoo.eval)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_train_runs import CORPUS, metrics, small_run, tokenizer_path  # noqa: F401 (a fixture)
from zoo import config, runs
from zoo.convert import ConversionError, attention_input_covariances, main as convert_main, mla_dims, to_gqa, to_mla, to_moe
from zoo.eval import evaluate, main as eval_main
from zoo.models import build
from zoo.train import train

TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 64, size=(2, 9)), jnp.int32)
MHA = dict(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=4, ffn_dim=48, max_seq_len=32)


def model_and_params(**fields):
    cfg = config.ModelConfig.from_dict(MHA | fields)
    model = build(cfg)
    return cfg, model, model.init(jax.random.key(0))


def logits(cfg, params):
    return build(cfg).apply(params, TOKENS).logits


@pytest.mark.parametrize("fields", [{}, {"attention": {"qkv_bias": True, "qk_norm": True}}], ids=["plain", "biased-qk-norm"])
def test_gqa_keeping_every_head_is_the_same_model_and_groups_pool_their_heads(fields):
    cfg, model, params = model_and_params(**fields)
    same, same_params = to_gqa(cfg, params, kv_heads=4)
    np.testing.assert_array_equal(logits(same, same_params), model.apply(params, TOKENS).logits)

    k = np.asarray(params["tower"]["layers"]["attention"]["k"]["weight"][...])  # [L, D, 4, Dh]
    for init, pooled in (("mean", k.reshape(*k.shape[:2], 2, 2, -1).mean(3)), ("first", k[:, :, ::2])):
        target, converted = to_gqa(cfg, params, kv_heads=2, init=init)
        assert target.num_kv_heads == 2
        np.testing.assert_allclose(converted["tower"]["layers"]["attention"]["k"]["weight"][...], pooled, rtol=1e-6)
        assert np.isfinite(logits(target, converted)).all()
    if fields:
        bias = np.asarray(params["tower"]["layers"]["attention"]["v"]["bias"][...])  # [L, 4, Dh]
        np.testing.assert_allclose(to_gqa(cfg, params, 1)[1]["tower"]["layers"]["attention"]["v"]["bias"][...], bias.mean(1, keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("shared", [False, True])
def test_upcycled_experts_start_as_the_dense_feed_forward(shared):
    cfg, model, params = model_and_params(mlp_bias=not shared)
    target, upcycled = to_moe(cfg, params, experts=4, top_k=2, shared=shared)
    assert target.moe.num_experts == 4 and target.moe.shared_ffn_dim == (48 if shared else 0)
    expected = model.apply(params, TOKENS).logits
    np.testing.assert_allclose(logits(target, upcycled), expected, atol=2e-5, rtol=1e-5)
    noisy, noisy_params = to_moe(cfg, params, experts=4, top_k=2, shared=shared, noise=0.05)
    moved = np.abs(logits(noisy, noisy_params) - expected).max()
    assert 0 < moved < 0.5 * np.abs(expected).max()


def relative_error(got, expected):
    return float(jnp.linalg.norm(got - expected) / jnp.linalg.norm(expected - expected.mean()))


def test_mqa_with_half_its_dims_rotated_converts_to_mla_exactly_at_full_rank():
    cfg, model, params = model_and_params(num_kv_heads=1, position={"kind": "rope", "rotary_fraction": 0.5})
    rotated, plain, full = mla_dims(cfg)
    assert (rotated, plain, full) == (4, 4, 12)  # heads of 8: 4 rotated, 4 not, and 8 value dims
    target, converted = to_mla(cfg, params, full)
    assert target.attention.kind == "mla" and not target.attention.latent_norm and target.attention.qk_rope_head_dim == 4
    expected = model.apply(params, TOKENS).logits
    np.testing.assert_allclose(logits(target, converted), expected, atol=2e-5, rtol=1e-5)
    mla = build(target)  # and its cache (the absorbed form) decodes as the full forward
    prefix = mla.apply(converted, TOKENS[:, :8], cache=mla.init_cache(2, 16))
    np.testing.assert_allclose(mla.apply(converted, TOKENS[:, 8:], cache=prefix.cache).logits[:, 0], expected[:, 8], atol=2e-5, rtol=1e-5)
    errors = [relative_error(logits(*to_mla(cfg, params, rank)), expected) for rank in (3, 6, 12)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5  # lower ranks drop singular directions


def test_a_narrower_rope_key_keeps_the_fastest_frequencies_of_the_source():
    """The source's slower rotated pairs zeroed in q and k, so that dropping their rotation changes
    nothing: the conversion keeping the 2 fastest of 4 pairs is then exact, which it is only if
    MLA rotates the kept pairs at the source's frequencies."""
    cfg, model, params = model_and_params(num_kv_heads=1, position={"kind": "rope", "rotary_fraction": 1.0, "rope_theta": 100.0})
    slow = np.r_[2:4, 6:8]  # rotate-half pairs (i, i + 4) of the 8 rotated dims; i = 2, 3 are the slowest
    for name in ("q", "k"):
        weight = params["tower"]["layers"]["attention"][name]["weight"]
        weight[...] = weight[...].at[..., slow].set(0.0)
    rope_dim, plain, full = mla_dims(cfg, rope_dim=4)
    assert (rope_dim, plain, full) == (4, 4, 12)
    target, converted = to_mla(cfg, params, full, rope_dim=4)
    assert target.position.rope_theta == pytest.approx(10.0)  # 100^(4/8): the kept pairs' frequencies unchanged
    np.testing.assert_allclose(logits(target, converted), model.apply(params, TOKENS).logits, atol=2e-5, rtol=1e-5)
    with pytest.raises(ConversionError, match=r"--rope-dim 3 must be even and in 2..8"):
        to_mla(cfg, params, 8, rope_dim=3)


def test_several_key_value_heads_share_one_rope_key_in_mla():
    """Their rotated key dims become one mean RoPE key: not exact even at full rank."""
    cfg, model, params = model_and_params(num_kv_heads=2, position={"kind": "rope", "rotary_fraction": 0.5})
    target, converted = to_mla(cfg, params, mla_dims(cfg)[2])
    k = np.asarray(params["tower"]["layers"]["attention"]["k"]["weight"][...])
    np.testing.assert_allclose(converted["tower"]["layers"]["attention"]["kv_down"]["weight"][...][..., -4:], k[..., :4].mean(-2), rtol=1e-5)
    assert 0.01 < relative_error(logits(target, converted), model.apply(params, TOKENS).logits) < 1.0


def calibration_rows(count=4, length=17):
    """Random rows of `length` tokens, two documents each, the last row ending in padding."""
    rng = np.random.default_rng(1)
    rows = [{"tokens": rng.integers(0, 64, length), "segment_ids": np.repeat([1, 2], [length // 2, length - length // 2])} for _ in range(count)]
    rows[-1]["segment_ids"][-5:] = 0
    return rows


def test_calibrated_factors_keep_the_most_of_what_each_layer_computes():
    cfg, model, params = model_and_params(position={"kind": "rope", "rotary_fraction": 0.5})
    rows = calibration_rows()
    covariances = attention_input_covariances(cfg, params, rows)
    layers = params["tower"]["layers"]
    # the first layer's inputs by hand: the embeddings of the counted inputs, RMS-normalised
    tokens = np.concatenate([row["tokens"][:-1][row["segment_ids"][:-1] != 0] for row in rows])
    x = np.asarray(params["embedder"]["embedding"]["table"][...], np.float64)[tokens]
    x = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * np.asarray(layers["attention_norm"]["scale"][...][0])
    [at] = covariances
    assert at == ("tower", "layers", "attention") and covariances[at].shape == (2, 32, 32)
    np.testing.assert_allclose(covariances[at][0], x.T @ x, rtol=1e-5, atol=1e-4)

    k, v = (np.asarray(layers["attention"][name]["weight"][...], np.float64) for name in ("k", "v"))
    weight = np.concatenate([k[..., 4:], v], -1).reshape(2, 32, -1)  # the unrotated key dims and values, [L, D, K (dn + Dh)]

    def loss_on_inputs(converted, rank):  # |X (W - down up)|^2 = tr(Eᵀ C E), per layer
        attention = converted["tower"]["layers"]["attention"]
        down = np.asarray(attention["kv_down"]["weight"][...])[..., :rank]
        up = np.asarray(attention["kv_up"]["weight"][...]).reshape(2, rank, -1)
        error = weight - down @ up
        return np.einsum("ldn,lde,len->l", error, covariances[at], error)

    for rank in (4, 12):
        plain, calibrated = (loss_on_inputs(to_mla(cfg, params, rank, covariances=c)[1], rank) for c in (None, covariances))
        assert np.all(calibrated < plain)
    target, converted = to_mla(cfg, params, 32, covariances=covariances)  # full rank: the same projections
    np.testing.assert_allclose(loss_on_inputs(converted, 32), 0, atol=1e-6)


def test_impossible_conversions_are_refused():
    cfg, _, params = model_and_params()
    with pytest.raises(ConversionError, match=r"--kv-heads 3 does not group the model's 4 key/value heads; choose one of \[1, 2, 4\]"):
        to_gqa(cfg, params, 3)
    moe_cfg, moe_params = to_moe(cfg, params, 4, 2)
    with pytest.raises(ConversionError, match="this model already has experts"):
        to_moe(moe_cfg, moe_params, 4, 2)
    with pytest.raises(ConversionError, match=r"--top-k 5 must be in 1..4"):
        to_moe(cfg, params, 4, 5)
    mla = config.ModelConfig.from_dict(MHA | {"attention": {"kind": "mla", "kv_lora_rank": 8, "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4}})
    with pytest.raises(ConversionError, match="this model's attention is mla"):
        to_gqa(mla, build(mla).init(jax.random.key(0)), 1)
    with pytest.raises(ConversionError, match=r"--kv-rank 33 must be in 1..32"):
        to_mla(cfg, params, 33)
    biased = config.ModelConfig.from_dict(MHA | {"attention": {"qkv_bias": True}})
    with pytest.raises(ConversionError, match="MLA has no counterpart of attention.qkv_bias"):
        to_mla(biased, build(biased).init(jax.random.key(0)), 4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer_path):
    directory = tmp_path_factory.mktemp("trained")
    train(small_run(tokenizer_path, steps=4, model={"num_kv_heads": 4}), directory)
    return directory


def test_a_converted_run_is_read_evaluated_and_uptrained(tmp_path, trained, capsys):
    convert_main([str(trained), str(tmp_path / "gqa"), "--to", "gqa", "--kv-heads", "1"])
    record = json.loads((tmp_path / "gqa" / "conversion.json").read_text())
    assert record["to"] == "gqa" and record["changed"] == {"model.num_kv_heads": 1} and record["step"] == 4
    assert runs.load(tmp_path / "gqa").config.model.num_kv_heads == 1

    convert_main([str(trained), str(tmp_path / "mla"), "--to", "mla", "--kv-rank", "16"])
    mla = runs.load(tmp_path / "mla").config.model.attention
    assert (mla.kind, mla.kv_lora_rank, mla.latent_norm) == ("mla", 16, False)
    convert_main([str(trained), str(tmp_path / "calibrated"), "--to", "mla", "--kv-rank", "16", "--calibrate", "100"])
    assert json.loads((tmp_path / "calibrated" / "conversion.json").read_text())["options"]["calibrate"] == 100
    plain, calibrated = (runs.load(tmp_path / name).params["tower"]["layers"]["attention"]["kv_down"]["weight"][...] for name in ("mla", "calibrated"))
    assert plain.shape == calibrated.shape and not np.allclose(plain, calibrated)
    convert_main([str(trained), str(tmp_path / "moe"), "--to", "moe", "--experts", "4", "--top-k", "2"])
    before, after = evaluate(trained), evaluate(tmp_path / "moe")
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-5)  # upcycling starts where the dense model was

    cfg = config.override(config.load(tmp_path / "gqa" / "config.toml"), {"train.init_from": str(tmp_path / "gqa"), "train.steps": 6})
    train(cfg, tmp_path / "uptrained")
    assert [m["step"] for m in metrics(tmp_path / "uptrained")][-1] == 6
    capsys.readouterr()
    with pytest.raises(SystemExit):
        convert_main([str(tmp_path / "moe"), str(tmp_path / "again"), "--to", "moe", "--experts", "2"])
    assert "this model already has experts" in capsys.readouterr().err and not (tmp_path / "again").exists()
    for wrong, message in ((["--to", "gqa", "--kv-heads", "1", "--calibrate", "64"], "they go with --to mla, not --to gqa"),
                           (["--to", "mla", "--kv-rank", "8", "--calibrate", "0"], "--calibrate takes a number of tokens, at least 1; got 0")):
        with pytest.raises(SystemExit):
            convert_main([str(trained), str(tmp_path / "again"), *wrong])
        assert message in capsys.readouterr().err and not (tmp_path / "again").exists()


def test_eval_gives_the_run_its_own_eval_loss_and_reads_other_text(trained, capsys):
    logged = metrics(trained)[-1]["eval_loss"]
    figures = evaluate(trained)
    assert figures["loss"] == pytest.approx(logged, rel=1e-5) and figures["perplexity"] == pytest.approx(np.exp(logged), rel=1e-5)
    assert figures["tokens"] > 0 and figures["tokens_per_second"] is None or figures["tokens_per_second"] > 0
    eval_main([str(trained), "--data", CORPUS, "--batches", "2", "--json"])
    other = json.loads(capsys.readouterr().out)
    assert other["batches"] == 2 and other["loss"] != pytest.approx(logged)
    with pytest.raises(SystemExit):
        eval_main([str(trained), "--data", "no/such/*.txt"])
    assert "--data: data.paths: 'no/such/*.txt' matches no files" in capsys.readouterr().err


def test_a_model_imported_from_transformers_converts_the_same_way(tmp_path):
    """A random transformers Llama: its import kept at its 2 key/value heads, and upcycled, gives transformers' logits."""
    torch = pytest.importorskip("torch")
    from hf_cases import hf_model
    from zoo.convert import convert_run
    from zoo.hf import import_run

    hf = hf_model("llama")
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    import_run(tmp_path / "hf", tmp_path / "run")
    tokens = np.random.default_rng(1).integers(0, 97, size=(2, 10))
    with torch.no_grad():
        expected = hf(torch.from_numpy(tokens)).logits.numpy()
    for name, to, options in (("gqa", "gqa", {"kv_heads": 2}), ("moe", "moe", {"experts": 3, "top_k": 2})):
        convert_run(tmp_path / "run", tmp_path / name, to, **options)
        run = runs.load(tmp_path / name)
        np.testing.assert_allclose(run.model.apply(run.params, jnp.asarray(tokens)).logits, expected, atol=2e-5, rtol=1e-5)
