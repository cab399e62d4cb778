"""Import-and-forward smoke test, run by .ci/run under a second Python/jax line (3.12, jax 0.12)."""

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from zoo import config, models
from zoo.layers import GroupedQueryAttention, RoPE
from zoo.layers.moe import MoE
from zoo.sharding import activation_sharding, make_mesh

cfg = config.load("tiny", ["model.num_layers=2"])
model = models.build(cfg.model)
params = jax.jit(model.init)(jax.random.key(0))
tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, cfg.model.vocab_size)
full, _ = jax.jit(model.apply)(params, tokens)
cache = model.init_cache(2, 32)
prefill, cache = jax.jit(model.apply)(params, tokens[:, :8], cache=cache)
rest, cache = jax.jit(model.apply)(params, tokens[:, 8:], cache=cache)
np.testing.assert_allclose(jnp.concatenate([prefill, rest], axis=1), full, atol=1e-4)

loss = lambda p: jnp.mean(jax.nn.log_softmax(model.apply(p, tokens)[0])[..., 0])
grads = jax.jit(jax.grad(loss))(params)
tx = optax.adamw(1e-3)
updates, _ = tx.update(grads, tx.init(params), params)
assert all(np.isfinite(np.asarray(u)).all() for u in jax.tree.leaves(updates))

attention = GroupedQueryAttention(64, 4, 2, 16, rope=RoPE(16), rngs=nnx.Rngs(0))
out, _ = attention(jnp.ones((1, 5, 64)), jnp.arange(5)[None], jnp.ones((1, 5), jnp.int32))
assert out.shape == (1, 5, 64)

moe = MoE(16, 8, 2, 24, shared_dim=8, capacity_factor=1.0, rngs=nnx.Rngs(0))
x = jax.random.normal(jax.random.key(2), (32, 16))
alone, _ = moe(x)
with activation_sharding(make_mesh({"expert": 4})):  # experts across devices: shard_map and all-to-all
    split, _ = jax.jit(lambda x: moe(x))(x)
np.testing.assert_allclose(split, alone, atol=1e-5)
print(f"smoke ok: jax {jax.__version__}, flax {__import__('flax').__version__}")
