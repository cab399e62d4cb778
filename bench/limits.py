"""The hardware limits the benchmarks compare against: datasheet peaks, and what the device measures.

Datasheet dense bf16 FLOP/s and memory bandwidths come from `zoo.hardware`. Measured: a large bf16 matmul's FLOP/s and a large array copy's bytes/s (read
plus write), the best this device does in practice.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from zoo.hardware import memory_bandwidth, peak_flops

from common import bandwidth, flops, show, timed

@dataclasses.dataclass(frozen=True)
class Limits:
    """One device's limits: datasheet figures (None when unknown, with the reason as source) and measured ones."""

    device: str
    peak_flops: float | None  # dense bf16 FLOP/s
    peak_flops_source: str
    matmul_flops: float  # measured, bf16 [n, n] @ [n, n]
    bandwidth: float | None  # HBM bytes/s
    bandwidth_source: str
    copy_bandwidth: float  # measured, bytes read + written per second


def measure(small: bool) -> Limits:
    """The device's limits, measuring a bf16 matmul (n = 8192, or 512 when small) and a copy of
    1 GiB (16 MiB when small)."""
    device = jax.devices()[0]
    n, copy_bytes = (512, 1 << 24) if small else (8192, 1 << 30)
    multiply, add_one = jax.jit(jnp.matmul), jax.jit(lambda x: x + 1)
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    x = jnp.zeros((copy_bytes // 4,), jnp.float32)
    matmul = timed(lambda: multiply(a, a), steps=10, warmup=2)
    copy = timed(lambda: add_one(x), steps=10, warmup=2)
    unknown = (None, "no datasheet figure for this device")
    peak, peak_source = peak_flops(device) or unknown
    rate, rate_source = memory_bandwidth(device) or unknown
    return Limits(
        device.device_kind, peak, peak_source, 2 * n**3 / matmul.median, rate, rate_source, 2 * copy_bytes / copy.median
    )


def show_limits(limits: Limits) -> None:
    """Prints the limits, each with where it comes from."""

    def datasheet(value: float | None, source: str, unit) -> str:
        return f"{unit(value)} ({source})" if value else source

    backend = f"{jax.device_count()} device(s), jax {jax.__version__} on {jax.default_backend()}"
    show(
        f"Hardware limits ({limits.device}, {backend})",
        {
            "peak dense bf16": datasheet(limits.peak_flops, limits.peak_flops_source, flops),
            "measured bf16 matmul": flops(limits.matmul_flops),
            "memory bandwidth": datasheet(limits.bandwidth, limits.bandwidth_source, bandwidth),
            "measured copy": f"{bandwidth(limits.copy_bandwidth)} (bytes read + written)",
        },
    )
