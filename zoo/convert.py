"""Architecture surgery on a trained run: a cheaper model that starts from its weights.

    python -m zoo.convert RUN OUT --to gqa --kv-heads K [--init mean|first]
    python -m zoo.convert RUN OUT --to mla --kv-rank R [--rope-dim D] [--calibrate N]
    python -m zoo.convert RUN OUT --to moe --experts E --top-k k [--shared] [--noise S]

gqa (Ainslie et al. 2023): each group of the key/value heads becomes one head, its key and
value projections (and biases, and key-norm scales kept per head) the group's mean, or its
first head's with `--init first`. Every query head keeps attending to the group it was in,
so K = the current number of heads gives the same model.

mla (as TransMLA and MHA2MLA convert): the unrotated key dims and the values of every
key/value head are factorised by SVD into a shared latent of rank R and per-head
up-projections; the rotated dims (or their `--rope-dim` fastest pairs) become MLA's one RoPE
key, the key/value heads' mean. Exact for one key/value head at full rank; see to_mla.
`--calibrate N` fits the factors to the keys and values of N tokens of the run's held-out
text instead of to the weights alone (SVD-LLM's whitening): each layer's truncation then
loses the least of what that layer actually computes on such text.

moe (sparse upcycling, Komatsuzaki et al. 2023): every feed-forward becomes E experts that
start as copies of it, behind a fresh softmax router choosing top-k with renormalised
weights: the weights sum to one, so the upcycled model computes what the dense one did until
training moves the experts apart (`--noise S` perturbs each copy by S times its weights'
spread to break the symmetry at once). `--shared` keeps a copy as a shared expert too, each
side's output projection halved so that the sum is again the dense feed-forward.

Each writes a normal run directory (config, tokenizer, params; conversion.json says what was
done) that `train.py --set train.init_from=OUT` uptrains and sample.py reads. A LoRA run is
converted with its adapters folded in.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from zoo import config as zoo_config
from zoo import runs
from zoo.console import ArgumentParser
from zoo.hf import mapping
from zoo.models import build
from zoo.new_run import check_new_run_directory, write_run
from zoo.rundir import RunError, write_atomically

CONVERSION = "conversion.json"  # in the new run: where it came from and what was changed


class ConversionError(ValueError):
    """A conversion the source run cannot take."""


def _axes(params) -> dict[tuple, tuple]:
    """{path: logical axis names} of every parameter of an (abstract) params State."""
    return {tuple(str(k) for k in path): v.get_metadata("logical_axes", ()) for path, v in params.flat_state()}


def to_gqa(model_config: zoo_config.ModelConfig, params, kv_heads: int, init: str = "mean"):
    """(the config with `kv_heads` key/value heads, params with each group of heads pooled)."""
    current = model_config.num_kv_heads
    if model_config.attention.kind != "gqa":
        raise ConversionError(f"--to gqa pools the key/value heads of GQA attention; this model's attention is {model_config.attention.kind}")
    if init not in ("mean", "first"):
        raise ConversionError(f"--init is mean or first, got {init!r}")
    if not 0 < kv_heads <= current or current % kv_heads:
        divisors = [k for k in range(1, current + 1) if current % k == 0]
        raise ConversionError(f"--kv-heads {kv_heads} does not group the model's {current} key/value heads; choose one of {divisors}")
    target = dataclasses.replace(model_config, num_kv_heads=kv_heads)
    group = current // kv_heads
    source_axes = _axes(build(model_config).abstract_params)
    flat = {}
    for path, value in mapping.flatten(params).items():
        value = np.asarray(value)
        axes = source_axes[tuple(map(str, path))]
        if "kv_heads" in axes:
            axis = axes.index("kv_heads")
            grouped = value.reshape(*value.shape[:axis], kv_heads, group, *value.shape[axis + 1 :])
            value = grouped.mean(axis=axis + 1) if init == "mean" else np.take(grouped, 0, axis=axis + 1)
        flat[path] = value
    return target, _filled(target, flat)


def mla_dims(model_config: zoo_config.ModelConfig, rope_dim: int | None = None) -> tuple[int, int, int]:
    """(MLA's RoPE key width, its unrotated dims dn, the full latent rank) for a GQA model: of each
    head's R = rotary_fraction x Dh rotated dims, the `rope_dim` of its highest-frequency pairs
    (default all R) become the shared RoPE key; the other dims and the values pass through the
    latent, which holds all of them at rank K (dn + Dh)."""
    head_dim, kv_heads = model_config.head_dim, model_config.num_kv_heads
    rotated = int(head_dim * model_config.position.rotary_fraction) if model_config.position.kind == "rope" else 0
    kept = rotated if rope_dim is None else rope_dim
    return kept, head_dim - kept, min(model_config.d_model, kv_heads * (2 * head_dim - kept))


def to_mla(model_config: zoo_config.ModelConfig, params, kv_rank: int, rope_dim: int | None = None, covariances: dict | None = None):
    """(the config with MLA attention of latent rank `kv_rank`, its params): per layer, the stacked
    unrotated key and value projections W [D, K (dn + Dh)] factorised by SVD into the latent's
    down-projection [D, r] and each head's up-projection [r, dn + Dh], the rank-r product
    nearest W, or with `covariances` (from attention_input_covariances: C = XᵀX of each
    layer's inputs X) the one whose keys and values X·down·up are nearest XW; the kept rotated key dims,
    one RoPE key shared by every head, the mean over the key/value heads (exact with one);
    queries and the output projection as they were. With a `rope_dim` below the rotated dims,
    the highest-frequency pairs keep their rotation (MLA's RoPE base is chosen so that their
    frequencies stay the same) and the others lose it (MHA2MLA's partial RoPE)."""
    attention, position = model_config.attention, model_config.position
    if attention.kind != "gqa":
        raise ConversionError(f"--to mla factorises grouped-query attention; this model's attention is {attention.kind}")
    if position.kind != "rope":
        raise ConversionError(f"--to mla keeps RoPE's rotated dims as MLA's RoPE key; this model's positions are {position.kind}")
    for name in ("qkv_bias", "qk_norm", "sinks", "clip_qkv", "qk_l2_norm", "temperature_tuning", "output_gate"):
        if getattr(attention, name):
            raise ConversionError(f"--to mla: MLA has no counterpart of attention.{name} (its keys and values come from the latent alone)")
    rotated = mla_dims(model_config)[0]
    if rotated == 0 or rotated % 2:
        raise ConversionError(f"--to mla needs an even number of rotated dims per head; this model rotates {rotated}")
    if rope_dim is not None and (rope_dim % 2 or not 0 < rope_dim <= rotated):
        raise ConversionError(f"--rope-dim {rope_dim} must be even and in 2..{rotated}, the dims each head rotates")
    if rope_dim not in (None, rotated) and position.rope_scaling != "none":
        raise ConversionError(f"--rope-dim below {rotated} keeps some of the frequencies, which zoo does under plain RoPE, not {position.rope_scaling} scaling")
    kept, plain, full = mla_dims(model_config, rope_dim)
    if not 0 < kv_rank <= full:
        raise ConversionError(f"--kv-rank {kv_rank} must be in 1..{full}: the rank of the stacked key and value projections (d_model or K (dn + Dh))")
    heads, kv_heads, head_dim = model_config.num_heads, model_config.num_kv_heads, model_config.head_dim
    half = np.arange(kept // 2)
    rope_dims = np.concatenate([half, rotated // 2 + half])  # rotate-half pairs (i, i + R/2), the fastest first
    plain_dims = np.setdiff1d(np.arange(head_dim), rope_dims)
    target_attention = dataclasses.replace(
        attention, kind="mla", kv_lora_rank=kv_rank, q_lora_rank=None, qk_nope_head_dim=plain, qk_rope_head_dim=kept,
        v_head_dim=head_dim, latent_norm=False,
    )
    theta = position.rope_theta ** (kept / rotated)  # theta'^(-2i/kept) = theta^(-2i/rotated)
    target = dataclasses.replace(
        model_config, attention=target_attention, position=dataclasses.replace(position, rotary_fraction=1.0, rope_theta=theta)
    )
    flat = {path: np.asarray(v) for path, v in mapping.flatten(params).items()}
    converted = {}
    for path in [p for p in flat if p[-2:] == ("q", "weight")]:
        at = path[:-2]  # the attention module
        q, k, v, o = (flat.pop((*at, name, "weight")) for name in ("q", "k", "v", "o"))
        lead = q.shape[:-3]  # stacked layers
        converted[(*at, "q_up", "weight")] = np.concatenate([q[..., plain_dims], q[..., rope_dims]], axis=-1)
        stacked = np.concatenate([k[..., plain_dims], v], axis=-1).reshape(*lead, k.shape[-3], -1)  # [.., D, K (dn + Dh)]
        down, up = _low_rank(stacked.astype(np.float64), kv_rank, None if covariances is None else covariances[at])
        up = up.reshape(*lead, kv_rank, kv_heads, plain + head_dim)
        up = np.repeat(up, heads // kv_heads, axis=-2)  # each query head reads its group's projections
        rope_key = k[..., rope_dims].mean(axis=-2)  # [.., D, kept]
        converted[(*at, "kv_down", "weight")] = np.concatenate([down, rope_key], axis=-1).astype(q.dtype)
        converted[(*at, "kv_up", "weight")] = up.astype(q.dtype)
        converted[(*at, "o", "weight")] = o
    return target, _filled(target, flat | converted)


def _low_rank(weight: np.ndarray, rank: int, covariance: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(down [.., D, r], up [.., r, N]) minimising |W - down up| for W [.., D, N], or with a
    covariance C = XᵀX [.., D, D] of the inputs, |X (W - down up)|: with C = L Lᵀ that is
    |Lᵀ (W - down up)|, so the truncated SVD U Σ Vᵀ of Lᵀ W gives down = L⁻ᵀ U Σ, up = Vᵀ. A
    ridge of 1e-6 of C's mean diagonal keeps L invertible where the inputs span fewer than D dims."""
    if covariance is None:
        u, singular, vt = np.linalg.svd(weight, full_matrices=False)
        return u[..., :rank] * singular[..., None, :rank], vt[..., :rank, :]
    size = covariance.shape[-1]
    ridge = 1e-6 * np.trace(covariance, axis1=-2, axis2=-1)[..., None, None] / size + np.finfo(np.float64).tiny
    root_t = np.swapaxes(np.linalg.cholesky(covariance + ridge * np.eye(size)), -1, -2)  # Lᵀ
    u, singular, vt = np.linalg.svd(root_t @ weight, full_matrices=False)
    return np.linalg.solve(root_t, u[..., :rank] * singular[..., None, :rank]), vt[..., :rank, :]


def attention_layers(flat: dict) -> dict[int, tuple[tuple, int]]:
    """{layer number: (attention module path, index in its stack)} for a decoder's flattened
    params, the layers numbered as the tower runs them (and zoo.layers.taps counts them): its
    stacks first_layers then layers, each stack's depth in turn, each over its period of blocks."""
    number, places = 0, {}
    for stack in ("first_layers", "layers"):
        paths = [path for path in flat if path[:2] == ("tower", stack)]
        if not paths:
            continue
        blocks = sorted({path[3] for path in paths if path[2] == "blocks"}) or [None]
        for index in range(np.shape(flat[paths[0]])[0]):
            for block in blocks:
                at = ("tower", stack, *(() if block is None else ("blocks", block)), "attention")
                if (*at, "q", "weight") in flat:
                    places[number] = (at, index)
                number += 1
    return places


def attention_input_covariances(model_config: zoo_config.ModelConfig, params, rows: list[dict]) -> dict[tuple, np.ndarray]:
    """{attention module path: C = Σ x xᵀ [.., D, D] (float64), stacked like its weights} over the
    tokens of `rows` ({tokens, segment_ids} [L] each, as zoo.train.data gives them), where x is
    what the layer projects into keys and values: zoo.layers.taps' "attention.input" of the real
    forward pass (the model's inputs are each row's first L - 1 tokens; padding left out)."""
    import jax.numpy as jnp

    from zoo.layers import taps
    from zoo.train.loss import split_row

    model = build(model_config)
    flat = mapping.flatten(params)
    places = attention_layers(flat)
    covariances = {}
    for at, _ in places.values():
        depth, size = flat[(*at, "q", "weight")].shape[0], model_config.d_model
        covariances[at] = np.zeros((depth, size, size))
    for start in range(0, len(rows), 8):
        batch = {key: jnp.asarray(np.stack([row[key] for row in rows[start : start + 8]])) for key in ("tokens", "segment_ids")}
        inputs = split_row(batch)[0]
        with taps.recording() as record:
            model.apply(params, inputs["tokens"], segment_ids=inputs["segment_ids"])
        counted = np.asarray(inputs["segment_ids"]) != 0
        for tap in record:
            if tap.name == "attention.input":
                at, index = places[tap.layer]
                x = np.asarray(tap.value, np.float64)[counted]  # [tokens, D]
                covariances[at][index] += x.T @ x
    return covariances


def calibration_rows(run: runs.Run, run_dir: Path, tokens: int) -> list[dict]:
    """The first rows of the run's held-out split that hold `tokens` model inputs (every row if fewer)."""
    from zoo.eval import held_out_rows

    if tokens < 1:
        raise ConversionError(f"--calibrate takes a number of tokens, at least 1; got {tokens}")
    rows = held_out_rows(run, run_dir, None)
    count = min(len(rows), -(-tokens // (run.config.train.seq_len)))
    return [rows[index] for index in range(count)]


def to_moe(model_config: zoo_config.ModelConfig, params, experts: int, top_k: int, *, shared: bool = False, noise: float = 0.0, seed: int = 0):
    """(the config with every feed-forward a mixture of `experts` copies of it, the params)."""
    if model_config.moe is not None:
        raise ConversionError("--to moe upcycles dense feed-forwards; this model already has experts")
    if model_config.ffn_dim == 0:
        raise ConversionError("--to moe copies the feed-forward into experts; this model's layers have none (ffn_dim = 0)")
    if not 0 < top_k <= experts:
        raise ConversionError(f"--top-k {top_k} must be in 1..{experts} (--experts)")
    if noise < 0:
        raise ConversionError(f"--noise is a share of the weights' spread, at least 0; got {noise}")
    if shared and model_config.mlp_bias:
        raise ConversionError("--shared would need the shared expert to have biases, which zoo's shared experts do not")
    moe = zoo_config.MoEConfig(
        num_experts=experts, top_k=top_k, expert_ffn_dim=model_config.ffn_dim, router="softmax", renormalize=True,
        shared_ffn_dim=model_config.ffn_dim if shared else 0, expert_bias=model_config.mlp_bias,
    )
    target = dataclasses.replace(model_config, moe=moe)
    fresh = mapping.flatten(build(target).init(jax.random.key(seed)))  # the routers' weights come from here
    rng = np.random.default_rng(seed)
    halve = 0.5 if shared else 1.0
    flat = {path: np.asarray(value) for path, value in fresh.items()}
    filled = set()
    for path, value in mapping.flatten(params).items():
        value = np.asarray(value)
        if "ffn" not in path:
            flat[path] = value
            filled.add(path)
            continue
        at = path.index("ffn")
        prefix, (name, kind) = path[: at + 1], path[at + 1 :]  # ffn's gate/up/down, weight/bias
        scale = halve if name == "down" else 1.0
        stacked = value.ndim - (2 if kind == "weight" else 1)  # leading layer dims
        copies = np.repeat(np.expand_dims(value * scale, stacked), experts, axis=stacked)
        if noise:
            copies = copies + noise * value.std() * rng.standard_normal(copies.shape).astype(value.dtype)
        expert_path = (*prefix, "experts", name if kind == "weight" else f"{name}_bias")
        flat[expert_path] = copies.astype(value.dtype)
        filled.add(expert_path)
        if shared:
            shared_path = (*prefix, "shared", name, kind)
            flat[shared_path] = (value * scale).astype(value.dtype)
            filled.add(shared_path)
    missing = sorted(p for p in flat if p not in filled and "router" not in p)
    if missing:
        raise ConversionError(f"the upcycled model has {'/'.join(missing[0])}, which no weight of the dense one fills")
    return target, _filled(target, flat)


def _filled(model_config: zoo_config.ModelConfig, flat: dict):
    """The params of `model_config` from {path: array}, each checked against the shape the model needs."""
    abstract = build(model_config).abstract_params
    for path, variable in mapping.flatten(abstract).items():
        if path not in flat or tuple(flat[path].shape) != tuple(variable.shape):
            got = "nothing" if path not in flat else f"shape {list(flat[path].shape)}"
            raise ConversionError(f"the converted model's {'/'.join(map(str, path))} needs shape {list(variable.shape)}; the conversion gives {got}")
    return mapping.filled(abstract, flat)


def convert_run(run_dir: str | Path, out_dir: str | Path, to: str, **options) -> zoo_config.Config:
    """Writes the converted run (see the module's docstring); returns its config."""
    from zoo.lora import merged

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    check_new_run_directory(out_dir)
    run = runs.load(run_dir)
    if run.config.model.quantization != "none":
        raise ConversionError(f"{run_dir} holds quantized weights; convert the float run it came from")
    config, params = merged(run)
    if to == "gqa":
        model_config, params = to_gqa(config.model, params, options["kv_heads"], options.get("init", "mean"))
    elif to == "mla":
        calibrate = options.get("calibrate")
        covariances = None if calibrate is None else attention_input_covariances(config.model, params, calibration_rows(run, run_dir, calibrate))
        model_config, params = to_mla(config.model, params, options["kv_rank"], options.get("rope_dim"), covariances)
    elif to == "moe":
        model_config, params = to_moe(config.model, params, options["experts"], options["top_k"], shared=options.get("shared", False),
                                      noise=options.get("noise", 0.0), seed=options.get("seed", 0))
    else:
        raise ConversionError(f"--to is gqa, mla or moe, got {to!r}")
    new = dataclasses.replace(config, model=model_config)
    sources = (run_dir,) if run.config.train.init_from is None else (run_dir, Path(run.config.train.init_from))
    changed = {k: v for k, v in zoo_config.to_dict(model_config).items() if zoo_config.to_dict(config.model).get(k) != v}
    write_run(out_dir, new, params, 0, sources)
    record = {"from": str(run_dir.resolve()), "step": run.step, "to": to, "options": options, "changed": {f"model.{k}": v for k, v in changed.items()}}
    write_atomically(out_dir / CONVERSION, json.dumps(record, indent=2).encode())
    return new


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m zoo.convert", description="A cheaper model from a trained run's weights: fewer KV heads, or experts.")
    parser.add_argument("source", help="a run directory (trained, imported, or LoRA)")
    parser.add_argument("target", help="the new run directory")
    parser.add_argument("--to", required=True, choices=("gqa", "mla", "moe"), help="gqa: pool key/value heads; mla: factorise keys and values into a latent; moe: upcycle feed-forwards into experts")
    parser.add_argument("--kv-heads", type=int, metavar="K", help="gqa: key/value heads to keep (dividing the current number)")
    parser.add_argument("--init", choices=("mean", "first"), default="mean", help="gqa: each group's mean (default) or its first head")
    parser.add_argument("--kv-rank", type=int, metavar="R", help="mla: the latent's rank (the cache holds R + the RoPE key per token and layer)")
    parser.add_argument("--rope-dim", type=int, metavar="D", help="mla: the RoPE key's width (default: all the dims each head rotates)")
    parser.add_argument("--calibrate", type=int, metavar="N", help="mla: fit the factors to the keys and values of N held-out tokens of the run's data (default: to the weights)")
    parser.add_argument("--experts", type=int, metavar="E", help="moe: experts per layer")
    parser.add_argument("--top-k", type=int, metavar="k", default=2, help="moe: experts each token goes to (default 2)")
    parser.add_argument("--shared", action="store_true", help="moe: keep a copy as a shared expert too")
    parser.add_argument("--noise", type=float, default=0.0, metavar="S", help="moe: perturb each expert by S times its weights' spread")
    parser.add_argument("--seed", type=int, default=0, help="moe: seed of the router's weights and the noise")
    args = parser.parse_args(argv)
    if args.to != "mla" and (args.calibrate is not None or args.rope_dim is not None):
        parser.error(f"--calibrate and --rope-dim shape an MLA conversion; they go with --to mla, not --to {args.to}")
    if args.to == "gqa":
        if args.kv_heads is None:
            parser.error("--to gqa needs --kv-heads K")
        options = {"kv_heads": args.kv_heads, "init": args.init}
    elif args.to == "mla":
        if args.kv_rank is None:
            parser.error("--to mla needs --kv-rank R")
        options = {"kv_rank": args.kv_rank, "rope_dim": args.rope_dim, "calibrate": args.calibrate}
    else:
        if args.experts is None:
            parser.error("--to moe needs --experts E")
        options = {"experts": args.experts, "top_k": args.top_k, "shared": args.shared, "noise": args.noise, "seed": args.seed}
    try:
        convert_run(args.source, args.target, args.to, **options)
    except (ConversionError, RunError, zoo_config.ConfigError) as error:
        parser.error(str(error))
    print(f"converted {args.source} -> {args.target} ({args.to}: " + ", ".join(f"{k} {v}" for k, v in options.items()) + ")")


if __name__ == "__main__":
    main()
