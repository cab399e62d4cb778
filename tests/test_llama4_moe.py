"""Llama 4's mixture of experts: top-1 by logit with a sigmoid weight that scales the expert's
input, beside a shared expert; against a per-token loop written in the test."""

import numpy as np
import pytest

from test_moe import E, expert_ffn, make, reference_moe, tokens, weights_of
from zoo.config import ConfigError, MoEConfig


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_top_sigmoid_router_weighs_the_chosen_logit():
    moe = make(router="top_sigmoid", top_k=2, renormalize=False)
    x = tokens()
    out, _ = moe(x)

    def choose(logits):
        return {e: sigmoid(logits[e]) for e in np.argsort(-logits)[:2]}

    np.testing.assert_allclose(out, reference_moe(moe, x, choose), atol=1e-4)


def test_weights_on_inputs_scale_the_expert_input_beside_a_shared_expert():
    moe = make(router="top_sigmoid", top_k=1, renormalize=False, shared_dim=6, weights_on_inputs=True)
    x = tokens() * 3.0  # large enough that silu is far from linear
    out, _ = moe(x)
    router, experts, shared = weights_of(moe)
    expected = []
    for token in np.asarray(x, np.float64):
        logits = token @ router
        e = int(np.argmax(logits))
        expected.append(expert_ffn(sigmoid(logits[e]) * token, *(w[e] for w in experts)) + expert_ffn(token, *shared))
    np.testing.assert_allclose(out, np.array(expected), atol=1e-4)
    on_outputs, _ = make(router="top_sigmoid", top_k=1, renormalize=False, shared_dim=6)(x)
    assert np.abs(out - on_outputs).max() > 1e-2  # where the weight goes matters


@pytest.mark.parametrize("settings", [{"top_k": 2}, {"top_k": 1, "router": "expert_choice"}])
def test_weights_on_inputs_need_top_one_token_choice(settings):
    with pytest.raises(ConfigError, match="weights_on_inputs"):
        MoEConfig.from_dict({"num_experts": E, "expert_ffn_dim": 8, "weights_on_inputs": True, **settings})
