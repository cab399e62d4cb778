"""Damaged Hugging Face directories: `python -m zoo.hf import` exits with status 2 and one
line naming the problem, writes nothing, and shows no traceback. Each case damages a copy
of one small valid directory (a random tiny Llama written by transformers). So does
`export` for a run whose record of the family it was imported from is damaged."""

import json
import re
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from zoo.hf import read_tensors
from zoo.hf.__main__ import main as hf_main

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TENSOR = "model.layers.0.mlp.up_proj.weight"


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """A small Llama directory that imports (checked once), sharded so that it has an index."""
    config = transformers.LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("hf") / "valid"
    transformers.LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True, max_shard_size="20KB")
    hf_main(["import", str(directory), str(directory.parent / "run")])
    return directory


def write(path, contents):
    path.write_bytes(contents.encode() if isinstance(contents, str) else contents)


def config_json(text):
    return lambda d: write(d / "config.json", text)


def index(change):
    def damage(d):
        path = d / "model.safetensors.index.json"
        write(path, change(json.loads(path.read_text())))

    return damage


def shard(cut):
    def damage(d):
        first = sorted(d.glob("*.safetensors"))[0]
        write(first, cut(first.read_bytes()))

    return damage


def retensored(change):
    """Rewrites the weights as one model.safetensors with `change` applied to TENSOR."""

    def damage(d):
        tensors = read_tensors(d)
        for path in d.glob("model*.safetensors*"):
            path.unlink()
        save_file(tensors | {TENSOR: change(tensors[TENSOR])}, d / "model.safetensors")

    return damage


def with_nan(w):
    w = w.copy()
    w[1, 2] = np.nan
    return w


CASES = {  # case: (how the valid directory is damaged, what the one line must say)
    "config garbage": (config_json(b"\x8f\x00garbage{"), "config.json is not UTF-8 text"),
    "config not json": (config_json("{model_type: llama"), "config.json is not valid JSON"),
    "config empty": (config_json(""), "config.json is empty"),
    "config a list": (config_json("[1, 2]"), "config.json must be a JSON object of fields, not a list"),
    "config a string": (config_json('"llama"'), "config.json must be a JSON object of fields, not a string"),
    "config a number": (config_json("3"), "config.json must be a JSON object of fields, not a number"),
    "config latin-1": (config_json('{"model_type": "llama", "x": "caf\xe9"}'.encode("latin-1")), "config.json is not UTF-8 text"),
    "index not json": (lambda d: write(d / "model.safetensors.index.json", "not json"), "model.safetensors.index.json is not valid JSON"),
    "index without weight_map": (index(lambda i: json.dumps({"metadata": {}})), "model.safetensors.index.json has no weight_map"),
    "index weight_map a list": (index(lambda i: json.dumps({"weight_map": list(i["weight_map"])})), "has no weight_map"),
    "index names a missing shard": (
        index(lambda i: json.dumps({"weight_map": i["weight_map"] | {TENSOR: "model-9-of-9.safetensors"}})),
        "names shard files that .* does not hold: model-9-of-9.safetensors",
    ),
    "shard truncated": (shard(lambda b: b[:-100]), r"model-00001-of-\d+.safetensors is not a readable safetensors file"),
    "shard of 3 bytes": (shard(lambda b: b[:3]), "is not a readable safetensors file: .*header too small"),
    "shard garbage": (shard(lambda b: b"\x12\x34garbage" * 20), "is not a readable safetensors file"),
    "tokenizer garbage": (lambda d: write(d / "tokenizer.model", b"not a sentencepiece model"), "tokenizer.model is not a sentencepiece model"),
    "weights with NaN": (retensored(with_nan), f"tensor '{TENSOR}' holds NaN or infinite values"),
    "weights with inf": (retensored(lambda w: w * np.float32(np.inf)), f"tensor '{TENSOR}' holds NaN or infinite values"),
    "weights of integers": (retensored(lambda w: w.astype(np.int32)), f"tensor '{TENSOR}' has dtype int32; zoo reads floating-point"),
    "generation config garbage": (lambda d: write(d / "generation_config.json", "{"), "generation_config.json is not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_directories_give_one_line_and_write_nothing(valid, tmp_path, capsys, case):
    damage, message = CASES[case]
    source, out = tmp_path / "hf", tmp_path / "run"
    shutil.copytree(valid, source)
    damage(source)
    assert_refused(["import", str(source), str(out)], message, capsys)
    assert not out.exists()


def test_an_out_dir_that_is_a_file_is_refused(valid, tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("mine")
    assert_refused(["import", str(valid), str(out)], "run exists and is not a directory", capsys)
    assert out.read_text() == "mine"


def assert_refused(argv, message, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        hf_main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.count("\n") == 1 and err.startswith("python -m zoo.hf: error: "), err
    assert "Traceback" not in err
    assert re.search(message, err), err


def test_an_out_dir_the_checkpoint_library_would_misread_is_refused(valid, tmp_path, capsys):
    assert_refused(["import", str(valid), str(tmp_path / "run[1]")], r"which the checkpoint library reads as glob patterns", capsys)
    assert not (tmp_path / "run[1]").exists()


def test_an_imported_checkpoint_carries_its_checksums(valid, tmp_path):
    from zoo.checksums import damage

    hf_main(["import", str(valid), str(tmp_path / "run")])
    assert damage(tmp_path / "run" / "checkpoints" / "0") is None


@pytest.mark.parametrize(
    "record, message",
    [
        ('{"hf_model_type": "gpt9"}', r"run/source.json: model_type 'gpt9' is not supported; supported: .*bert.*llama"),
        ('{"hf_model_type": "gpt2"}', r"run/source.json: the Hugging Face family gpt2 cannot hold this model: .*; delete it to let"),
        ("not json", r'run/source.json is damaged: it should hold \{"hf_model_type": NAME\}'),
        ('["llama"]', r"run/source.json is damaged"),
        ('{"hf_model_type": 3}', r"run/source.json is damaged"),
    ],
)
def test_an_export_whose_family_record_is_damaged_gives_one_line(valid, tmp_path, capsys, record, message):
    run = tmp_path / "run"
    shutil.copytree(valid.parent / "run", run)
    assert json.loads((run / "source.json").read_text()) == {"hf_model_type": "llama"}
    (run / "source.json").write_text(record)
    assert_refused(["export", str(run), str(tmp_path / "back")], message, capsys)
    assert not (tmp_path / "back").exists()
