"""The small random transformers models the Hugging Face parity tests import: one case per
family and variant, built at SIZES with its own settings."""

import pytest

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
    "mamba2": (  # 8 heads of 8 in 2 groups (B and C shared by 4 heads each), steps clamped to [0, 2]
        "Mamba2Config",
        {"num_heads": 8, "head_dim": 8, "expand": 2, "state_size": 8, "n_groups": 2, "chunk_size": 8, "time_step_limit": [0.0, 2.0]},
    ),
    "bamba": (  # Mamba-2 layers with attention in layers 1 and 3 (RoPE over half of each head), a SwiGLU after every mixer
        "BambaConfig",
        {
            "num_hidden_layers": 4, "attn_layer_indices": [1, 3], "mamba_n_heads": 8, "mamba_d_head": 8, "mamba_expand": 2,
            "mamba_d_state": 8, "mamba_n_groups": 2, "mamba_chunk_size": 8, "max_position_embeddings": 64,
        },
    ),
    "qwen3-next": (  # 3 Gated DeltaNet layers to 1 of gated attention, QK-norm; experts with a gated shared expert in every layer
        "Qwen3NextConfig",
        {
            "num_hidden_layers": 4, "head_dim": 8, "linear_num_value_heads": 4, "linear_num_key_heads": 2,
            "linear_key_head_dim": 8, "linear_value_head_dim": 8, "num_experts": 4, "num_experts_per_tok": 2,
            "moe_intermediate_size": 16, "shared_expert_intermediate_size": 24,
        },
    ),
    "falcon-h1": (  # attention and Mamba-2 side by side in every layer; every muP multiplier away from 1, untied
        "FalconH1Config",
        {
            "head_dim": 16, "mamba_d_ssm": 64, "mamba_n_heads": 8, "mamba_d_head": 8, "mamba_n_groups": 2, "mamba_d_state": 8,
            "mamba_chunk_size": 8, "attention_bias": True, "mlp_bias": True, "mamba_proj_bias": True, "projectors_bias": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 500.0},
            "embedding_multiplier": 3.0, "lm_head_multiplier": 0.5, "attention_in_multiplier": 0.7, "key_multiplier": 1.3,
            "attention_out_multiplier": 0.8, "ssm_in_multiplier": 1.2, "ssm_out_multiplier": 0.6, "mlp_multipliers": [1.5, 0.4],
            "ssm_multipliers": [0.9, 1.1, 0.5, 2.0, 1.4],
        },
    ),
    "falcon-h1-normed-tied": (  # its mixer's gated RMSNorm over groups, normalising before the gate; tied embeddings
        "FalconH1Config",
        {
            "mamba_d_ssm": 64, "mamba_n_heads": 4, "mamba_d_head": 16, "mamba_n_groups": 2, "mamba_d_state": 4,
            "mamba_rms_norm": True, "tie_word_embeddings": True,
            "embedding_multiplier": 2.0, "lm_head_multiplier": 2.0,
        },
    ),
    "mamba2-biased-tied": (
        "Mamba2Config",
        {"num_heads": 4, "head_dim": 16, "expand": 2, "state_size": 4, "n_groups": 1, "use_bias": True, "tie_word_embeddings": True},
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
            if name.endswith(("A_log", "dt_bias", ".D")):  # Mamba-2's decays and skips: one value per head at start
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith(".D") else 0.0))
            if "shared_expert_gate" in name:  # at its initial scale the gate is about 0.5 for every token
                p.copy_(torch.randn_like(p))
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # a balancing bias that changes which experts are picked
                buffer.copy_(torch.randn_like(buffer))
    return model
