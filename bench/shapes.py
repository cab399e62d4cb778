"""The model shapes of issue 9's benchmarks, and the small ones `--small` swaps in for a CPU smoke run.

Each is a `[model]` table for `zoo.config.ModelConfig.from_dict`; the scripts add the
dtypes, remat policy and attention kernel.
"""

from __future__ import annotations

# TinyLlama 1.1B (Zhang et al. 2024): Llama 2's architecture with GQA, untied embeddings
TINYLLAMA = dict(
    vocab_size=32000, d_model=2048, num_layers=22, num_heads=32, num_kv_heads=4, head_dim=64, ffn_dim=5632,
    tie_embeddings=False, max_seq_len=2048,
)

# Mixtral's layout (8 SwiGLU experts in every layer, softmax top-2 renormalised) at d_model 2048,
# 16 layers. Experts are 1408 wide (a quarter of TinyLlama's ffn): at 5632 the model would hold
# 4.8B parameters, and float32 params, gradients and AdamW moments (16 bytes each) would not fit
# in one 80 GB GPU. ffn_dim equals the experts' width, as in Mixtral (and Hugging Face's config).
MIXTRAL = dict(
    vocab_size=32000, d_model=2048, num_layers=16, num_heads=16, num_kv_heads=8, head_dim=128, ffn_dim=1408,
    tie_embeddings=False, max_seq_len=2048, moe=dict(num_experts=8, top_k=2, expert_ffn_dim=1408, router="softmax"),
)

SMALL = dict(
    vocab_size=512, d_model=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=32, ffn_dim=352,
    tie_embeddings=False, max_seq_len=512,
)
SMALL_MOE = SMALL | dict(moe=MIXTRAL["moe"] | dict(expert_ffn_dim=SMALL["ffn_dim"]))


def tinyllama(small: bool) -> dict:
    return SMALL if small else TINYLLAMA


def mixtral(small: bool) -> dict:
    return SMALL_MOE if small else MIXTRAL


# The long-context decode case (issue 17): TinyLlama's shape at 24 layers, the same with three
# Mamba-2 layers to each attention layer (64 heads of 64 = expand 2, a state of 128), as Jamba and
# Bamba do, and with that attention layer a 1024-token sliding window instead, all reaching 32K
# tokens; --small shrinks the widths, not the contexts.
LONG_ATTENTION = TINYLLAMA | dict(num_layers=24, max_seq_len=32768 + 256)
LONG_HYBRID = LONG_ATTENTION | dict(
    attention=dict(layer_pattern=["mamba2"] * 3 + ["global"]), mamba2=dict(num_heads=64, head_dim=64, state_dim=128)
)
LONG_WINDOWED = LONG_HYBRID | dict(attention=dict(layer_pattern=["mamba2"] * 3 + ["local"], window=1024))
SMALL_LONG_ATTENTION = SMALL | dict(num_layers=4, max_seq_len=32768 + 256)
SMALL_LONG_HYBRID = SMALL_LONG_ATTENTION | dict(
    attention=dict(layer_pattern=["mamba2"] * 3 + ["global"]), mamba2=dict(num_heads=8, head_dim=32, state_dim=16, scan_chunk=128)
)


def long_context(small: bool) -> dict[str, dict]:
    """The attention-only and the two hybrid models of the long-context decode case, by name."""
    if small:
        models = SMALL_LONG_ATTENTION, SMALL_LONG_HYBRID, SMALL_LONG_HYBRID | {"attention": LONG_WINDOWED["attention"]}
    else:
        models = LONG_ATTENTION, LONG_HYBRID, LONG_WINDOWED
    return dict(zip(("attention only", "mamba-2 hybrid (3:1)", "mamba-2 + 1K sliding window (3:1)"), models))
