"""Models that mix recurrent layers (Mamba-2, Gated DeltaNet) with attention: caches, packing, transforms, sharding."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding

from zoo import config, models, stats
from zoo.layers.attention import KVCache
from zoo.layers.layout import partition_spec
from zoo.layers.param import logical_axes
from zoo.layers.recurrent import RecurrentCache
from zoo.sharding import make_mesh, shardings

MAMBA2 = {"num_heads": 4, "head_dim": 8, "state_dim": 8, "scan_chunk": 8}
GATED_DELTANET = {"num_heads": 4, "num_key_heads": 2, "key_dim": 8, "value_dim": 8, "scan_chunk": 8}
KINDS = {
    "mamba-2 alone": {  # Mamba2ForCausalLM: mixer layers without feed-forwards or positions
        "ffn_dim": 0, "position": {"kind": "none"}, "attention": {"layer_pattern": ["mamba2"]}, "mamba2": MAMBA2,
    },
    "hybrid": {  # Mamba-2 layers between global and local attention layers (Jamba, Bamba, Nemotron-H), and a
        # layer of attention and Mamba-2 side by side (Falcon-H1)
        "num_layers": 4, "attention": {"layer_pattern": ["mamba2", "global", "global+mamba2", "local"], "window": 5},
        "mamba2": MAMBA2,
    },
    "qwen3-next": {  # three Gated DeltaNet layers to one attention layer, every feed-forward an MoE with a gated shared expert
        "num_layers": 4, "attention": {"layer_pattern": ["gated_deltanet"] * 3 + ["global"]}, "gated_deltanet": GATED_DELTANET,
        "moe": {"num_experts": 4, "top_k": 2, "expert_ffn_dim": 16, "shared_ffn_dim": 8, "shared_gate": True},
    },
}


@pytest.fixture(scope="module", params=KINDS)
def built(request):
    """(model, params) of each kind, built once for the module."""
    sizes = dict(vocab_size=97, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=48, max_seq_len=128)
    model = models.build(config.ModelConfig.from_dict({**sizes, **KINDS[request.param]}))
    return model, jax.jit(model.init)(jax.random.key(0))


def tokens_for(batch, length, seed=0):
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, 97)


def test_cached_decoding_token_by_token_equals_the_full_forward(built):
    """A prefill of 9 tokens (rows of 9 and 6, the second padded), then 64 tokens one at a time."""
    model, params = built
    apply = jax.jit(model.apply)
    tokens = tokens_for(2, 9 + 64)
    segments = jnp.array([[1] * 9, [1] * 6 + [0] * 3])
    out = apply(params, tokens[:, :9], segment_ids=segments, cache=model.init_cache(batch=2, length=80))
    cache, steps = out.cache, [out.logits]
    short = jnp.concatenate([tokens[1, :6], tokens[1, 9:]])  # the second row's real tokens
    for t in range(9, 9 + 64):
        out = apply(params, tokens[:, t : t + 1], cache=cache)
        cache = out.cache
        steps.append(out.logits)
    decoded = jnp.concatenate(steps, axis=1)
    full = apply(params, tokens).logits
    np.testing.assert_allclose(decoded[0], full[0], atol=1e-4)
    np.testing.assert_allclose(decoded[1, :6], apply(params, short[None, :6]).logits[0], atol=1e-4)
    np.testing.assert_allclose(decoded[1, 9:], apply(params, short[None]).logits[0, 6:], atol=1e-4)


def test_the_cache_holds_each_layers_kind_of_state(built):
    model, _ = built
    small, large = (jax.eval_shape(lambda n=n: model.init_cache(batch=1, length=n)) for n in (64, 4096))
    kinds = lambda cache: [type(c) for c in jax.tree.leaves(cache, is_leaf=lambda c: isinstance(c, (KVCache, RecurrentCache)))]
    assert RecurrentCache in kinds(small) and kinds(small) == kinds(large)
    recurrent = stats.recurrent_state_bytes(model)
    assert recurrent > 0 and recurrent == stats.recurrent_state_bytes(model)  # one size, whatever the context
    if KVCache not in kinds(small):
        assert stats.kv_cache_bytes(model, 4096) == 0


def test_packed_segments_equal_separate_sequences(built):
    model, params = built
    apply = jax.jit(model.apply)
    a, b = tokens_for(1, 11, seed=1), tokens_for(1, 13, seed=2)
    segments = jnp.array([[1] * 11 + [2] * 13 + [0] * 4])
    packed = jnp.concatenate([a, b, jnp.zeros((1, 4), a.dtype)], axis=1)
    logits = apply(params, packed, segment_ids=segments).logits
    np.testing.assert_allclose(logits[:, :11], apply(params, a).logits, atol=1e-5)
    np.testing.assert_allclose(logits[:, 11:24], apply(params, b).logits, atol=1e-5)


def test_every_parameter_has_logical_axes(built):
    model, _ = built
    variables = jax.tree_util.tree_flatten_with_path(model.abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    for path, variable in variables:
        axes = logical_axes(variable)
        assert len(axes) == len(variable.shape), (path, axes)
        assert axes[0] == "layers" or "['layers']" not in jax.tree_util.keystr(path), (path, axes)  # stacked


def loss_fn(model):
    def loss(params, tokens):
        logits = model.apply(params, tokens).logits
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], -1))

    return loss


def assert_close_gradients(grads, expected):
    """Within 2e-4 of each gradient's largest entry: float32 sums in another order (a batch split
    in halves on one device, say) move the Gated DeltaNet + MoE model's gradients by as much."""
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-4 * float(np.abs(b).max()) + 1e-7), grads, expected)


def test_scan_unroll_and_remat_give_the_same_gradients(built):
    """Unrolled layers, and rematerialised ones (dots: the policy that saves some residuals and recomputes the rest)."""
    model, params = built
    tokens = tokens_for(2, 20)
    expected = jax.jit(jax.grad(loss_fn(model)))(params, tokens)
    for overrides in ({"scan_layers": False}, {"remat": "dots"}):
        variant = models.build(dataclasses.replace(model.config, **overrides))
        assert_close_gradients(jax.jit(jax.grad(loss_fn(variant)))(params, tokens), expected)


def test_sharded_over_data_fsdp_and_tensor_equals_one_device(built):
    model, params = built
    tokens = tokens_for(8, 16)
    loss = loss_fn(model)
    expected_loss, expected_grads = jax.jit(jax.value_and_grad(loss))(params, tokens)
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    layout = shardings(params, mesh)
    batch = jax.device_put(tokens, NamedSharding(mesh, partition_spec(("batch", "length"), tokens.shape, mesh)))
    with jax.set_mesh(mesh):
        value, grads = jax.jit(jax.value_and_grad(loss), out_shardings=(None, layout))(jax.device_put(params, layout), batch)
    np.testing.assert_allclose(value, expected_loss, rtol=1e-5)
    assert_close_gradients(grads, expected_grads)


BASE = dict(vocab_size=97, d_model=32, num_layers=2, num_heads=4, ffn_dim=48)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"attention": {"layer_pattern": ["mamba2", "global"]}}, "model.mamba2: attention.layer_pattern has 'mamba2' layers; give them a [model.mamba2] table"),
        ({"gated_deltanet": GATED_DELTANET}, "model.gated_deltanet: sizes 'gated_deltanet' layers, but attention.layer_pattern ['global'] has none"),
        ({"kind": "encoder", "attention": {"layer_pattern": ["mamba2"]}, "mamba2": MAMBA2}, "'mamba2' layers run causally: they are for decoder models, not 'encoder'"),
        ({"attention": {"layer_pattern": ["mamba"]}}, "'mamba' is not allowed (did you mean 'mamba2'?)"),
        ({"attention": {"layer_pattern": ["mamba2"]}, "mamba2": {"num_heads": 6, "groups": 4}}, "model.mamba2.groups: 6 heads do not split into 4 equal groups"),
        ({"attention": {"layer_pattern": ["mamba2"]}, "mamba2": {"num_heads": 4, "dt_limit": [0.1]}}, "model.mamba2.dt_limit: needs [low, high] with low < high, got [0.1]"),
        ({"attention": {"layer_pattern": ["gated_deltanet"]}, "gated_deltanet": {"num_heads": 6, "num_key_heads": 4}}, "num_heads=6 value heads do not share 4 key heads evenly"),
        ({"ffn_dim": 0, "block": "parallel"}, "model.ffn_dim: 0 leaves the 'parallel' block nothing to run beside its mixer"),
        ({"attention": {"layer_pattern": ["global+mamba2"]}}, "model.mamba2: attention.layer_pattern has 'mamba2' layers"),
        ({"attention": {"layer_pattern": ["local+mamba2"]}, "mamba2": MAMBA2}, "model.attention.window: local layers need a window size"),
        ({"attention": {"layer_pattern": ["mamba2+global"]}}, "'mamba2+global' is not allowed"),
        ({"attention": {"layer_pattern": ["mamba2"]}, "mamba2": {"num_heads": 4, "output_norm": "after"}}, "model.mamba2.output_norm: 'after' is not allowed"),
    ],
)
def test_bad_recurrent_configs(fields, message):
    with pytest.raises(config.ConfigError) as error:
        config.Config.from_dict({"model": {**BASE, **fields}})
    assert message in str(error.value)
