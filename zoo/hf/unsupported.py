"""Hugging Face causal-LM families zoo does not import, and what each one lacks.

The survey behind it read the decoder layer, attention, MLP/MoE, norm and rotary code of every
causal LM in transformers 5.24. `MISSING` names, for a family that needs a piece zoo does not
have, that piece; `NOT_WRITTEN` lists families made only of zoo's pieces whose importer does
not exist yet. An import of either stops with a line that says which.
"""

from __future__ import annotations

_PIECES = {  # piece -> the model_types that need it
    "a Mamba-1 mixer": "mamba falcon_mamba jamba zamba",
    "Mamba-2 in its layout (layers of one sublayer, or a shared attention block)": "nemotron_h zamba2 granitemoehybrid",
    "Qwen3.5's M-RoPE sections (its Gated DeltaNet and gated attention are Qwen3-Next's)": (
        "qwen3_5 qwen3_5_text qwen3_5_moe qwen3_5_moe_text"
    ),
    "OLMo-Hybrid's own Gated DeltaNet layout, not yet read against zoo's": "olmo_hybrid",
    "another recurrent or linear-attention mixer (RG-LRU, RWKV, xLSTM, short convolutions, lightning attention)": (
        "recurrent_gemma rwkv xlstm lfm2 lfm2_moe lfm3 minimax kimi_linear bailing_hybrid"
    ),
    "interleaved (GPT-J-style) RoPE for grouped-query attention": "glm glm4 helium ernie4_5 ernie4_5_moe cohere cohere2 gptj codegen",
    "Granite's constant embedding, residual and logit multipliers": "granite granitemoe granitemoeshared minicpm3",
    "the relu^2 activation": "arcee nemotron jais2 nanochat persimmon",
    "the xIELU activation": "apertus",
    "a gate on the attention output": "afmoe laguna",
    "a lightning indexer shared across layers, or gated MLA": "glm_moe_dsa axk2",
    "the SparseMixer router": "phimoe",
    "a bias on the output layer of a decoder": "phi",
    "QK-norm after RoPE": "hunyuan_v1_dense hunyuan_v1_moe",
    "differential attention": "diffllama",
    "per-layer key/value head counts and KV sharing": "mimo_v2_flash gemma3n_text gemma4_text",
}
MISSING: dict[str, str] = {model_type: piece for piece, types in _PIECES.items() for model_type in types.split()}

# made of zoo's pieces, but no importer yet
NOT_WRITTEN = frozenset(
    "gemma glm4_moe smollm3 olmo3 ministral minimax_m2 exaone4 gpt_bigcode opt gpt_neo mpt stablelm dots1 dbrx "
    "seed_oss vaultgemma cwm flex_olmo".split()
)


def why_not(model_type: str) -> str | None:
    """Why zoo does not import `model_type`, in a clause, or None when zoo has no word on it."""
    if model_type in MISSING:
        return f"it needs {MISSING[model_type]}, which zoo does not have yet"
    if model_type in NOT_WRITTEN:
        return "zoo has its pieces but no importer for it yet"
    return None
