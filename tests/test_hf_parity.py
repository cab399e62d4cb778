"""Hugging Face interop: zoo's forward equals transformers' PyTorch forward on the same random
weights (float32), through the config and weight mapping and through files both ways."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from hf_cases import FAMILIES, SIZES, hf_model

from zoo import runs
from zoo.generate import Generator
from zoo.sampling import Sampler
from zoo.hf import HFConfigError, config_to_hf, config_to_zoo, import_run, read_tensors
from zoo.hf.__main__ import main as hf_main

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.from_numpy(tokens)).logits.numpy()


TOKENS = np.random.default_rng(0).integers(0, SIZES["vocab_size"], size=(2, 24))
PROMPT = [5, 17, 42, 8]


def hf_greedy(model, prompt, steps=20, **inputs):
    """transformers' greedy continuation, one full forward per token (no cache involved)."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            key = "decoder_input_ids" if "input_ids" in inputs else "input_ids"
            ids.append(int(model(**inputs, **{key: torch.tensor([ids])}).logits[0, -1].argmax()))
    return ids[len(prompt):]


def import_then_export(tmp_path, hf, loader=None):
    """Saves `hf`, imports it, exports the import: (the zoo run, the export reloaded by `loader`,
    default hf's own class)."""
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    hf_main(["import", str(tmp_path / "hf"), str(tmp_path / "run")])
    hf_main(["export", str(tmp_path / "run"), str(tmp_path / "back")])
    reloaded = (loader or type(hf)).from_pretrained(tmp_path / "back", dtype=torch.float32).eval()
    return runs.load(tmp_path / "run"), reloaded


def zoo_greedy(run, prompt, steps=20, **inputs):
    generator = Generator(run.model, run.params)
    return generator([prompt], max_new_tokens=steps, sampler=Sampler(temperature=0), **inputs)[0].tokens


@pytest.mark.parametrize("case", sorted(FAMILIES))
def test_imported_logits_match_transformers_and_exports_load_back(tmp_path, case):
    hf = hf_model(case)
    expected = hf_logits(hf, TOKENS)
    run, reloaded = import_then_export(tmp_path, hf, transformers.AutoModelForCausalLM)
    np.testing.assert_allclose(jax.jit(run.model.apply)(run.params, TOKENS).logits, expected, atol=1e-5, rtol=1e-5)
    assert zoo_greedy(run, PROMPT) == hf_greedy(hf, PROMPT)  # through zoo's cache and decode loop
    assert type(reloaded) is type(hf)  # the export names the architecture it came from
    np.testing.assert_allclose(hf_logits(reloaded, TOKENS), expected, atol=1e-5, rtol=1e-5)


def test_sharded_checkpoints_are_read_through_their_index(tmp_path):
    hf = hf_model("llama")
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True, max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    import_run(tmp_path / "hf", tmp_path / "run")
    run = runs.load(tmp_path / "run")
    np.testing.assert_allclose(jax.jit(run.model.apply)(run.params, TOKENS).logits, hf_logits(hf, TOKENS), atol=1e-5, rtol=1e-5)


def test_damaged_checkpoints_name_the_tensor(tmp_path):
    from safetensors.numpy import save_file

    hf_model("llama").save_pretrained(tmp_path / "hf", safe_serialization=True)
    tensors = read_tensors(tmp_path / "hf")
    name = "model.layers.1.self_attn.k_proj.weight"
    damaged = {
        "missing": {k: v for k, v in tensors.items() if k != name},
        "reshaped": tensors | {name: tensors[name][:8]},
        "extra": tensors | {"model.layers.2.mlp.up_proj.weight": tensors["model.layers.1.mlp.up_proj.weight"]},
    }
    messages = {
        "missing": f"the checkpoint has no tensor '{name}'",
        "reshaped": rf"tensor '{name}' has shape \[8, 32\]; the config needs \[16, 32\]",
        "extra": "the checkpoint has tensors the config has no place for: model.layers.2.mlp.up_proj.weight",
    }
    for case, contents in damaged.items():
        (tmp_path / case).mkdir()
        (tmp_path / case / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
        save_file(contents, tmp_path / case / "model.safetensors")
        with pytest.raises(HFConfigError, match=messages[case]):
            import_run(tmp_path / case, tmp_path / f"{case}-run")
        assert not (tmp_path / f"{case}-run").exists()  # nothing half-written


def test_bad_sources_are_refused(tmp_path, capsys):
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text(json.dumps(hf_model("llama").config.to_dict()))
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(HFConfigError, match=r"holds only pickled weights \(pytorch_model.bin\); zoo never unpickles"):
        import_run(tmp_path / "pickled", tmp_path / "out")
    with pytest.raises(SystemExit):
        hf_main(["import", str(tmp_path), str(tmp_path / "out")])
    assert "is not a Hugging Face model directory: it has no config.json" in capsys.readouterr().err
    with pytest.raises(HFConfigError, match="model_type 'xverse' is not supported; supported: bamba, bert, bloom, deepseek_v2, deepseek_v3, deepseek_v32, falcon"):
        config_to_zoo({"model_type": "xverse"})
    with pytest.raises(HFConfigError, match="model_type 'qwen3_5_moe' is not supported: it needs Qwen3.5's M-RoPE sections"):
        config_to_zoo({"model_type": "qwen3_5_moe"})
    with pytest.raises(HFConfigError, match="layer_types must name 4 layers, each one of linear_attention, full_attention"):
        config_to_zoo(hf_model("qwen3-next").config.to_dict() | {"layer_types": ["linear_attention", "sliding_attention"] * 2})
    mamba2 = hf_model("mamba2").config.to_dict()
    with pytest.raises(HFConfigError, match=r"time_step_limit \[0.1, inf\] clamps below only; zoo clamps both ends or neither"):
        config_to_zoo(mamba2 | {"time_step_limit": [0.1, float("inf")]})
    with pytest.raises(HFConfigError, match="num_heads=8 x head_dim=4 is not the mixer's width 64"):
        config_to_zoo(mamba2 | {"head_dim": 4})
    with pytest.raises(HFConfigError, match="hidden_act='gelu'; Mamba-2's gates and convolution use silu"):
        config_to_zoo(mamba2 | {"hidden_act": "gelu"})
    with pytest.raises(HFConfigError, match=r"attn_layer_indices \[1, 9\] name layers past the 4 it has"):
        config_to_zoo(hf_model("bamba").config.to_dict() | {"attn_layer_indices": [1, 9]})
    with pytest.raises(HFConfigError, match="model_type 'opt' is not supported: zoo has its pieces but no importer for it yet"):
        config_to_zoo({"model_type": "opt"})
    with pytest.raises(HFConfigError, match="rope_type 'proportional' is not supported"):
        config_to_zoo(hf_model("llama").config.to_dict() | {"rope_parameters": {"rope_type": "proportional", "rope_theta": 1.0}})
    with pytest.raises(HFConfigError, match="rope_parameters has no short_factor"):
        config_to_zoo(hf_model("llama").config.to_dict() | {"rope_parameters": {"rope_type": "longrope", "rope_theta": 1.0}})
    with pytest.raises(HFConfigError, match="new_decoder_architecture .* is not supported"):
        config_to_zoo(hf_model("falcon").config.to_dict() | {"new_decoder_architecture": True})


@pytest.mark.parametrize(
    "name, family",
    [("llama3-8b", "llama"), ("mistral-7b", "mistral"), ("mixtral-8x7b", "mixtral"), ("qwen2.5-7b", "qwen2"), ("qwen3-8b", "qwen3"),
     ("pythia-6.9b", "gpt_neox"), ("starcoder2-15b", "starcoder2"),
     ("gemma2-9b", "gemma2"), ("gpt2", "gpt2"), ("falcon-7b", "falcon"), ("bloom-176b", "bloom"), ("llama3.1-405b", "llama"),
     ("t5-base", "t5"), ("deepseek-v3", "deepseek_v3"), ("deepseek-v3.2", "deepseek_v32"), ("deepseek-v2-lite", "deepseek_v2"), ("bert-base", "bert"),
     ("tiny", "llama"), ("olmo2-7b", "olmo2"), ("gemma3-27b", "gemma3_text"), ("qwen3-30b-a3b", "qwen3_moe"),
     ("qwen3-235b-a22b", "qwen3_moe"), ("gpt-oss-20b", "gpt_oss"),
     ("llama4-scout-17b-16e", "llama4_text")],
)
def test_zoo_configs_export_as_their_family(name, family):
    from zoo import config

    model = config.load(name).model
    chosen, hf = config_to_hf(model)
    assert chosen.model_type == family and hf["architectures"] == [chosen.architecture]
    assert without_training_settings(config_to_zoo(hf)) == without_training_settings(model)


def without_training_settings(model):
    """The architecture: checkpoints carry one dtype and no MoE training coefficients."""
    moe = model.moe and dataclasses.replace(model.moe, load_balance_coef=0.0, z_loss_coef=0.0, bias_update_rate=0.0)
    return dataclasses.replace(model, dtype=model.param_dtype, moe=moe)


def test_configs_no_family_holds_are_not_exported():
    from zoo import config

    alibi_llama = config.override(config.load("tiny"), {"model.position.kind": "alibi"})
    for model in (config.load("moe-tiny").model, alibi_llama.model):  # sigmoid experts without MLA; ALiBi with RMSNorm
        with pytest.raises(HFConfigError, match="no supported Hugging Face family has this architecture"):
            config_to_hf(model)


def test_imported_weights_start_a_fine_tuning_run(tmp_path):
    from zoo import config
    from zoo.train import train

    hf_model("qwen2").save_pretrained(tmp_path / "hf", safe_serialization=True)
    cfg, _ = import_run(tmp_path / "hf", tmp_path / "run")
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


def test_sample_py_continues_an_imported_model_like_transformers(tmp_path, capsys):
    from test_cli import load_script

    hf = hf_model("qwen3")
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    import_run(tmp_path / "hf", tmp_path / "run")
    prompt = [5, 17, 42, 8]
    with torch.no_grad():
        expected = hf.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, eos_token_id=None)[0, 4:].tolist()
    sample = load_script("sample")
    argv = ["--checkpoint", str(tmp_path / "run"), "--prompt-ids", ",".join(map(str, prompt)), "--max-new-tokens", "6", "--temperature", "0", "--json"]
    assert sample.main(argv) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["tokens"] == expected


@pytest.mark.parametrize(
    "settings",
    [{"feed_forward_proj": "relu", "tie_word_embeddings": True}, {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}],
)
def test_t5_imports_and_exports_with_equal_logits(tmp_path, settings):
    hf_config = transformers.T5Config(
        vocab_size=97, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=12, **settings,
    )
    torch.manual_seed(0)
    hf = transformers.T5ForConditionalGeneration(hf_config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if "layer_norm" in name or "relative" in name else 0.2) + ("layer_norm" in name))
    encoder_tokens, tokens = TOKENS[:, :20], TOKENS[:, 4:14]

    def reference(model):
        with torch.no_grad():
            return model(input_ids=torch.from_numpy(encoder_tokens), decoder_input_ids=torch.from_numpy(tokens)).logits.numpy()

    expected = reference(hf)
    run, reloaded = import_then_export(tmp_path, hf)
    logits = jax.jit(run.model.apply)(run.params, tokens, encoder_tokens=encoder_tokens).logits
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
    start = [0]  # T5 starts decoding from its pad id
    expected_tokens = hf_greedy(hf, start, input_ids=torch.from_numpy(encoder_tokens[:1]))
    assert zoo_greedy(run, start, encoder_prompts=[encoder_tokens[0].tolist()]) == expected_tokens
    np.testing.assert_allclose(reference(reloaded), expected, atol=1e-4, rtol=1e-4)


def test_bert_imports_and_exports_with_equal_logits(tmp_path):
    hf_config = transformers.BertConfig(
        vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, max_position_embeddings=64
    )
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(hf_config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.5 + (name.endswith("LayerNorm.weight")))
    token_types = (np.arange(TOKENS.shape[1]) >= 10).astype(np.int64)[None].repeat(2, 0)  # sentence A, then B

    def reference(model):
        with torch.no_grad():
            return model(input_ids=torch.from_numpy(TOKENS), token_type_ids=torch.from_numpy(token_types)).logits.numpy()

    expected = reference(hf)
    run, reloaded = import_then_export(tmp_path, hf)
    logits = jax.jit(run.model.apply)(run.params, TOKENS, token_types=token_types).logits
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(reference(reloaded), expected, atol=1e-4, rtol=1e-4)


def test_import_says_which_tensors_it_leaves_out(tmp_path, capsys):
    hf_config = transformers.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=48)
    hf = transformers.BertForPreTraining(hf_config).eval()  # the masked-LM head and a next-sentence head on a pooler
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    hf_main(["import", str(tmp_path / "hf"), str(tmp_path / "run")])
    pooler_and_next_sentence = "bert.pooler.dense.bias, bert.pooler.dense.weight, cls.seq_relationship.bias, cls.seq_relationship.weight"
    assert f"left out (no use in zoo): {pooler_and_next_sentence}" in capsys.readouterr().out
    run = runs.load(tmp_path / "run")
    with torch.no_grad():
        expected = hf(input_ids=torch.from_numpy(TOKENS)).prediction_logits.numpy()
    np.testing.assert_allclose(jax.jit(run.model.apply)(run.params, TOKENS).logits, expected, atol=1e-4, rtol=1e-4)
