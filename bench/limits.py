"""The hardware limits the benchmarks compare against: datasheet peaks, and what the device measures.

Datasheet dense bf16 FLOP/s come from `zoo.hardware`; memory bandwidths from the table
below. Measured: a large bf16 matmul's FLOP/s and a large array copy's bytes/s (read
plus write), the best this device does in practice.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from zoo.hardware import peak_flops

from common import bandwidth, flops, show, timed

# (substring of jax's device_kind, HBM bytes/s, where the figure comes from); first match wins
MEMORY_BANDWIDTH: tuple[tuple[str, float, str], ...] = (
    ("H100 PCIe", 2.0e12, "NVIDIA H100 PCIe datasheet, 2.0 TB/s HBM2e"),
    ("H100 NVL", 3.9e12, "NVIDIA H100 NVL datasheet, 3.9 TB/s HBM3"),
    ("H100", 3.35e12, "NVIDIA H100 SXM datasheet, 3.35 TB/s HBM3"),
    ("H200", 4.8e12, "NVIDIA H200 SXM datasheet, 4.8 TB/s HBM3e"),
    ("A100-SXM4-40GB", 1.555e12, "NVIDIA A100 datasheet, 40GB SXM 1,555 GB/s HBM2"),
    ("A100 80GB PCIe", 1.935e12, "NVIDIA A100 datasheet, 80GB PCIe 1,935 GB/s HBM2e"),
    ("A100", 2.039e12, "NVIDIA A100 datasheet, 80GB SXM 2,039 GB/s HBM2e"),
    ("TPU v4", 1.2e12, "Google Cloud TPU v4 documentation, 1,200 GB/s"),
    ("TPU v5 lite", 8.19e11, "Google Cloud TPU v5e documentation, 819 GB/s"),
    ("TPU v5e", 8.19e11, "Google Cloud TPU v5e documentation, 819 GB/s"),
    ("TPU v5p", 2.765e12, "Google Cloud TPU v5p documentation, 2,765 GB/s"),
    ("TPU v6", 1.64e12, "Google Cloud TPU v6e (Trillium) documentation, 1,640 GB/s"),
)


def memory_bandwidth(device: jax.Device | None = None) -> tuple[float, str] | None:
    """(HBM bytes/s of one device, its source), or None for a device we have no figure for (CPUs)."""
    kind = (device or jax.devices()[0]).device_kind
    for name, rate, source in MEMORY_BANDWIDTH:
        if name.lower() in kind.lower():
            return rate, source
    return None


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
