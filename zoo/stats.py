"""Model statistics computed from shapes alone: parameter counts, KV-cache bytes and training
FLOPs per token; `python -m zoo.stats CONFIG [--json]` prints them for a config."""

from __future__ import annotations

import json
import math

import jax
from flax import nnx

from zoo import config
from zoo.console import ArgumentParser
from zoo.layers.attention import KVCache
from zoo.layers.recurrent import RecurrentCache
from zoo.models import Model, build


def _named_sizes(params: nnx.State) -> list[tuple[str, int]]:
    """(path, size) of every parameter (not other state, like routers' balancing biases)."""
    leaves = jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    return [
        ("/".join(str(getattr(k, "key", k)) for k in path), math.prod(v.shape))
        for path, v in leaves
        if isinstance(v, nnx.Param)
    ]


def _active_share(model: Model, name: str) -> float:
    """The share of a parameter each token uses: top_k / E of routed experts' weights, else all."""
    moe = model.config.moe
    return moe.top_k / moe.num_experts if moe is not None and "/experts/" in name else 1.0


def total_params(model: Model) -> int:
    return sum(size for _, size in _named_sizes(model.abstract_params))


def active_params(model: Model) -> int:
    """Parameters one token passes through: all but the routed experts it is not sent to."""
    return round(sum(size * _active_share(model, name) for name, size in _named_sizes(model.abstract_params)))


def matmul_params(model: Model) -> int:
    """Parameters one token multiplies by: every linear weight, the routed experts it is sent to,
    the router, and the embedding table when it is also the output projection (a lookup alone
    costs no FLOPs)."""
    count = 0.0
    for name, size in _named_sizes(model.abstract_params):
        is_matrix = name.endswith("/weight") or "/experts/" in name or (name == "embedding/table" and model.config.tie_embeddings)
        if is_matrix:
            count += size * _active_share(model, name)
    return round(count)


def flops_per_token(model: Model, seq_len: int) -> int:
    """Training FLOPs per token, 6 N + 6 L H (Dqk + Dv) T (PaLM, Chowdhery et al. 2022, appendix B),
    plus the recurrent mixers' state products.

    N: matmul parameters (forward 2N, backward 4N); the second term is the attention score
    (query-key width Dqk) and value (width Dv) products of the L attention layers over a
    context of T = seq_len, causal masking and windows not discounted. Dqk = Dv = head_dim
    (PaLM's 12 L H Dh T) but for MLA, whose widths are qk_nope_head_dim + qk_rope_head_dim and
    v_head_dim. A recurrent layer costs three times its forward's state products per token,
    counted in the recurrent form: Mamba-2 12 H P N (the state's update and read-out), Gated
    DeltaNet 18 H Dk Dv (its read of k, update and read-out).
    """
    config = model.config
    attention = config.attention
    if attention.kind == "mla":
        qk_width, v_width = attention.qk_nope_head_dim + attention.qk_rope_head_dim, attention.v_head_dim
    else:
        qk_width = v_width = config.head_dim
    mixers = attention.layer_mixers()
    layers = [mixers[i % len(mixers)] for i in range(config.num_layers)]
    per_layer = {"attention": 6 * config.num_heads * (qk_width + v_width) * seq_len}
    if config.mamba2 is not None:
        per_layer["mamba2"] = 12 * config.mamba2.num_heads * config.mamba2.head_dim * config.mamba2.state_dim
    if config.gated_deltanet is not None:
        sizes = config.gated_deltanet
        per_layer["gated_deltanet"] = 18 * sizes.num_heads * sizes.key_dim * sizes.value_dim
    return 6 * matmul_params(model) + sum(per_layer[part] for mixer in layers for part in mixer.split("+"))


def _cache_bytes(model: Model, context: int, kind: type, arrays) -> int:
    """Bytes of the `arrays(cache)` of every cache of `kind` in the model's cache for one sequence of `context` tokens."""
    cache = jax.eval_shape(lambda: model.init_cache(batch=1, length=context))
    caches = [c for c in jax.tree.leaves(cache, is_leaf=lambda x: isinstance(x, kind)) if isinstance(c, kind)]
    return sum(math.prod(a.shape) * a.dtype.itemsize for c in caches for a in arrays(c).values())


def kv_cache_bytes(model: Model, context: int) -> int:
    """Bytes of cached keys/values (or MLA latents) for one sequence of `context` tokens, at the
    compute dtype: windowed layers hold at most `window` tokens. Slot bookkeeping (positions,
    segment ids) and an encoder-decoder's memory are not counted. Allocates nothing."""
    return _cache_bytes(model, context, KVCache, lambda cache: cache.entries)


def recurrent_state_bytes(model: Model) -> int:
    """Bytes of the recurrent mixers' states (Mamba-2, Gated DeltaNet) for one sequence: one size
    however long the context (convolution histories at the compute dtype, states in float32)."""
    return _cache_bytes(model, 1, RecurrentCache, lambda cache: cache.states)


def kv_cache_bytes_per_token(model: Model, context: int | None = None) -> float:
    """kv_cache_bytes over `context` tokens (default the model's max_seq_len), per token."""
    context = context or model.config.max_seq_len
    return kv_cache_bytes(model, context) / context


def summary(model: Model, seq_len: int | None = None) -> dict:
    """The figures `python -m zoo.stats` prints, for a context of `seq_len` (default max_seq_len)."""
    seq_len = seq_len or model.config.max_seq_len
    return {
        "total_params": total_params(model),
        "active_params": active_params(model),
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(model, seq_len) if model.config.kind != "encoder" else 0.0,
        "recurrent_state_bytes": recurrent_state_bytes(model) if model.config.kind == "decoder" else 0,
        "flops_per_token": flops_per_token(model, seq_len),
        "seq_len": seq_len,
    }


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m zoo.stats", description="Parameter counts, KV-cache and recurrent-state sizes and training FLOPs of a config, from shapes alone."
    )
    parser.add_argument("config", help="a config name in configs/ (e.g. llama3-8b) or a path to a TOML file")
    parser.add_argument("--seq-len", type=int, help="context for the KV cache and attention FLOPs (default: model.max_seq_len)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        model_config = config.load(args.config).model
    except config.ConfigError as error:
        parser.error(str(error))
    if args.seq_len is not None and not 0 < args.seq_len <= model_config.max_seq_len:
        parser.error(f"--seq-len must be in 1..{model_config.max_seq_len:,} (model.max_seq_len), got {args.seq_len:,}")
    figures = summary(build(model_config), args.seq_len)
    if args.json:
        print(json.dumps(figures))
        return
    dtype = model_config.dtype
    print(f"{args.config}: {model_config.kind}, {model_config.num_layers} layers, d_model {model_config.d_model}")
    print(f"  total parameters      {figures['total_params']:>20,}")
    print(f"  active per token      {figures['active_params']:>20,}")
    print(f"  KV cache per token    {figures['kv_cache_bytes_per_token']:>20,.0f} bytes ({dtype}, {figures['seq_len']:,}-token context)")
    if figures["recurrent_state_bytes"]:
        print(f"  recurrent state       {figures['recurrent_state_bytes']:>20,} bytes per sequence (any context)")
    states = " + the mixers' state products" if figures["recurrent_state_bytes"] else ""
    print(f"  training FLOPs/token  {figures['flops_per_token']:>20,} (6 N + 6 L H (Dqk + Dv) T: PaLM appendix B{states})")


if __name__ == "__main__":
    main()
