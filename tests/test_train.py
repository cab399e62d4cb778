"""Training pieces against their formulas, and short end-to-end runs of the loop."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo import config, models
from zoo.tokenizer import BOS, EOS, Tokenizer
from zoo.train import TrainingError, train
from zoo.train.corpus import stdlib_documents
from zoo.train.data import batches, pack
from zoo.train.loss import next_token_loss, split_row
from zoo.train.optimizer import decay_mask, learning_rate


def test_pack_separates_documents():
    rows = pack([[5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15]], row_length=6)
    np.testing.assert_array_equal(rows.tokens, [[BOS, 5, 6, 7, EOS, BOS], [8, 9, EOS, BOS, 10, 11], [12, 13, 14, 15, EOS, 0]])
    np.testing.assert_array_equal(rows.segment_ids, [[1, 1, 1, 1, 1, 2], [1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(rows.positions, [[0, 1, 2, 3, 4, 0], [0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 0]])


def test_targets_never_cross_documents():
    rows = pack([[5, 6], [7, 8, 9]], row_length=8)
    inputs, targets, weights = split_row({k: jnp.asarray(v) for k, v in rows[0:1].items()})
    # row: BOS 5 6 EOS BOS 7 8 9 | EOS -> pairs (EOS -> BOS) cross a document boundary
    np.testing.assert_array_equal(inputs["tokens"], [[BOS, 5, 6, EOS, BOS, 7, 8]])
    np.testing.assert_array_equal(weights, [[1, 1, 1, 0, 1, 1, 1]])


def test_next_token_loss_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
    targets = rng.integers(0, 5, size=(2, 3))
    weights = np.array([[1, 1, 0], [1, 0, 0]])
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    loss, count = next_token_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
    assert float(loss) == pytest.approx(-(picked * weights).sum() / 3, rel=1e-5) and float(count) == 3


def test_weight_decay_skips_norms_and_biases(small_config):
    model = models.build(small_config(attention={"qkv_bias": True}))
    mask = decay_mask(model.abstract_params)
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): v for path, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
    assert not any(v for k, v in flat.items() if "scale" in k or "bias" in k)
    assert all(v for k, v in flat.items() if k.endswith("weight/value") or "table" in k)


def test_learning_rate_warms_up_then_decays():
    schedule = learning_rate(config.TrainConfig(steps=100, warmup_steps=10, learning_rate=1.0))
    assert float(schedule(0)) == 0.0 and float(schedule(5)) == pytest.approx(0.5)
    assert float(schedule(10)) == pytest.approx(1.0) and float(schedule(100)) == pytest.approx(0.1)


def test_tokenizer_round_trips_source_code():
    documents = stdlib_documents()[:50]
    tokenizer = Tokenizer.train(documents, vocab_size=400)
    assert tokenizer.vocab_size == 400
    for text in documents[:5] + ["\tmixed \n\n  whitespace\u00e9\u4e2d "]:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_batches_need_enough_rows():
    rows = pack([[5, 6, 7]], row_length=4)
    with pytest.raises(ValueError, match="the data has 2 rows for this process, fewer than one batch of 4"):
        batches(rows, 4, seed=0)


def tiny_run(**train_overrides):
    train_settings = dict(steps=4, batch_size=8, seq_len=32, log_every=2, eval_every=4, eval_batches=1, checkpoint_every=2)
    train_settings.update(train_overrides)
    return config.from_dict(
        {
            "model": dict(vocab_size=512, d_model=32, num_layers=1, num_heads=2, ffn_dim=64, max_seq_len=64),
            "train": train_settings,
        }
    )


def read_metrics(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_workdir_and_resumes(tmp_path, capsys):
    last = train(tiny_run(), tmp_path)
    assert {"config.toml", "tokenizer.model", "checkpoints", "metrics.jsonl"} <= {p.name for p in tmp_path.iterdir()}
    assert config.load(tmp_path / "config.toml") == tiny_run()
    logged = read_metrics(tmp_path)
    assert [m["step"] for m in logged] == [2, 4] and np.isfinite(last["eval_loss"])
    assert {"step", "loss", "learning_rate", "tokens_per_second"} <= set(logged[0])

    train(tiny_run(steps=6), tmp_path)  # same model, longer: resumes at step 4
    assert "resumed from step 4" in capsys.readouterr().out
    assert [m["step"] for m in read_metrics(tmp_path)] == [2, 4, 6]

    train(tiny_run(), tmp_path, fresh=True)
    assert [m["step"] for m in read_metrics(tmp_path)] == [2, 4]


def test_run_refuses_bad_setups(tmp_path):
    train(tiny_run(steps=2), tmp_path)
    other_model = config.override(tiny_run(), {"model.d_model": 64})
    with pytest.raises(TrainingError, match="holds checkpoints of a different model"):
        train(other_model, tmp_path)
    with pytest.raises(TrainingError, match="has 512 tokens but model.vocab_size is 300"):
        train(config.override(tiny_run(), {"model.vocab_size": 300}), tmp_path, fresh=True)
    with pytest.raises(TrainingError, match="cannot train a 300-piece tokenizer .* raise model.vocab_size"):
        train(config.override(tiny_run(), {"model.vocab_size": 300}), tmp_path / "new")
    with pytest.raises(TrainingError, match="train.batch_size=6 does not divide over the 8 devices"):
        train(config.override(tiny_run(batch_size=6), {"mesh.data": 8}), tmp_path / "other")
