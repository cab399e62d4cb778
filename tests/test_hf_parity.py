"""Hugging Face interop: zoo's forward equals transformers' PyTorch forward on the same random
weights (float32), through the config and weight mapping and through files both ways."""

import json

import jax
import numpy as np
import pytest

from zoo import models, runs
from zoo.hf import HFConfigError, configs, import_run, read_tensors, weights
from zoo.hf.__main__ import main as hf_main

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SIZES = dict(
    vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6,
)

FAMILIES = {  # family: (transformers config class, its settings beyond SIZES)
    "llama": ("LlamaConfig", {"rope_theta": 500.0}),
    "llama3-scaled": ("LlamaConfig", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
    "qwen2": ("Qwen2Config", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", {"head_dim": 16}),
    "mistral": ("MistralConfig", {"sliding_window": 5}),
    "mixtral": ("MixtralConfig", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "gemma2": (
        "Gemma2Config",
        {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 5, "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0},
    ),
}


def hf_model(family):
    cls_name, settings = FAMILIES[family]
    hf_config = getattr(transformers, cls_name)(**SIZES, **settings)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32).eval()
    with torch.no_grad():  # norms start at one (or zero); make them matter
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name and family != "gemma2" else 0.0))
    return model


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.from_numpy(tokens)).logits.numpy()


TOKENS = np.random.default_rng(0).integers(0, SIZES["vocab_size"], size=(2, 24))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_logits_match_transformers(tmp_path, family):
    hf = hf_model(family)
    hf.save_pretrained(tmp_path, safe_serialization=True)  # the layout checkpoints have on disk
    model = models.build(configs.to_zoo(json.loads((tmp_path / "config.json").read_text())))
    params = weights.to_zoo(model, read_tensors(tmp_path))
    logits, _ = jax.jit(model.apply)(params, TOKENS)
    np.testing.assert_allclose(logits, hf_logits(hf, TOKENS), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "mixtral", "gemma2"])
def test_import_and_export_through_files(tmp_path, family):
    hf = hf_model(family)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    expected = hf_logits(hf, TOKENS)

    hf_main(["import", str(tmp_path / "hf"), str(tmp_path / "run")])
    run = runs.load(tmp_path / "run")
    np.testing.assert_allclose(jax.jit(run.model.apply)(run.params, TOKENS)[0], expected, atol=1e-5, rtol=1e-5)

    hf_main(["export", str(tmp_path / "run"), str(tmp_path / "back")])
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32).eval()
    assert type(reloaded) is type(hf)
    np.testing.assert_allclose(hf_logits(reloaded, TOKENS), expected, atol=1e-5, rtol=1e-5)


def test_sharded_checkpoints_are_read_through_their_index(tmp_path):
    hf = hf_model("llama")
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True, max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    import_run(tmp_path / "hf", tmp_path / "run")
    run = runs.load(tmp_path / "run")
    np.testing.assert_allclose(jax.jit(run.model.apply)(run.params, TOKENS)[0], hf_logits(hf, TOKENS), atol=1e-5, rtol=1e-5)


def test_bad_sources_are_refused(tmp_path, capsys):
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text(json.dumps(hf_model("llama").config.to_dict()))
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(HFConfigError, match=r"holds only pickled weights \(pytorch_model.bin\); zoo never unpickles"):
        import_run(tmp_path / "pickled", tmp_path / "out")
    with pytest.raises(SystemExit):
        hf_main(["import", str(tmp_path), str(tmp_path / "out")])
    assert "is not a Hugging Face model directory: it has no config.json" in capsys.readouterr().err
    with pytest.raises(HFConfigError, match="model_type 'gpt_bigcode' is not supported; supported: gemma2, llama"):
        configs.to_zoo({"model_type": "gpt_bigcode"})
    with pytest.raises(HFConfigError, match="rope_type 'longrope' is not supported"):
        configs.to_zoo(hf_model("llama").config.to_dict() | {"rope_parameters": {"rope_type": "longrope", "rope_theta": 1.0}})


def test_configs_outside_the_families_are_not_exported():
    mla = models.build(configs.to_zoo(hf_model("llama").config.to_dict())).config
    import dataclasses

    alibi = dataclasses.replace(mla, position=dataclasses.replace(mla.position, kind="alibi"))
    with pytest.raises(HFConfigError, match="no supported Hugging Face family has position.kind='alibi'"):
        configs.to_hf(alibi)


def test_imported_weights_start_a_fine_tuning_run(tmp_path):
    from zoo import config
    from zoo.train import train

    hf_model("qwen2").save_pretrained(tmp_path / "hf", safe_serialization=True)
    cfg = import_run(tmp_path / "hf", tmp_path / "run")
    np.save(tmp_path / "ids.npy", np.random.default_rng(0).integers(0, 97, 5000).astype(np.int32))
    settings = {
        "data.source": "tokens", "data.paths": [str(tmp_path / "ids.npy")], "train.init_from": str(tmp_path / "run"),
        "train.steps": 1, "train.batch_size": 8, "train.seq_len": 32, "train.warmup_steps": 0,
        "train.learning_rate": 1e-12, "train.eval_batches": 1, "mesh.data": 2,
    }
    train(config.override(cfg, settings), tmp_path / "tuned")
    tuned, imported = runs.load(tmp_path / "tuned"), runs.load(tmp_path / "run")
    assert tuned.step == 1
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), tuned.params, imported.params)
    other = config.override(cfg, settings | {"model.ffn_dim": 64})
    with pytest.raises(Exception, match="holds a model of other shapes than model.. describes"):
        train(other, tmp_path / "mismatch")
