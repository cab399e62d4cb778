"""Bad input to train.py, each refused before any work with one line: exit status 2, the
setting named, no traceback, nothing written."""

import sysconfig
from pathlib import Path

import pytest

from test_cli import load_script

CORPUS = str(Path(sysconfig.get_paths()["stdlib"]) / "json" / "*.py")
SMALL = [
    "model.vocab_size=512", "model.d_model=32", "model.num_layers=1", "model.num_heads=2", "model.num_kv_heads=2", "model.ffn_dim=64",
    "model.max_seq_len=64", "train.steps=2", "train.batch_size=8", "train.seq_len=32", "train.eval_batches=1",
    "data.source=\"text\"", f"data.paths=[\"{CORPUS}\"]", "mesh.data=1",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A directory of bad inputs: a binary TOML, garbage tokenizers, a token file of odd size."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "binary.toml").write_bytes(bytes(range(256)) * 4)
    (root / "garbage.model").write_bytes(b"not a sentencepiece model")
    (root / "odd.bin").write_bytes(b"\x01\x00\x02\x00\x03")  # 5 bytes of uint16 ids
    (root / "a-file").write_text("x")
    (root / "garbage-run").mkdir()
    (root / "garbage-run" / "tokenizer.model").write_bytes(b"\x00garbage")
    (root / "file-checkpoints").mkdir()
    (root / "file-checkpoints" / "checkpoints").write_text("not a directory")
    return root


def cases(root: Path):
    workdir = ["--workdir", str(root / "run")]
    bad_workdir = lambda name: (["--workdir", str(root / name), "--set", "train.steps=2"], f"--workdir: {str(root / name)!r} holds")
    return {
        "steps beyond int32": (["--set", "train.steps=18446744073709551616", *workdir], "train.steps: 18446744073709551616 is out of range"),
        "billion layers": (["--set", "model.num_layers=1000000000", *workdir], "model.num_layers: 1,000,000,000 is more than 10,000"),
        "huge vocabulary": (["--set", "model.vocab_size=10000000000", *workdir], "model.vocab_size: 10000000000 is out of range"),
        "negative seed": (["--set", "train.seed=-1", *workdir], "train.seed: must be >= 0, got -1"),
        "seed beyond int32": (["--set", "train.seed=1099511627776", *workdir], "train.seed: 1099511627776 is out of range"),
        "nan learning rate": (["--set", "train.learning_rate=nan", *workdir], "train.learning_rate: expected a finite number, got nan"),
        "float layers": (["--set", "model.num_layers=1e9", *workdir], "model.num_layers: expected an integer, got 1000000000.0"),
        "glob star": bad_workdir("run*"),
        "glob double star": bad_workdir("run**x"),
        "glob bracket": bad_workdir("run[1]"),
        "workdir is a file": (["--workdir", str(root / "a-file")], "is a file, not a directory"),
        "checkpoints is a file": (["--workdir", str(root / "file-checkpoints")], "file-checkpoints/checkpoints is a file; the run keeps a directory there"),
        "mesh too big": (["--set", "mesh.data=16", *workdir], "mesh.data=16: mesh {'data': 16, 'fsdp': 1, 'tensor': 1, 'expert': 1} needs 16 devices, there are 8"),
        "expert mesh too big": (["--set", "mesh.data=1", "--set", "mesh.expert=16", *workdir], "needs 16 devices, there are 8"),
        "cudnn on cpu": (["--set", "model.attention.kernel=cudnn", *workdir], "model.attention.kernel: attention kernel 'cudnn' needs a gpu backend"),
        "model beyond memory": (
            ["--set", "model.vocab_size=2000000000", "--set", "model.d_model=4096", *workdir],
            "parameters: its weights, gradients and Adam moments need",
        ),
        "binary config": (["--config", str(root / "binary.toml"), *workdir], "binary.toml is not valid TOML"),
        "garbage data.tokenizer": (
            ["--set", f"data.tokenizer=\"{root / 'garbage.model'}\"", *workdir], "data.tokenizer: '" + str(root / "garbage.model") + "' is not a sentencepiece model"
        ),
        "missing data.tokenizer": (["--set", f"data.tokenizer=\"{root / 'none.model'}\"", *workdir], "data.tokenizer: no file"),
        "garbage work-directory tokenizer": (
            ["--workdir", str(root / "garbage-run")], "the work directory's tokenizer.model: '" + str(root / "garbage-run" / "tokenizer.model") + "' is not a sentencepiece model"
        ),
        "token file of odd size": (
            ["--set", "data.source=\"tokens\"", "--set", f"data.paths=[\"{root / 'odd.bin'}\"]", *workdir],
            "odd.bin: 5 bytes is not a whole number of uint16 token ids",
        ),
        "coordinator without port": (["--coordinator", "127.0.0.1", "--num-processes", "2", "--process-id", "0"], "--coordinator '127.0.0.1' is not HOST:PORT"),
        "process id without coordinator": (["--num-processes", "2", "--process-id", "0"], "--num-processes and --process-id need --coordinator"),
        "unknown flag": (["--step", "3"], "unrecognized arguments: --step 3"),
    }


CASES = list(cases(Path("/ROOT")))


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_and_writes_nothing(name, files, capsys):
    argv, message = cases(files)[name]
    before = sorted(p.relative_to(files) for p in files.rglob("*"))
    with pytest.raises(SystemExit) as exit:
        load_script("train").main([*(flag for setting in SMALL for flag in ("--set", setting)), *argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("train.py: error: ") and "Traceback" not in err, err
    assert message in lines[0], lines[0]
    assert sorted(p.relative_to(files) for p in files.rglob("*")) == before  # nothing written, not even the work directory
