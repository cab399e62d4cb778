"""Experts split over the `expert` mesh axis give the single-device layer's results."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding

from zoo.layers.moe import MoE
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
