"""Reading Hugging Face configs: every field that changes the model is read (or refused),
each read field is type-checked, lacking fields read as transformers' defaults, and the
special token ids travel through import and export."""

import dataclasses
import json
import shutil

import pytest

from zoo import config, runs
from zoo.hf import HFConfigError, config_to_hf, config_to_zoo, import_run
from zoo.hf.__main__ import main as hf_main
from zoo.models.wiring import layer_specs
from zoo.tokenizer import Tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
CLASSES = [
    "LlamaConfig", "MistralConfig", "MixtralConfig", "Qwen2Config", "Qwen3Config", "Gemma2Config", "GPT2Config",
    "FalconConfig", "BloomConfig", "DeepseekV2Config", "DeepseekV3Config", "T5Config", "BertConfig",
    "OlmoConfig", "Olmo2Config", "OlmoeConfig",
    "Gemma3TextConfig", "Qwen2MoeConfig", "Qwen3MoeConfig", "GptOssConfig", "Mamba2Config", "BambaConfig",
    "Qwen3NextConfig", "FalconH1Config",
]


def saved(config):
    """config.json as transformers writes it."""
    return json.loads(config.to_json_string())


def llama(**settings):
    return saved(transformers.LlamaConfig(**(TINY | settings)))


@pytest.mark.parametrize("name", CLASSES)
def test_a_config_lacking_a_field_reads_as_transformers_default_for_it(name):
    config = saved(getattr(transformers, name)(**({"num_experts_per_tok": 2} if name == "DeepseekV2Config" else {})))
    full = config_to_zoo(config)
    for field in sorted(set(config) - {"model_type"}):
        try:
            lacking = config_to_zoo({k: v for k, v in config.items() if k != field})
        except HFConfigError as error:  # sizes have no default zoo would guess
            assert f"has no {field} (" in str(error)
            continue
        assert lacking == full, field


UNKNOWN = [  # (family's transformers class, its settings, fields added to config.json, what the error says)
    ("LlamaConfig", TINY, {"foo": 3}, "config.json: zoo's llama import does not know foo=3"),
    ("LlamaConfig", TINY, {"sliding_window": 4}, "llama import does not know sliding_window=4"),  # Llama has no windows
    ("LlamaConfig", TINY, {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "beta_fast": 32}}, "rope_parameters: .* does not know beta_fast=32"),
    ("LlamaConfig", TINY, {"rope_parameters": {"rope_type": "default", "truncate": False}}, "does not know truncate=false"),
    ("LlamaConfig", TINY, {"partial_rotary_factor": 0.5}, "partial_rotary_factor=0.5 is not supported by zoo's llama import"),
    ("LlamaConfig", TINY, {"quantization_config": {"quant_method": "fp8"}}, "quantized checkpoints .* are not supported"),
    ("MistralConfig", TINY, {"attention_bias": True}, "mistral import does not know attention_bias=true"),
    ("Gemma2Config", TINY, {"use_bidirectional_attention": True}, "use_bidirectional_attention=true is not supported .*Gemma 2 is causal"),
    ("Gemma3TextConfig", TINY, {"use_bidirectional_attention": True}, "use_bidirectional_attention=true .*Gemma 3 is causal"),
    ("Gemma3TextConfig", TINY, {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling and rope_parameters.full_attention both"),
    ("Gemma3TextConfig", TINY, {"rope_parameters": {"rope_type": "linear", "factor": 2.0}}, "rope_parameters: .* does not know factor=2.0, rope_type=\"linear\""),
    ("GPT2Config", {}, {"scale_attn_weights": False}, "scale_attn_weights=false is not supported"),
    ("GPT2Config", {}, {"add_cross_attention": True}, "add_cross_attention=true is not supported"),
    ("FalconConfig", {}, {"num_ln_in_parallel_attn": 2}, "num_ln_in_parallel_attn=2 is not supported"),
    ("FalconConfig", {"multi_query": False}, {"num_kv_heads": 1}, "num_kv_heads=1 is not supported"),
    ("BloomConfig", {}, {"num_key_value_heads": 2}, "bloom import does not know num_key_value_heads=2"),
    ("BertConfig", {}, {"is_decoder": True}, "is_decoder=true is not supported .*whole sequence"),
    ("DeepseekV2Config", {"num_experts_per_tok": 2}, {"mlp_bias": True}, "mlp_bias=true is not supported"),
    ("DeepseekV2Config", {"num_experts_per_tok": 2}, {"norm_topk_prob": True}, "norm_topk_prob=true is not supported"),
    ("DeepseekV3Config", {}, {"scoring_func": "softmax"}, "scoring_func=\"softmax\" is not supported"),
    ("DeepseekV3Config", {}, {"num_key_value_heads": 1}, "num_key_value_heads=1 is not supported"),
    ("Olmo2Config", TINY, {"clip_qkv": 8.0}, "olmo2 import does not know clip_qkv=8.0"),  # OLMo 2 does not clip
    ("OlmoeConfig", TINY, {"head_dim": 16}, "head_dim=16 is not supported .*hidden_size / num_attention_heads wide"),
    ("FalconH1Config", {}, {"projectors_bias": True}, "mamba_proj_bias=False but projectors_bias=True; zoo's Mamba-2 has biases on both"),
    ("FalconH1Config", {"tie_word_embeddings": True}, {"lm_head_multiplier": 2.0}, "tied embeddings with embedding_multiplier=1.0 and lm_head_multiplier=2.0"),
    ("FalconH1Config", {}, {"ssm_multipliers": [1.0, 2.0]}, r"ssm_multipliers needs 5 numbers, got \[1.0, 2.0\]"),
    ("FalconH1Config", {}, {"mamba_d_ssm": 1000}, "mamba_n_heads=128 x mamba_d_head=8 is not the mixer's width 1000"),
]


@pytest.mark.parametrize("cls, settings, extra, message", UNKNOWN, ids=[f"{c}-{next(iter(e))}" for c, _, e, _ in UNKNOWN])
def test_fields_that_would_change_the_model_are_refused(cls, settings, extra, message):
    config = saved(getattr(transformers, cls)(**settings))
    config_to_zoo(config)  # as transformers writes it: imports
    with pytest.raises(HFConfigError, match=message):
        config_to_zoo(config | extra)


def test_fields_that_do_not_change_the_model_are_accepted():
    inert = {"unknown_but_null": None, "attention_dropout": 0.3, "pad_token_id": 0, "id2label": {"0": "a"}, "use_cache": False}
    assert config_to_zoo(llama() | inert) == config_to_zoo(llama())


WRONG_TYPES = [
    ({"rope_theta": "x"}, "rope_theta must be a number, not \"x\""),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": "x"}}, "rope_parameters: rope_theta must be a number"),
    ({"rope_parameters": "yarn"}, "rope_parameters must be an object of fields"),
    ({"hidden_size": "32"}, "hidden_size must be an integer, not \"32\""),
    ({"num_hidden_layers": [2]}, r"num_hidden_layers must be an integer, not \[2\]"),
    ({"num_attention_heads": True}, "num_attention_heads must be an integer, not true"),
    ({"vocab_size": 300.0}, "vocab_size must be an integer, not 300.0"),
    ({"rms_norm_eps": float("nan")}, "rms_norm_eps must be a number, not NaN"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings must be true or false"),
    ({"hidden_act": 3}, "hidden_act must be a string, not 3"),
    ({"eos_token_id": "2"}, "eos_token_id must be a token id or a list of them"),
    ({"bos_token_id": [1]}, r"bos_token_id must be an integer, not \[1\]"),
    ({"model_type": ["llama"]}, r"model_type \['llama'\] is not supported"),
]


@pytest.mark.parametrize("change, message", WRONG_TYPES, ids=[next(iter(c)) for c, _ in WRONG_TYPES])
def test_read_fields_of_the_wrong_type_are_refused(change, message):
    with pytest.raises(HFConfigError, match=message):
        config_to_zoo(llama() | change)


def test_yarn_truncate_is_read_and_written():
    yarn = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16}
    assert config_to_zoo(llama(rope_parameters=yarn)).position.yarn_truncate
    model = config_to_zoo(llama(rope_parameters=yarn | {"truncate": False}))
    assert not model.position.yarn_truncate
    _, exported = config_to_hf(model)
    assert exported["rope_parameters"]["truncate"] is False and config_to_zoo(exported) == model
    with pytest.raises(HFConfigError, match="truncate must be true or false"):
        config_to_zoo(llama(rope_parameters=yarn | {"truncate": "no"}))


def test_layer_windows_follow_each_family():
    qwen = saved(transformers.Qwen2Config(**TINY, use_sliding_window=True, sliding_window=5, max_window_layers=1))
    del qwen["layer_types"]  # transformers' default: windows from max_window_layers on
    assert config_to_zoo(qwen).attention.layer_pattern == ("global", "local")
    gemma = saved(transformers.Gemma2Config(**TINY, head_dim=8, sliding_window=5))
    del gemma["layer_types"]  # every other layer, from the first
    assert config_to_zoo(gemma).attention.layer_pattern == ("local", "global")
    mistral = saved(transformers.MistralConfig(**TINY, sliding_window=5)) | {"layer_types": ["full_attention", "sliding_attention"]}
    assert config_to_zoo(mistral).attention.layer_pattern == ("local",)  # transformers' Mistral ignores layer_types
    qwen_moe = saved(transformers.Qwen2MoeConfig(**TINY | {"num_hidden_layers": 6}, use_sliding_window=True, sliding_window=5, max_window_layers=3))
    kinds = qwen_moe.pop("layer_types")  # transformers' default: the even layers below max_window_layers
    windows = config_to_zoo(qwen_moe).attention.layer_windows()
    assert [w is not None for w in windows] == [kind == "sliding_attention" for kind in kinds] == [True, False, True, False, False, False]
    qwen3_moe = transformers.Qwen3MoeConfig(**TINY, use_sliding_window=True, sliding_window=5, max_window_layers=1)
    assert config_to_zoo(saved(qwen3_moe)).attention.layer_pattern == ("local",)  # every layer; max_window_layers unread
    assert config_to_zoo(saved(qwen3_moe) | {"use_sliding_window": False}).attention.window is None


QWEN_MOE_LAYERS = [  # (depth, decoder_sparse_step and mlp_only_layers, None or what the refusal says)
    (3, {}, None),
    (5, {"decoder_sparse_step": 2}, None),
    (4, {"mlp_only_layers": [0, 1]}, None),
    (5, {"mlp_only_layers": [0, 2, 4]}, None),
    (2, {"decoder_sparse_step": 2}, None),
    (4, {"decoder_sparse_step": 2}, None),  # layers 1 and 3: moe.offset 1 of every 2
    (5, {"mlp_only_layers": [0, 1, 3]}, r"mlp_only_layers=\[0, 1, 3\] put experts in layers \[2, 4\] of 5"),
    (4, {"mlp_only_layers": [3]}, r"mlp_only_layers=\[3\] put experts in layers \[0, 1, 2\] of 4"),
    (2, {"mlp_only_layers": [0, 1]}, r"put experts in layers \[\] of 2"),
    (2, {"decoder_sparse_step": 0}, "decoder_sparse_step must be a positive integer"),
]


@pytest.mark.parametrize("depth, settings, refusal", QWEN_MOE_LAYERS)
def test_qwen_moe_layers_with_experts_are_those_transformers_builds(depth, settings, refusal):
    hf = transformers.Qwen3MoeConfig(**TINY | {"num_hidden_layers": depth}, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=8)
    config = saved(hf) | settings
    if refusal is not None:
        with pytest.raises(HFConfigError, match=refusal):
            config_to_zoo(config)
        return
    model = config_to_zoo(config)
    built = transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(**config))
    with_experts = [type(layer.mlp).__name__ == "Qwen3MoeSparseMoeBlock" for layer in built.model.layers]
    assert [spec.moe for spec in layer_specs(model, depth)] == with_experts
    _, written = config_to_hf(model, "qwen3_moe")
    assert config_to_zoo(written) == model


def test_the_published_qwen3_moe_config_reads_as_the_zoo_config():
    published = {  # Qwen/Qwen3-30B-A3B's config.json, less bookkeeping
        "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643,
        "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 2048,
        "initializer_range": 0.02, "intermediate_size": 6144, "max_position_embeddings": 40960, "max_window_layers": 48,
        "mlp_only_layers": [], "model_type": "qwen3_moe", "moe_intermediate_size": 768, "norm_topk_prob": True,
        "num_attention_heads": 32, "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 48,
        "num_key_value_heads": 4, "output_router_logits": False, "rms_norm_eps": 1e-06, "rope_scaling": None,
        "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001, "sliding_window": None, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
    }
    expected = config.load("qwen3-30b-a3b").model
    assert config_to_zoo(published) == dataclasses.replace(expected, bos_id=151643, eos_ids=(151645,), param_dtype="bfloat16")


def test_gemma3_reads_older_configs_and_its_rope_per_layer_type():
    settings = TINY | {"num_hidden_layers": 6, "head_dim": 8, "sliding_window": 5}
    layered = {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
    }
    current = saved(transformers.Gemma3TextConfig(**settings, rope_parameters=layered))
    model = config_to_zoo(current)
    assert model.attention.layer_pattern == ("local",) * 5 + ("global",) and model.attention.window == 5
    assert (model.position.rope_theta, model.position.rope_scaling, model.position.scaling_factor) == (1e6, "linear", 8.0)
    assert (model.position.local.rope_theta, model.position.local.rope_scaling) == (10.0, "none")
    older = {k: v for k, v in current.items() if k not in ("rope_parameters", "layer_types", "_sliding_window_pattern")} | {
        "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "rope_theta": 1_000_000, "rope_local_base_freq": 10.0,
        "sliding_window_pattern": 6,
    }  # as transformers 4.50 wrote Gemma 3
    assert config_to_zoo(older) == model
    _, exported = config_to_hf(model, "gemma3_text")
    assert exported["rope_parameters"] == layered and config_to_zoo(exported) == model
    alike = {kind: {"rope_type": "default", "rope_theta": 100.0} for kind in layered}  # one RoPE for all: no local section
    assert config_to_zoo(current | {"rope_parameters": alike}).position.local is None
    with pytest.raises(HFConfigError, match="these families rotate every layer alike; position.local gives local layers"):
        config_to_hf(model, "gemma2")


def test_other_names_transformers_accepts_are_read():
    gpt2 = saved(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=97))
    renamed = {("hidden_size" if k == "n_embd" else k): v for k, v in gpt2.items()}
    assert config_to_zoo(renamed) == config_to_zoo(gpt2)
    with pytest.raises(HFConfigError, match="n_embd=32 and its other name hidden_size=64 differ"):
        config_to_zoo(gpt2 | {"hidden_size": 64})


def test_generation_config_ids_win_and_ids_outside_the_vocabulary_are_dropped():
    config = llama(bos_token_id=5, eos_token_id=[7, 9])
    assert config_to_zoo(config, {"eos_token_id": 11}).eos_ids == (11,)
    assert config_to_zoo(config, {"eos_token_id": None}).eos_ids == (7, 9)
    assert config_to_zoo(config, {"bos_token_id": 6}).bos_id == 6
    outside = config_to_zoo(llama(bos_token_id=50256, eos_token_id=[50256, 7]))
    assert outside.bos_id is None and outside.eos_ids == (7,)


def save_tiny_llama(directory, **settings):
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**(TINY | settings))).save_pretrained(directory, safe_serialization=True)


def test_special_ids_travel_through_import_and_export(tmp_path):
    save_tiny_llama(tmp_path / "hf", bos_token_id=5, eos_token_id=[7, 9])
    hf_main(["import", str(tmp_path / "hf"), str(tmp_path / "run")])
    model = runs.load(tmp_path / "run").config.model
    assert (model.bos_id, model.eos_ids) == (5, (7, 9))
    hf_main(["export", str(tmp_path / "run"), str(tmp_path / "back")])
    back = json.loads((tmp_path / "back" / "config.json").read_text())
    assert (back["bos_token_id"], back["eos_token_id"]) == (5, [7, 9])
    assert transformers.AutoConfig.from_pretrained(tmp_path / "back").eos_token_id == [7, 9]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A sentencepiece tokenizer.model of 300 pieces."""
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.model"
    Tokenizer.train(["def f(x):\n    return x + 1\n" * 50], vocab_size=300).save(path)
    return path


def test_export_takes_the_ids_of_the_tokenizer_when_the_config_has_none(tmp_path, tokenizer):
    save_tiny_llama(tmp_path / "hf", bos_token_id=None, eos_token_id=None)
    shutil.copyfile(tokenizer, tmp_path / "hf" / "tokenizer.model")
    cfg, _ = import_run(tmp_path / "hf", tmp_path / "run")
    assert (cfg.model.bos_id, cfg.model.eos_ids) == (None, ())
    hf_main(["export", str(tmp_path / "run"), str(tmp_path / "back")])
    back = json.loads((tmp_path / "back" / "config.json").read_text())
    assert (back["bos_token_id"], back["eos_token_id"]) == (1, 2)  # zoo's sentencepiece bos and eos


def test_a_tokenizer_with_more_pieces_than_the_vocabulary_is_refused(tmp_path, tokenizer):
    save_tiny_llama(tmp_path / "hf", vocab_size=97)
    shutil.copyfile(tokenizer, tmp_path / "hf" / "tokenizer.model")
    with pytest.raises(HFConfigError, match="tokenizer.model has 300 pieces, more than the model's vocab_size=97"):
        import_run(tmp_path / "hf", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_export_writes_the_family_the_run_was_imported_from(tmp_path):
    """A Mistral without a sliding window has Llama's architecture, which the search picks first."""
    torch.manual_seed(0)
    original = transformers.MistralForCausalLM(transformers.MistralConfig(**TINY, sliding_window=None))
    original.save_pretrained(tmp_path / "hf", safe_serialization=True)
    hf_main(["import", str(tmp_path / "hf"), str(tmp_path / "run")])
    assert json.loads((tmp_path / "run" / "source.json").read_text()) == {"hf_model_type": "mistral"}
    assert config_to_hf(runs.load(tmp_path / "run").config.model)[0].model_type == "llama"
    hf_main(["export", str(tmp_path / "run"), str(tmp_path / "back")])
    back = json.loads((tmp_path / "back" / "config.json").read_text())
    assert (back["model_type"], back["architectures"]) == ("mistral", ["MistralForCausalLM"])
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back")
    assert type(exported) is transformers.MistralForCausalLM
    ids = torch.tensor([[1, 5, 9, 200, 7]])
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, original(ids).logits)
    (tmp_path / "run" / "source.json").unlink()  # as a run trained here: the search
    hf_main(["export", str(tmp_path / "run"), str(tmp_path / "searched")])
    assert json.loads((tmp_path / "searched" / "config.json").read_text())["model_type"] == "llama"


def test_a_fresh_run_in_an_imported_directory_sets_the_family_record_aside(tmp_path):
    from zoo import config, rundir
    from zoo.train.workdir import prepare

    rundir.write_source(tmp_path, "mistral")
    aside = prepare(tmp_path, config.load("tiny"), None, fresh=True)
    assert rundir.read_source(aside) == "mistral" and rundir.read_source(tmp_path) is None


OPENAI_GPT_OSS_120B = {  # https://huggingface.co/openai/gpt-oss-120b/raw/main/config.json, as published
    "architectures": ["GptOssForCausalLM"], "attention_bias": True, "attention_dropout": 0.0, "eos_token_id": 200002,
    "experts_per_token": 4, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2880, "initial_context_length": 4096,
    "initializer_range": 0.02, "intermediate_size": 2880, "layer_types": ["sliding_attention", "full_attention"] * 18,
    "max_position_embeddings": 131072, "model_type": "gpt_oss", "num_attention_heads": 64, "num_experts_per_tok": 4,
    "num_hidden_layers": 36, "num_key_value_heads": 8, "num_local_experts": 128, "output_router_logits": False,
    "pad_token_id": 199999,
    "quantization_config": {
        "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"],
        "quant_method": "mxfp4",
    },
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096, "rope_type": "yarn",
        "truncate": False,
    },
    "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0,
    "tie_word_embeddings": False, "transformers_version": "4.55.0.dev0", "use_cache": True, "vocab_size": 201088,
}


def test_openai_gpt_oss_config_reads_as_the_zoo_config_once_dequantized():
    from zoo import config

    with pytest.raises(HFConfigError, match="quantized checkpoints .* are not supported"):
        config_to_zoo(OPENAI_GPT_OSS_120B)
    dequantized = config_to_zoo({k: v for k, v in OPENAI_GPT_OSS_120B.items() if k != "quantization_config"})
    assert dequantized.eos_ids == (200002,) and dequantized.moe.load_balance_coef == 0.9
    architecture = lambda model: dataclasses.replace(  # without dtypes, ids and training coefficients
        model, dtype="float32", param_dtype="float32", eos_ids=(), moe=dataclasses.replace(model.moe, load_balance_coef=0.0, z_loss_coef=0.0)
    )
    assert architecture(dequantized) == architecture(config.load("gpt-oss-120b").model)
