"""Model statistics computed from shapes alone: parameter counts, KV-cache bytes and training
FLOPs per token; `python -m zoo.stats CONFIG [--json]` prints them for a config."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
from flax import nnx

from zoo import config, plan
from zoo.console import ArgumentParser
from zoo.hardware import ACCELERATORS
from zoo.layers.attention import KVCache
from zoo.layers.recurrent import RecurrentCache
from zoo.models import Model, build
from zoo.models.wiring import layer_specs


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


def trainable_params(model: Model) -> int:
    """Parameters a training step updates: the LoRA adapters of a model with them, else all."""
    if model.lora is None:
        return total_params(model)
    return sum(math.prod(v.shape) for v in jax.tree.leaves(model.abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable)) if isinstance(v, nnx.LoRAParam))


def active_params(model: Model) -> int:
    """Parameters one token passes through: all but the routed experts it is not sent to."""
    return round(sum(size * _active_share(model, name) for name, size in _named_sizes(model.abstract_params)))


def matmul_params(model: Model, *, adapters: bool = False) -> int:
    """Parameters one token multiplies by: every linear weight, the routed experts it is sent to,
    the router, and the embedding table when it is also the output projection (a lookup alone
    costs no FLOPs). `adapters`: the LoRA adapters' instead (the routed experts' by the same share)."""
    count = 0.0
    for name, size in _named_sizes(model.abstract_params):
        adapter = "_lora/" in name
        tied_table = name.endswith("embedding/table") and model.config.tie_embeddings
        if adapter if adapters else not adapter and (name.endswith("/weight") or "/experts/" in name or tied_table):
            count += size * _active_share(model, name)
    return round(count)


def attended_keys(seq_len: int, *, causal: bool, window: int | None = None, chunk: int | None = None) -> float:
    """The mean number of keys a query of a `seq_len`-token sequence attends to: (T + 1) / 2 when
    causal (the mask halves the [T, T] products), T when not; a window of w keeps min(t + 1, w)
    of them (both sides when not causal), a chunk of c those of the query's own chunk."""
    t = np.arange(seq_len)
    if window is not None:
        keys = np.minimum(t + 1, window) if causal else np.minimum(t, window - 1) + np.minimum(seq_len - 1 - t, window - 1) + 1
    elif chunk is not None:
        keys = t % chunk + 1 if causal else np.minimum(chunk, seq_len - t // chunk * chunk)
    else:
        keys = t + 1 if causal else np.full(seq_len, seq_len)
    return float(keys.mean())


def flops_per_token(model: Model, seq_len: int, *, masked: bool = True) -> int:
    """Training FLOPs per token of a `seq_len`-token sequence: 6 N + 6 H (Dqk + Dv) K summed over the
    attention layers, plus the recurrent mixers' state products.

    N: matmul parameters (forward 2N, backward 4N); the second term is each attention layer's
    score (query-key width Dqk) and value (width Dv) products with the K keys a query sees.
    `masked` (the convention of MaxText and of zoo's MFU): K = attended_keys, so causal masking
    halves the products and a window or chunk bounds them. Not `masked`: K = T for every layer,
    PaLM's 6 N + 12 L H Dh T (Chowdhery et al. 2022, appendix B), which published MFUs often
    use. Dqk = Dv = head_dim but for MLA, whose widths are qk_nope_head_dim + qk_rope_head_dim
    and v_head_dim. A recurrent layer costs three times its forward's state products per token,
    counted in the recurrent form: Mamba-2 12 H P N (the state's update and read-out), Gated
    DeltaNet 18 H Dk Dv (its read of k, update and read-out).

    A LoRA model's frozen weights cost 4 N (the forward and their input's gradient; no gradient of
    their own), its adapters 6 N_A (matmul_params(adapters=True)).

    An encoder-decoder's figure is per target token, its source `seq_len` tokens long too (so N
    counts both towers): the encoder's layers see every source token (bidirectional, windows
    bounding it), each decoder layer's cross-attention every source token, masked or not.
    """
    config = model.config
    attention = config.attention
    if attention.kind == "mla":
        qk_width, v_width = attention.qk_nope_head_dim + attention.qk_rope_head_dim, attention.v_head_dim
    else:
        qk_width = v_width = config.head_dim
    per_key = 6 * config.num_heads * (qk_width + v_width)
    recurrent = {}
    if config.mamba2 is not None:
        recurrent["mamba2"] = 12 * config.mamba2.num_heads * config.mamba2.head_dim * config.mamba2.state_dim
    if config.gated_deltanet is not None:
        sizes = config.gated_deltanet
        recurrent["gated_deltanet"] = 18 * sizes.num_heads * sizes.key_dim * sizes.value_dim
    towers = [(config.num_layers, config.kind != "encoder", config.kind == "encoder_decoder")]  # (depth, causal, cross)
    if config.kind == "encoder_decoder":
        towers.append((config.encoder_layers or config.num_layers, False, False))
    frozen = model.lora is not None
    total = (4 if frozen else 6) * matmul_params(model) + (6 * matmul_params(model, adapters=True) if frozen else 0)
    for depth, causal, cross in towers:
        for spec in layer_specs(config, depth):
            total += per_key * seq_len if cross else 0
            for part in spec.mixer.split("+"):
                if part != "attention":
                    total += recurrent[part]
                elif masked:
                    total += per_key * attended_keys(seq_len, causal=causal, window=spec.window, chunk=spec.chunk)
                else:
                    total += per_key * seq_len
    return round(total)


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


def weight_bytes(model: Model) -> dict[str, int]:
    """Bytes of the params held each way: "float32" and "bfloat16" (every parameter), and each
    scheme of zoo.layers.quantized (the weights it quantizes, linear layers' and experts', with
    their scales; the rest, embeddings, norms and the output projection, at model.param_dtype)."""
    from zoo.layers.quantized import SCHEMES, quantizable, weight_bytes as held_bytes

    weights = list(quantizable(model.bind(model.abstract_params)))
    total = total_params(model)
    rest = (total - sum(math.prod(w.shape) for _, w, _, _ in weights)) * np.dtype(model.config.param_dtype).itemsize
    figures = {"float32": 4 * total, "bfloat16": 2 * total}
    for scheme in SCHEMES:
        figures[scheme] = rest + sum(held_bytes(tuple(w.shape), lead, num_in, scheme) for _, w, lead, num_in in weights)
    return figures


STACKS = ("tower", "encoder", "decoder", "layers", "first_layers", "blocks")  # containers, not components


def mixer_names(model: Model) -> dict[tuple[str, ...], str | None]:
    """Module paths whose name in a parameter path says too little, and what to call them instead:
    a recurrent mixer in a layer's attention slot "mamba2" or "deltanet", and a layer's side-by-side
    mixers (zoo.layers.parallel_mixers) nothing, so that each of them names its own parameters."""
    from zoo.layers.parallel_mixers import ParallelMixers
    from zoo.layers.recurrent.gated_deltanet import GatedDeltaNet
    from zoo.layers.recurrent.mamba2 import Mamba2

    kinds = {Mamba2: "mamba2", GatedDeltaNet: "deltanet", ParallelMixers: None}
    return {
        tuple(map(str, path)): kinds[type(module)]
        for path, module in nnx.iter_graph(model.bind(model.abstract_params))
        if type(module) in kinds
    }


def component(name: str) -> str:
    """The part of the model a parameter path ("tower/layers/attention/q/weight") belongs to:
    "embedding", "attention.q", "ffn.experts" (routed), "ffn.shared", "ffn.router", "ffn.up",
    "mamba2.x", "deltanet.q", "norms", "positions", "output head", ... (a recurrent mixer's
    path named as mixer_names says); an encoder-decoder's tower parts are named with their
    tower's ("encoder.attention.q", "decoder.cross_attention.q"); its embedding is shared."""
    names = name.split("/")
    tower = f"{names[0]}." if names[0] in ("encoder", "decoder") else ""
    parts = [p for p in names if p not in STACKS and not p.isdigit()]
    if parts[0] in ("embedder", "head"):
        return {"embedder": "embedding", "head": "output head"}[parts[0]] if len(parts) < 2 or parts[1] != "positions" else "positions"
    if parts[0] == "position_scheme":  # a tower's relative position bias
        return tower + "positions"
    if any(p.endswith("norm") for p in parts[:-1]):
        return tower + "norms"
    return tower + ".".join(parts[:2])


def breakdown(model: Model) -> dict[str, dict[str, float]]:
    """{component: params, share of all, active params, bytes at param_dtype, layers holding it
    (None when some of it sits outside the layers, as the final norm does), params per such
    layer}, largest first; params and active params sum to total_params and active_params."""
    from zoo.layers.param import stacked_dims

    itemsize = np.dtype(model.config.param_dtype).itemsize
    total = total_params(model)
    renamed = mixer_names(model)
    parts: dict[str, dict] = {}
    for path, variable in model.abstract_params.flat_state():
        if not isinstance(variable, nnx.Param):
            continue
        names = [str(p) for p in path]
        name, size, lead = "/".join(names), math.prod(variable.shape), stacked_dims(variable)
        shown = [renamed.get(tuple(names[: i + 1]), n) for i, n in enumerate(names)]
        entry = parts.setdefault(component("/".join(n for n in shown if n is not None)), {"params": 0, "active": 0.0, "stacks": {}})
        entry["params"] += size
        entry["active"] += size * _active_share(model, name)
        stack = tuple(n for n in names[: next(i for i, n in enumerate(names) if n not in STACKS and not n.isdigit())])
        entry["stacks"][stack] = math.prod(variable.shape[:lead]) if lead else None
    out = {}
    for name, entry in sorted(parts.items(), key=lambda item: -item[1]["params"]):
        depths = list(entry["stacks"].values())
        layers = None if None in depths else sum(depths)
        out[name] = {
            "params": entry["params"], "share": entry["params"] / total, "active": round(entry["active"]),
            "bytes": entry["params"] * itemsize, "layers": layers, "per_layer": entry["params"] // layers if layers else None,
        }
    return out


def summary(model: Model, seq_len: int | None = None) -> dict:
    """The figures `python -m zoo.stats` prints, for a context of `seq_len` (default max_seq_len)."""
    seq_len = seq_len or model.config.max_seq_len
    return {
        "total_params": total_params(model),
        "active_params": active_params(model),
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(model, seq_len) if model.config.kind != "encoder" else 0.0,
        "recurrent_state_bytes": recurrent_state_bytes(model) if model.config.kind == "decoder" else 0,
        "flops_per_token": flops_per_token(model, seq_len),
        "flops_per_token_unmasked": flops_per_token(model, seq_len, masked=False),
        "seq_len": seq_len,
        "weight_bytes": weight_bytes(model),
    }


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m zoo.stats", description="Parameter counts, KV-cache and recurrent-state sizes and training FLOPs of a config, from shapes alone."
    )
    parser.add_argument("config", help="a config name in configs/ (e.g. llama3-8b) or a path to a TOML file")
    parser.add_argument("--seq-len", type=int, help="context for the KV cache and attention FLOPs (default: model.max_seq_len)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--breakdown", action="store_true", help="parameters by component (embedding, attention by projection, experts, ...)")
    planning = parser.add_argument_group("memory plan (with --plan)")
    planning.add_argument("--plan", action="store_true", help="memory per device of a training run on a mesh, and whether it fits")
    planning.add_argument("--mesh", default="data=1", help="mesh axis sizes, e.g. fsdp=64,tensor=4 (default data=1: one device)")
    planning.add_argument("--batch", type=int, help="global batch in rows (default train.batch_size)")
    planning.add_argument("--seq", type=int, help="tokens per row (default train.seq_len)")
    planning.add_argument("--remat", help="remat policy (default model.remat)")
    planning.add_argument("--optimizer", default="adamw", help="adamw (train.py's), lion or sgd")
    planning.add_argument("--lora", type=int, metavar="RANK", help="train LoRA adapters of this rank on a frozen base")
    planning.add_argument("--device", help=f"an accelerator to fit: {', '.join(ACCELERATORS)}")
    args = parser.parse_args(argv)
    given = [flag for flag in ("mesh", "batch", "seq", "remat", "lora", "device") if getattr(args, flag) != parser.get_default(flag)]
    if args.optimizer != "adamw":
        given.append("optimizer")
    if given and not args.plan:
        parser.error(f"--{given[0]} is a --plan setting; add --plan")
    if args.device is not None and args.device not in ACCELERATORS:
        parser.error(f"--device {args.device!r}: choose one of {', '.join(ACCELERATORS)}")
    try:
        whole = config.load(args.config)
    except config.ConfigError as error:
        parser.error(str(error))
    model_config = whole.model
    if args.seq_len is not None and not 0 < args.seq_len <= model_config.max_seq_len:
        parser.error(f"--seq-len must be in 1..{model_config.max_seq_len:,} (model.max_seq_len), got {args.seq_len:,}")
    model = build(model_config)
    figures = summary(model, args.seq_len)
    if args.breakdown:
        figures["breakdown"] = breakdown(model)
    if args.plan:
        try:
            memory = plan.plan(
                whole, plan.MeshShape.parse(args.mesh), batch=args.batch, seq=args.seq, remat=args.remat,
                optimizer=args.optimizer, lora=args.lora,
            )
        except plan.PlanError as error:
            parser.error(str(error))
        accelerator = None if args.device is None else ACCELERATORS[args.device]
        figures["plan"] = plan.as_data(memory, accelerator, whole.train.grad_accumulation)
    if args.json:
        print(json.dumps(figures))
        return
    dtype = model_config.dtype
    depth = f"{model_config.num_layers} layers"
    if model_config.kind == "encoder_decoder":
        depth = f"{model_config.encoder_layers or model_config.num_layers} encoder + {model_config.num_layers} decoder layers"
    print(f"{args.config}: {model_config.kind}, {depth}, d_model {model_config.d_model}")
    print(f"  total parameters      {figures['total_params']:>20,}")
    print(f"  active per token      {figures['active_params']:>20,}")
    print(f"  KV cache per token    {figures['kv_cache_bytes_per_token']:>20,.0f} bytes ({dtype}, {figures['seq_len']:,}-token context)")
    if figures["recurrent_state_bytes"]:
        print(f"  recurrent state       {figures['recurrent_state_bytes']:>20,} bytes per sequence (any context)")
    states = " + the mixers' state products" if figures["recurrent_state_bytes"] else ""
    print(f"  training FLOPs/token  {figures['flops_per_token']:>20,} (6 N + 6 H (Dqk + Dv) x the keys each query sees{states})")
    print(f"    every key, unmasked {figures['flops_per_token_unmasked']:>20,} (PaLM's 6 N + 12 L H Dh T)")
    held = figures["weight_bytes"]
    print("  weights              " + " | ".join(f"{name} {held[name] / 1e9:,.2f} GB" for name in held))
    if args.breakdown:
        print(f"\n  {'component':<26} {'params':>16} {'share':>7} {'active':>16} {model_config.param_dtype + ' bytes':>16} {'per layer':>14} layers")
        for name, part in figures["breakdown"].items():
            print(
                f"  {name:<26} {part['params']:>16,} {part['share']:>7.1%} {part['active']:>16,} {part['bytes']:>16,} "
                f"{'-' if part['per_layer'] is None else format(part['per_layer'], ','):>14} {part['layers'] or '-':>6}"
            )
    if args.plan:
        print()
        for line in plan.describe(memory, accelerator, whole.train.grad_accumulation):
            print(f"  {line}")


if __name__ == "__main__":
    main()
