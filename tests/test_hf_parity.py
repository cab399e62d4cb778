"""Hugging Face interop: zoo's forward equals transformers' PyTorch forward on the same random
weights (float32), through the config and weight mapping and through files both ways."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from zoo import runs
from zoo.generate import Generator
from zoo.sampling import Sampler
from zoo.hf import HFConfigError, config_to_hf, config_to_zoo, import_run, read_tensors
from zoo.hf.__main__ import main as hf_main

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SIZES = dict(
    vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6,
)

FAMILIES = {  # case: (transformers config class, its settings beyond SIZES)
    "llama": ("LlamaConfig", {"rope_theta": 500.0}),
    "llama-biased": ("LlamaConfig", {"attention_bias": True, "mlp_bias": True}),
    "llama-yarn-untruncated": (  # gpt-oss's YaRN: the ramp's ends not rounded to whole dims
        "LlamaConfig",
        {"max_position_embeddings": 16384, "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 16.0, "original_max_position_embeddings": 1024, "truncate": False}},
    ),
    "llama3-scaled": ("LlamaConfig", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
    "llama3-scaled-without-a-band": (  # Llama 4 Scout's: low_freq_factor == high_freq_factor, no blend between
        "LlamaConfig",
        {"rope_scaling": {"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 1.0, "original_max_position_embeddings": 16}},
    ),
    "qwen2": ("Qwen2Config", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", {"head_dim": 16}),
    "mistral": ("MistralConfig", {"sliding_window": 5}),
    "mixtral": ("MixtralConfig", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "gemma2": (
        "Gemma2Config",
        {"head_dim": 16, "query_pre_attn_scalar": 24, "sliding_window": 5, "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0},
    ),
    "phi3": ("Phi3Config", {"sliding_window": 7, "pad_token_id": None}),
    "phi3-longrope-partial": (  # Phi-4-mini's shape: 3/4 of each head rotated, LongRoPE past 16 positions
        "Phi3Config",
        {
            "original_max_position_embeddings": 16, "partial_rotary_factor": 0.75, "pad_token_id": None,
            "rope_parameters": {
                "rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                "short_factor": [1.0, 1.3, 2.0], "long_factor": [1.0, 3.0, 8.0],
                "original_max_position_embeddings": 16,
            },
        },
    ),
    "starcoder2": ("Starcoder2Config", {"sliding_window": 7}),
    "gemma3": (  # a 5:1 local/global pattern; the window is shorter than the greedy check's 24 tokens
        "Gemma3TextConfig",
        {
            "num_hidden_layers": 6, "head_dim": 16, "query_pre_attn_scalar": 24, "sliding_window": 5,
            "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0,
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            },
        },
    ),
    "gpt2": ("GPT2Config", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64, "vocab_size": 97}),
    "gpt_neox": ("GPTNeoXConfig", {"rope_parameters": {"rope_type": "default", "rope_theta": 1000.0, "partial_rotary_factor": 0.5}}),
    "gpt_neox-sequential": ("GPTNeoXConfig", {"use_parallel_residual": False, "attention_bias": False, "tie_word_embeddings": True}),
    "falcon": ("FalconConfig", {"multi_query": True, "ffn_hidden_size": 48}),
    "falcon-mha": ("FalconConfig", {"multi_query": False, "parallel_attn": False, "bias": True}),
    "bloom": ("BloomConfig", {"n_layer": 2, "n_head": 4}),
    "deepseek-v3": (
        "DeepseekV3Config",
        {
            "num_hidden_layers": 3, "moe_intermediate_size": 16, "n_shared_experts": 1, "n_routed_experts": 8,
            "num_experts_per_tok": 2, "first_k_dense_replace": 1, "kv_lora_rank": 12, "q_lora_rank": 10,
            "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 6, "n_group": 4, "topk_group": 2,
            "num_key_value_heads": 4, "routed_scaling_factor": 2.5,
            "rope_parameters": {
                "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16,
                "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0,
            },
        },
    ),
    "deepseek-v2": (
        "DeepseekV2Config",
        {
            "moe_intermediate_size": 16, "n_shared_experts": 2, "n_routed_experts": 6, "num_experts_per_tok": 2,
            "first_k_dense_replace": 1, "kv_lora_rank": 12, "q_lora_rank": None, "qk_nope_head_dim": 8,
            "qk_rope_head_dim": 4, "v_head_dim": 6, "num_key_value_heads": 4, "topk_method": "greedy",
            "routed_scaling_factor": 1.5,
        },
    ),
    "llama4-text": (  # chunked RoPE layers beside a NoPE one with temperature tuning; top-1 sigmoid experts
        "Llama4TextConfig",
        {"head_dim": 8, "intermediate_size_mlp": 40, "num_local_experts": 4, "no_rope_layer_interval": 2, "attention_chunk_size": 5, "floor_scale": 4, "attn_scale": 0.5},
    ),
    "llama4-text-interleaved": (  # Maverick's layout: experts on every second layer (1, 3), dense MLPs between
        "Llama4TextConfig",
        {
            "num_hidden_layers": 4, "head_dim": 8, "intermediate_size_mlp": 40, "num_local_experts": 4,
            "interleave_moe_layer_step": 2, "no_rope_layer_interval": 4, "attention_chunk_size": 5,
        },
    ),
    "deepseek-v3.2": (  # each query attends to the 6 keys its lightning indexer scores best
        "DeepseekV32Config",
        {
            "num_hidden_layers": 3, "moe_intermediate_size": 16, "n_shared_experts": 1, "n_routed_experts": 8,
            "num_experts_per_tok": 2, "first_k_dense_replace": 1, "kv_lora_rank": 12, "q_lora_rank": 10,
            "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 6, "n_group": 4, "topk_group": 2,
            "num_key_value_heads": 4, "index_n_heads": 8, "index_head_dim": 8, "index_topk": 6,
        },
    ),
    "deepseek-v3-no-q-lora": (
        "DeepseekV3Config",
        {
            "moe_intermediate_size": 16, "n_shared_experts": 2, "n_routed_experts": 4, "num_experts_per_tok": 2,
            "first_k_dense_replace": 0, "kv_lora_rank": 12, "q_lora_rank": None, "qk_nope_head_dim": 8,
            "qk_rope_head_dim": 4, "v_head_dim": 6, "n_group": 1, "topk_group": 1, "num_key_value_heads": 4,
            "rope_interleave": False,  # RoPE dims kept as halves
        },
    ),
    "olmo": ("OlmoConfig", {"attention_bias": True, "clip_qkv": 0.1}),  # q, k, v ~ N(0, 0.11): a third clipped
    "olmo2": ("Olmo2Config", {}),
    "olmoe": ("OlmoeConfig", {"num_experts": 4, "num_experts_per_tok": 2, "clip_qkv": 1.0}),  # clipped after the QK-norm
    "olmoe-renormalized": ("OlmoeConfig", {"num_experts": 4, "num_experts_per_tok": 2, "norm_topk_prob": True}),
    "qwen2-moe": (  # a shared expert behind a sigmoid gate; a window on layer 0 (the even layers below max_window_layers)
        "Qwen2MoeConfig",
        {
            "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16, "shared_expert_intermediate_size": 24,
            "use_sliding_window": True, "sliding_window": 5, "max_window_layers": 2,
        },
    ),
    "qwen3-moe": (  # layer 0 dense, the chosen weights renormalised, a window on every layer
        "Qwen3MoeConfig",
        {
            "head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16, "norm_topk_prob": True,
            "mlp_only_layers": [0], "use_sliding_window": True, "sliding_window": 6,
        },
    ),
    "gpt-oss": (
        "GptOssConfig",
        {
            "head_dim": 8, "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 5,
            "swiglu_limit": 0.4, "swiglu_alpha": 1.5,  # a limit the random pre-activations cross
            "rope_parameters": {
                "rope_type": "yarn", "rope_theta": 150000.0, "factor": 4.0, "original_max_position_embeddings": 16,
                "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
            },
        },
    ),
}


def hf_model(case):
    cls_name, settings = FAMILIES[case]
    cls = getattr(transformers, cls_name)
    sizes = {k: v for k, v in SIZES.items() if hasattr(cls(), k)}  # a field the class lacks would be refused on import
    hf_config = cls(**(sizes | settings))
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32).eval()
    with torch.no_grad():  # norms start at one (or zero), biases at zero; make them matter
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias") or "ln_" in name or name.endswith("sinks"):
                scale = 1.0 if name.endswith("weight") and not case.startswith("gemma") else 0.0
                p.copy_(torch.randn_like(p) * 0.5 + scale)
            if "shared_expert_gate" in name:  # at its initial scale the gate is about 0.5 for every token
                p.copy_(torch.randn_like(p))
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # a balancing bias that changes which experts are picked
                buffer.copy_(torch.randn_like(buffer))
    return model


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
    with pytest.raises(HFConfigError, match="model_type 'xverse' is not supported; supported: bert, bloom, deepseek_v2, deepseek_v3, deepseek_v32, falcon"):
        config_to_zoo({"model_type": "xverse"})
    with pytest.raises(HFConfigError, match="model_type 'mamba2' is not supported: it needs a Mamba-2 mixer, which zoo does not have yet"):
        config_to_zoo({"model_type": "mamba2"})
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
