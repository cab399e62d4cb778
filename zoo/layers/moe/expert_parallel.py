"""Experts split over the `expert` mesh axis: tokens travel to their experts by all-to-all.

Inside `jax.shard_map` each device holds a share of the tokens (split over the batch
mesh axes, `expert` among them) and E / P of the experts, P being the size of the
`expert` axis. A device sorts its (token, expert) assignments by the device holding the
expert; an all-to-all hands every device the rows for its experts, which it runs as
grouped matmuls, and a second all-to-all brings the results back to the tokens' devices
to be weighted and summed. The router and the losses run outside on the whole batch, so
the output equals the single-device layer's; the expert weights are gathered over any
other axis that shards them (FSDP, tensor) and their gradients reduced back, as for
every parameter.

Two exchanges, chosen per platform when the program is lowered (`jax.lax.platform_dependent`):
- ragged (GPUs, TPUs): `jax.lax.ragged_all_to_all` sends each device only the rows it
  gets, from one [n * k, D] buffer of sorted rows; the receiver lays them out sender
  after sender, each sender's rows by expert, in R rows: all P * n * k it could get when
  dropless, at most (E / P) * C with a capacity of C per expert.
- padded (CPUs, whose XLA has no ragged all-to-all): a [P, S, D] buffer of S slots per
  destination, S = n * k when dropless, at most (E / P) * C with a capacity.

Without an `expert` axis, tokens split over the batch axes (data, FSDP) still stay on their
devices (`dropless_per_device`): each sorts its own and runs them through every expert, the
weights gathered as FSDP gathers any weight. With a capacity, the assignments it drops are
chosen over the whole batch first, as on one device, and weigh nothing; left to the compiler,
the capacity buffer of the whole batch would be computed on every device.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, PartitionSpec

from zoo.layers.layout import current_mesh, partition_spec
from zoo.layers.moe.experts import ExpertWeights, Experts


def token_layout(num_tokens: int) -> tuple[AbstractMesh, tuple[str, ...]] | None:
    """(mesh, the mesh axes splitting `num_tokens` tokens by the layout rules) under the mesh jax
    has set (`jax.set_mesh`) when some axis splits them; None without a mesh, inside a
    shard_map (where some axes are already manual), or when the tokens are not split."""
    mesh = current_mesh()
    if mesh is None or mesh.manual_axes:
        return None
    spec = partition_spec(("batch",), (num_tokens,), mesh)[0]
    axes = () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)
    return (mesh, axes) if axes else None


def layout_for(num_tokens: int, num_experts: int) -> tuple[AbstractMesh, tuple[str, ...]] | None:
    """(mesh, the mesh axes splitting the tokens) when the mesh jax has set has an `expert` axis
    that also splits the `num_tokens` tokens by the layout rules; else None (the layer then runs
    each device's own tokens through every expert, or as on one device)."""
    mesh = current_mesh()
    if mesh is None or mesh.shape.get("expert", 1) == 1 or mesh.manual_axes:
        return None
    if num_experts % mesh.shape["expert"]:
        raise ValueError(f"{num_experts} experts do not split evenly over the expert mesh axis of size {mesh.shape['expert']}")
    layout = token_layout(num_tokens)
    return layout if layout is not None and "expert" in layout[1] else None


def dropless_per_device(
    experts: Experts, x: jax.Array, chosen: jax.Array, weights: jax.Array, mesh: AbstractMesh, token_axes: tuple[str, ...]
) -> jax.Array:
    """x [N, D]; chosen, weights [N, k] -> [N, D], as zoo.layers.moe.dispatch.dropless, with each
    device sorting and running only its own tokens (split over `token_axes`) through every
    expert, whose weights it gathers over those axes. Left to the compiler, the sort of a
    sharded batch gathers every device's tokens onto each, which then computes them all."""
    from zoo.layers.moe.dispatch import dropless_rows

    split = PartitionSpec(token_axes)
    expert_weights = experts.weights()
    whole = jax.tree.map(lambda _: PartitionSpec(), expert_weights)
    local = functools.partial(dropless_rows, experts)
    # manual over the axes of one device too, so that a TPU kernel inside has none left to split;
    # check_vma off: megablox's gmm does not trace under shard_map's check of varying values
    manual = set(token_axes) | {name for name, size in mesh.shape.items() if size == 1}
    return jax.shard_map(local, mesh=mesh, in_specs=(split, split, split, whole), out_specs=split, axis_names=manual, check_vma=False)(
        x, chosen, weights, expert_weights
    )


def dispatch(
    experts: Experts,
    x: jax.Array,
    chosen: jax.Array,
    weights: jax.Array,
    valid: jax.Array,
    mesh: AbstractMesh,
    token_axes: tuple[str, ...],
    capacity: int | None = None,
    *,
    exchange: str = "auto",
) -> jax.Array:
    """x [N, D]; chosen, weights, valid [N, k] -> [N, D]: each token's sum over its valid
    assignments of weight * expert(x). capacity: the most assignments any expert keeps.
    exchange: "ragged", "padded", or "auto" (ragged where the platform has it)."""
    tokens, k = chosen.shape
    devices = mesh.shape["expert"]
    local_tokens = tokens // math.prod(mesh.shape[a] for a in token_axes)
    slots, received = local_tokens * k, devices * local_tokens * k
    if capacity is not None:
        slots = min(slots, experts.num_experts // devices * capacity)
        received = min(received, experts.num_experts // devices * capacity)
    padded = functools.partial(_padded_exchange, experts, devices, slots)
    ragged = functools.partial(_ragged_exchange, experts, devices, received)
    local = {
        "padded": padded,
        "ragged": ragged,
        "auto": lambda *args: jax.lax.platform_dependent(*args, cpu=padded, default=ragged),
    }[exchange]
    split = PartitionSpec(token_axes)
    expert_weights = experts.weights()
    weight_specs = jax.tree.map(lambda _: PartitionSpec("expert"), expert_weights)
    # check_vma off: megablox's gmm does not trace under shard_map's check of varying values
    return jax.shard_map(local, mesh=mesh, in_specs=(split, split, split, split, weight_specs), out_specs=split, check_vma=False)(
        x, chosen, weights, valid, expert_weights
    )


def _sorted_by_destination(valid, chosen, devices: int, local_experts: int):
    """The assignments [n, k] in order of destination device, then expert (invalid ones last):
    (order [n * k], the sorted keys: expert index, or devices * local_experts when invalid)."""
    key = jnp.where(valid, chosen, devices * local_experts).reshape(-1)
    order = jnp.argsort(key, stable=True)
    return order, key[order]


def _run_experts(experts: Experts, rows, row_expert, local_experts: int, expert_weights: ExpertWeights):
    """rows [R, D] in any order, row_expert [R] (local_experts: an empty row) -> each row through
    its expert, [R, D], zeros for the empty rows."""
    by_expert = jnp.argsort(row_expert, stable=True)
    sizes = jnp.bincount(row_expert, length=local_experts + 1)[:local_experts].astype(jnp.int32)
    computed = experts.grouped(rows[by_expert], sizes, expert_weights)
    results = jnp.zeros_like(computed).at[by_expert].set(computed)
    return jnp.where((row_expert < local_experts)[:, None], results, 0)


def _combine(order, sorted_outputs, weights, valid, tokens: int, k: int, dtype):
    """The expert outputs of the sorted assignments [n * k, D] -> each token's weighted sum [n, D]."""
    outputs = jnp.zeros_like(sorted_outputs).at[order].set(sorted_outputs).reshape(tokens, k, -1)
    combined = jnp.einsum("nk,nkd->nd", jnp.where(valid, weights, 0).astype(outputs.dtype), outputs)
    return combined.astype(dtype)


def _ragged_exchange(
    experts: Experts, devices: int, received_rows: int, x, chosen, weights, valid, expert_weights: ExpertWeights
) -> jax.Array:
    """One device's part, through jax.lax.ragged_all_to_all: its tokens x [n, D] and
    assignments [n, k]; its experts' weights. received_rows bounds the rows it may get."""
    (tokens, k), dim = chosen.shape, x.shape[-1]
    local_experts = expert_weights.up.shape[0]
    order, key = _sorted_by_destination(valid, chosen, devices, local_experts)
    per_expert = jnp.bincount(key, length=devices * local_experts + 1)[:-1].reshape(devices, local_experts)
    # every device's counts [sender, destination, expert]: where each run of rows lands
    runs = jax.lax.all_gather(per_expert.astype(jnp.int32), "expert")
    me = jax.lax.axis_index("expert")
    counts = runs.sum(-1)  # [sender, destination]
    starts = lambda sizes, axis: jnp.cumsum(sizes, axis=axis) - sizes  # exclusive prefix sums
    sent, got = counts[me], counts[:, me]  # rows to each destination; from each sender
    send_offsets = starts(sent, 0)  # in my sorted rows
    receive_offsets = starts(counts, 0)[:, me]  # in my received rows, per sender
    landing = starts(counts, 0)[me]  # where my rows land on each destination
    send = functools.partial(jax.lax.ragged_all_to_all, axis_name="expert")

    received = send(x[order // k], jnp.zeros((received_rows, dim), x.dtype), send_offsets, sent, landing, got)
    # each sender's rows come by expert: the expert of every received row from the run it falls in
    run_ends = jnp.cumsum(runs[:, me].reshape(-1))  # runs in (sender, expert) order
    run = jnp.searchsorted(run_ends, jnp.arange(received_rows), side="right")
    row_expert = jnp.where(run < devices * local_experts, run % local_experts, local_experts)
    results = _run_experts(experts, received, row_expert, local_experts, expert_weights)

    back_to = starts(counts, 1)[:, me]  # where each sender's rows sat in its sorted rows
    returned = send(results, jnp.zeros((tokens * k, dim), results.dtype), receive_offsets, got, back_to, sent)
    return _combine(order, returned, weights, valid, tokens, k, x.dtype)


def _padded_exchange(
    experts: Experts, devices: int, slots: int, x, chosen, weights, valid, expert_weights: ExpertWeights
) -> jax.Array:
    """One device's part, through jax.lax.all_to_all of `slots` rows per destination: its tokens
    x [n, D] and assignments [n, k]; its experts' weights."""
    (tokens, k), dim = chosen.shape, x.shape[-1]
    local_experts = expert_weights.up.shape[0]
    order, key = _sorted_by_destination(valid, chosen, devices, local_experts)
    destination = key // local_experts  # `devices` (out of range) for invalid ones
    counts = jnp.bincount(destination, length=devices + 1)
    slot = jnp.arange(tokens * k) - (jnp.cumsum(counts) - counts)[destination]

    send = jnp.zeros((devices, slots, dim), x.dtype).at[destination, slot].set(x[order // k], mode="drop")
    send_expert = jnp.full((devices, slots), local_experts, jnp.int32)
    send_expert = send_expert.at[destination, slot].set(key % local_experts, mode="drop")
    received = jax.lax.all_to_all(send, "expert", 0, 0).reshape(-1, dim)  # rows from every device
    received_expert = jax.lax.all_to_all(send_expert, "expert", 0, 0).reshape(-1)  # local_experts: empty

    results = _run_experts(experts, received, received_expert, local_experts, expert_weights)
    returned = jax.lax.all_to_all(results.reshape(devices, slots, dim), "expert", 0, 0)
    sorted_outputs = returned.at[destination, slot].get(mode="fill", fill_value=0)
    return _combine(order, sorted_outputs, weights, valid, tokens, k, x.dtype)
