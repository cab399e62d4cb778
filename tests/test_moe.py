"""The mixture-of-experts layer against a plain per-token reference loop."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo import models
from zoo.layers.moe import MoE, Router, balance, balance_sums, load_balancing_loss, router_z_loss
from zoo.layers.moe.router import softmax_routing

D, E, F = 8, 4, 12


def silu(x):
    return x / (1 + np.exp(-x))


def weights_of(moe):
    w = lambda v: np.asarray(v[...], np.float64)
    shared = None
    if moe.shared is not None:
        shared = tuple(w(layer.weight) for layer in (moe.shared.gate, moe.shared.up, moe.shared.down))
    return w(moe.router.weight), (w(moe.experts.gate), w(moe.experts.up), w(moe.experts.down)), shared


def expert_ffn(x, gate, up, down):
    return (silu(x @ gate) * (x @ up)) @ down


def reference_moe(moe, x, choose):
    """Loop over tokens: route each by `choose(scores, logits)` -> {expert: weight}, run its experts, sum."""
    router, (gate, up, down), shared = weights_of(moe)
    x = np.asarray(x, np.float64).reshape(-1, D)
    out = np.zeros_like(x)
    for n, token in enumerate(x):
        logits = token @ router
        for expert, weight in choose(logits).items():
            out[n] += weight * expert_ffn(token, gate[expert], up[expert], down[expert])
        if shared is not None:
            scale = 1.0 if moe.shared_gate is None else 1 / (1 + np.exp(-token @ np.asarray(moe.shared_gate.weight[...], np.float64)[:, 0]))
            out[n] += scale * expert_ffn(token, *shared)  # Qwen2-MoE's shared gate: sigmoid(x W_gate), W_gate [D, 1]
    return out


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def top(scores, k):
    return list(np.argsort(-scores, kind="stable")[:k])


def tokens(n=10, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, D)), jnp.float32)


def make(**options):
    return MoE(D, E, options.pop("top_k", 2), F, rngs=nnx.Rngs(options.pop("seed", 0)), **options)


def test_softmax_top_k_renormalised_like_mixtral():
    moe = make()
    x = tokens()
    out, _ = moe(x)

    def choose(logits):
        p = softmax(logits)
        chosen = top(p, 2)
        return {e: p[e] / p[chosen].sum() for e in chosen}

    np.testing.assert_allclose(out, reference_moe(moe, x, choose), atol=1e-4)


def test_top_k_of_all_experts_is_the_dense_mixture():
    moe = make(top_k=E, renormalize=False)
    x = tokens()
    out, _ = moe(x)
    router, (gate, up, down), _ = weights_of(moe)
    expected = [sum(softmax(t @ router)[e] * expert_ffn(t, gate[e], up[e], down[e]) for e in range(E)) for t in np.asarray(x, np.float64)]
    np.testing.assert_allclose(out, np.array(expected), atol=1e-4)


def test_switch_top_one():
    moe = make(router="switch", top_k=1)
    x = tokens()
    out, _ = moe(x)

    def choose(logits):
        p = softmax(logits)
        return {int(np.argmax(p)): p.max()}

    np.testing.assert_allclose(out, reference_moe(moe, x, choose), atol=1e-4)


def test_sigmoid_router_with_groups_scale_shared_experts_and_a_bias_that_only_selects():
    moe = make(router="sigmoid", num_groups=2, top_groups=1, routed_scale=2.5, shared_dim=6)
    moe.router.bias[...] = jnp.asarray([0.0, 0.0, 5.0, 0.0])  # forces expert 2 (group 1) into every choice
    x = tokens()
    out, _ = moe(x)
    bias = np.array([0.0, 0.0, 5.0, 0.0])

    def choose(logits):
        scores = 1 / (1 + np.exp(-logits))
        biased = scores + bias
        groups = biased.reshape(2, 2)
        best_group = int(np.argmax(np.sort(groups, axis=1)[:, -2:].sum(1)))
        masked = np.full(E, -np.inf)
        masked[2 * best_group : 2 * best_group + 2] = biased[2 * best_group : 2 * best_group + 2]
        chosen = top(masked, 2)
        assert 2 in chosen
        return {e: 2.5 * scores[e] / scores[chosen].sum() for e in chosen}  # weights from unbiased scores

    np.testing.assert_allclose(out, reference_moe(moe, x, choose), atol=1e-4)


def test_shared_experts_gated_per_token_by_a_sigmoid_like_qwen2_moe():
    moe = make(renormalize=False, shared_dim=6, shared_gate=True)
    assert moe.shared_gate.weight.shape == (D, 1)
    x = tokens()
    out, _ = moe(x)

    def choose(logits):
        p = softmax(logits)
        return {e: p[e] for e in top(p, 2)}  # the chosen probabilities as they are (norm_topk_prob false)

    np.testing.assert_allclose(out, reference_moe(moe, x, choose), atol=1e-4)
    with pytest.raises(ValueError, match="shared_gate gates the shared feed-forward; set shared_dim"):
        make(shared_gate=True)


def test_capacity_drops_overflow_with_first_choices_first():
    moe = make(capacity_factor=0.5)  # C = 0.5 * 10 * 2 / 4 -> 3 slots per expert
    x = tokens()
    out, stats = moe(x)
    router, (gate, up, down), _ = weights_of(moe)
    choices = [top(softmax(t @ router), 2) for t in np.asarray(x, np.float64)]
    used, kept = np.zeros(E, int), {}
    for rank in range(2):  # every token's first choice queues before any second choice
        for n, chosen in enumerate(choices):
            expert = chosen[rank]
            if used[expert] < 3:
                kept[(n, expert)] = True
                used[expert] += 1

    def weight(n, logits):
        p = softmax(logits)
        chosen = choices[n]
        return {e: p[e] / p[chosen].sum() for e in chosen if (n, e) in kept}

    counter = iter(range(10))
    np.testing.assert_allclose(out, reference_moe(moe, x, lambda logits: weight(next(counter), logits)), atol=1e-4)
    assert float(stats.drop_fraction) == pytest.approx(1 - len(kept) / 20)
    np.testing.assert_array_equal(stats.load, used)


def test_expert_choice_lets_each_expert_pick_its_tokens():
    moe = make(router="expert_choice", capacity_factor=1.0)  # C = 10 * 2 / 4 = 5 tokens per expert
    x = tokens()
    out, stats = moe(x)
    router, _, _ = weights_of(moe)
    probs = np.array([softmax(t @ router) for t in np.asarray(x, np.float64)])
    picks = {e: set(np.argsort(-probs[:, e], kind="stable")[:5]) for e in range(E)}
    counter = iter(range(10))

    def choose(logits):
        n = next(counter)
        return {e: probs[n, e] for e in range(E) if n in picks[e]}

    np.testing.assert_allclose(out, reference_moe(moe, x, choose), atol=1e-4)
    np.testing.assert_array_equal(stats.load, [5] * E)


def test_noisy_gating_is_deterministic_at_inference_and_learns_its_noise():
    moe = make(router="noisy")
    moe.router.noise[...] = jnp.ones((D, E))
    x = tokens()
    np.testing.assert_array_equal(moe(x)[0], moe(x)[0])
    assert not np.allclose(moe(x, noise_key=jax.random.key(1))[0], moe(x)[0])
    graphdef, state = nnx.split(moe)

    def loss(state):
        return jnp.sum(nnx.merge(graphdef, state)(x, noise_key=jax.random.key(1))[0] ** 2)

    grads = jax.grad(loss)(state)
    assert float(jnp.abs(grads["router"]["noise"][...]).sum()) > 0


@pytest.mark.parametrize(
    "options",
    [
        {}, {"capacity_factor": 1.0}, {"router": "sigmoid", "shared_dim": 6}, {"shared_dim": 6, "shared_gate": True},
        {"router_bias": True, "expert_bias": True, "swiglu_limit": 7.0},
    ],
)
def test_gradients_reach_the_router_and_the_experts(options):
    moe = make(**options)
    graphdef, params, rest = nnx.split(moe, nnx.Param, ...)
    x = tokens()

    def loss(params):
        out, stats = nnx.merge(graphdef, params, rest)(x)
        return jnp.sum(out**2) + stats.load_balance_loss + stats.z_loss

    grads = jax.grad(loss)(params)
    biases = ("gate_bias", "up_bias", "down_bias") if options.get("expert_bias") else ()
    for name in ("gate", "up", "down", *biases):
        assert float(jnp.abs(grads["experts"][name][...]).sum()) > 0
    for name in ("weight", "logit_bias") if options.get("router_bias") else ("weight",):
        assert float(jnp.abs(grads["router"][name][...]).sum()) > 0
    if options.get("shared_gate"):
        assert float(jnp.abs(grads["shared_gate"]["weight"][...]).sum()) > 0


def balance_sums_of(logits, k):
    """zoo's balance sums for a softmax top-k router's logits [N, E]."""
    router = Router(D, logits.shape[-1], k, rngs=nnx.Rngs(0))
    routing = softmax_routing(router, None, jnp.asarray(logits, jnp.float32), None)
    return balance_sums(routing, logits.shape[-1])


@pytest.mark.parametrize("k", [1, 2, 4])
def test_balancing_loss_is_switch_normalised_like_transformers(k):
    torch = pytest.importorskip("torch")
    load_balancing_loss_func = pytest.importorskip("transformers.models.mixtral.modeling_mixtral").load_balancing_loss_func
    rng = np.random.default_rng(k)
    layers = [rng.normal(size=(12, E)) * 2 for _ in range(3)]
    sums = [balance_sums_of(logits, k) for logits in layers]
    hf = lambda logits: float(load_balancing_loss_func(tuple(torch.tensor(l, dtype=torch.float32) for l in logits), E, k))
    for logits, layer in zip(layers, sums):  # one layer: E * sum_e f_e P_e with sum_e f_e = k
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        f = np.bincount(np.argsort(-probs, axis=-1, kind="stable")[:, :k].reshape(-1), minlength=E) / len(logits)
        assert float(load_balancing_loss(**layer)) == pytest.approx(E * np.sum(f * probs.mean(0)), rel=1e-5)
        assert float(load_balancing_loss(**layer)) == pytest.approx(hf([logits]), rel=1e-5)
    together = jax.tree.map(lambda *a: sum(a), *sums)  # several layers: their tokens concatenated
    assert float(load_balancing_loss(**together)) == pytest.approx(hf(layers), rel=1e-5)


def test_z_loss_follows_its_formula():
    logits = np.random.default_rng(0).normal(size=(6, E))
    z = np.mean(np.log(np.exp(logits).sum(-1)) ** 2)
    assert float(router_z_loss(jnp.asarray(logits, jnp.float32))) == pytest.approx(z, rel=1e-5)


def test_a_mixtral_imported_from_transformers_has_its_aux_loss_and_objective(tmp_path):
    """The same Hugging Face `router_aux_loss_coef` gives the same training loss in zoo."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from zoo import config, runs
    from zoo.hf import import_run
    from zoo.train.step import batch_sums

    hf_config = transformers.MixtralConfig(
        vocab_size=97, hidden_size=16, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=2, router_aux_loss_coef=0.5,
    )
    torch.manual_seed(0)
    hf = transformers.MixtralForCausalLM(hf_config).eval()
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    import_run(tmp_path / "hf", tmp_path / "run")
    run = runs.load(tmp_path / "run")
    assert run.config.model.moe.load_balance_coef == 0.5
    model = models.build(dataclasses.replace(run.config.model, moe=dataclasses.replace(run.config.model.moe, z_loss_coef=0.0)))

    tokens = np.random.default_rng(0).integers(0, 97, size=(2, 9))
    batch = {"tokens": jnp.asarray(tokens), "segment_ids": jnp.ones((2, 9), jnp.int32)}
    objective, sums, _ = batch_sums(model, run.params, batch, config.TrainConfig(z_loss=0.0))
    with torch.no_grad():
        out = hf(torch.from_numpy(tokens[:, :-1]), output_router_logits=True)
        nll = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 97), torch.from_numpy(tokens[:, 1:]).reshape(-1))
    assert float(sums["moe_balance"] / sums["count"]) == pytest.approx(float(out.aux_loss), rel=1e-5)
    assert float(objective / sums["count"]) == pytest.approx(float(nll + 0.5 * out.aux_loss), rel=1e-5)


def test_loss_free_bias_balances_a_skewed_router():
    moe = make(router="sigmoid", top_k=1)
    moe.router.weight[...] = moe.router.weight[...].at[:, 0].add(1.0)  # tokens leaning along (1, ..., 1) pick expert 0
    x = tokens(n=256, seed=3) + 1.0
    loads = []
    for _ in range(60):
        _, stats = moe(x)
        loads.append(np.asarray(stats.load))
        moe.router.bias[...] = balance(moe.router.bias[...], stats.load, rate=0.05)
    assert loads[0].max() > 0.6 * 256  # skewed at the start
    assert loads[-1].max() < 0.35 * 256  # close to even (64 each) after the updates


def with_random_biases(moe, seed=0):
    """`moe` with random router and expert biases in place of their zeros."""
    rng = np.random.default_rng(seed)
    for module, name in ((moe.router, "logit_bias"), *((moe.experts, n) for n in ("gate_bias", "up_bias", "down_bias"))):
        bias = getattr(module, name)
        bias[...] = jnp.asarray(rng.normal(size=bias.shape), jnp.float32)
    return moe


@pytest.mark.parametrize("capacity_factor", [None, 2.0])  # dropless; slots for every token (C = N)
def test_gpt_oss_biased_router_and_experts_with_the_clamped_swiglu(capacity_factor):
    limit, alpha = 0.5, 1.702
    moe = with_random_biases(make(router_bias=True, expert_bias=True, swiglu_limit=limit, swiglu_alpha=alpha, capacity_factor=capacity_factor))
    x = tokens()
    out, stats = moe(x)
    w = lambda v: np.asarray(v[...], np.float64)
    router, router_bias = w(moe.router.weight), w(moe.router.logit_bias)
    e = moe.experts
    gate, up, down, gate_bias, up_bias, down_bias = map(w, (e.gate, e.up, e.down, e.gate_bias, e.up_bias, e.down_bias))
    expected, clamped = np.zeros((10, D)), []
    for n, token in enumerate(np.asarray(x, np.float64)):  # gpt-oss: softmax over the chosen experts' logits alone
        logits = token @ router + router_bias
        chosen = top(logits, 2)
        for expert, weight in zip(chosen, softmax(logits[chosen])):
            g = token @ gate[expert] + gate_bias[expert]
            u = token @ up[expert] + up_bias[expert]
            clamped.append((g > limit).any() and (np.abs(u) > limit).any())
            g, u = np.minimum(g, limit), np.clip(u, -limit, limit)
            expected[n] += weight * (((u + 1) * g / (1 + np.exp(-alpha * g))) @ down[expert] + down_bias[expert])
    assert any(clamped)  # the limit bites
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert float(stats.drop_fraction) == 0.0


def test_the_clamped_swiglu_needs_a_gated_silu():
    with pytest.raises(ValueError, match="the clamped SwiGLU is a gated silu; got gated=True, activation='gelu'"):
        make(swiglu_limit=7.0, activation="gelu")
