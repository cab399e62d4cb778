"""Experts split over the `expert` mesh axis: tokens travel to their experts by all-to-all.

Inside `jax.shard_map` each device holds a share of the tokens (split over the batch
mesh axes, `expert` among them) and E / P of the experts, P being the size of the
`expert` axis. A device sorts its (token, expert) assignments by the device holding the
expert and packs them into a [P, S, D] buffer, S slots per destination; an all-to-all
hands every device the rows for its experts, which it runs as grouped matmuls, and a
second all-to-all brings the results back to the tokens' devices to be weighted and
summed. The router and the losses run outside on the whole batch, so the output equals
the single-device layer's; the expert weights are gathered over any other axis that
shards them (FSDP, tensor) and their gradients reduced back, as for every parameter.

S bounds what one device may send another: all n * k of its assignments when dropless,
at most (E / P) * C with a capacity of C per expert.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, PartitionSpec

from zoo.layers.layout import current_mesh, partition_spec
from zoo.layers.moe.experts import ExpertWeights, Experts


def layout_for(num_tokens: int, num_experts: int) -> tuple[AbstractMesh, tuple[str, ...]] | None:
    """(mesh, the mesh axes splitting the tokens) when the mesh jax has set (`jax.set_mesh`)
    has an `expert` axis that also splits the `num_tokens` tokens by the layout rules; else
    None (the layer then runs as on one device and the compiler moves the expert weights),
    as it also does inside a shard_map, where some mesh axes are already manual."""
    mesh = current_mesh()
    if mesh is None or mesh.shape.get("expert", 1) == 1 or mesh.manual_axes:
        return None
    if num_experts % mesh.shape["expert"]:
        raise ValueError(f"{num_experts} experts do not split evenly over the expert mesh axis of size {mesh.shape['expert']}")
    spec = partition_spec(("batch",), (num_tokens,), mesh)[0]
    axes = () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)
    return (mesh, axes) if "expert" in axes else None


def dispatch(
    experts: Experts,
    x: jax.Array,
    chosen: jax.Array,
    weights: jax.Array,
    valid: jax.Array,
    mesh: AbstractMesh,
    token_axes: tuple[str, ...],
    capacity: int | None = None,
) -> jax.Array:
    """x [N, D]; chosen, weights, valid [N, k] -> [N, D]: each token's sum over its valid
    assignments of weight * expert(x). capacity: the most assignments any expert keeps."""
    tokens, k = chosen.shape
    devices = mesh.shape["expert"]
    slots = tokens // math.prod(mesh.shape[a] for a in token_axes) * k
    if capacity is not None:
        slots = min(slots, experts.num_experts // devices * capacity)
    split = PartitionSpec(token_axes)
    expert_weights = experts.weights()
    weight_specs = jax.tree.map(lambda _: PartitionSpec("expert"), expert_weights)
    local = functools.partial(_exchange, experts, devices, slots)
    return jax.shard_map(local, mesh=mesh, in_specs=(split, split, split, split, weight_specs), out_specs=split)(
        x, chosen, weights, valid, expert_weights
    )


def _exchange(experts: Experts, devices: int, slots: int, x, chosen, weights, valid, expert_weights: ExpertWeights) -> jax.Array:
    """One device's part: its tokens x [n, D] and assignments [n, k]; its experts' weights."""
    (tokens, k), dim = chosen.shape, x.shape[-1]
    local_experts = expert_weights.up.shape[0]
    key = jnp.where(valid, chosen, devices * local_experts).reshape(-1)  # invalid assignments sort last
    order = jnp.argsort(key, stable=True)
    destination = key[order] // local_experts  # `devices` (out of range) for invalid ones
    counts = jnp.bincount(destination, length=devices + 1)
    slot = jnp.arange(tokens * k) - (jnp.cumsum(counts) - counts)[destination]

    send = jnp.zeros((devices, slots, dim), x.dtype).at[destination, slot].set(x[order // k], mode="drop")
    send_expert = jnp.full((devices, slots), local_experts, jnp.int32)
    send_expert = send_expert.at[destination, slot].set(key[order] % local_experts, mode="drop")
    received = jax.lax.all_to_all(send, "expert", 0, 0).reshape(-1, dim)  # rows from every device
    received_expert = jax.lax.all_to_all(send_expert, "expert", 0, 0).reshape(-1)  # local_experts: empty

    by_expert = jnp.argsort(received_expert, stable=True)
    sizes = jnp.bincount(received_expert, length=local_experts + 1)[:local_experts].astype(jnp.int32)
    computed = experts.grouped(received[by_expert], sizes, expert_weights)
    results = jnp.zeros_like(computed).at[by_expert].set(computed)
    results = jnp.where((received_expert < local_experts)[:, None], results, 0)
    returned = jax.lax.all_to_all(results.reshape(devices, slots, dim), "expert", 0, 0)

    sorted_outputs = returned.at[destination, slot].get(mode="fill", fill_value=0)
    outputs = jnp.zeros_like(sorted_outputs).at[order].set(sorted_outputs).reshape(tokens, k, dim)
    combined = jnp.einsum("nk,nkd->nd", jnp.where(valid, weights, 0).astype(outputs.dtype), outputs)
    return combined.astype(x.dtype)
