"""The decoder against Hugging Face's PyTorch forward on the same random weights (float32)."""

import jax
import numpy as np
import pytest
from flax import nnx

from zoo import config, models

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SIZES = dict(vocab_size=97, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=48, max_seq_len=64)

FAMILIES = {
    # family: (transformers config class, HF-only kwargs, zoo overrides)
    "llama": ("LlamaConfig", {}, {}),
    "qwen2": ("Qwen2Config", {}, {"attention": {"qkv_bias": True}, "tie_embeddings": True}),
    "qwen3": ("Qwen3Config", {"head_dim": 16}, {"attention": {"qk_norm": True}, "head_dim": 16}),
    "mistral": ("MistralConfig", {"sliding_window": 5}, {"attention": {"layer_pattern": ["local"], "window": 5}}),
}


def hf_model(family):
    cls_name, extra, _ = FAMILIES[family]
    hf_config = getattr(transformers, cls_name)(
        vocab_size=SIZES["vocab_size"],
        hidden_size=SIZES["d_model"],
        intermediate_size=SIZES["ffn_dim"],
        num_hidden_layers=SIZES["num_layers"],
        num_attention_heads=SIZES["num_heads"],
        num_key_value_heads=SIZES["num_kv_heads"],
        max_position_embeddings=SIZES["max_seq_len"],
        rms_norm_eps=1e-6,
        rope_theta=500.0,
        tie_word_embeddings=FAMILIES[family][2].get("tie_embeddings", False),
        **extra,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_config, torch_dtype=torch.float32).eval()
    with torch.no_grad():  # norms start at one; make them matter
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.5 + (0.0 if name.endswith("bias") else 1.0))
    return model


def to_zoo_params(hf, zoo_model):
    """Our parameter tree from the HF state dict: [out, in] matrices become [in, *out]."""
    sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    cfg = zoo_model.config
    heads, kv_heads, dh, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_model

    def layers(fmt, transform=lambda w: w):
        return np.stack([transform(sd[fmt.format(i)]) for i in range(cfg.num_layers)])

    attn = "model.layers.{}.self_attn."
    mlp = "model.layers.{}.mlp."
    tree = {
        "embedding": {"table": sd["model.embed_tokens.weight"]},
        "final_norm": {"scale": sd["model.norm.weight"]},
        "layers": {
            "attention_norm": {"scale": layers("model.layers.{}.input_layernorm.weight")},
            "ffn_norm": {"scale": layers("model.layers.{}.post_attention_layernorm.weight")},
            "attention": {
                "q": {"weight": layers(attn + "q_proj.weight", lambda w: w.T.reshape(d, heads, dh))},
                "k": {"weight": layers(attn + "k_proj.weight", lambda w: w.T.reshape(d, kv_heads, dh))},
                "v": {"weight": layers(attn + "v_proj.weight", lambda w: w.T.reshape(d, kv_heads, dh))},
                "o": {"weight": layers(attn + "o_proj.weight", lambda w: w.T.reshape(heads, dh, d))},
            },
            "ffn": {
                "gate": {"weight": layers(mlp + "gate_proj.weight", np.transpose)},
                "up": {"weight": layers(mlp + "up_proj.weight", np.transpose)},
                "down": {"weight": layers(mlp + "down_proj.weight", np.transpose)},
            },
        },
    }
    if cfg.attention.qkv_bias:
        for name, n in (("q", heads), ("k", kv_heads), ("v", kv_heads)):
            tree["layers"]["attention"][name]["bias"] = layers(attn + f"{name}_proj.bias", lambda b: b.reshape(n, dh))
    if cfg.attention.qk_norm:
        tree["layers"]["attention"]["q_norm"] = {"scale": layers(attn + "q_norm.weight")}
        tree["layers"]["attention"]["k_norm"] = {"scale": layers(attn + "k_norm.weight")}
    if not cfg.tie_embeddings:
        tree["unembed"] = {"weight": sd["lm_head.weight"].T}
    params = jax.tree.map(lambda a: a, zoo_model.abstract_params)  # a fresh State to fill
    nnx.replace_by_pure_dict(params, tree)
    assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree.leaves(params)), "a parameter was not mapped"
    return params


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_logits_match_transformers(family):
    overrides = FAMILIES[family][2]
    model = models.build(
        config.ModelConfig.from_dict({**SIZES, **overrides, "position": {"rope_theta": 500.0}, "norm_eps": 1e-6})
    )
    hf = hf_model(family)
    params = to_zoo_params(hf, model)
    tokens = np.random.default_rng(0).integers(0, SIZES["vocab_size"], size=(2, 24))
    with torch.no_grad():
        expected = hf(torch.from_numpy(tokens)).logits.numpy()
    logits, _ = jax.jit(model.apply)(params, tokens)
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=1e-5)
