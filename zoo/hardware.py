"""Peak dense bfloat16 throughput of known accelerators, for MFU."""

from __future__ import annotations

import jax

# (substring of jax's device_kind, peak dense bf16 FLOP/s, where the figure comes from)
PEAK_BF16_FLOPS: tuple[tuple[str, float, str], ...] = (
    ("H100 PCIe", 756e12, "NVIDIA H100 PCIe datasheet, dense BF16"),
    ("H100", 989e12, "NVIDIA H100 SXM datasheet, dense BF16"),
    ("H200", 989e12, "NVIDIA H200 SXM datasheet, dense BF16"),
    ("A100", 312e12, "NVIDIA A100 datasheet, dense BF16"),
    ("TPU v4", 275e12, "Google Cloud TPU v4 documentation"),
    ("TPU v5 lite", 197e12, "Google Cloud TPU v5e documentation"),
    ("TPU v5e", 197e12, "Google Cloud TPU v5e documentation"),
    ("TPU v5p", 459e12, "Google Cloud TPU v5p documentation"),
    ("TPU v6", 918e12, "Google Cloud TPU v6e (Trillium) documentation"),
)


def peak_flops(device: jax.Device | None = None) -> tuple[float, str] | None:
    """(peak FLOP/s of one device, its source), or None for a device we have no figure for (CPUs)."""
    kind = (device or jax.devices()[0]).device_kind
    for name, flops, source in PEAK_BF16_FLOPS:
        if name.lower() in kind.lower():
            return flops, source
    return None
