"""sample.py against a real run directory written by training."""

import json
import shutil
import sysconfig
from pathlib import Path

import pytest

from test_cli import load_script
from zoo import config, runs
from zoo.generate import Generator
from zoo.sampling import Sampler
from zoo.train import train

CORPUS = str(Path(sysconfig.get_paths()["stdlib"]) / "json" / "*.py")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    cfg = config.from_dict(
        {
            "model": dict(vocab_size=400, d_model=32, num_layers=1, num_heads=2, ffn_dim=64, max_seq_len=64),
            "train": dict(steps=2, batch_size=4, seq_len=32, log_every=1, eval_batches=1),
            "data": dict(source="text", paths=[CORPUS]),
            "mesh": {"data": 1},
        }
    )
    train(cfg, workdir)
    return workdir


def sample(argv, capsys):
    code = load_script("sample").main(argv)
    return code, capsys.readouterr()


def test_prompt_streams_the_greedy_continuation(run_dir, capsys):
    code, out = sample(["--checkpoint", str(run_dir), "--prompt", "def load(", "--temperature", "0", "--max-new-tokens", "12"], capsys)
    run = runs.load(run_dir)
    prompt = [run.tokenizer.bos_id, *run.tokenizer.encode("def load(")]
    expected = Generator(run.model, run.params)(
        [prompt], max_new_tokens=12, sampler=Sampler(temperature=0), eos_id=run.tokenizer.eos_id, tokenizer=run.tokenizer
    )[0]
    assert code == 0 and out.out == expected.text + "\n"


def test_json_for_ids_and_for_a_prompt_file(run_dir, tmp_path, capsys):
    code, out = sample(["--checkpoint", str(run_dir), "--prompt-ids", "1,30,31", "--max-new-tokens", "5", "--json", "--seed", "3"], capsys)
    record = json.loads(out.out)
    assert code == 0 and len(record["tokens"]) <= 5 and isinstance(record["text"], str)
    (tmp_path / "prompts.txt").write_text("import json\n\nclass Decoder:\n")
    code, out = sample(["--checkpoint", str(run_dir), "--prompt-file", str(tmp_path / "prompts.txt"), "--json", "--top-k", "5", "--max-new-tokens", "4"], capsys)
    records = [json.loads(line) for line in out.out.splitlines()]
    assert code == 0 and len(records) == 2 and all(r["finish_reason"] in ("eos", "length") for r in records)


def test_a_run_without_tokenizer_takes_ids(run_dir, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare)
    (bare / runs.TOKENIZER).unlink()
    code, out = sample(["--checkpoint", str(bare), "--prompt-ids", "1,2,3", "--max-new-tokens", "3", "--json"], capsys)
    assert code == 0 and "text" not in json.loads(out.out)
    with pytest.raises(SystemExit):
        sample(["--checkpoint", str(bare), "--prompt", "hello"], capsys)
    assert f"has no {runs.TOKENIZER}; give the prompt as --prompt-ids" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--prompt", ""], "prompt 0 is empty"),
        (["--prompt", "x", "--max-new-tokens", "100"], "beyond the model's context of 64 tokens"),
        (["--prompt", "x", "--temperature", "-1"], "temperature must be >= 0"),
        (["--prompt", "x", "--top-p", "0"], "top_p must be in (0, 1]"),
        (["--prompt-ids", "1,a"], "--prompt-ids must be comma-separated integers"),
    ],
)
def test_bad_requests_exit_with_a_message(run_dir, capsys, flags, message):
    with pytest.raises(SystemExit) as exit:
        sample(["--checkpoint", str(run_dir), *flags], capsys)
    assert exit.value.code == 2 and message in capsys.readouterr().err


def test_not_a_run_directory(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sample(["--checkpoint", str(tmp_path), "--prompt", "x"], capsys)
    assert "is not a run directory: it has no config.toml" in capsys.readouterr().err
