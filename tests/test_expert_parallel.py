"""Experts split over the `expert` mesh axis give the single-device layer's results."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding

from zoo.layers.moe import MoE, expert_parallel
from zoo.sharding import make_mesh, partition_spec, shardings

from test_moe import with_random_biases

D, E, F, TOKENS = 8, 8, 12, 64


def layer(**options):
    moe = MoE(D, E, 2, F, shared_dim=6, rngs=nnx.Rngs(0), **options)
    return with_random_biases(moe) if options.get("expert_bias") else moe


def objective(graphdef, rest):
    """(params, x) -> (a scalar using the output and the losses, (output, MoEStats))."""

    def value(params, x):
        out, stats = nnx.merge(graphdef, params, rest)(x)
        return jnp.sum(jnp.sin(out)) + stats.load_balance_loss + stats.z_loss, (out, stats)

    return jax.value_and_grad(value, has_aux=True)


@pytest.mark.parametrize("sizes", [{"data": 2, "expert": 4}, {"expert": 8}, {"fsdp": 2, "expert": 4}])
@pytest.mark.parametrize(
    "options",
    [
        {}, {"capacity_factor": 1.0}, {"router": "sigmoid", "capacity_factor": 1.25},
        {"router_bias": True, "expert_bias": True, "swiglu_limit": 1.0},  # gpt-oss's experts
    ],
)
def test_experts_across_devices_equal_one_device(sizes, options):
    graphdef, params, rest = nnx.split(layer(**options), nnx.Param, ...)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(TOKENS, D)), jnp.float32)
    step = jax.jit(objective(graphdef, rest))
    (value, (out, stats)), grads = step(params, x)
    if "capacity_factor" in options:
        assert 0 < float(stats.drop_fraction) < 1  # the capacity is tight enough to drop some

    mesh = make_mesh(sizes)
    layout = shardings(params, mesh)
    assert params["experts"]["up"][...].shape[0] == E
    placed = jax.device_put(params, layout)
    tokens = jax.device_put(x, NamedSharding(mesh, partition_spec(("batch", "embed"), x.shape, mesh)))
    with jax.set_mesh(mesh):
        split_step = jax.jit(objective(graphdef, rest), out_shardings=((None, (None, None)), layout))
        assert "all-to-all" in split_step.lower(placed, tokens).compile().as_text()
        (split_value, (split_out, split_stats)), split_grads = split_step(placed, tokens)

    np.testing.assert_allclose(split_out, out, atol=1e-5)
    np.testing.assert_allclose(split_value, value, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), split_stats, stats)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), split_grads, grads)


@pytest.mark.parametrize(
    "sizes, options",
    [
        ({"data": 4}, {}), ({"fsdp": 2, "data": 2}, {"router": "sigmoid", "router_bias": True, "expert_bias": True}),
        ({"data": 2, "tensor": 2}, {}), ({"data": 4}, {"capacity_factor": 1.0}),
    ],
)
def test_tokens_split_without_an_expert_axis_run_on_their_own_devices_as_on_one(sizes, options):
    """Under data or FSDP parallelism each device sorts and runs its own tokens (a shard_map over
    the batch axes), with the single-device layer's values, statistics and gradients; with a
    capacity, the same assignments dropped."""
    graphdef, params, rest = nnx.split(layer(**options), nnx.Param, ...)
    x = jnp.asarray(np.random.default_rng(5).normal(size=(TOKENS, D)), jnp.float32)
    (value, (out, stats)), grads = jax.jit(objective(graphdef, rest))(params, x)
    if "capacity_factor" in options:
        assert 0 < float(stats.drop_fraction) < 1  # the capacity is tight enough to drop some
    mesh = make_mesh(sizes)
    layout = shardings(params, mesh)
    placed = jax.device_put(params, layout)
    tokens = jax.device_put(x, NamedSharding(mesh, partition_spec(("batch", "embed"), x.shape, mesh)))
    with jax.set_mesh(mesh):
        split_step = jax.jit(objective(graphdef, rest), out_shardings=((None, (None, None)), layout))
        assert "shard_map" in str(jax.make_jaxpr(objective(graphdef, rest))(placed, tokens))
        (split_value, (split_out, split_stats)), split_grads = split_step(placed, tokens)
    np.testing.assert_allclose(split_out, out, atol=1e-5)
    np.testing.assert_allclose(split_value, value, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), split_stats, stats)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), split_grads, grads)


@pytest.mark.parametrize("sizes, options", [({"data": 2, "expert": 4}, {}), ({"data": 4}, {"capacity_factor": 1.0})])
def test_shapes_that_tile_for_the_tpu_kernel_trace_inside_the_shard_maps(sizes, options):
    """At widths of 128 the grouped matmul carries megablox's TPU kernel beside ragged_dot (chosen
    at lowering), which must trace inside the per-device programs too (it did not while shard_map
    checked how values vary over the mesh); the split layer still equals one device."""
    moe = MoE(128, E, 2, 128, rngs=nnx.Rngs(0), **options)
    graphdef, params, rest = nnx.split(moe, nnx.Param, ...)
    x = jnp.asarray(np.random.default_rng(6).normal(size=(TOKENS, 128)), jnp.float32)
    (value, (out, _)), grads = jax.jit(objective(graphdef, rest))(params, x)
    mesh = make_mesh(sizes)
    layout = shardings(params, mesh)
    placed = jax.device_put(params, layout)
    tokens = jax.device_put(x, NamedSharding(mesh, partition_spec(("batch", "embed"), x.shape, mesh)))
    with jax.set_mesh(mesh):
        assert "tpu_custom_call" in jax.jit(objective(graphdef, rest)).trace(placed, tokens).lower(lowering_platforms=("tpu",)).as_text()
        (split_value, (split_out, _)), split_grads = jax.jit(objective(graphdef, rest), out_shardings=((None, (None, None)), layout))(placed, tokens)
    np.testing.assert_allclose(split_out, out, atol=1e-4)
    np.testing.assert_allclose(split_value, value, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), split_grads, grads)


def test_experts_that_do_not_split_over_the_expert_axis_are_refused():
    moe = layer()
    with jax.set_mesh(make_mesh({"expert": 3})), pytest.raises(ValueError, match="8 experts do not split evenly over the expert mesh axis of size 3"):
        moe(jnp.ones((6, D)))


def test_tokens_that_do_not_split_over_the_expert_axis_run_as_on_one_device():
    moe = layer()
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, D)), jnp.float32)
    expected, _ = moe(x)
    with jax.set_mesh(make_mesh({"expert": 4})):
        got, _ = jax.jit(lambda x: moe(x))(x)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_layer_traced_without_a_mesh_splits_its_experts_when_called_under_one():
    moe = layer()
    x = jnp.asarray(np.random.default_rng(3).normal(size=(16, D)), jnp.float32)
    run = jax.jit(lambda x: moe(x)[0])
    alone = run(x)
    with jax.set_mesh(make_mesh({"expert": 4})):
        split = run(x)
    assert len(alone.sharding.device_set) == 1 and len(split.sharding.device_set) == 4
    np.testing.assert_allclose(split, alone, atol=1e-5)


def emulated_ragged_all_to_all(operand, output, input_offsets, send_sizes, output_offsets, recv_sizes, *, axis_name):
    """jax.lax.ragged_all_to_all as its docstring defines it, from all_gather (XLA:CPU has no
    ragged all-to-all). A chunk's rows are chosen by the sender's send_sizes and written only
    up to the receiver's recv_sizes, so sizes that disagree lose or add rows."""
    me = jax.lax.axis_index(axis_name)
    senders = jax.lax.all_gather(operand, axis_name)  # [P, n, D]
    starts, sizes, lands = (jax.lax.all_gather(a, axis_name)[:, me] for a in (input_offsets, send_sizes, output_offsets))
    rows = jnp.arange(operand.shape[0])
    for sender in range(senders.shape[0]):
        within = rows - starts[sender]
        inside = (within >= 0) & (within < sizes[sender]) & (within < recv_sizes[sender])
        target = jnp.where(inside, lands[sender] + within, output.shape[0])
        output = output.at[target].set(senders[sender], mode="drop")
    return output


def assignments(capacity, seed=4):
    """Random top-2 choices, weights and validity for TOKENS tokens, at most `capacity` kept per expert."""
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, E, size=(TOKENS, 2))
    valid = rng.random((TOKENS, 2)) < 0.9
    if capacity is not None:
        rank = np.zeros_like(chosen)
        for expert in range(E):
            where = (chosen == expert) & valid
            rank[where] = np.arange(where.sum())
        valid &= rank < capacity
    weights = rng.random((TOKENS, 2))
    return jnp.asarray(chosen, jnp.int32), jnp.asarray(weights, jnp.float32), jnp.asarray(valid)


@pytest.mark.parametrize("sizes", [{"expert": 4}, {"data": 2, "expert": 4}])
@pytest.mark.parametrize("capacity", [None, 5])
def test_the_ragged_exchange_equals_each_expert_applied_in_turn(monkeypatch, sizes, capacity):
    """Values and gradients of the ragged exchange (its collective emulated, as CPUs lack it),
    the padded one, and a reference that runs every expert on every token."""
    monkeypatch.setattr(jax.lax, "ragged_all_to_all", emulated_ragged_all_to_all)
    experts = layer(router_bias=True, expert_bias=True).experts
    graphdef, params = nnx.split(experts)
    x = jnp.asarray(np.random.default_rng(5).normal(size=(TOKENS, D)), jnp.float32)
    chosen, weights, valid = assignments(capacity)
    mesh = make_mesh(sizes)
    token_axes = tuple(a for a in ("data", "expert") if a in sizes)

    def reference(params, x, weights):
        every = nnx.merge(graphdef, params).batched(jnp.broadcast_to(x, (E, *x.shape)))  # [E, N, D]
        picked = every[chosen, jnp.arange(TOKENS)[:, None]]  # [N, 2, D]
        return jnp.einsum("nk,nkd->nd", jnp.where(valid, weights, 0), picked)

    def split(exchange):
        return lambda params, x, weights: expert_parallel.dispatch(
            nnx.merge(graphdef, params), x, chosen, weights, valid, mesh, token_axes, capacity, exchange=exchange
        )

    objective = lambda f: jax.jit(jax.value_and_grad(lambda *a: jnp.sum(jnp.sin(f(*a))), argnums=(0, 1, 2)))
    expected, expected_grads = objective(reference)(params, x, weights)
    for exchange in ("ragged", "padded"):
        with jax.set_mesh(mesh):
            value, grads = objective(split(exchange))(params, x, weights)
        np.testing.assert_allclose(value, expected, rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), grads, expected_grads)


def test_accelerators_lower_to_the_ragged_all_to_all_and_cpus_to_the_padded_one():
    """One traced training step of the layer under an expert mesh, lowered per platform."""
    graphdef, params, rest = nnx.split(layer(), nnx.Param, ...)
    x = jnp.ones((TOKENS, D), jnp.float32)
    with jax.set_mesh(make_mesh({"expert": 4})):
        traced = jax.jit(objective(graphdef, rest)).trace(params, x)
        lowered = {platform: traced.lower(lowering_platforms=(platform,)).as_text() for platform in ("cuda", "tpu", "cpu")}
    for platform in ("cuda", "tpu"):
        # there and back, then the way back transposed for the experts' gradients (x has none here)
        assert lowered[platform].count("ragged_all_to_all") == 3, platform
    assert "ragged_all_to_all" not in lowered["cpu"] and "all_to_all" in lowered["cpu"]


def test_experts_with_lora_adapters_across_devices_equal_one_device():
    """The adapters of the experts ([E, D, r], [E, r, F]) travel with their experts' weights."""
    from test_lora import randomized
    from zoo.layers import lora

    moe = layer()
    lora.attach(moe, 2, 4.0, ("experts.*",), nnx.Rngs(5))
    graphdef, params, rest = nnx.split(moe, nnx.Param, ...)
    params = randomized(params)
    x = jnp.asarray(np.random.default_rng(6).normal(size=(TOKENS, D)), jnp.float32)
    (value, (out, _)), grads = jax.jit(objective(graphdef, rest))(params, x)
    mesh = make_mesh({"expert": 4})
    with jax.set_mesh(mesh):
        (split_value, (split_out, _)), split_grads = jax.jit(objective(graphdef, rest))(jax.device_put(params, shardings(params, mesh)), x)
    np.testing.assert_allclose(split_out, out, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), split_grads, grads)
    assert params["experts"]["up_lora"]["a"][...].shape == (E, D, 2)


def test_quantized_experts_across_devices_equal_one_device():
    """int8 experts (values and scales) split over the expert axis like float ones."""
    from zoo.layers.quantized import quantize_weights

    moe = layer()
    assert "experts.up" in quantize_weights(moe, "int8")
    x = jnp.asarray(np.random.default_rng(7).normal(size=(TOKENS, D)), jnp.float32)
    run = jax.jit(lambda x: moe(x)[0])
    alone = run(x)
    with jax.set_mesh(make_mesh({"expert": 4})):
        split = run(x)
    np.testing.assert_allclose(split, alone, atol=1e-5)
