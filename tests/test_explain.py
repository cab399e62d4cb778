"""zoo.explain: the walk shows what the real forward made, its plots, its errors."""

import json

import jax
import numpy as np
import pytest

from test_train_runs import small_run, tokenizer_path  # noqa: F401 (a fixture)
from zoo import config, explain
from zoo.layers import taps
from zoo.models import build
from zoo.train import train
from zoo.train.plot import Panel, heatmap

IDS = [3, 17, 5, 9, 11]


def forward_taps(target, ids):
    """The taps of the model's forward pass, recorded here, apart from zoo.explain."""
    model = build(config.load(target).model)
    params = model.init(jax.random.key(0))
    with taps.recording() as recorded:
        logits = model.apply(params, jax.numpy.asarray([ids])).logits
    return model, recorded, logits


@pytest.mark.parametrize(
    "target, plots",
    [
        ("configs/moe-tiny.toml", {"attention-layer1.png", "router-layer1.png", "logit-lens.png"}),
        ("configs/hybrid-tiny.toml", {"logit-lens.png"}),  # its layer 1 is a Mamba-2 layer: no attention to map
    ],
)
def test_the_walk_is_the_forward_passes_own_shapes_each_described(target, plots, tmp_path):
    layer = 1
    result = explain.explain(target, prompt_ids_text=",".join(map(str, IDS)), layer=layer, top_k=3, plot_dir=str(tmp_path))
    model, recorded, logits = forward_taps(target, IDS)
    expected = [(t.layer, t.name, list(t.value.shape), str(t.value.dtype)) for t in recorded if t.layer in (None, layer)]
    assert [(s["layer"], s["name"], list(s["shape"]), s["dtype"]) for s in result["steps"]] == expected
    assert all(s["what"] for s in result["steps"]), [s["name"] for s in result["steps"] if not s["what"]]
    probabilities = np.asarray(jax.nn.softmax(logits[0, -1]))
    assert [n["id"] for n in result["next"]] == list(np.argsort(-probabilities)[:3])
    np.testing.assert_allclose([n["probability"] for n in result["next"]], np.sort(probabilities)[::-1][:3], rtol=1e-5)
    assert result["weights"].startswith("random")
    assert {p.rsplit("/", 1)[1] for p in result["plots"]} == plots


ENCODER_DECODER = """
[model]
kind = "encoder_decoder"
vocab_size = 300
d_model = 32
num_layers = 2
encoder_layers = 3
num_heads = 4
num_kv_heads = 2
ffn_dim = 64
max_seq_len = 128
{bos}
[model.position]
kind = "relative"
"""


def test_an_encoder_decoder_is_walked_tower_by_tower(tmp_path, capsys):
    target = tmp_path / "t5-like.toml"
    target.write_text(ENCODER_DECODER.format(bos="bos_id = 0"))
    result = explain.explain(str(target), prompt="Hello", layer=1, top_k=3, plot_dir=str(tmp_path))
    model = build(config.load(str(target)).model)
    params = model.init(jax.random.key(0))
    source = list(b"Hello")
    with taps.recording() as recorded:
        logits = model.apply(params, jax.numpy.asarray([[0]]), encoder_tokens=jax.numpy.asarray([source])).logits
    expected = [(t.tower, t.layer, t.name, list(t.value.shape)) for t in recorded if t.layer in (None, 1)]
    assert [(s["tower"], s["layer"], s["name"], s["shape"]) for s in result["steps"]] == expected
    assert all(s["what"] for s in result["steps"]), [s["name"] for s in result["steps"] if not s["what"]]
    steps = {(s["tower"], s["name"]): s for s in result["steps"] if s["layer"] == 1}
    assert steps[("decoder", "cross_attention.weights")]["shape"] == [1, 4, 1, 5] and ("encoder", "cross_attention.q") not in steps
    assert "sees every key" in steps[("encoder", "attention.weights")]["what"]
    assert "at or before it" in steps[("decoder", "attention.weights")]["what"]
    assert [t["id"] for t in result["tokens"]] == source and [t["id"] for t in result["decoder_tokens"]] == [0]
    probabilities = np.asarray(jax.nn.softmax(logits[0, -1]))
    assert [n["id"] for n in result["next"]] == list(np.argsort(-probabilities)[:3])
    assert {p.rsplit("/", 1)[1] for p in result["plots"]} == {
        "encoder-attention-layer1.png", "decoder-attention-layer1.png", "decoder-cross-attention-layer1.png", "logit-lens.png",
    }
    subject = explain.load(str(target))
    ids, _ = explain.logit_lens(subject, explain.record(subject, source, [0, 7]))
    decoded = subject.model.apply(subject.params, jax.numpy.asarray([[0, 7]]), encoder_tokens=jax.numpy.asarray([source])).logits
    assert ids.shape == (2, 2) and list(ids[-1]) == list(np.argmax(decoded[0], -1))  # the decoder's layers, its last as the model
    explain.main([str(target), "--prompt", "Hi", "--decoder-prompt-ids", "0,7"])
    out = capsys.readouterr().out
    assert "3 encoder + 2 decoder layers" in out and "encoder layer 0 of 3" in out and "decoder layer 0 of 2" in out
    assert "the decoder's input: 2 tokens (given as ids)" in out and "the decoder's next token, top 5:" in out
    target.write_text(ENCODER_DECODER.format(bos=""))
    with pytest.raises(explain.ExplainError, match="names no decoder start token .* --decoder-prompt-ids"):
        explain.explain(str(target), prompt="Hi")
    with pytest.raises(explain.ExplainError, match=r"--layer 2: .* has layers 0..1 in each tower"):
        explain.explain(str(target), prompt="Hi", layer=2)


def test_the_shapes_follow_the_config():
    cfg = config.load("configs/tiny.toml").model
    result = explain.explain("tiny", prompt_ids_text="1,2,3", layer=2)
    _, recorded, _ = forward_taps("configs/tiny.toml", [1, 2, 3])
    assert [s["shape"] for s in result["steps"]] == [list(t.value.shape) for t in recorded if t.layer in (None, 2)]
    steps = {s["name"]: tuple(s["shape"]) for s in result["steps"] if s["layer"] == 2}
    heads, kv, dh = cfg.num_heads, cfg.num_kv_heads, cfg.d_model // cfg.num_heads
    assert steps["attention.q"] == (1, 3, heads, dh) and steps["attention.k"] == (1, 3, kv, dh)
    assert steps["attention.weights"] == (1, heads, 3, 3) and steps["ffn.hidden"] == (1, 3, cfg.ffn_dim)


def test_a_model_too_large_to_hold_is_walked_by_shapes_alone(monkeypatch):
    """Shapes traced abstractly equal the real forward's: checked on tiny with the limit at 0, then on an 8B config."""
    concrete = explain.explain("tiny", prompt_ids_text="1,2,3,4")
    monkeypatch.setattr(explain, "MATERIALISE_LIMIT", 0)
    abstract = explain.explain("tiny", prompt_ids_text="1,2,3,4")
    assert abstract["steps"] == concrete["steps"] and abstract["next"] is None and "shapes alone" in abstract["weights"]
    monkeypatch.undo()
    large = explain.explain("deepseek-v2-lite", prompt="Hi", layer=1)
    steps = {s["name"]: s for s in large["steps"] if s["layer"] == 1}
    assert steps["attention.latent"]["shape"] == [1, 2, 512] and steps["router.experts"]["shape"] == [2, 6]
    assert large["next"] is None and large["tokenized"].startswith("no tokenizer")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tokenizer_path):  # noqa: F811
    directory = tmp_path_factory.mktemp("explained")
    train(small_run(tokenizer_path, steps=2, eval_every=2), directory)
    return directory


def test_a_run_is_explained_with_its_tokenizer_and_plotted(run_dir, tmp_path, capsys):
    explain.main([str(run_dir), "--prompt", "import os\nimport sys", "--layer", "1", "--plot", str(tmp_path), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["weights"] == "trained (checkpoint 2)" and result["tokens"][0]["text"] == "<bos>"
    assert "".join(t["text"] for t in result["tokens"][1:]).replace(" ", "") == "importos\nimportsys"
    assert sorted(p.rsplit("/", 1)[1] for p in result["plots"]) == ["attention-layer1.png", "logit-lens.png"]
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in result["plots"])
    explain.main([str(run_dir), "--prompt", "import os"])
    out = capsys.readouterr().out
    assert "layer 0 of 2" in out and "attention.weights" in out and "next token, top 5:" in out


def test_the_logit_lens_reads_the_last_layer_as_the_model_does(run_dir):
    subject = explain.load(str(run_dir))
    tokens, _, _ = explain.prompt_ids(subject, "import os", None)
    recorded = explain.record(subject, tokens)
    ids, probabilities = explain.logit_lens(subject, recorded)
    logits = subject.model.apply(subject.params, jax.numpy.asarray([tokens])).logits[0]
    assert ids.shape == probabilities.shape == (2, len(tokens))
    np.testing.assert_array_equal(ids[-1], np.argmax(logits, -1))
    np.testing.assert_allclose(probabilities[-1], np.max(jax.nn.softmax(logits, -1), -1), rtol=1e-5)


def test_heatmap_shades_each_cell_by_its_value(tmp_path):
    values = np.array([[0.0, 1.0], [0.5, np.nan]])
    drawn = heatmap(tmp_path / "h.png", [Panel("a", values), Panel("b", values.T)], title="t", row_labels=["x", "y"], column_labels=["p", "q"])
    assert drawn.panels == ("a", "b") and (tmp_path / "h.png").read_bytes().startswith(b"\x89PNG")
    pixels = {tuple(p) for p in drawn.image.reshape(-1, 3).tolist()}
    half = tuple(np.round(255 - 0.5 * (255 - np.array((8, 48, 107)))).astype(int).tolist())
    assert {(8, 48, 107), half, (200, 200, 200)} <= pixels  # 1.0 darkest, 0.5 halfway from white, NaN grey
    with pytest.raises(ValueError, match=r"panel 'c' is \(3,\), not \[2, 2\]"):
        heatmap(tmp_path / "bad.png", [Panel("c", np.zeros(3))], title="t", row_labels=["x", "y"], column_labels=["p", "q"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tiny", "--prompt", "hi", "--layer", "4"], "--layer 4: tiny has layers 0..3"),
        (["tiny", "--prompt", "hi", "--layer", "-1"], "--layer -1: tiny has layers 0..3"),
        (["tiny", "--prompt", "hi", "--top-k", "0"], "--top-k must be in 1..2048"),
        (["tiny", "--prompt", ""], "the prompt is empty"),
        (["tiny", "--prompt-ids", "1,x"], "--prompt-ids must be comma-separated integers"),
        (["tiny", "--prompt-ids", "1,5000"], "token id 5000 is outside the vocabulary of 2048"),
        (["tiny", "--prompt", "x" * 300], "the prompt is 300 tokens, more than the model's context of 256"),
        (["tiny", "--prompt", "hi", "--decoder-prompt", "x"], "--decoder-prompt is for encoder_decoder models; tiny is a decoder model"),
        (["llama3-8b", "--prompt", "hi", "--plot", "out"], "--plot needs values"),
        (["no-such-model", "--prompt", "hi"], "no-such-model"),
        (["tiny"], "one of the arguments --prompt --prompt-ids is required"),
    ],
)
def test_bad_input_gets_one_clear_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        explain.main(argv)
    assert exit.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error and "Traceback" not in error


def test_a_directory_without_a_config_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        explain.main([str(tmp_path), "--prompt", "hi"])
    assert "is a directory without a config.toml" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("kept")
    with pytest.raises(SystemExit):
        explain.main(["tiny", "--prompt", "hi", "--plot", str(tmp_path / "a-file")])
    assert "cannot make that directory (File exists)" in capsys.readouterr().err
    assert (tmp_path / "a-file").read_text() == "kept"
