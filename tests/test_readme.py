"""The README's snippets run as written: each Python block on its own, and its command lines
for sampling and stats, in a directory where `runs/tiny` is a small trained run."""

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
COMMANDS = [
    line for block in re.findall(r"```bash\n(.*?)```", README, re.S) for line in block.splitlines()
    if line.startswith(("python -m zoo.stats", "python sample.py")) and "--stop" not in line  # --stop: test_sample_cli
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A directory holding runs/tiny (the tiny config's shape, cut down to train in seconds)."""
    root = tmp_path_factory.mktemp("readme")
    corpus = str(Path(sysconfig.get_paths()["stdlib"]) / "json" / "*.py")
    cfg = config.load("tiny", [
        "model.vocab_size=400", "model.num_layers=1", "model.d_model=64", "model.ffn_dim=128", "train.steps=2",
        "train.batch_size=4", "train.seq_len=32", "train.eval_batches=1", "data.source=\"text\"",
        f"data.paths=[\"{corpus}\"]", "mesh.data=1",
    ])
    train(cfg, root / "runs" / "tiny")
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
