"""Datasheet limits of known accelerators: peak dense bfloat16 throughput (for MFU), memory
bandwidth (for decode rooflines) and memory per device (for zoo.plan)."""

from __future__ import annotations

import dataclasses

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


def _lookup(table: tuple[tuple[str, float, str], ...], device: jax.Device | None) -> tuple[float, str] | None:
    kind = (device or jax.devices()[0]).device_kind
    return next(((value, source) for name, value, source in table if name.lower() in kind.lower()), None)


def peak_flops(device: jax.Device | None = None) -> tuple[float, str] | None:
    """(peak FLOP/s of one device, its source), or None for a device we have no figure for (CPUs)."""
    return _lookup(PEAK_BF16_FLOPS, device)


def memory_bandwidth(device: jax.Device | None = None) -> tuple[float, str] | None:
    """(HBM bytes/s of one device, its source), or None for a device we have no figure for (CPUs)."""
    return _lookup(MEMORY_BANDWIDTH, device)


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """A named accelerator for planning: its memory per device, and the share of it jax's
    allocator takes by default (GPUs: 75%, XLA_PYTHON_CLIENT_MEM_FRACTION; TPUs: all)."""

    name: str
    memory_bytes: int
    usable_fraction: float
    source: str

    @property
    def usable_bytes(self) -> int:
        return int(self.memory_bytes * self.usable_fraction)


GiB = 2**30
ACCELERATORS: dict[str, Accelerator] = {
    accelerator.name: accelerator
    for accelerator in (
        Accelerator("h100", 80 * GiB, 0.75, "NVIDIA H100 SXM datasheet, 80 GB HBM3"),
        Accelerator("h200", 140 * GiB, 0.75, "NVIDIA H200 SXM datasheet, 141 GB HBM3e (140 GiB as the driver reports it)"),
        Accelerator("a100", 80 * GiB, 0.75, "NVIDIA A100 datasheet, 80 GB HBM2e"),
        Accelerator("a100-40gb", 40 * GiB, 0.75, "NVIDIA A100 datasheet, 40 GB HBM2"),
        Accelerator("v4", 32 * GiB, 1.0, "Google Cloud TPU v4 documentation, 32 GiB HBM2"),
        Accelerator("v5e", 16 * GiB, 1.0, "Google Cloud TPU v5e documentation, 16 GiB HBM2"),
        Accelerator("v5p", 95 * GiB, 1.0, "Google Cloud TPU v5p documentation, 95 GiB HBM2e"),
        Accelerator("v6e", 32 * GiB, 1.0, "Google Cloud TPU v6e (Trillium) documentation, 32 GiB HBM"),
    )
}
