"""Mamba-2: the chunked SSD scan against the recurrence written as a loop over time (chunk
sizes, ragged lengths, packed segments, a carried state, gradients), the mixer's cached
decoding against its full forward, and the mixer against transformers' Mamba2Mixer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo.layers.recurrent import Mamba2, segment_starts, ssd_scan

RNG = np.random.default_rng(0)
HEADS, HEAD_DIM, GROUPS, STATE = 4, 3, 2, 5


def scan_reference(x, dt, decay_rate, B, C, starts, state=None):
    """The paper's recurrence token by token: S = exp(dt a) S + dt x B^T (S = 0 first at a
    segment start), y = S C; head h reads group h // (H // G)."""
    batch, length, heads, head_dim = x.shape
    per_group = heads // B.shape[2]
    S = np.zeros((batch, heads, head_dim, B.shape[3])) if state is None else np.array(state, np.float64)
    y = np.zeros(x.shape)
    for b in range(batch):
        for t in range(length):
            if starts[b, t]:
                S[b] = 0.0
            for h in range(heads):
                g = h // per_group
                S[b, h] = np.exp(dt[b, t, h] * decay_rate[h]) * S[b, h] + dt[b, t, h] * np.outer(x[b, t, h], B[b, t, g])
                y[b, t, h] = S[b, h] @ C[b, t, g]
    return y, S


def scan_inputs(batch, length):
    x = RNG.normal(size=(batch, length, HEADS, HEAD_DIM))
    dt = RNG.uniform(0.05, 0.8, size=(batch, length, HEADS))
    decay_rate = -RNG.uniform(0.5, 2.0, size=HEADS)
    B, C = RNG.normal(size=(2, batch, length, GROUPS, STATE))
    return x, dt, decay_rate, B, C


PACKED = np.array([[1] * 4 + [2] * 5 + [3] * 2, [1] * 8 + [0] * 3])


@pytest.mark.parametrize("chunk", [1, 3, 4, 16])
def test_chunked_scan_is_the_recurrence_with_segments_reset(chunk):
    x, dt, decay_rate, B, C = scan_inputs(2, 11)
    dt = dt * (PACKED != 0)[..., None]  # padding takes no step
    starts = np.asarray(segment_starts(jnp.asarray(PACKED), PACKED.shape))
    assert starts.tolist()[0] == [False] * 4 + [True] + [False] * 4 + [True, False]
    y, final = ssd_scan(*map(jnp.asarray, (x, dt, decay_rate, B, C, starts)), chunk=chunk)
    y_ref, final_ref = scan_reference(x, dt, decay_rate, B, C, starts)
    real = PACKED != 0
    np.testing.assert_allclose(np.asarray(y)[real], y_ref[real], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(final, final_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("chunk", [2, 5])
def test_a_given_state_continues_the_first_segment_only(chunk):
    x, dt, decay_rate, B, C = scan_inputs(2, 7)
    state = RNG.normal(size=(2, HEADS, HEAD_DIM, STATE))
    segments = np.array([[1] * 7, [1] * 3 + [2] * 4])
    starts = np.asarray(segment_starts(jnp.asarray(segments), segments.shape))
    y, final = ssd_scan(*map(jnp.asarray, (x, dt, decay_rate, B, C, starts, state)), chunk=chunk)
    y_ref, final_ref = scan_reference(x, dt, decay_rate, B, C, starts, state)
    np.testing.assert_allclose(y, y_ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(final, final_ref, atol=1e-4, rtol=1e-4)


def test_scan_gradients_are_those_of_the_recurrence():
    x, dt, decay_rate, B, C = (jnp.asarray(a, jnp.float32) for a in scan_inputs(2, 9))
    starts = segment_starts(jnp.asarray(PACKED[:, :9]), (2, 9))

    def recurrence(x, dt, decay_rate, B, C):  # the same loop as scan_reference, in jax
        Bh, Ch = (jnp.repeat(a, HEADS // GROUPS, axis=2) for a in (B, C))

        def step(S, inputs):
            x_t, dt_t, B_t, C_t, start = inputs
            S = jnp.where(start[:, None, None, None], 0.0, S)
            S = jnp.exp(dt_t * decay_rate)[..., None, None] * S + dt_t[..., None, None] * x_t[..., None] * B_t[:, :, None]
            return S, jnp.einsum("bhpn,bhn->bhp", S, C_t)

        time_major = [jnp.moveaxis(a, 1, 0) for a in (x, dt, Bh, Ch, starts)]
        _, y = jax.lax.scan(step, jnp.zeros((2, HEADS, HEAD_DIM, STATE)), time_major)
        return jnp.moveaxis(y, 0, 1)

    weights = jnp.asarray(RNG.normal(size=(2, 9, HEADS, HEAD_DIM)), jnp.float32)
    chunked = lambda *a: jnp.sum(ssd_scan(*a, starts, chunk=4)[0] * weights)
    looped = lambda *a: jnp.sum(recurrence(*a) * weights)
    for got, want in zip(jax.grad(chunked, argnums=range(5))(x, dt, decay_rate, B, C), jax.grad(looped, argnums=range(5))(x, dt, decay_rate, B, C)):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


# The mixer's forward under nnx.jit: run eagerly, each of the chunked form's many small ops dispatches alone (10x slower).
forward = nnx.jit(lambda layer, x, segment_ids=None, cache=None: layer(x, None, segment_ids, cache=cache))


def mixer(**options):
    return Mamba2(16, HEADS, HEAD_DIM, STATE, groups=GROUPS, conv_width=4, scan_chunk=4, rngs=nnx.Rngs(0), **options)


def test_cached_decoding_equals_the_full_forward_for_rows_of_different_lengths():
    layer = mixer()
    x = jnp.asarray(RNG.normal(size=(2, 10, 16)), jnp.float32)
    full, _ = forward(layer, x)
    # prefill: row 0 has 5 prompt tokens, row 1 three (then padding); then one token per step
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


def test_packed_segments_do_not_see_each_other():
    layer = mixer()
    a, b = (jnp.asarray(RNG.normal(size=(1, n, 16)), jnp.float32) for n in (6, 5))
    packed, _ = forward(layer, jnp.concatenate([a, b], axis=1), jnp.asarray([[1] * 6 + [2] * 5]))
    alone_b, _ = forward(layer, b)
    np.testing.assert_allclose(packed[0, 6:], alone_b[0], atol=1e-5)


def test_the_mixer_trains_under_jit_and_refuses_what_it_has_no_form_for():
    layer = mixer()
    x = jnp.asarray(RNG.normal(size=(2, 7, 16)), jnp.float32)

    @nnx.jit
    def loss_and_grad(layer, x):
        return nnx.value_and_grad(lambda m: jnp.mean(m(x, None)[0] ** 2))(layer)

    loss, grads = loss_and_grad(layer, x)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads.A_log[...]).sum()) > 0 and float(jnp.abs(grads.dt_bias[...]).sum()) > 0
    with pytest.raises(ValueError, match="no bidirectional form"):
        layer(x, None, causal=False)
    with pytest.raises(ValueError, match="no global tokens"):
        layer(x, None, global_tokens=jnp.zeros((2, 7), bool))
    with pytest.raises(ValueError, match="do not split into 3 groups"):
        Mamba2(16, 4, 3, 5, groups=3, rngs=nnx.Rngs(0))


def zoo_weights_from_mixer(layer, hf):
    """Copies transformers' Mamba2Mixer weights into our Mamba2 (in_proj holds z | x | B | C | dt,
    conv1d the channels x | B | C)."""
    inner, bc = HEADS * HEAD_DIM, GROUPS * STATE
    w = hf.in_proj.weight.detach().numpy().T  # [D, out]
    z, x, B, C, dt = np.split(w, np.cumsum([inner, inner, bc, bc]), axis=1)
    layer.z.weight[...] = z.reshape(-1, HEADS, HEAD_DIM)
    layer.x.weight[...] = x.reshape(-1, HEADS, HEAD_DIM)
    layer.B.weight[...], layer.C.weight[...] = B.reshape(-1, GROUPS, STATE), C.reshape(-1, GROUPS, STATE)
    layer.dt.weight[...] = dt
    conv_w, conv_b = hf.conv1d.weight.detach().numpy()[:, 0].T, hf.conv1d.bias.detach().numpy()  # [W, C]
    for name, (lo, hi) in {"x": (0, inner), "B": (inner, inner + bc), "C": (inner + bc, inner + 2 * bc)}.items():
        conv = getattr(layer, f"conv_{name}")
        conv.weight[...], conv.bias[...] = conv_w[:, lo:hi], conv_b[lo:hi]
    for ours, theirs in (("dt_bias", hf.dt_bias), ("A_log", hf.A_log), ("D", hf.D)):
        getattr(layer, ours)[...] = theirs.detach().numpy()
    layer.norm.scale[...] = hf.norm.weight.detach().numpy()
    layer.out_proj.weight[...] = hf.out_proj.weight.detach().numpy().T.reshape(HEADS, HEAD_DIM, -1)


def test_the_mixer_is_transformers_mamba2_mixer():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    torch.manual_seed(0)
    config = transformers.Mamba2Config(
        hidden_size=6, num_heads=HEADS, head_dim=HEAD_DIM, expand=2, state_size=STATE,
        n_groups=GROUPS, conv_kernel=4, chunk_size=4, num_hidden_layers=1, time_step_limit=(0.0, 2.0),
    )
    hf = Mamba2Mixer(config, layer_idx=0).eval()
    with torch.no_grad():  # random, not the initial values, for every parameter
        for p in hf.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    layer = Mamba2(6, HEADS, HEAD_DIM, STATE, groups=GROUPS, scan_chunk=4, dt_limit=(0.0, 2.0), rngs=nnx.Rngs(0))
    zoo_weights_from_mixer(layer, hf)
    x = RNG.normal(size=(2, 9, 6)).astype(np.float32)
    with torch.no_grad():
        want = hf(torch.from_numpy(x)).numpy()
    got, _ = forward(layer, jnp.asarray(x))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
