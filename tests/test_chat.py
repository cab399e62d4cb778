"""Chat templates (zoo.chat): a run's tokenizer_config.json chat_template renders as transformers'
apply_chat_template(..., tokenize=False, add_generation_prompt=True) renders it, and its text
encodes to transformers' ids (no special tokens added). The templates are written here, in the
shape of Llama 3's, Qwen 2's (ChatML) and Mistral's (multi-line, raise_exception)."""

import json
import shutil

import pytest

from zoo import chat, rundir
from zoo.tokenizer import HFTokenizer

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
from test_tokenizers import llama3_style  # noqa: E402  (a tiny byte-level BPE saved by transformers)

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if tools %}{{ tools | tojson }}{% endif %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MISTRAL = """{{ bos_token }}
{% for message in messages %}
    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {% endif %}
    {% if message['role'] == 'user' %}
        {{ '[INST] ' + message['content'] + ' [/INST]' }}
    {% elif message['role'] == 'assistant' %}
        {{ message['content'] | tojson + eos_token }}
    {% endif %}
{% endfor %}
"""
CONVERSATION = [
    {"role": "user", "content": "  Héllo <b>&</b> \"there\"  "},
    {"role": "assistant", "content": "Hi! 日本語 🙂"},
    {"role": "user", "content": "def f(x):\n    return x"},
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return llama3_style(tmp_path_factory.mktemp("llama3"))


def with_template(tokenizer_dir, to, template, **special):
    """A copy of the tokenizer files whose tokenizer_config.json carries `template` (and `special` tokens)."""
    to.mkdir()
    shutil.copy(tokenizer_dir / rundir.TOKENIZER_JSON, to / rundir.TOKENIZER_JSON)
    config = json.loads((tokenizer_dir / rundir.TOKENIZER_CONFIG).read_text())
    (to / rundir.TOKENIZER_CONFIG).write_text(json.dumps({**config, **special, "chat_template": template}))
    return to


@pytest.mark.parametrize("name, template", [("llama3", LLAMA3), ("chatml", CHATML), ("mistral", MISTRAL)])
@pytest.mark.parametrize("messages", [CONVERSATION[:1], CONVERSATION], ids=["one", "three"])
def test_rendering_and_ids_are_transformers(tokenizer_dir, tmp_path, name, template, messages):
    directory = with_template(tokenizer_dir, tmp_path / name, template, eos_token="<|eot_id|>")
    hf = transformers.AutoTokenizer.from_pretrained(directory)
    expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    rendered = chat.require(directory).render(messages)
    assert rendered == expected
    ids = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    zoo_tokenizer = HFTokenizer.load(directory / rundir.TOKENIZER_JSON, directory / rundir.TOKENIZER_CONFIG)
    assert zoo_tokenizer.encode(rendered) == list(ids)
    if name != "chatml":  # the template writes BOS itself, once
        assert ids[0] == zoo_tokenizer.bos_id and zoo_tokenizer.bos_id not in ids[1:]


def test_a_template_that_raises_is_one_line_naming_its_error(tokenizer_dir, tmp_path):
    directory = with_template(tokenizer_dir, tmp_path / "mistral", MISTRAL)
    with pytest.raises(ValueError) as error:
        chat.require(directory).render([{"role": "assistant", "content": "first"}])
    message = str(error.value)
    assert "\n" not in message and message.endswith("failed to render: TemplateError: Conversation roles must alternate user/assistant/user/assistant/...")
    broken = with_template(tokenizer_dir, tmp_path / "broken", "{% for message in messages %}")
    with pytest.raises(ValueError, match=r"is not a jinja2 template: .* \(line 1\)$"):
        chat.require(broken).render(CONVERSATION)


def test_no_template_and_named_templates(tokenizer_dir, tmp_path):
    assert chat.read(tokenizer_dir) is None  # transformers' save wrote no chat_template
    with pytest.raises(ValueError, match="has no chat template"):
        chat.require(tokenizer_dir)
    named = with_template(tokenizer_dir, tmp_path / "named", [{"name": "tool_use", "template": "x"}, {"name": "default", "template": CHATML}])
    assert chat.require(named).render(CONVERSATION[:1]).endswith("<|im_start|>assistant\n")
    (named / rundir.CHAT_TEMPLATE).write_text("{{ bos_token }}jinja file")  # read first, as transformers does
    assert chat.require(named).render([]) == "<|begin_of_text|>jinja file"
