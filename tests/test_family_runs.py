"""Each kind of model the 2025–26 families brought trains and samples end to end: a published
config shrunk to a few thousand parameters by a TOML file that names it as its base (every
option it sets is kept: chunked NoPE attention, sinks, biased clamped experts, sparse MLA, ...),
trained by train.py for a few steps (its loss falls), then sampled by sample.py."""

import json
import sysconfig
from pathlib import Path

import pytest

from test_cli import ROOT, load_script
from zoo import config

CORPUS = str(Path(sysconfig.get_paths()["stdlib"]) / "email" / "*.py")  # a part of the default corpus
SMALL = """
[model]
vocab_size = 512
d_model = 32
num_heads = 4
num_kv_heads = 2
head_dim = 8
ffn_dim = 64
max_seq_len = 64
dtype = "float32"
tie_embeddings = false
"""
SMALL_MOE = """
[model.moe]
num_experts = 4
expert_ffn_dim = 32
"""
KINDS = {  # what each shrunk config keeps of its base, and the sizes it shrinks further
    # chunked local attention, NoPE layers with temperature tuning, L2 QK-norm; top-1 sigmoid experts on their inputs
    "llama4-scout-17b-16e": "num_layers = 4\n[model.attention]\nchunk_size = 8\ntemperature_floor = 4\n"
    + SMALL_MOE + "shared_ffn_dim = 32\n",
    # sinks, a window, YaRN without truncation; experts with biases, clamped SwiGLU and a router bias
    "gpt-oss-20b": "num_layers = 2\n[model.attention]\nwindow = 8\n[model.position]\noriginal_max_position = 16\n"
    + SMALL_MOE + "top_k = 2\n",
    # MLA whose lightning indexer picks each query's top 8 keys; group-limited sigmoid experts
    "deepseek-v3.2": (
        "num_layers = 2\n[model.attention]\nkv_lora_rank = 16\nq_lora_rank = 16\nqk_nope_head_dim = 8\n"
        "qk_rope_head_dim = 4\nv_head_dim = 8\nindex_heads = 2\nindex_head_dim = 8\nindex_top_k = 8\n"
        "[model.position]\noriginal_max_position = 16\n[model.moe]\nnum_experts = 8\ntop_k = 2\nexpert_ffn_dim = 32\n"
        "shared_ffn_dim = 32\nfirst_dense = 1\nnum_groups = 4\ntop_groups = 2\n"
    ),
    # a 5:1 local/global pattern whose local layers have their own RoPE
    "gemma3-27b": 'num_layers = 6\n[model.attention]\nlayer_pattern = ["local", "local", "local", "local", "local", "global"]\n'
    "window = 8\nsoftmax_scale = 0.35\n",
    # norms after each sublayer, QK-norm over the whole projection
    "olmo2-7b": "num_layers = 2\n",
    # attention and MLP side by side, each its own LayerNorm; a quarter of each head rotated
    "pythia-6.9b": "num_layers = 2\n",
    # Qwen3's MoE (renormalised top-k, no shared expert), given Qwen2-MoE's sigmoid-gated shared expert
    "qwen3-30b-a3b": "num_layers = 2\n" + SMALL_MOE + "top_k = 2\nshared_ffn_dim = 32\nshared_gate = true\n",
    # three Mamba-2 layers to one attention layer (zoo's own small hybrid): train.py and sample.py through recurrent states
    "hybrid-tiny": "num_layers = 4\n[model.mamba2]\nnum_heads = 4\nhead_dim = 16\nstate_dim = 8\nscan_chunk = 8\n",
    # LongRoPE past an original context of 16 positions
    "phi-4": (
        'num_layers = 2\n[model.position]\nrope_scaling = "longrope"\nscaling_factor = 4.0\noriginal_max_position = 16\n'
        "short_factor = [1.0, 1.2, 1.5, 2.0]\nlong_factor = [1.0, 2.0, 4.0, 8.0]\n"
    ),
}
KEPT = {  # one option of each base that must survive the shrinking: (section, field, value)
    "llama4-scout-17b-16e": ("attention", "layer_rope", (True, True, True, False)),
    "gpt-oss-20b": ("moe", "swiglu_limit", 7.0),
    "deepseek-v3.2": ("attention", "index_top_k", 8),
    "gemma3-27b": ("position", "local", "set"),
    "olmo2-7b": ("attention", "qk_norm_over", "projection"),
    "pythia-6.9b": ("model", "block", "parallel_two_norms"),
    "qwen3-30b-a3b": ("moe", "shared_gate", True),
    "phi-4": ("position", "rope_scaling", "longrope"),
    "hybrid-tiny": ("attention", "layer_pattern", ("mamba2", "mamba2", "mamba2", "global")),
}
STEPS = 12


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    from zoo.tokenizer import Tokenizer
    from zoo.train.sources import expand

    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.model"
    Tokenizer.train([p.read_text() for p in expand([CORPUS])], vocab_size=512).save(path)
    return str(path)


@pytest.mark.parametrize("base", sorted(KINDS))
def test_shrunk_family_config_trains_and_samples(base, tmp_path, tokenizer_path, capsys):
    small = tmp_path / f"small-{base}.toml"
    small.write_text(f'base = "{ROOT / "configs" / base}.toml"\n' + SMALL + KINDS[base])
    settings = [
        f"train.steps={STEPS}", "train.batch_size=8", "train.seq_len=32", "train.log_every=1", f"train.eval_every={STEPS}",
        "train.eval_batches=1", "train.learning_rate=1e-2", "train.warmup_steps=2", 'data.source="text"',
        f'data.paths=["{CORPUS}"]', f'data.tokenizer="{tokenizer_path}"', "mesh.data=1",
    ]
    argv = ["--config", str(small), "--workdir", str(tmp_path / "run"), *sum((["--set", s] for s in settings), [])]
    assert load_script("train").main(argv) == 0
    model = config.load(tmp_path / "run" / "config.toml").model
    section, field, value = KEPT[base]
    kept = getattr(model if section == "model" else getattr(model, section), field)
    assert (kept is not None if value == "set" else kept == value), (field, kept)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == STEPS and losses[-1] < losses[0] - 0.5, losses
    capsys.readouterr()

    # past the original context (16) where the config has one: LongRoPE's cache is rebuilt there
    argv = ["--checkpoint", str(tmp_path / "run"), "--prompt", "def parse(", "--max-new-tokens", "24", "--temperature", "0", "--json"]
    assert load_script("sample").main(argv) == 0
    (result,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(result["tokens"]) == 24 and result["finish_reason"] == "length", result
