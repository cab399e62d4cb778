"""Model statistics from shapes: parameter counts, FLOPs per token, KV-cache bytes per variant."""

import jax.numpy as jnp
import pytest

from zoo import config, models, stats
from zoo.layers.attention import AttentionMask

SIZES = dict(vocab_size=100, d_model=64, num_layers=4, num_heads=8, ffn_dim=128, max_seq_len=1024)


def model(**overrides):
    return models.build(config.ModelConfig.from_dict({**SIZES, **overrides}))


def test_parameter_counts_follow_the_shapes():
    m = model(num_kv_heads=2, tie_embeddings=False)
    attention = 64 * 8 * 8 + 2 * 64 * 2 * 8 + 8 * 8 * 64  # q, k, v, o
    ffn = 3 * 64 * 128
    norms = 2 * 64
    assert stats.total_params(m) == 4 * (attention + ffn + norms) + 64 + 2 * 100 * 64
    assert stats.matmul_params(m) == 4 * (attention + ffn) + 100 * 64
    # causal: a query sees (T + 1) / 2 keys on average; PaLM's unmasked count takes all T
    assert stats.flops_per_token(m, 256) == 6 * stats.matmul_params(m) + 4 * 6 * 8 * (8 + 8) * 257 / 2
    assert stats.flops_per_token(m, 256, masked=False) == 6 * stats.matmul_params(m) + 12 * 4 * 8 * 8 * 256


def test_a_tied_table_is_counted_once_as_the_output_projection_and_lora_spares_the_frozen_gradients():
    from zoo.config.lora import LoraConfig

    tied = model(num_kv_heads=2, tie_embeddings=True)
    attention, ffn = 64 * 8 * 8 + 2 * 64 * 2 * 8 + 8 * 8 * 64, 3 * 64 * 128
    assert stats.matmul_params(tied) == 4 * (attention + ffn) + 100 * 64  # the head multiplies by the table
    adapted = models.build(tied.config, LoraConfig(rank=4, targets=("attention.q", "attention.v")))
    adapters = 4 * (4 * (64 + 8 * 8) + 4 * (64 + 2 * 8))  # per layer: q's A [64, 4] and B [4, 8 x 8], v's B [4, 2 x 8]
    assert stats.matmul_params(adapted) == stats.matmul_params(tied) and stats.matmul_params(adapted, adapters=True) == adapters
    attention_term = 4 * 6 * 8 * (8 + 8) * 257 / 2
    assert stats.flops_per_token(tied, 256) == 6 * stats.matmul_params(tied) + attention_term
    # frozen weights: forward 2 N and their input's gradient 2 N; the adapters forward and backward
    assert stats.flops_per_token(adapted, 256) == 4 * stats.matmul_params(tied) + 6 * adapters + attention_term


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window, chunk", [(None, None), (5, None), (None, 4), (64, None)])
def test_attended_keys_are_those_the_mask_lets_through(causal, window, chunk):
    """The mean number of keys a query sees, counted on zoo's own AttentionMask over 37 tokens."""
    positions = jnp.arange(37)[None]
    mask = AttentionMask.self_attention(positions, None, causal=causal, window=window, chunk=chunk)
    assert stats.attended_keys(37, causal=causal, window=window, chunk=chunk) == pytest.approx(float(mask.dense().sum()) / 37)


def test_windows_and_chunks_bound_the_attention_flops():
    """gemma-style 1 local : 1 global, and chunked layers: each layer's term follows its own keys."""
    mixed = model(attention={"layer_pattern": ["local", "global"], "window": 16})
    per_key = 6 * 8 * (8 + 8)
    expected = 2 * per_key * (stats.attended_keys(256, causal=True, window=16) + 257 / 2)
    assert stats.flops_per_token(mixed, 256) == round(6 * stats.matmul_params(mixed) + expected)
    chunked = model(attention={"layer_pattern": ["chunked"], "chunk_size": 32})
    assert stats.flops_per_token(chunked, 256) == round(6 * stats.matmul_params(chunked) + 4 * per_key * 33 / 2)


@pytest.mark.parametrize(
    "overrides, per_token",
    [
        ({}, 4 * 2 * 8 * 8 * 4),  # layers x (k, v) x heads x head_dim x float32
        ({"num_kv_heads": 2}, 4 * 2 * 2 * 8 * 4),  # GQA shrinks it by H / K
        ({"num_kv_heads": 1, "dtype": "bfloat16"}, 4 * 2 * 1 * 8 * 2),  # MQA in bf16
        (  # MLA keeps the latent and the shared RoPE key only
            {"attention": {"kind": "mla", "kv_lora_rank": 32, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8}},
            4 * (32 + 4) * 4,
        ),
        (  # half the layers keep a 128-token window of a 1024-token context
            {"attention": {"layer_pattern": ["local", "global"], "window": 128}},
            (2 * 2 * 8 * 8 * 4) * (128 / 1024) + 2 * 2 * 8 * 8 * 4,
        ),
    ],
)
def test_kv_cache_bytes_per_token_reflect_each_variant(overrides, per_token):
    assert stats.kv_cache_bytes_per_token(model(**overrides)) == pytest.approx(per_token)


def test_moe_counts_follow_the_config():
    moe = {"num_experts": 8, "top_k": 2, "expert_ffn_dim": 32, "shared_ffn_dim": 16, "first_dense": 1}
    m = model(moe=moe, num_kv_heads=2)
    dense = model(num_kv_heads=2)
    experts = 8 * 3 * 64 * 32  # per MoE layer: gate, up, down of every expert
    shared, router, dense_ffn = 3 * 64 * 16, 64 * 8, 3 * 64 * 128
    moe_layers = 3  # all but the first
    assert stats.total_params(m) == stats.total_params(dense) + moe_layers * (experts + shared + router - dense_ffn)
    assert stats.active_params(m) == stats.total_params(m) - moe_layers * experts * 6 // 8
    assert stats.matmul_params(m) == stats.matmul_params(dense) + moe_layers * (experts * 2 // 8 + shared + router - dense_ffn)


def test_hardware_limits_follow_the_device_kind():
    from types import SimpleNamespace

    from zoo import hardware

    h100, pcie, cpu = (SimpleNamespace(device_kind=kind) for kind in ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "cpu"))
    assert hardware.peak_flops(h100)[0] == 989e12 and hardware.memory_bandwidth(h100)[0] == 3.35e12
    assert hardware.peak_flops(pcie)[0] == 756e12 and hardware.memory_bandwidth(pcie)[0] == 2.0e12  # the first match wins
    assert hardware.peak_flops(cpu) is None and hardware.memory_bandwidth(cpu) is None


def test_mla_attention_flops_count_its_own_widths():
    """DeepSeek-V3's published sizes: 61 layers, 128 heads, query-key width 128 + 64 = 192, value
    width 128 (its head_dim, d_model / heads = 56, is no width of its attention)."""
    m = models.build(config.load("deepseek-v3").model)
    attention = 6 * 61 * 128 * (192 + 128) * 4097 / 2  # (forward 2 + backward 4) x (QK^T + AV), (T + 1) / 2 keys
    assert stats.flops_per_token(m, 4096) == 6 * stats.matmul_params(m) + attention


def test_a_layer_of_attention_and_mamba2_side_by_side_costs_both():
    """Falcon-H1's layers: each one's attention score and value products and its Mamba-2 state
    products (12 H P N), its KV cache and its recurrent state."""
    mamba2 = {"num_heads": 4, "head_dim": 16, "state_dim": 8, "output_norm": "none"}
    m = model(attention={"layer_pattern": ["global+mamba2"]}, mamba2=mamba2)
    attention, recurrent = 6 * 8 * 16 * 257 / 2, 12 * 4 * 16 * 8
    assert stats.flops_per_token(m, 256) == 6 * stats.matmul_params(m) + 4 * (attention + recurrent)
    assert stats.kv_cache_bytes(m, 100) == 100 * 4 * 2 * 8 * 8 * 4
    conv = 3 * (4 * 16 + 2 * 8) * 4  # the last 3 inputs of the x, B and C convolutions, float32
    assert stats.recurrent_state_bytes(m) == 4 * (4 * 16 * 8 * 4 + conv)


def test_an_encoder_decoder_counts_both_towers_and_the_cross_attention():
    """Per target token of a 256-token target and source: the encoder's 3 layers see all 256 source
    tokens, the decoder's 2 layers (T + 1) / 2 of their own and, in cross-attention, all 256."""
    m = model(kind="encoder_decoder", encoder_layers=3, num_layers=2, position={"kind": "relative"})
    per_key = 6 * 8 * (8 + 8)
    assert stats.flops_per_token(m, 256) == 6 * stats.matmul_params(m) + per_key * (3 * 256 + 2 * 257 / 2 + 2 * 256)
    assert stats.flops_per_token(m, 256, masked=False) == 6 * stats.matmul_params(m) + per_key * 256 * (3 + 2 + 2)
    cross = 2 * 4 * 64 * 64  # the decoder's cross-attention q, k, v, o
    assert stats.matmul_params(m) == stats.matmul_params(model(num_layers=5)) + cross
    parts = stats.breakdown(m)  # each tower's parts apart, the embedding shared
    assert parts["encoder.attention.q"]["layers"] == 3 and parts["decoder.attention.q"]["layers"] == 2
    assert parts["decoder.cross_attention.k"]["params"] == 2 * 64 * 64 and "encoder.cross_attention.k" not in parts
    assert {"encoder.positions", "decoder.positions", "encoder.norms", "embedding"} <= parts.keys()


@pytest.mark.parametrize("name", ["tiny", "moe-tiny", "deepseek-v3", "qwen3-next-80b-a3b", "gpt2", "t5-base"])
def test_the_breakdown_sums_to_the_totals(name):
    model = models.build(config.load(name).model)
    parts = stats.breakdown(model)
    assert sum(p["params"] for p in parts.values()) == stats.total_params(model)
    assert abs(sum(p["active"] for p in parts.values()) - stats.active_params(model)) <= len(parts)
    assert sum(p["share"] for p in parts.values()) == pytest.approx(1.0)


def test_the_breakdown_names_each_projection_with_its_shapes():
    cfg = config.load("moe-tiny").model  # 4 layers: the first dense, 3 with 8 experts of 192 and a shared expert
    parts = stats.breakdown(models.build(cfg))
    d, heads, head_dim = cfg.d_model, cfg.num_heads, cfg.head_dim
    assert parts["attention.q"] == dict(parts["attention.q"], params=4 * d * heads * head_dim, layers=4, per_layer=d * heads * head_dim)
    assert parts["ffn.experts"]["params"] == 3 * 8 * 3 * d * 192 and parts["ffn.experts"]["active"] == 3 * 2 * 3 * d * 192
    assert parts["ffn.experts"]["layers"] == 3 and parts["ffn.shared"]["layers"] == 3 and parts["ffn.up"]["layers"] == 1
    assert parts["norms"]["layers"] is None and parts["embedding"]["bytes"] == 4 * cfg.vocab_size * d


def test_the_breakdown_names_each_mixer_by_its_kind():
    """Qwen3-Next's 36 Gated DeltaNet layers and 12 attention layers, which share the attention
    slot's name; Falcon-H1-like layers with attention and Mamba-2 side by side."""
    parts = stats.breakdown(models.build(config.load("qwen3-next-80b-a3b").model))
    assert parts["deltanet.q"]["layers"] == 36 and parts["attention.q"]["layers"] == 12
    assert parts["attention.q"]["per_layer"] == 2048 * 16 * 256 and parts["attention.gate"]["layers"] == 12  # 16 heads of 256
    mamba2 = {"num_heads": 4, "head_dim": 16, "state_dim": 8, "output_norm": "none"}
    parts = stats.breakdown(model(attention={"layer_pattern": ["global+mamba2"]}, mamba2=mamba2))
    assert parts["attention.q"]["params"] == 4 * 64 * 64 and parts["mamba2.x"]["params"] == 4 * 64 * 4 * 16
    assert parts["mamba2.A_log"]["per_layer"] == 4 and not [name for name in parts if name.startswith("attention.attention")]


def test_stats_cli_prints_the_breakdown(capsys):
    import json

    stats.main(["tiny", "--breakdown", "--json"])
    figures = json.loads(capsys.readouterr().out)
    assert set(figures["breakdown"]) >= {"embedding", "attention.q", "ffn.up", "norms"}
    stats.main(["tiny", "--breakdown"])
    out = capsys.readouterr().out
    assert "component" in out and "ffn.gate" in out and "20.7%" in out
