"""The configs of well-known models: parameter counts equal the published totals, and
`python -m zoo.stats` reports them without allocating weights."""

import json

import pytest

from zoo import config, models, stats

# Exact totals are the number of parameters in the released weights, as Hugging Face
# reports them (model.num_parameters() / the safetensors index of the named repository);
# rounded ones come from the paper or model card named, and are checked to their rounding.
PUBLISHED_TOTALS = {
    "gpt2": 124_439_808,  # openai-community/gpt2
    "gpt2-xl": 1_557_611_200,  # openai-community/gpt2-xl
    "llama2-7b": 6_738_415_616,  # meta-llama/Llama-2-7b-hf
    "llama2-70b": 68_976_648_192,  # meta-llama/Llama-2-70b-hf
    "llama3-8b": 8_030_261_248,  # meta-llama/Meta-Llama-3-8B
    "llama3-70b": 70_553_706_496,  # meta-llama/Meta-Llama-3-70B
    "llama3.1-405b": 405_853_388_800,  # meta-llama/Llama-3.1-405B
    "mistral-7b": 7_241_732_096,  # mistralai/Mistral-7B-v0.1
    "mixtral-8x7b": 46_702_792_704,  # mistralai/Mixtral-8x7B-v0.1
    "deepseek-v2-lite": 15_706_484_224,  # deepseek-ai/DeepSeek-V2-Lite
    # deepseek-ai/DeepSeek-V3 stores 671,026,419,200 main-model values; 58 MoE layers x 256 of
    # them are the routers' balancing biases, which are state here, not parameters.
    "deepseek-v3": 671_026_419_200 - 58 * 256,
    # deepseek-ai/DeepSeek-V3.2: V3's weights plus, in each of its 61 layers, the lightning indexer its
    # config.json sizes (index_n_heads 64, index_head_dim 128 over q_lora_rank 1536, hidden 7168):
    # wq_b, wk, k_norm (scale and bias) and weights_proj. (Its model card's 685B adds the MTP module, as V3's.)
    "deepseek-v3.2": 671_026_419_200 - 58 * 256 + 61 * (1536 * 64 * 128 + 7168 * 128 + 2 * 128 + 7168 * 64),
    "qwen2.5-7b": 7_615_616_512,  # Qwen/Qwen2.5-7B
    "qwen3-8b": 8_190_735_360,  # Qwen/Qwen3-8B
    "qwen3-30b-a3b": 30_532_122_624,  # Qwen/Qwen3-30B-A3B (equal to the sum over its config.json's shapes)
    "qwen3-235b-a22b": 235_093_634_560,  # Qwen/Qwen3-235B-A22B (likewise)
    "gemma2-9b": 9_241_705_984,  # google/gemma-2-9b
    # allenai/OLMo-2-1124-7B (its model card: 7.3B), counted from its config.json's shapes (V 100352,
    # D 4096, 32 layers of 32 heads of 128, F 11008, untied head): 2 V D + 32 (4 D^2 + 3 D F + 4 D) + D,
    # the 4 D of a layer being its q_norm, k_norm [H * Dh = D] and two post-sublayer norms
    "olmo2-7b": 7_298_617_344,
    # google/gemma-3-27b-pt's language model alone: Gemma3ForCausalLM's parameters on the checkpoint's
    # text_config (transformers 5.24 counts 27,009,346,304): a 262,208 x 5,376 tied embedding and
    # 25,599,716,096 others, the technical report's 25,600M non-embedding parameters (table 1). The
    # released checkpoint adds a SigLIP vision tower and multimodal projector, not counted here.
    "gemma3-27b": 27_009_346_304,
    "bloom-176b": 176_247_271_424,  # bigscience/bloom model card
    "falcon-7b": 6_921_720_704,  # tiiuae/falcon-7b
    "phi-4": 14_659_507_200,  # microsoft/phi-4
    "pythia-6.9b": 6_857_302_016,  # EleutherAI/pythia-6.9b (Biderman et al. 2023, table 1)
    "starcoder2-15b": 15_957_889_024,  # bigcode/starcoder2-15b
    "t5-base": 222_903_552,  # google-t5/t5-base
    # google-bert/bert-base-uncased as BertForMaskedLM: BertModel's 109,482,240 less the pooler
    # (768 x 768 + 768, for next-sentence prediction) plus the masked-LM head (768 x 768 + 768,
    # a LayerNorm, a 30,522 output bias)
    "bert-base": 109_482_240 - (768 * 768 + 768) + (768 * 768 + 768) + 2 * 768 + 30_522,
    # openai/gpt-oss-20b and -120b store their experts as MXFP4 blocks and scales, so these are
    # counted from their config.json shapes: per layer q/k/v/o with biases, 64 sinks, two norms, a
    # router with a bias and E experts of gate_up [2880, 5760] and down [2880, 2880] with biases;
    # embedding, output and final norm (the model card's rounded figures are in ROUNDED).
    "gpt-oss-20b": 20_914_757_184,
    "gpt-oss-120b": 116_829_156_672,
    # state-spaces/mamba2-2.7b, counted from its config.json's shapes (d_model D 2560, 64 layers,
    # expand 2, headdim 64, d_state 128, one group, vocabulary 50277 padded to 50288, tied): V D +
    # 64 (D (2 x 5120 + 2 x 128 + 80) in_proj + 5376 (4 + 1) conv1d + 3 x 80 + 5120 norm + 5120 D
    # out_proj + D) + D; the paper's (Dao & Gu 2024) 2.7B model, in ROUNDED
    "mamba2-2.7b": 2_702_599_680,
    # ibm-ai-platform/Bamba-9B, counted from its config.json's shapes: 29 Mamba-2 layers (128 heads of
    # 64, d_state 128, one group) and 3 of attention, each with a SwiGLU of 14336; the model card's
    # 9.78B, in ROUNDED
    "bamba-9b": 9_780_235_392,
}

ROUNDED = {  # (config, figure, rounding): totals and active counts given to 0.1B
    ("gpt3-175b", "total"): (175.0e9, 0.5e9),  # Brown et al. 2020, table 2.1: 175.0B
    ("mixtral-8x7b", "active"): (12.9e9, 0.05e9),  # Mistral AI, "Mixtral of experts": 12.9B active
    # DeepSeek count active parameters without the input embedding (a lookup, not a matmul)
    ("deepseek-v2-lite", "active"): (2.4e9, 0.1e9),  # DeepSeek-V2 paper, appendix B: 2.4B activated
    ("deepseek-v3", "active"): (37e9, 0.5e9),  # DeepSeek-V3 report: 37B activated
    ("deepseek-v3.2", "active"): (37e9, 0.5e9),  # V3's 37B activated, plus its indexers' 0.85B
    # Qwen's model cards count both embedding matrices and cut (not round) to 0.1B: 3.353B is their 3.3B
    ("qwen3-30b-a3b", "active"): (3.35e9, 0.05e9),  # Qwen/Qwen3-30B-A3B model card: 3.3B activated
    ("qwen3-235b-a22b", "active"): (22e9, 0.5e9),  # Qwen/Qwen3-235B-A22B model card: 22B activated
    # OpenAI's gpt-oss model card: 20.9B total, 3.6B active; 116.8B total, 5.1B active (active
    # without the input embedding, like DeepSeek's)
    ("gpt-oss-20b", "total"): (20.9e9, 0.05e9),
    ("gpt-oss-20b", "active"): (3.6e9, 0.05e9),
    ("gpt-oss-120b", "total"): (116.8e9, 0.05e9),
    ("gpt-oss-120b", "active"): (5.1e9, 0.05e9),
    # Meta's Llama 4 model card: Scout has 17B activated parameters (its 109B total counts the
    # vision encoder too, which zoo's text model lacks)
    ("llama4-scout-17b-16e", "active"): (17e9, 0.5e9),
    ("mamba2-2.7b", "total"): (2.7e9, 0.05e9),  # Dao & Gu 2024 (Mamba-2), its 2.7B model
    ("bamba-9b", "total"): (9.78e9, 0.005e9),  # ibm-ai-platform/Bamba-9B model card: 9B (9.78B)
    # Qwen/Qwen3-Next-80B-A3B model card: 80B total and 3B activated, 79B non-embedding: its active
    # count leaves out both embedding matrices (3.25B here; 3.87B with them)
    ("qwen3-next-80b-a3b", "total"): (80e9, 0.5e9),
    ("qwen3-next-80b-a3b", "active"): (3e9, 0.5e9),
}
# how many [V, D] embedding matrices a model card's active count leaves out
EMBEDDINGS_NOT_ACTIVE = {"deepseek": 1, "gpt-oss": 1, "qwen3-next": 2}


@pytest.fixture(scope="module")
def built():
    cache = {}

    def build(name):
        if name not in cache:
            cache[name] = models.build(config.load(name).model)
        return cache[name]

    return build


@pytest.mark.parametrize("name", sorted(PUBLISHED_TOTALS))
def test_totals_equal_the_published_counts(built, name):
    model = built(name)
    assert stats.total_params(model) == PUBLISHED_TOTALS[name]
    if model.config.moe is None:
        assert stats.active_params(model) == stats.total_params(model)


@pytest.mark.parametrize("name, figure", sorted(ROUNDED))
def test_rounded_figures(built, name, figure):
    model = built(name)
    value = stats.total_params(model) if figure == "total" else stats.active_params(model)
    if figure == "active":
        left_out = next((count for prefix, count in EMBEDDINGS_NOT_ACTIVE.items() if name.startswith(prefix)), 0)
        value -= left_out * model.config.vocab_size * model.config.d_model
    published, tolerance = ROUNDED[name, figure]
    assert abs(value - published) <= tolerance


def test_every_required_config_exists():
    assert set(PUBLISHED_TOTALS) | {"gpt3-175b"} <= {path.stem for path in config.CONFIG_DIR.glob("*.toml")}


@pytest.mark.parametrize(
    "name, per_token",
    [
        ("llama2-7b", 32 * 2 * 32 * 128 * 2),  # layers x (k, v) x heads x head_dim x bf16
        ("llama3-8b", 32 * 2 * 8 * 128 * 2),  # GQA: 8 key/value heads
        ("falcon-7b", 32 * 2 * 1 * 64 * 2),  # MQA
        ("mistral-7b", 32 * 2 * 8 * 128 * 2 * 4096 / 32768),  # a 4096-slot window of a 32K context
        ("deepseek-v3", 61 * (512 + 64) * 2),  # MLA: the latent and the shared RoPE key
        # 12 global layers keep every token, 36 chunked ones an 8192-slot chunk of a 128K context
        ("llama4-scout-17b-16e", (12 + 36 * 8192 / 131072) * 2 * 8 * 128 * 2),
        ("bamba-9b", 3 * 2 * 8 * 128 * 2),  # its 3 attention layers alone
        ("mamba2-2.7b", 0),
    ],
)
def test_kv_cache_bytes_per_token(built, name, per_token):
    assert stats.kv_cache_bytes_per_token(built(name)) == pytest.approx(per_token)


@pytest.mark.parametrize(
    "name, layers, heads, head_dim, state, conv_channels",
    [("mamba2-2.7b", 64, 80, 64, 128, 5120 + 2 * 128), ("bamba-9b", 29, 128, 64, 128, 8192 + 2 * 128)],
)
def test_recurrent_state_bytes(built, name, layers, heads, head_dim, state, conv_channels):
    """Per Mamba-2 layer: the float32 state [H, P, N] and the last 3 inputs of the convolution at bfloat16."""
    expected = layers * (heads * head_dim * state * 4 + 3 * conv_channels * 2)
    assert stats.recurrent_state_bytes(built(name)) == expected


def test_qwen3_next_caches():
    """36 Gated DeltaNet layers: a float32 state [32, 128, 128] and the last 3 inputs of the q, k, v
    convolutions (16 x 128 twice, 32 x 128) at bfloat16; 12 attention layers of 2 key/value heads of 256."""
    model = models.build(config.load("qwen3-next-80b-a3b").model)
    assert stats.recurrent_state_bytes(model) == 36 * (32 * 128 * 128 * 4 + 3 * (2 * 16 * 128 + 32 * 128) * 2)
    assert stats.kv_cache_bytes_per_token(model) == 12 * 2 * 2 * 256 * 2


def test_stats_command_prints_json_and_text(capsys):
    stats.main(["llama2-7b", "--json"])
    figures = json.loads(capsys.readouterr().out)
    assert figures["total_params"] == PUBLISHED_TOTALS["llama2-7b"] == figures["active_params"]
    assert figures["kv_cache_bytes_per_token"] == 524_288 and figures["seq_len"] == 4096
    matmul = PUBLISHED_TOTALS["llama2-7b"] - 32000 * 4096 - (2 * 32 + 1) * 4096  # less the lookup table and norms
    assert figures["flops_per_token"] == 6 * matmul + 6 * 32 * 32 * 256 * 4097 / 2  # causal: (T + 1) / 2 keys a query
    assert figures["flops_per_token_unmasked"] == 6 * matmul + 12 * 32 * 32 * 128 * 4096  # PaLM's count
    stats.main(["mixtral-8x7b", "--seq-len", "1024"])
    out = capsys.readouterr().out
    assert "46,702,792,704" in out and "12,879,925,248" in out and "PaLM" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["llama9-1t"], "no config file 'llama9-1t' (did you mean 'llama3-8b'?); known configs:"),
        (["llama2-7b", "--seq-len", "0"], "--seq-len must be in 1..4,096 (model.max_seq_len), got 0"),
        (["llama2-7b", "--seq-len", "1000000"], "--seq-len must be in 1..4,096 (model.max_seq_len), got 1,000,000"),
        (["llama2-7b", "--seq-len", "long"], "argument --seq-len: invalid int value: 'long'"),
    ],
)
def test_stats_command_refuses_bad_input_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        stats.main(argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
