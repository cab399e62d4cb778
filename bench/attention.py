"""Attention kernels' throughput (issue 9): each of zoo's kernels, forward and forward+backward, at
B 8, T 4096, 16 query heads, 8 kv heads, head dim 128, causal, bf16.

FLOPs are counted as FlashAttention's benchmark counts them: forward 4 B H T^2 Dh / 2 (the
q k^T and p v products, halved because the causal mask hides half of the logits),
backward 2.5x the forward, so forward+backward 3.5x. Kernels the backend lacks
(zoo.layers.attention.check_available) are skipped, saying so; "auto" is not timed apart,
since it runs one of the others (the log line says which). Reference figures on an H100:
cuDNN through JAX 553 TFLOP/s forward, 452 forward+backward. With --reference, PyTorch's
scaled_dot_product_attention (what transformers' "sdpa" attention calls) on the same shapes.

    python bench/attention.py [--small] [--reference]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo.layers.attention import KERNELS, AttentionMask, check_available

from common import flops, heading, log_attention_choices, parser, seconds, show, timed
from limits import measure, show_limits

FULL = dict(batch=8, length=4096, heads=16, kv_heads=8, head_dim=128)
SMALL = dict(batch=2, length=256, heads=4, kv_heads=2, head_dim=64)
BACKWARD_FACTOR = 2.5  # backward FLOPs per forward FLOP


def forward_flops(shape: dict) -> float:
    """4 B H T^2 Dh / 2: two matmuls of 2 B H T^2 Dh FLOPs each, half of the logits causally masked."""
    return 4 * shape["batch"] * shape["heads"] * shape["length"] ** 2 * shape["head_dim"] / 2


def inputs(shape: dict) -> tuple[jax.Array, jax.Array, jax.Array, AttentionMask]:
    """Random bf16 q [B, T, H, Dh], k and v [B, T, K, Dh], and a causal self-attention mask over
    one segment, `aligned` so that fused kernels take it."""
    b, t, h, kv, d = (shape[name] for name in ("batch", "length", "heads", "kv_heads", "head_dim"))
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (b, t, h, d), jnp.bfloat16)
    k, v = (jax.random.normal(key, (b, t, kv, d), jnp.bfloat16) for key in keys[1:])
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    return q, k, v, AttentionMask(positions, positions, causal=True, aligned=True)


def kernel_rows(shape: dict, args) -> dict[str, str]:
    """Per kernel: forward and forward+backward TFLOP/s and median seconds, or why it did not run."""
    q, k, v, mask = inputs(shape)
    scale = shape["head_dim"] ** -0.5
    forward = forward_flops(shape)
    rows = {}
    for name in KERNELS.names():
        if name == "auto":
            continue
        try:
            check_available(name)
        except ValueError as error:
            rows[name] = f"skipped: {error}"
            continue
        kernel = KERNELS.get(name)
        attend = jax.jit(lambda q, k, v, mask, kernel=kernel: kernel(q, k, v, mask, scale=scale))
        gradients = jax.jit(jax.grad(lambda *inputs: jnp.sum(attend(*inputs).astype(jnp.float32)), argnums=(0, 1, 2)))
        try:
            once = timed(lambda: attend(q, k, v, mask), steps=args.steps, warmup=args.warmup)
            both = timed(lambda: gradients(q, k, v, mask), steps=args.steps, warmup=args.warmup)
        except jax.errors.JaxRuntimeError as error:  # out of memory (the xla kernel's [T, S] logits)
            rows[name] = f"failed: {str(error).splitlines()[0]}"
            continue
        rows[name] = (
            f"forward {flops(forward / once.median)} ({seconds(once.median)}), "
            f"forward+backward {flops((1 + BACKWARD_FACTOR) * forward / both.median)} ({seconds(both.median)})"
        )
    return rows


def reference_rows(shape: dict, args) -> dict[str, str]:
    """The same through PyTorch's scaled_dot_product_attention, or why it could not run."""
    try:
        import hf_reference
    except ImportError as error:
        return {"torch sdpa": f"skipped: {error}"}
    forward = forward_flops(shape)
    once, both = (
        timed(run, steps=args.reference_steps, warmup=args.warmup, wait=hf_reference.wait)
        for run in (hf_reference.attention(shape, backward=False), hf_reference.attention(shape, backward=True))
    )
    return {
        "what": hf_reference.describe(),
        "torch sdpa": f"forward {flops(forward / once.median)} ({seconds(once.median)}), "
        f"forward+backward {flops((1 + BACKWARD_FACTOR) * forward / both.median)} ({seconds(both.median)})",
    }


def main() -> None:
    args = parser(__doc__).parse_args()
    log_attention_choices()
    shape = SMALL if args.small else FULL
    show_limits(measure(args.small))
    described = ", ".join(f"{name} {value}" for name, value in shape.items())
    show(
        heading(f"zoo attention kernels: {described}, causal, bf16 (forward {forward_flops(shape) / 1e9:,.1f} GFLOP; "
                f"backward {BACKWARD_FACTOR}x)", args.small),
        kernel_rows(shape, args),
    )
    if args.reference:
        show("PyTorch reference", reference_rows(shape, args))


if __name__ == "__main__":
    main()
