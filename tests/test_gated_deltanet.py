"""Gated DeltaNet: the chunked gated delta rule against the recurrence written as a loop over
time (chunk sizes, ragged lengths, packed segments, a carried state, gradients), the mixer's
cached decoding against its full forward, and the mixer against transformers' Qwen3-Next layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.layers.recurrent import GatedDeltaNet, gated_delta_rule, segment_starts

RNG = np.random.default_rng(0)
HEADS, KEY_HEADS, KEY_DIM, VALUE_DIM = 4, 2, 3, 5


def rule_reference(q, k, v, g, beta, starts, state=None):
    """Token by token: S = exp(g) S (S = 0 first at a segment start); S += k (beta (v - S^T k))^T;
    o = S^T q; value head h reads key head h // (H // Hk)."""
    batch, length, heads, value_dim = v.shape
    per_key = heads // k.shape[2]
    S = np.zeros((batch, heads, k.shape[3], value_dim)) if state is None else np.array(state, np.float64)
    o = np.zeros(v.shape)
    for b in range(batch):
        for t in range(length):
            if starts[b, t]:
                S[b] = 0.0
            for h in range(heads):
                q_t, k_t = q[b, t, h // per_key], k[b, t, h // per_key]
                S[b, h] = np.exp(g[b, t, h]) * S[b, h]
                S[b, h] += np.outer(k_t, beta[b, t, h] * (v[b, t, h] - S[b, h].T @ k_t))
                o[b, t, h] = S[b, h].T @ q_t
    return o, S


def rule_inputs(batch, length):
    q, k = RNG.normal(size=(2, batch, length, KEY_HEADS, KEY_DIM)) / np.sqrt(KEY_DIM)
    v = RNG.normal(size=(batch, length, HEADS, VALUE_DIM))
    g = -RNG.uniform(0.01, 0.7, size=(batch, length, HEADS))
    beta = RNG.uniform(0.1, 0.9, size=(batch, length, HEADS))
    return q, k, v, g, beta


PACKED = np.array([[1] * 4 + [2] * 5 + [3] * 2, [1] * 8 + [0] * 3])


@pytest.mark.parametrize("chunk", [1, 3, 4, 16])
def test_chunked_rule_is_the_recurrence_with_segments_reset(chunk):
    q, k, v, g, beta = rule_inputs(2, 11)
    real = (PACKED != 0)[..., None]
    g, beta = g * real, beta * real  # padding: no decay, no write
    starts = np.asarray(segment_starts(jnp.asarray(PACKED), PACKED.shape))
    o, final = gated_delta_rule(*map(jnp.asarray, (q, k, v, g, beta, starts)), chunk=chunk)
    o_ref, final_ref = rule_reference(q, k, v, g, beta, starts)
    np.testing.assert_allclose(np.asarray(o)[PACKED != 0], o_ref[PACKED != 0], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(final, final_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("chunk", [2, 5])
def test_a_given_state_continues_the_first_segment_only(chunk):
    q, k, v, g, beta = rule_inputs(2, 7)
    state = RNG.normal(size=(2, HEADS, KEY_DIM, VALUE_DIM))
    segments = np.array([[1] * 7, [1] * 3 + [2] * 4])
    starts = np.asarray(segment_starts(jnp.asarray(segments), segments.shape))
    o, final = gated_delta_rule(*map(jnp.asarray, (q, k, v, g, beta, starts, state)), chunk=chunk)
    o_ref, final_ref = rule_reference(q, k, v, g, beta, starts, state)
    np.testing.assert_allclose(o, o_ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(final, final_ref, atol=1e-4, rtol=1e-4)


def test_rule_gradients_are_those_of_the_recurrence():
    inputs = tuple(jnp.asarray(a, jnp.float32) for a in rule_inputs(2, 9))
    starts = segment_starts(jnp.asarray(PACKED[:, :9]), (2, 9))

    def recurrence(q, k, v, g, beta):  # the loop of rule_reference, in jax
        q, k = (jnp.repeat(a, HEADS // KEY_HEADS, axis=2) for a in (q, k))

        def step(S, inputs):
            q_t, k_t, v_t, g_t, beta_t, start = inputs
            S = jnp.where(start[:, None, None, None], 0.0, S) * jnp.exp(g_t)[..., None, None]
            delta = beta_t[..., None] * (v_t - jnp.einsum("bhde,bhd->bhe", S, k_t))
            S = S + k_t[..., None] * delta[:, :, None]
            return S, jnp.einsum("bhde,bhd->bhe", S, q_t)

        time_major = [jnp.moveaxis(a, 1, 0) for a in (q, k, v, g, beta, starts)]
        _, o = jax.lax.scan(step, jnp.zeros((2, HEADS, KEY_DIM, VALUE_DIM)), time_major)
        return jnp.moveaxis(o, 0, 1)

    weights = jnp.asarray(RNG.normal(size=(2, 9, HEADS, VALUE_DIM)), jnp.float32)
    chunked = lambda *a: jnp.sum(gated_delta_rule(*a, starts, chunk=4)[0] * weights)
    looped = lambda *a: jnp.sum(recurrence(*a) * weights)
    got, want = jax.grad(chunked, argnums=range(5))(*inputs), jax.grad(looped, argnums=range(5))(*inputs)
    for g_got, g_want in zip(got, want):
        np.testing.assert_allclose(g_got, g_want, atol=1e-4, rtol=1e-4)


# The mixer's forward under nnx.jit: run eagerly, each of the chunked form's many small ops dispatches alone (10x slower).
forward = nnx.jit(lambda layer, x, segment_ids=None, cache=None: layer(x, None, segment_ids, cache=cache))


def mixer():
    return GatedDeltaNet(16, HEADS, KEY_HEADS, KEY_DIM, VALUE_DIM, scan_chunk=4, rngs=nnx.Rngs(0))


def test_cached_decoding_equals_the_full_forward_for_rows_of_different_lengths():
    layer = mixer()
    x = jnp.asarray(RNG.normal(size=(2, 10, 16)), jnp.float32)
    full, _ = forward(layer, x)
    prompt = np.array([[1] * 5, [1] * 3 + [0] * 2])
    out, cache = forward(layer, x[:, :5], jnp.asarray(prompt), layer.empty_cache(2, 99))
    np.testing.assert_allclose(out[0], full[0, :5], atol=1e-5)
    np.testing.assert_allclose(out[1, :3], full[1, :3], atol=1e-5)
    seen = [5, 3]
    for _ in range(5):
        step = jnp.stack([x[row, seen[row]] for row in range(2)])[:, None]
        out, cache = forward(layer, step, jnp.ones((2, 1), jnp.int32), cache)
        for row in range(2):
            np.testing.assert_allclose(out[row, 0], full[row, seen[row]], atol=1e-5)
        seen = [s + 1 for s in seen]
    np.testing.assert_array_equal(cache.end, [10, 8])


def test_packed_segments_do_not_see_each_other_and_the_mixer_trains():
    layer = mixer()
    a, b = (jnp.asarray(RNG.normal(size=(1, n, 16)), jnp.float32) for n in (6, 5))
    packed, _ = forward(layer, jnp.concatenate([a, b], axis=1), jnp.asarray([[1] * 6 + [2] * 5]))
    np.testing.assert_allclose(packed[0, 6:], forward(layer, b)[0][0], atol=1e-5)
    grads = nnx.jit(lambda m, x: nnx.grad(lambda m: jnp.mean(m(x, None)[0] ** 2))(m))(layer, a)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads.A_log[...]).sum()) > 0 and float(jnp.abs(grads.b.weight[...]).sum()) > 0
    with pytest.raises(ValueError, match="no bidirectional form"):
        layer(a, None, causal=False)
    with pytest.raises(ValueError, match="do not share 3 key heads"):
        GatedDeltaNet(16, 4, 3, 3, 5, rngs=nnx.Rngs(0))


def zoo_weights_from_layer(layer, hf):
    """Copies a Qwen3NextGatedDeltaNet's weights into our GatedDeltaNet. transformers lays
    in_proj_qkvz out per key head as [q, k, its value heads' v, their z], and in_proj_ba as [b, a]."""
    per_key = HEADS // KEY_HEADS
    qkvz = hf.in_proj_qkvz.weight.detach().numpy().T.reshape(-1, KEY_HEADS, 2 * KEY_DIM + 2 * per_key * VALUE_DIM)
    q, k, v, z = np.split(qkvz, np.cumsum([KEY_DIM, KEY_DIM, per_key * VALUE_DIM]), axis=-1)
    layer.q.weight[...], layer.k.weight[...] = q, k
    layer.v.weight[...], layer.z.weight[...] = (a.reshape(-1, HEADS, VALUE_DIM) for a in (v, z))
    ba = hf.in_proj_ba.weight.detach().numpy().T.reshape(-1, KEY_HEADS, 2 * per_key)
    layer.b.weight[...], layer.a.weight[...] = ba[..., :per_key].reshape(-1, HEADS), ba[..., per_key:].reshape(-1, HEADS)
    conv = hf.conv1d.weight.detach().numpy()[:, 0].T  # [W, q | k | v]
    keys = KEY_HEADS * KEY_DIM
    layer.conv_q.weight[...], layer.conv_k.weight[...], layer.conv_v.weight[...] = np.split(conv, [keys, 2 * keys], axis=1)
    layer.dt_bias[...], layer.A_log[...] = hf.dt_bias.detach().numpy(), hf.A_log.detach().numpy()
    layer.norm.scale[...] = hf.norm.weight.detach().numpy()
    layer.out_proj.weight[...] = hf.out_proj.weight.detach().numpy().T.reshape(HEADS, VALUE_DIM, -1)


def test_the_mixer_is_transformers_qwen3_next_gated_deltanet():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextGatedDeltaNet

    torch.manual_seed(0)
    config = transformers.Qwen3NextConfig(
        hidden_size=16, linear_num_value_heads=HEADS, linear_num_key_heads=KEY_HEADS, linear_key_head_dim=KEY_DIM,
        linear_value_head_dim=VALUE_DIM, linear_conv_kernel_dim=4, num_hidden_layers=1, layer_types=["linear_attention"],
    )
    hf = Qwen3NextGatedDeltaNet(config, layer_idx=0).eval()
    with torch.no_grad():  # random, not the initial values, for every parameter
        for p in hf.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    layer = GatedDeltaNet(16, HEADS, KEY_HEADS, KEY_DIM, VALUE_DIM, scan_chunk=4, rngs=nnx.Rngs(0))
    zoo_weights_from_layer(layer, hf)
    x = RNG.normal(size=(2, 9, 16)).astype(np.float32)
    with torch.no_grad():
        want = hf(torch.from_numpy(x)).numpy()
    got, _ = forward(layer, jnp.asarray(x))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
