"""The README's snippets run as written: each Python block on its own, and its command lines
for sampling and stats, in a directory where `runs/tiny` is a small trained run."""

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from zoo import config
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
    """A directory holding runs/tiny (the tiny config's shape, cut down to train in seconds) and sample.py."""
    root = tmp_path_factory.mktemp("readme")
    corpus = str(Path(sysconfig.get_paths()["stdlib"]) / "json" / "*.py")
    cfg = config.load("tiny", [
        "model.vocab_size=400", "model.num_layers=1", "model.d_model=64", "model.ffn_dim=128", "train.steps=2",
        "train.batch_size=4", "train.seq_len=32", "train.eval_batches=1", "data.source=\"text\"",
        f"data.paths=[\"{corpus}\"]", "mesh.data=1",
    ])
    train(cfg, root / "runs" / "tiny")
    (root / "sample.py").symlink_to(ROOT / "sample.py")
    return root


def test_the_readme_has_the_snippets_this_test_runs():
    assert len(PYTHON_BLOCKS) >= 4 and any("runs.load" in block for block in PYTHON_BLOCKS)
    assert any("zoo.stats" in line for line in COMMANDS) and any("sample.py" in line for line in COMMANDS)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_snippet_runs(index, workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    exec(compile(PYTHON_BLOCKS[index], f"README.md python block {index}", "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("line", COMMANDS)
def test_command_line_runs(line, workspace):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", "-c", line], cwd=workspace, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    assert "Traceback" not in done.stderr
