"""Smoke test run by .ci/run under a second Python/jax line (3.12, jax 0.12): a forward pass, a
cached decode, a gradient, MoE across devices, zoo.explain and zoo.plan, and a short training
run that is interrupted, resumed from its checksummed checkpoint and sampled from."""

import os
import signal
import sysconfig
import tempfile
from pathlib import Path

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from zoo import config, models
from zoo.layers import GroupedQueryAttention, RoPE
from zoo.layers.moe import MoE
from zoo.sharding import make_mesh

cfg = config.load("tiny", ["model.num_layers=2"])
model = models.build(cfg.model)
params = jax.jit(model.init)(jax.random.key(0))
tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, cfg.model.vocab_size)
apply = jax.jit(model.apply)
full = apply(params, tokens).logits
prefill = apply(params, tokens[:, :8], cache=model.init_cache(2, 32))
rest = apply(params, tokens[:, 8:], cache=prefill.cache)
np.testing.assert_allclose(jnp.concatenate([prefill.logits, rest.logits], axis=1), full, atol=1e-4)

loss = lambda p: jnp.mean(jax.nn.log_softmax(model.apply(p, tokens).logits)[..., 0])
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
with jax.set_mesh(make_mesh({"expert": 4})):  # experts across devices: shard_map and all-to-all
    split, _ = jax.jit(lambda x: moe(x))(x)
np.testing.assert_allclose(split, alone, atol=1e-5)
dropless = MoE(16, 8, 2, 24, rngs=nnx.Rngs(0))
with jax.set_mesh(make_mesh({"data": 4})):  # each device's own tokens through every expert: shard_map
    split, _ = jax.jit(lambda x: dropless(x))(x)
np.testing.assert_allclose(split, dropless(x)[0], atol=1e-5)

from zoo import explain, plan  # noqa: E402

walked = explain.explain("tiny", prompt="Hello", layer=1)  # taps recorded eagerly
assert {"attention.weights", "ffn.hidden"} <= {s["name"] for s in walked["steps"]} and walked["next"]
assert explain.explain("llama3-8b", prompt="Hi")["steps"][0]["shape"] == [1, 2, 4096]  # abstract taps
planned = plan.plan(config.load("tiny"), plan.MeshShape.parse("fsdp=2"))  # print_saved_residuals read back
assert planned.activations > 0 and planned.parameters > 0
corpus = str(Path(sysconfig.get_paths()["stdlib"]) / "json" / "*.py")
small = config.load("tiny", [
    "model.vocab_size=400", "model.num_layers=1", "model.d_model=64", "model.ffn_dim=128", "train.steps=4",
    "train.batch_size=4", "train.seq_len=32", "train.log_every=1", "train.checkpoint_every=2", "train.eval_batches=1",
    f"data.source=\"text\"", f"data.paths=[\"{corpus}\"]", "mesh.data=1",
])
from zoo import runs  # noqa: E402
from zoo.generate import Generator  # noqa: E402
from zoo.train import Interrupted, train  # noqa: E402


class SignalAfterStep1:
    def write(self, text):
        if "] 1/4 |" in text:
            os.kill(os.getpid(), signal.SIGINT)

    def flush(self):
        pass


workdir = Path(tempfile.mkdtemp()) / "run"
try:
    train(small, workdir, out=SignalAfterStep1())
    raise AssertionError("the signal did not stop the run")
except Interrupted as stop:
    assert stop.step == 1 and stop.saved == 1 and stop.exit_code == 130, stop
train(small, workdir)
run = runs.load(workdir)
assert run.step == 4 and not run.notes
(generated,) = Generator(run.model, run.params)([[run.tokenizer.bos_id, 5, 6]], max_new_tokens=4)
assert 1 <= len(generated.tokens) <= 4
print(f"smoke ok: jax {jax.__version__}, flax {__import__('flax').__version__}")
