"""sample.py against a real run directory written by training."""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest

from test_cli import ROOT, load_script
from zoo import config, runs
from zoo.generate import Generator
from zoo.layers.attention.notices import say_once
from zoo.sampling import Sampler

CORPUS = str(Path(sysconfig.get_paths()["stdlib"]) / "json" / "*.py")
GREEDY = ["--temperature", "0"]
SPEED = re.compile(r"(\d+) tokens? in (\d+\.\d\d) s: (\d+\.\d) tokens/s, first token after (\d+\.\d\d) s \(compile or cache load included\)")


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


def train(cfg, workdir):
    from zoo.train import train as train_run

    train_run(cfg, workdir)


def sample(argv, capsys):
    code = load_script("sample").main(argv)
    return code, capsys.readouterr()


def copy_run(run_dir, to, settings=None, tokenizer=True):
    """A copy of a run directory, its config changed by `settings`, without its tokenizer if asked."""
    shutil.copytree(run_dir, to)
    if not tokenizer:
        (to / runs.TOKENIZER).unlink()
    if settings:
        (to / runs.CONFIG).write_text(config.to_toml(config.override(config.load(to / runs.CONFIG), settings)))
    return to


def greedy(run, prompts, **options):
    return Generator(run.model, run.params)(prompts, max_new_tokens=12, sampler=Sampler(temperature=0), **options)


def speed(err):
    """The new tokens that stderr's last line, the speed line, counts (its times checked for sense)."""
    match = SPEED.fullmatch(err.splitlines()[-1])
    assert match, err
    tokens, seconds, rate, first = (float(group) for group in match.groups())
    assert 0 < first <= seconds and abs(rate - tokens / seconds) <= 0.05 + 0.01 * rate * (1 + 1 / seconds), err  # rounded
    return int(tokens)


def test_prompt_streams_the_greedy_continuation(run_dir, capsys):
    code, out = sample(["--checkpoint", str(run_dir), "--prompt", "def load(", *GREEDY, "--max-new-tokens", "12"], capsys)
    run = runs.load(run_dir)
    prompt = [run.tokenizer.bos_id, *run.tokenizer.encode("def load(")]
    expected = greedy(run, [prompt], eos_ids=[run.tokenizer.eos_id], tokenizer=run.tokenizer)[0]
    assert code == 0 and out.out == expected.text + "\n"
    assert speed(out.err) == len(expected.tokens)


def test_an_empty_prompt_generates_from_bos(run_dir, capsys):
    code, out = sample(["--checkpoint", str(run_dir), "--prompt", "", *GREEDY, "--max-new-tokens", "12", "--json"], capsys)
    run = runs.load(run_dir)
    expected = greedy(run, [[run.tokenizer.bos_id]], eos_ids=[run.tokenizer.eos_id])[0]
    assert code == 0 and json.loads(out.out)["tokens"] == expected.tokens


def test_step_picks_that_checkpoint(run_dir, tmp_path, capsys):
    run = runs.load(run_dir)  # its one checkpoint, step 2
    newest = blank_line_run(run_dir, tmp_path / "run")  # step 3, whose greedy tokens are all one token
    argv = ["--checkpoint", str(tmp_path / "run"), "--prompt-ids", "1,30,31", *GREEDY, "--max-new-tokens", "12", "--json"]
    code, out = sample([*argv, "--step", "2"], capsys)
    expected = greedy(run, [[1, 30, 31]], eos_ids=[run.tokenizer.eos_id])[0].tokens
    assert code == 0 and json.loads(out.out)["tokens"] == expected != [newest] * len(expected)


def test_json_for_ids_and_for_a_prompt_file(run_dir, tmp_path, capsys):
    code, out = sample(["--checkpoint", str(run_dir), "--prompt-ids", "1,30,31", "--max-new-tokens", "5", "--json", "--seed", "3"], capsys)
    record = json.loads(out.out)
    assert code == 0 and len(record["tokens"]) <= 5 and isinstance(record["text"], str)
    (tmp_path / "prompts.txt").write_text("import json\n\nclass Decoder:\n")
    code, out = sample(["--checkpoint", str(run_dir), "--prompt-file", str(tmp_path / "prompts.txt"), "--json", "--top-k", "5", "--max-new-tokens", "4"], capsys)
    records = [json.loads(line) for line in out.out.splitlines()]  # the speed line is on stderr only
    assert code == 0 and len(records) == 2 and all(r["finish_reason"] in ("eos", "length") for r in records)
    assert speed(out.err) == sum(len(r["tokens"]) for r in records)  # every prompt's new tokens


def test_a_run_without_tokenizer_takes_ids(run_dir, tmp_path, capsys):
    bare = copy_run(run_dir, tmp_path / "bare", tokenizer=False)
    code, out = sample(["--checkpoint", str(bare), "--prompt-ids", "1,2,3", "--max-new-tokens", "3", "--json"], capsys)
    assert code == 0 and "text" not in json.loads(out.out)


def test_eos_ids_from_the_config_stop_a_run_without_tokenizer(run_dir, tmp_path, capsys):
    argv = ["--prompt-ids", "1,30,31", *GREEDY, "--max-new-tokens", "12", "--json"]
    bare = copy_run(run_dir, tmp_path / "bare", tokenizer=False)
    free = json.loads(sample(["--checkpoint", str(bare), *argv], capsys)[1].out)
    eos = free["tokens"][3]
    with_eos = copy_run(run_dir, tmp_path / "eos", {"model.eos_ids": [eos]}, tokenizer=False)
    stopped = json.loads(sample(["--checkpoint", str(with_eos), *argv], capsys)[1].out)
    assert stopped == {"tokens": free["tokens"][: free["tokens"].index(eos)], "finish_reason": "eos"}


def test_bos_id_from_the_config_starts_a_text_prompt(run_dir, tmp_path, capsys):
    run = runs.load(run_dir)
    prompt = run.tokenizer.encode("def")
    options = dict(eos_ids=[run.tokenizer.eos_id], tokenizer=run.tokenizer)
    usual = greedy(run, [[run.tokenizer.bos_id, *prompt]], **options)[0].tokens
    bos = next(b for b in range(5, 400) if greedy(run, [[b, *prompt]], **options)[0].tokens != usual)  # one that shows
    with_bos = copy_run(run_dir, tmp_path / "bos", {"model.bos_id": bos})
    code, out = sample(["--checkpoint", str(with_bos), "--prompt", "def", *GREEDY, "--max-new-tokens", "12", "--json"], capsys)
    assert code == 0 and json.loads(out.out)["tokens"] == greedy(run, [[bos, *prompt]], **options)[0].tokens


def stop_inside(tokenizer, tokens):
    """Two characters of the greedy text, the last of one token and the first of the next, whose
    first place in the text is there: a stop string that begins inside a token and ends in another."""
    texts = [tokenizer.decode(tokens[:count]) for count in range(len(tokens) + 1)]
    for count in range(2, len(tokens)):
        end, before = len(texts[count]), len(texts[count - 1])
        stop = texts[-1][end - 1 : end + 1]
        if end - before >= 2 and texts[-1].find(stop) == end - 1 and stop.isprintable() and stop.isascii() and "\\" not in stop:
            return stop
    raise AssertionError(f"no stop string to cut inside a token of {texts[-1]!r}")


def test_stop_strings_end_the_stream_the_json_text_and_the_tokens_alike(run_dir, tmp_path, capsys):
    run = runs.load(run_dir)
    texts = ["def load(", "class Decoder:"]
    prompts = [[run.tokenizer.bos_id, *run.tokenizer.encode(text)] for text in texts]
    free = greedy(run, prompts, eos_ids=[run.tokenizer.eos_id], tokenizer=run.tokenizer)
    stops = [stop_inside(run.tokenizer, result.tokens) for result in free]
    flags = [*GREEDY, "--max-new-tokens", "12", "--stop", stops[0], "--stop", stops[1]]
    pieces = []
    cut = greedy(run, prompts, eos_ids=[run.tokenizer.eos_id], tokenizer=run.tokenizer, stop_strings=stops, on_text=pieces.append)
    for row, (before, after) in enumerate(zip(free, cut)):
        found = min(before.text.find(s) for s in stops if s in before.text)
        assert after.finish_reason == "stop" and after.text == before.text[:found]
        assert after.text.startswith(run.tokenizer.decode(after.tokens)) and after.tokens == before.tokens[: len(after.tokens)]
        assert not after.text.startswith(run.tokenizer.decode(before.tokens[: len(after.tokens) + 1]))  # the next reaches past
        assert "".join(piece[row] for piece in pieces) == after.text
    _, streamed = sample(["--checkpoint", str(run_dir), "--prompt", texts[0], *flags], capsys)
    _, one = sample(["--checkpoint", str(run_dir), "--prompt", texts[0], *flags, "--json"], capsys)
    assert streamed.out == json.loads(one.out)["text"] + "\n" == cut[0].text + "\n"
    assert json.loads(one.out)["tokens"] == cut[0].tokens
    (tmp_path / "prompts.txt").write_text("\n".join(texts) + "\n")
    _, batch = sample(["--checkpoint", str(run_dir), "--prompt-file", str(tmp_path / "prompts.txt"), *flags, "--json"], capsys)
    assert [json.loads(line) for line in batch.out.splitlines()] == [
        {"tokens": r.tokens, "finish_reason": "stop", "text": r.text} for r in cut
    ]


def blank_line_run(run_dir, to):
    """A copy of the run whose model writes "\\n" or "x" with equal odds, so sampling soon
    writes a blank line; its context fits the README's default of 100 new tokens. It is saved
    as a checkpoint after the run's, and its token of the two that greedy decoding picks is returned."""
    copy_run(run_dir, to, {"model.max_seq_len": 256})
    run = runs.load(to)
    newline, x = run.tokenizer.encode("\n")[-1], run.tokenizer.encode("x")[-1]

    def edit(path, leaf):  # every position's features equal, and only two tokens with logits
        name = jax.tree_util.keystr(path)
        if "embedding" in name:
            return jnp.ones_like(leaf)
        if "['o']" in name or "['down']" in name:
            return jnp.zeros_like(leaf)
        if "unembed" in name:
            return jnp.zeros_like(leaf).at[:, newline].set(0.5).at[:, x].set(0.5)
        return leaf

    params = jax.tree_util.tree_map_with_path(edit, run.params)
    manager = ocp.CheckpointManager((to / runs.CHECKPOINTS).resolve())
    manager.save(run.step + 1, args=ocp.args.Composite(state=ocp.args.StandardSave({"params": params})))
    manager.wait_until_finished()
    manager.close()
    return min(newline, x)  # equal logits: argmax takes the first


def test_the_readme_stop_example_stops_at_a_blank_line(run_dir, tmp_path):
    line = next(line for line in (ROOT / "README.md").read_text().splitlines() if "--stop" in line and line.startswith("python sample.py"))
    blank_line_run(run_dir, tmp_path / "runs" / "tiny")
    (tmp_path / "prompts.txt").write_text("import json\n\nclass Decoder:\n")
    (tmp_path / "sample.py").symlink_to(ROOT / "sample.py")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(record) for record in done.stdout.splitlines()]
    assert len(records) == 2 and all(r["finish_reason"] == "stop" and "\n\n" not in r["text"] for r in records)
    assert_kernel_choices(done.stderr)


def assert_kernel_choices(err):
    """stderr holds the attention kernel's choices, each once (on CPU one line for prefill and decode
    alike), then the speed line."""
    speed(err)
    lines = err.splitlines()[:-1]
    assert lines and lines[0].startswith("attention: auto picked ") and len(set(lines)) == len(lines), err
    assert all(line.startswith("attention: ") for line in lines), err
    if jax.default_backend() == "cpu":
        assert lines == ["attention: auto picked xla_attention on cpu"]


def test_the_kernel_choice_is_one_line_on_stderr(run_dir, capsys):
    say_once.cache_clear()  # said once per process: earlier tests may have said it
    code, out = sample(["--checkpoint", str(run_dir), "--prompt", "x", "--max-new-tokens", "3"], capsys)
    assert code == 0
    assert_kernel_choices(out.err)


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"\n\n", "\n\n"),
        (r"a\tb\r\\n\"", 'a\tb\r\\n"'),
        (r"\x41\u00e9\u4e2d", "Aé中"),
        ("héllo 中文 ✓", "héllo 中文 ✓"),  # non-ASCII text passes through
    ],
)
def test_stop_escapes(text, expected):
    assert load_script("sample").unescape(text) == expected


def test_help_says_what_the_flags_take(capsys):
    with pytest.raises(SystemExit):
        load_script("sample").main(["--help"])
    help = " ".join(capsys.readouterr().out.split())
    assert "K at or above the vocabulary size keeps every token" in help and "\\n \\t \\r \\\\" in help
    assert "prompts, one per line" in help


def bad_runs(run_dir, tmp_path):
    """Run directories (and files) that sample.py must refuse, by name."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / runs.CONFIG).write_text("this is [not toml")
    copy_run(run_dir, tmp_path / "bad_tokenizer")
    (tmp_path / "bad_tokenizer" / runs.TOKENIZER).write_bytes(b"not a sentencepiece model")
    copy_run(run_dir, tmp_path / "bare", tokenizer=False)
    (tmp_path / "latin1").write_bytes("café\n".encode("latin-1"))
    copy_run(run_dir, tmp_path / "other_model", {"model.attention.qkv_bias": True})  # params its checkpoint lacks
    names = ("file", "garbage", "bad_tokenizer", "bare", "latin1", "other_model")
    return {"run": run_dir, **{name: tmp_path / name for name in names}}


SHORT = ["--max-new-tokens", "3"]
BAD = [
    (["--prompt", "x", "--temperature", "nan"], "--temperature must be a finite number >= 0 (0 is greedy), got nan"),
    (["--prompt", "x", "--temperature", "inf"], "--temperature must be a finite number >= 0 (0 is greedy), got inf"),
    (["--prompt", "x", "--temperature", "-1"], "--temperature must be a finite number >= 0 (0 is greedy), got -1.0"),
    (["--prompt", "x", "--temperature", "hot"], "argument --temperature: invalid float value: 'hot'"),
    (["--prompt", "x", "--top-p", "0"], "--top-p must be in (0, 1] (1 keeps every token), got 0.0"),
    (["--prompt", "x", "--top-p", "1.01"], "--top-p must be in (0, 1] (1 keeps every token), got 1.01"),
    (["--prompt", "x", "--min-p", "1"], "--min-p must be in [0, 1) (0 keeps every token), got 1.0"),
    (["--prompt", "x", "--min-p", "-0.5"], "--min-p must be in [0, 1) (0 keeps every token), got -0.5"),
    (["--prompt", "x", "--top-k", "-1"], "--top-k must be an integer >= 0 (0 is off), got -1"),
    (["--prompt", "x", "--max-new-tokens", "0"], "--max-new-tokens must be an integer >= 1, got 0"),
    (["--prompt", "x", "--max-new-tokens", "-5"], "--max-new-tokens must be an integer >= 1, got -5"),
    (["--prompt", "x", "--max-new-tokens", "100"], "with max_new_tokens=100 that is 103, beyond the model's context of 64 tokens"),
    (["--prompt", "x", *SHORT, "--seed", "-1"], "--seed must be an integer in [0, 4294967295] (2**32 - 1), got -1"),
    (["--prompt", "x", *SHORT, "--seed", str(2**70)], f"--seed must be an integer in [0, 4294967295] (2**32 - 1), got {2**70}"),
    (["--prompt", "x", *SHORT, "--stop", ""], "--stop must be non-empty text (an empty one would stop at once), got ''"),
    (["--prompt", "x", *SHORT, "--stop", r"\q"], r'--stop "\q" holds "\q", which is not an escape'),
    (["--prompt", "x", *SHORT, "--stop", r"\x4"], r'--stop "\x4" holds "\x", which is not an escape'),
    (["--prompt", "x", *SHORT, "--stop", "ab\\"], r'--stop "ab\" holds "\", which is not an escape'),
    (
        ["--checkpoint", "{bare}", "--prompt-ids", ""],
        "prompt 0 is empty; give at least one token, or set model.bos_id in its config.toml to generate from BOS",
    ),
    (["--prompt", "x", "--step", "7"], "--step 7: {run} has no checkpoint at step 7; it has step 2"),
    (["--prompt", "x", "--step", "two"], "argument --step: invalid int value: 'two'"),
    (["--prompt", "x", "--chat"], "{run} has no chat template"),
    (["--prompt-ids", "1", "--chat"], "--chat renders text with the run's chat template"),
    (["--prompt-ids", "1,a"], "--prompt-ids must be comma-separated integers, got '1,a'"),
    (["--prompt-ids", "1,400"], "prompt 0 holds token 400, outside the vocabulary of 400"),
    (["--prompt-ids=-1,5"], "prompt 0 holds token -1, outside the vocabulary of 400"),
    (["--prompt", "x", "--prompt-ids", "1"], "argument --prompt-ids: not allowed with argument --prompt"),
    (["--prompt-file", "{tmp}/absent.txt"], "--prompt-file {tmp}/absent.txt: No such file or directory"),
    (["--prompt-file", "{latin1}"], "--prompt-file {latin1} is not UTF-8 text: invalid continuation byte at byte 3"),
    (["--checkpoint", "{file}", "--prompt", "x"], "{file} is not a run directory: it has no config.toml"),
    (["--checkpoint", "{garbage}", "--prompt", "x"], "{garbage}/config.toml is not valid TOML"),
    (["--checkpoint", "{bad_tokenizer}", "--prompt", "x"], "{bad_tokenizer}/tokenizer.model is not a sentencepiece model"),
    (["--checkpoint", "{bare}", "--prompt", "x"], "{bare} has no tokenizer (tokenizer.model or tokenizer.json); give the prompt as --prompt-ids"),
    (
        ["--checkpoint", "{bare}", "--prompt-ids", "1", "--stop", "x"],
        "--stop needs a tokenizer (tokenizer.model or tokenizer.json) to read the generated text, and {bare} has none",
    ),
    (["--checkpoint", "{tmp}/absent", "--prompt", "x"], "{tmp}/absent is not a run directory: it has no config.toml"),
    (
        ["--checkpoint", "{other_model}", "--prompt", "x"],
        "checkpoint 2 of {other_model} does not fit its config.toml: it has no params/tower/layers/attention/k/bias/value",
    ),
]


def test_bad_inputs_get_one_line_and_exit_status_2(run_dir, tmp_path, capsys):
    paths = {name: str(path) for name, path in bad_runs(run_dir, tmp_path).items()} | {"tmp": str(tmp_path)}
    for flags, message in BAD:
        flags = [flag.format(**paths) for flag in flags]
        argv = flags if "--checkpoint" in flags else ["--checkpoint", paths["run"], *flags]
        with pytest.raises(SystemExit) as exit:
            sample(argv, capsys)
        err = capsys.readouterr().err
        assert exit.value.code == 2, argv
        assert err.startswith("sample.py: error: ") and err.count("\n") == 1 and err.endswith("\n"), err
        assert message.format(**paths) in err and "Traceback" not in err, (argv, err)


CHATML = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"


def test_interactive_answers_each_line_with_one_generator_and_chat_keeps_the_history(run_dir, tmp_path, capsys, monkeypatch):
    import io

    import zoo.generate

    prompts = []

    class Counting(Generator):
        made = 0

        def __init__(self, *args, **kwargs):
            Counting.made += 1
            super().__init__(*args, **kwargs)

        def __call__(self, batch, **kwargs):
            prompts.append(list(batch[0]))
            return super().__call__(batch, **kwargs)

    monkeypatch.setattr(zoo.generate, "Generator", Counting)
    monkeypatch.setattr(sys, "stdin", io.StringIO("def load(\n\nclass A:\n"))
    code, out = sample(["--checkpoint", str(run_dir), "--interactive", *GREEDY, "--max-new-tokens", "6"], capsys)
    run = runs.load(run_dir)
    generator, bos = Generator(run.model, run.params), run.tokenizer.bos_id
    expected = [
        generator([[bos, *run.tokenizer.encode(text)]], max_new_tokens=6, sampler=Sampler(temperature=0), eos_ids=[run.tokenizer.eos_id], tokenizer=run.tokenizer)[0].text
        for text in ("def load(", "class A:")
    ]
    assert code == 0 and out.out == "".join(text + "\n" for text in expected) and Counting.made == 1
    assert out.err.count("> ") == 4 and sum(bool(SPEED.fullmatch(line.lstrip("> "))) for line in out.err.splitlines()) == 2

    chatty = copy_run(run_dir, tmp_path / "chat")
    (chatty / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML}))
    prompts.clear()
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\nagain\n" + "long " * 5 + "\n"))
    code, out = sample(["--checkpoint", str(chatty), "--interactive", "--chat", *GREEDY, "--max-new-tokens", "6"], capsys)
    first, second = (run.tokenizer.decode(p) for p in prompts[:2])
    assert code == 0 and len(prompts) == 3 and Counting.made == 2, out.err
    assert first == "<|user|>hello\n<|assistant|>" and second.startswith(first) and second.endswith("\n<|user|>again\n<|assistant|>")
    assert "no longer fits the model's context of 64 tokens" in out.err  # the third turn drops the oldest exchanges
