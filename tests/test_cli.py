"""train.py's command line: bad flags get a clear message and exit status 2."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "model.num_layers=many"], "model.num_layers: expected an integer, got 'many'"),
        (["--set", "model.num_layer=2"], "model.num_layer: unknown key (did you mean 'num_layers'?)"),
        (["--config", "nonexistent"], "no config file 'nonexistent'"),
        (["--coordinator", "127.0.0.1:1234"], "a coordinator needs the number of processes and this process's id too"),
        (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"], "process id 2 is not in [0, 2)"),
        (["--parallel", "shard_map"], "invalid choice: 'shard_map'"),
    ],
)
def test_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        load_script("train").main(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err
