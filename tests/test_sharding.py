"""Logical-axis sharding rules, and the model sharded over 8 fake CPU devices or under pmap."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from zoo import config, models
from zoo.layers.layout import constrain
from zoo.sharding import make_mesh, shardings, partition_spec


def test_eight_fake_devices():
    assert jax.device_count() == 8


def test_mesh_fills_the_rest():
    mesh = make_mesh({"data": -1, "tensor": 2})
    assert dict(mesh.shape) == {"data": 4, "fsdp": 1, "tensor": 2, "expert": 1}


@pytest.mark.parametrize(
    "sizes, message",
    [
        ({"data": 16}, "needs 16 devices, there are 8"),
        ({"data": -1, "tensor": 3}, "does not divide 8 devices"),
        ({"model": 2}, "unknown mesh axes \\['model'\\]; allowed: data, fsdp, tensor, expert"),
    ],
)
def test_bad_meshes(sizes, message):
    with pytest.raises(ValueError, match=message):
        make_mesh(sizes)


def test_partition_spec_rules():
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert partition_spec(("embed", "heads", "head_dim"), (64, 8, 16), mesh) == P("fsdp", "tensor", None)
    assert partition_spec(("batch", "length", "embed"), (8, 16, 64), mesh) == P(("data", "fsdp"), None, None)
    assert partition_spec(("embed", "kv_heads", "head_dim"), (64, 1, 16), mesh) == P("fsdp", None, None)  # MQA
    assert partition_spec(("layers", "vocab", "embed"), (2, 97, 64), mesh) == P(None, None, "fsdp")  # 97 is odd
    assert partition_spec(("batch",), (6,), mesh) == P("data")  # 6 splits 2 ways, not 4
    assert partition_spec(("unnamed",), (8,), mesh) == P(None)


def traced_with_a_counter():
    """(a jitted x [8, 4] -> 2x pinned to ("batch", "embed"), the list of meshes it was traced under)."""
    traces = []

    def double(x):
        traces.append(jax.sharding.get_abstract_mesh().shape_tuple)
        return constrain(2 * x, ("batch", "embed"))

    return jax.jit(double), traces


def test_a_function_traced_without_a_mesh_is_traced_again_under_one():
    mesh = make_mesh({"data": 4, "tensor": 2})
    double, traces = traced_with_a_counter()
    x = jnp.ones((8, 4))
    assert len(double(x).sharding.device_set) == 1
    with jax.set_mesh(mesh):
        inside = double(x)
    assert len(traces) == 2
    assert inside.sharding.shard_shape(x.shape) == (2, 4) and len(inside.sharding.device_set) == 8  # batch over data
    np.testing.assert_array_equal(inside, 2 * x)
    assert len(double(x).sharding.device_set) == 1 and len(traces) == 2  # the first program, from the cache


def test_a_function_traced_under_a_mesh_is_traced_again_without_one():
    double, traces = traced_with_a_counter()
    x = jnp.ones((8, 4))
    with jax.set_mesh(make_mesh({"data": 4, "tensor": 2})):
        assert double(x).sharding.shard_shape(x.shape) == (2, 4)
    outside = double(x)
    assert len(traces) == 2 and traces[1] == ()
    assert len(outside.sharding.device_set) == 1  # not the stale sharded program
    np.testing.assert_array_equal(outside, 2 * x)


def test_constrain_leaves_manual_axes_alone():
    """Inside a shard_map over every mesh axis the shards are already placed: constrain is a no-op."""
    mesh = make_mesh({"data": 4, "tensor": 2})
    local = jax.shard_map(lambda x: constrain(x, ("batch", "mlp")) + 1, in_specs=P("data"), out_specs=P("data"))
    with jax.set_mesh(mesh):
        out = jax.jit(local)(jnp.zeros((8, 4)))
    np.testing.assert_array_equal(out, 1)


def test_the_layers_import_no_config_sharding_or_models():
    """Layers know sizes, models know configs: no module of zoo.layers loads zoo.config, the
    top-level zoo.sharding or zoo.models (checked in a fresh interpreter)."""
    code = (
        "import importlib, pkgutil, sys, zoo.layers\n"
        "for module in pkgutil.walk_packages(zoo.layers.__path__, 'zoo.layers.'):\n"
        "    importlib.import_module(module.name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[:2] in (['zoo', 'config'], ['zoo', 'sharding'], ['zoo', 'models']))\n"
        "assert not loaded, f'zoo.layers loads {loaded}'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def single_device_run():
    """A small model, a batch, and the loss and gradients computed on one device."""
    model = models.build(
        config.ModelConfig(vocab_size=96, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=48)
    )
    params = jax.jit(model.init)(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (8, 16), 0, 96)
    loss = loss_fn(model)
    value, grads = jax.jit(jax.value_and_grad(loss))(params, tokens)
    return model, params, tokens, value, grads


def loss_fn(model):
    def loss(params, tokens):
        logits = model.apply(params, tokens).logits
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], -1))

    return loss


@pytest.mark.parametrize("sizes", [{"data": 8}, {"fsdp": 8}, {"tensor": 2, "data": 4}, {"data": 2, "fsdp": 2, "tensor": 2}])
def test_sharded_params_give_single_device_results(single_device_run, sizes):
    model, params, tokens, expected_loss, expected_grads = single_device_run
    loss = loss_fn(model)

    mesh = make_mesh(sizes)
    layout = shardings(params, mesh)
    sharded = jax.device_put(params, layout)
    batch = jax.device_put(tokens, NamedSharding(mesh, partition_spec(("batch", "length"), tokens.shape, mesh)))
    with jax.set_mesh(mesh):
        value, grads = jax.jit(jax.value_and_grad(loss), out_shardings=(None, layout))(sharded, batch)
    wq = sharded["tower"]["layers"]["attention"]["q"]["weight"][...]
    assert len(wq.sharding.device_set) == 8
    np.testing.assert_allclose(value, expected_loss, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), grads, expected_grads)


def test_sharded_init_lays_params_out_by_the_rules(small_config):
    model = models.build(small_config(vocab_size=96))
    mesh = make_mesh({"fsdp": 2, "tensor": 4})
    layout = shardings(model.abstract_params, mesh)
    params = jax.jit(model.init, out_shardings=layout)(jax.random.key(0))
    assert params["embedder"]["embedding"]["table"][...].sharding.spec == P("tensor", "fsdp")
    assert params["tower"]["layers"]["ffn"]["down"]["weight"][...].sharding.spec == P(None, "tensor", "fsdp")
    single = jax.jit(model.init)(jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, params, single)


def test_pmap_equals_one_device(single_device_run):
    model, params, tokens, _, _ = single_device_run
    loss = loss_fn(model)
    expected = jax.jit(jax.vmap(lambda row: loss(params, row[None])))(tokens)
    per_device = jax.pmap(loss, in_axes=(None, 0))(params, tokens.reshape(8, 1, 16))
    np.testing.assert_allclose(per_device, expected, rtol=1e-5)


def test_qk_norm_over_tensor_sharded_heads_equals_one_device(small_config):
    """OLMo 2's QK-norm sums over all heads: with the heads split over `tensor`, the logits stay those of one device."""
    model = models.build(small_config(num_heads=8, num_kv_heads=4, attention={"qk_norm": True, "qk_norm_over": "projection"}))
    params = jax.jit(model.init)(jax.random.key(0))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map_with_path(  # norm scales that differ per head
        lambda path, a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), a.dtype) if "_norm" in str(path) else a, params
    )
    tokens = jax.random.randint(jax.random.key(1), (4, 12), 0, 97)
    expected = jax.jit(model.apply)(params, tokens).logits
    mesh = make_mesh({"data": 2, "tensor": 4})
    sharded = jax.device_put(params, shardings(params, mesh))
    assert sharded["tower"]["layers"]["attention"]["q_norm"]["scale"][...].sharding.spec == P(None, "tensor", None)
    with jax.set_mesh(mesh):
        logits = jax.jit(model.apply)(sharded, tokens).logits
    np.testing.assert_allclose(logits, expected, atol=1e-5)
