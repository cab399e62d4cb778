"""Hugging Face tokenizer.json tokenizers (zoo.tokenizer.HFTokenizer): the ids transformers'
AutoTokenizer gives for the same files, text that round-trips, and the files carried by
`python -m zoo.hf import`/`export` into and out of a run directory that runs.load reads.

The tokenizers are tiny BPEs trained here, byte-level GPT-2-style and Llama-3-style and
sentencepiece-style (byte fallback) Llama-2 and Metaspace ones, saved by transformers (PreTrainedTokenizerFast.save_pretrained), so the files are those it writes."""

import json
import shutil

import pytest

from zoo import chat, rundir, runs
from zoo.hf.__main__ import main as hf_main
from zoo.tokenizer import HFTokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TEXTS = [
    "hello world",
    "Héllo, wörld! Ça va? naïve façade",
    "日本語のテキストと中文字符",
    "emoji: 🙂🚀👩‍👩‍👧 and ∑ ≠ ∞",
    "def f(x):\n    if x:\n        return x * 2\n\treturn None\n",
    "   leading spaces, trailing spaces   ",
    "runs of\n\n\n\nnewlines and      spaces \r\n and\ttabs\t\t",
    "special <|endoftext|> inside <|end_of_text|>text",
    "",
    " ",
    "numbers 1234567 3.14159 0xFF",
]


def corpus() -> list[str]:
    lines = []
    for i in range(150):
        lines.append(f"def function_{i}(value, other={i}):\n    return value * other + {i * 7}\n")
        lines.append(f"The café number {i} serves naïve crème brûlée; 東京 {i} 🙂 and more text.")
    return lines


def save(tokenizer, directory, **special):
    """`tokenizer` trained on corpus(), saved as transformers saves a fast tokenizer; returns `directory`."""
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special)
    fast.save_pretrained(directory)
    return directory


def gpt2_style(directory):
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tk = tokenizers.Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tk.train_from_iterator(corpus(), trainer)
    return save(tk, directory, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def llama3_style(directory):
    from tokenizers import Regex, decoders, models, pre_tokenizers, processors, trainers

    tk = tokenizers.Tokenizer(models.BPE(ignore_merges=True))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tk.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tk.train_from_iterator(corpus(), trainer)
    bos = tk.token_to_id("<|begin_of_text|>")
    tk.post_processor = processors.Sequence(
        [processors.ByteLevel(trim_offsets=False), processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])]
    )
    return save(tk, directory, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")


def sentencepiece_style(directory, *, metaspace: bool):
    """As Llama 2's and Mistral's tokenizer.json: "▁" for spaces, byte fallback for characters the
    vocabulary lacks, one leading space stripped on decoding. The "▁" comes from a Prepend +
    Replace normalizer (Llama 2), or with `metaspace` from a Metaspace pre-tokenizer (newer
    Mistral), which adds none before text that starts with a space: such text loses one."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    tk = tokenizers.Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if metaspace:
        tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    else:
        tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tk.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(content=" ", left=1)]
    )
    specials = ["<unk>", "<s>", "</s>", *(f"<0x{byte:02X}>" for byte in range(256))]
    tk.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=420, special_tokens=specials, show_progress=False))
    return save(tk, directory, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


STYLES = {
    "gpt2": gpt2_style,
    "llama3": llama3_style,
    "llama2": lambda directory: sentencepiece_style(directory, metaspace=False),
    "metaspace": lambda directory: sentencepiece_style(directory, metaspace=True),
}


@pytest.fixture(scope="module", params=list(STYLES))
def saved(request, tmp_path_factory):
    """(directory transformers saved the tokenizer in, zoo's HFTokenizer of it, AutoTokenizer of it)."""
    directory = STYLES[request.param](tmp_path_factory.mktemp(request.param))
    zoo_tokenizer = HFTokenizer.load(directory / rundir.TOKENIZER_JSON, directory / rundir.TOKENIZER_CONFIG)
    return directory, zoo_tokenizer, transformers.AutoTokenizer.from_pretrained(directory)


def test_the_ids_are_transformers_without_special_tokens(saved):
    _, zoo_tokenizer, auto = saved
    for text in TEXTS:
        assert zoo_tokenizer.encode(text) == auto.encode(text, add_special_tokens=False), text
    assert zoo_tokenizer.encode_batch(TEXTS) == [auto.encode(text, add_special_tokens=False) for text in TEXTS]


def test_decoding_gives_the_text_back(saved):
    directory, zoo_tokenizer, auto = saved
    for text in TEXTS:
        ids = zoo_tokenizer.encode(text)
        assert zoo_tokenizer.decode(ids) == auto.decode(ids, clean_up_tokenization_spaces=False), text
        loses_a_space = directory.name.startswith("metaspace") and text.startswith(" ")  # as in transformers
        assert zoo_tokenizer.decode(ids) == (text[1:] if loses_a_space else text)


def test_a_prefix_of_the_ids_decodes_to_a_prefix_of_the_text(saved):
    """What zoo.stopping relies on: up to an incomplete UTF-8 character at the end (U+FFFD)."""
    _, zoo_tokenizer, _ = saved
    text = TEXTS[3] + TEXTS[2]
    ids = zoo_tokenizer.encode(text)
    for count in range(len(ids)):
        assert text.startswith(zoo_tokenizer.decode(ids[:count]).rstrip("\ufffd"))


def test_vocab_size_and_special_ids_are_transformers(saved):
    _, zoo_tokenizer, auto = saved
    assert zoo_tokenizer.vocab_size == len(auto)
    assert (zoo_tokenizer.bos_id, zoo_tokenizer.eos_id) == (auto.bos_token_id, auto.eos_token_id)
    assert zoo_tokenizer.bos_id >= 0


def test_without_a_tokenizer_config_there_are_no_special_ids(saved):
    directory, zoo_tokenizer, _ = saved
    bare = HFTokenizer.load(directory / rundir.TOKENIZER_JSON)
    assert (bare.bos_id, bare.eos_id) == (-1, -1)
    assert bare.encode(TEXTS[1]) == zoo_tokenizer.encode(TEXTS[1])


@pytest.fixture(scope="module")
def hf_llama(tmp_path_factory):
    """A random tiny Llama written by transformers, with the Llama-3-style tokenizer's files."""
    config = transformers.LlamaConfig(
        vocab_size=320, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        bos_token_id=0, eos_token_id=1,
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("hf") / "llama"
    transformers.LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    llama3_style(directory)
    (directory / rundir.CHAT_TEMPLATE).write_text("{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    return directory


@pytest.fixture(scope="module")
def imported(hf_llama, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    hf_main(["import", str(hf_llama), str(run)])
    return run


def test_import_carries_the_tokenizer_files_and_runs_load_reads_them(hf_llama, imported):
    for name in (rundir.TOKENIZER_JSON, rundir.TOKENIZER_CONFIG, rundir.CHAT_TEMPLATE):
        assert (imported / name).read_bytes() == (hf_llama / name).read_bytes()
    assert rundir.read_config(imported).data.tokenizer == str((imported / rundir.TOKENIZER_JSON).resolve())
    tokenizer = runs.load(imported).tokenizer
    auto = transformers.AutoTokenizer.from_pretrained(hf_llama)
    assert isinstance(tokenizer, HFTokenizer)
    assert [tokenizer.encode(t) for t in TEXTS] == [auto.encode(t, add_special_tokens=False) for t in TEXTS]
    assert (tokenizer.bos_id, tokenizer.eos_id) == (auto.bos_token_id, auto.eos_token_id)
    assert chat.require(imported).render([{"role": "user", "content": "hi"}]) == auto.bos_token + "hi"


def test_export_writes_the_tokenizer_files_back(hf_llama, imported, tmp_path):
    hf_main(["export", str(imported), str(tmp_path / "out")])
    for name in (rundir.TOKENIZER_JSON, rundir.TOKENIZER_CONFIG, rundir.CHAT_TEMPLATE):
        assert (tmp_path / "out" / name).read_bytes() == (hf_llama / name).read_bytes()


def test_a_run_with_both_kinds_reads_tokenizer_json(imported, tmp_path):
    from zoo.tokenizer import Tokenizer

    run = tmp_path / "run"
    shutil.copytree(imported, run)
    rundir.write_tokenizer(run, Tokenizer.train(corpus(), 400))
    assert isinstance(rundir.read_tokenizer(run), HFTokenizer)
    (run / rundir.TOKENIZER_JSON).unlink()
    assert isinstance(rundir.read_tokenizer(run), Tokenizer)


DAMAGED = {  # file: (contents, what the one line says)
    "json garbage": (rundir.TOKENIZER_JSON, b"\x8f\x00garbage{", "tokenizer.json is not UTF-8 text"),
    "json cut": (rundir.TOKENIZER_JSON, b'{"version": "1.0", "model": {"type": "BPE", "vocab"', "tokenizer.json is not a tokenizer.json the tokenizers library reads"),
    "json of another shape": (rundir.TOKENIZER_JSON, json.dumps({"model": [1, 2]}).encode(), "tokenizer.json is not a tokenizer.json the tokenizers library reads"),
    "config not json": (rundir.TOKENIZER_CONFIG, b"{bos_token: ", "tokenizer_config.json is not a JSON file"),
    "config a list": (rundir.TOKENIZER_CONFIG, b"[]", "tokenizer_config.json holds a JSON list"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_tokenizer_file_gives_one_line(hf_llama, imported, tmp_path, capsys, case):
    name, contents, message = DAMAGED[case]
    run = tmp_path / "run"
    shutil.copytree(imported, run)
    (run / name).write_bytes(contents)
    with pytest.raises(rundir.RunError, match=message) as raised:
        rundir.read_tokenizer(run)
    assert "\n" not in str(raised.value)

    source = tmp_path / "hf"
    shutil.copytree(hf_llama, source)
    (source / name).write_bytes(contents)
    with pytest.raises(SystemExit) as exited:
        hf_main(["import", str(source), str(tmp_path / "new")])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "new").exists()


def test_training_reads_a_tokenizer_json_given_or_in_its_work_directory(saved, tmp_path):
    """data.tokenizer may name a tokenizer.json (its tokenizer_config.json beside it gives bos/eos),
    and a work directory holding one (an imported run, fine-tuned) resumes with it."""
    from zoo.train import workdir

    directory, zoo_tokenizer, _ = saved
    given = workdir.tokenizer(tmp_path, 1000, given=str(directory / rundir.TOKENIZER_JSON), documents=None, fresh=False)
    assert isinstance(given, HFTokenizer) and (given.bos_id, given.eos_id) == (zoo_tokenizer.bos_id, zoo_tokenizer.eos_id)
    rundir.write_tokenizer(tmp_path, given)
    again = workdir.tokenizer(tmp_path, 1000, given=None, documents=["never trained on"], fresh=False)
    assert again.encode(TEXTS[0]) == zoo_tokenizer.encode(TEXTS[0])
    assert set(workdir.previous_run(tmp_path)) >= {rundir.TOKENIZER_JSON, rundir.TOKENIZER_CONFIG}  # --fresh sets them aside
