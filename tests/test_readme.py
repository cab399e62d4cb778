"""The README's snippets run as written: each Python block on its own, and its command lines
for sampling and stats, in a directory where `runs/tiny` is a small trained run."""

import functools
import json
import re
import shlex
import sysconfig
from pathlib import Path

import pytest

from test_cli import load_script
from zoo import config, stats
from zoo.train import train

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
OWN_DATA = README.split("### Your own data", 1)[1].split("\n#", 1)[0]  # its runs are made by its own test, below
LORA = README.split("### Fine-tuning with LoRA", 1)[1].split("\n#", 1)[0]  # likewise: commands that need the one before
QUANTIZED = README.split("### Quantized weights", 1)[1].split("\n#", 1)[0]
SURGERY = README.split("### Architecture surgery", 1)[1].split("\n#", 1)[0]
IN_ORDER = (OWN_DATA, LORA, QUANTIZED, SURGERY)  # sections whose commands need the ones before them
COMMANDS = [
    line for block in re.findall(r"```bash\n(.*?)```", functools.reduce(lambda text, part: text.replace(part, ""), IN_ORDER, README), re.S)
    for line in block.splitlines()
    if line.startswith(("python -m zoo.stats", "python sample.py")) and "--stop" not in line  # --stop: test_sample_cli
]


CUT_DOWN = [  # the tiny config's shape, cut down to train in seconds
    "model.vocab_size=400", "model.num_layers=1", "model.d_model=64", "model.ffn_dim=128", "train.steps=2",
    "train.batch_size=4", "train.seq_len=32", "train.eval_batches=1", "mesh.data=1",
]
STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A directory holding runs/tiny, trained on the json package's sources."""
    root = tmp_path_factory.mktemp("readme")
    corpus = str(STDLIB / "json" / "*.py")
    train(config.load("tiny", [*CUT_DOWN, "data.source=\"text\"", f"data.paths=[\"{corpus}\"]"]), root / "runs" / "tiny")
    return root


def test_the_readme_has_the_snippets_this_test_runs():
    assert len(PYTHON_BLOCKS) >= 4 and any("runs.load" in block for block in PYTHON_BLOCKS)
    assert any("zoo.stats" in line for line in COMMANDS) and any("sample.py" in line for line in COMMANDS)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_snippet_runs(index, workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    exec(compile(PYTHON_BLOCKS[index], f"README.md python block {index}", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("line", COMMANDS)
def test_command_line_runs(line, workspace, monkeypatch, capsys):
    """The line's own arguments, given to the script's main in this process (as bash would split them)."""
    monkeypatch.chdir(workspace)
    words = shlex.split(line, comments=True)
    if words[:3] == ["python", "-m", "zoo.stats"]:
        code = stats.main(words[3:])
    else:
        assert words[:2] == ["python", "sample.py"], line
        code = load_script("sample").main(words[2:])
    out = capsys.readouterr()
    assert not code and out.out.strip(), out.err
    assert "Traceback" not in out.err


SHOWN = re.findall(r"^\$ (python -m zoo\.\w+ .*)$", README, re.M)  # commands shown with their output


@pytest.mark.parametrize("line", SHOWN)
def test_shown_command_runs_and_prints_what_the_readme_shows_first(line, workspace, monkeypatch, capsys):
    from zoo import explain

    monkeypatch.chdir(workspace)
    words = shlex.split(line)
    {"zoo.stats": stats.main, "zoo.explain": explain.main}[words[2]](words[3:])
    out = capsys.readouterr().out
    shown = README.split(f"$ {line}\n", 1)[1].split("\n", 1)[0]  # the output's first line
    assert re.sub(r"\d", "0", shown.split(":")[0]) in re.sub(r"\d", "0", out), (shown, out[:500])


def test_your_own_data_runs_as_written(tmp_path, monkeypatch, capsys):
    """The section's commands on a mydata/ made of stdlib sources: .txt files in nested folders and a
    JSONL file with a `body` key. Each train.py line runs with CUT_DOWN appended (the later --set
    wins), so it takes seconds; the sample.py lines run as written. Its config file is the
    text run's settings."""
    lines = [line for line in re.search(r"```bash\n(.*?)```", OWN_DATA, re.S).group(1).splitlines() if line.strip()]
    monkeypatch.chdir(tmp_path)
    sources = sorted((STDLIB / "json").glob("*.py")) + sorted((STDLIB / "email").glob("*.py"))[:6]
    for index, source in enumerate(sources):
        book = tmp_path / "mydata" / "books" / f"shelf{index % 2}" / f"{source.stem}.txt"
        book.parent.mkdir(parents=True, exist_ok=True)
        book.write_text(source.read_text())
    (tmp_path / "mydata" / "notes.jsonl").write_text("".join(json.dumps({"body": s.read_text()}) + "\n" for s in sources))

    trained = []
    for line in lines:
        words = shlex.split(line)
        script, argv = words[1], words[2:]
        if script == "train.py":
            argv += [word for setting in CUT_DOWN for word in ("--set", setting)]
        assert load_script(script.removesuffix(".py")).main(argv) == 0, line
        out = capsys.readouterr().out
        if script == "train.py":
            trained.append(argv[argv.index("--workdir") + 1])
            assert "training a 400-piece tokenizer on 11 documents" in out and "done: 2 steps" in out, out
            if trained[1:]:  # the same shapes as the run before: its compiled step is in the compile cache
                assert "  loaded from the compile cache, and ran step 1 (" in out, out
        else:
            assert out.strip(), line
    assert trained == ["runs/books", "runs/notes"] and all((tmp_path / run / "tokenizer.model").is_file() for run in trained)

    toml = re.search(r"```toml\n(.*?)```", OWN_DATA, re.S).group(1)
    (tmp_path / "books.toml").write_text(toml)
    written = config.load(tmp_path / "runs" / "books" / "config.toml")
    assert config.load(str(tmp_path / "books.toml"), CUT_DOWN) == written


def run_in_order(section: str, workspace: Path, capsys, train_settings=()) -> None:
    """A section's bash lines one after another in `workspace`, each given to its script's main:
    train.py with `train_settings` appended, python -m zoo.lora / zoo.quantize and sample.py as written."""
    from zoo import convert, quantize
    from zoo import eval as evaluation
    from zoo.lora.__main__ import main as lora_main

    modules = {"zoo.lora": lora_main, "zoo.quantize": quantize.main, "zoo.convert": convert.main, "zoo.eval": evaluation.main}
    for line in [line for line in re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines() if line.strip()]:
        words = shlex.split(line)
        if words[1] == "-m":
            modules[words[2]](words[3:])
        else:
            argv = words[2:] + ([word for setting in train_settings for word in ("--set", setting)] if words[1] == "train.py" else [])
            assert load_script(words[1].removesuffix(".py")).main(argv) == 0, line
        assert capsys.readouterr().out.strip(), line


def test_lora_fine_tuning_runs_as_written(workspace, monkeypatch, capsys):
    """The section's commands beside the workspace's runs/tiny, train.py with CUT_DOWN appended (its shapes)."""
    monkeypatch.chdir(workspace)
    run_in_order(LORA, workspace, capsys, CUT_DOWN)
    assert config.load(workspace / "runs" / "tiny-lora" / "config.toml").train.init_from == str((workspace / "runs" / "tiny").resolve())
    assert config.load(workspace / "runs" / "tiny-merged" / "config.toml").train.lora is None


def test_quantized_weights_run_as_written(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    run_in_order(QUANTIZED, workspace, capsys)
    assert config.load(workspace / "runs" / "tiny-int8" / "config.toml").model.quantization == "int8"


def test_surgery_and_evaluation_run_as_written(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    run_in_order(SURGERY, workspace, capsys)
    assert config.load(workspace / "runs" / "tiny-moe" / "config.toml").model.moe.num_experts == 4
