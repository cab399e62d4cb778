"""Chat templates: a run's conversation as the text its model was tuned on.

A run directory imported from Hugging Face may hold tokenizer_config.json (zoo/rundir.py)
with a `chat_template`, a jinja2 template as transformers stores it (a string, or a list of
{"name", "template"} of which "default" is used); a chat_template.jinja beside it, as
transformers 5 saves templates, is read first. `render` draws it the way transformers'
`apply_chat_template(messages, tokenize=False, add_generation_prompt=True)` does: a sandboxed
jinja2 environment with trim_blocks and lstrip_blocks, the loopcontrols extension, its
`raise_exception`, `strftime_now`, `tojson` (no HTML escaping), and the tokenizer_config's
special tokens (bos_token, eos_token, ...) as variables. The rendered text is encoded
without adding special tokens (transformers' add_special_tokens=False): a template that
wants BOS writes it itself.

Errors are one-line ValueErrors. Nothing here needs jax.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from zoo import rundir

SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")  # transformers' named ones


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template's source, the special tokens' text it is given, and where it came from."""

    source: str
    special_tokens: dict[str, str]
    origin: str

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The text of `messages` ([{"role": "user", "content": ...}, ...]), ending with the
        assistant's turn opened when `add_generation_prompt`; ValueError naming the error when
        the template fails."""
        import jinja2  # only chat needs it

        try:
            return _compile(self.source).render(
                messages=[dict(message) for message in messages],
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except jinja2.TemplateSyntaxError as error:
            raise ValueError(f"the chat template of {self.origin} is not a jinja2 template: {error.message} (line {error.lineno})") from None
        except jinja2.TemplateError as error:  # raise_exception's message, an undefined name, a sandbox refusal
            raise ValueError(f"the chat template of {self.origin} failed to render: {type(error).__name__}: {_one_line(error)}") from None
        except Exception as error:  # the template's own arithmetic, indexing, ...
            raise ValueError(f"the chat template of {self.origin} failed to render: {type(error).__name__}: {_one_line(error)}") from None


def read(directory: str | Path) -> ChatTemplate | None:
    """The run directory's chat template, None when it has none; ValueError for a damaged file."""
    directory = Path(directory)
    config_path = directory / rundir.TOKENIZER_CONFIG
    config = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{config_path} is not a JSON file: {error}") from None
        if not isinstance(config, dict):
            raise ValueError(f"{config_path} holds a JSON {type(config).__name__}, not the object of a tokenizer_config.json")
    special = {name: text for name in SPECIAL_TOKENS if (text := _token_text(config.get(name))) is not None}
    jinja_path = directory / rundir.CHAT_TEMPLATE
    if jinja_path.is_file():  # transformers reads it in preference to the config's entry
        try:
            return ChatTemplate(jinja_path.read_text(encoding="utf-8"), special, str(jinja_path))
        except UnicodeDecodeError as error:
            raise ValueError(f"{jinja_path} is not UTF-8 text: {error.reason} at byte {error.start}") from None
    template = config.get("chat_template")
    if template is None:
        return None
    if isinstance(template, list):  # [{"name": ..., "template": ...}]: transformers uses "default"
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, dict)}
        if "default" not in named:
            raise ValueError(f"{config_path} has chat templates named {sorted(map(str, named))} and none named default")
        template = named["default"]
    if not isinstance(template, str):
        raise ValueError(f"{config_path}'s chat_template is a JSON {type(template).__name__}, not a template's text")
    return ChatTemplate(template, special, str(config_path))


def require(directory: str | Path) -> ChatTemplate:
    """The run directory's chat template; ValueError, one line, when it has none."""
    template = read(directory)
    if template is None:
        raise ValueError(
            f"{directory} has no chat template (a chat_template in its {rundir.TOKENIZER_CONFIG}, as a "
            "Hugging Face import of a chat model carries); leave out --chat to sample plain text"
        )
    return template


def _token_text(token) -> str | None:
    token = token.get("content") if isinstance(token, dict) else token  # an AddedToken written out
    return token if isinstance(token, str) else None


def _one_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else "(no message)"


@functools.lru_cache(maxsize=8)
def _compile(source: str):
    return _environment().from_string(source)


_ENVIRONMENT = None


def _environment():
    """transformers' chat-template environment (utils/chat_template_utils.py), less its
    {% generation %} tracker, which only marks assistant tokens for training masks."""
    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        class GenerationBlock(jinja2.ext.Extension):  # {% generation %}...{% endgeneration %} renders its body
            tags = {"generation"}

            def parse(self, parser):
                lineno = next(parser.stream).lineno
                body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
                return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

            def _body(self, caller):
                return caller()

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

        def strftime_now(format):
            return datetime.now().strftime(format)

        class TemplateNamespace(jinja2.utils.Namespace):  # refuses underscore-prefixed attributes
            def __init__(*args, **kwargs):
                self, args = args[0], args[1:]
                attrs = dict(*args, **kwargs)
                for name in attrs:
                    TemplateNamespace._check_name(name)
                jinja2.utils.Namespace.__init__(self, attrs)

            def __setitem__(self, name, value):
                TemplateNamespace._check_name(name)
                jinja2.utils.Namespace.__setitem__(self, name, value)

            @staticmethod
            def _check_name(name):
                if isinstance(name, str) and name.startswith("_"):
                    raise jinja2.exceptions.SecurityError(f"chat templates cannot store underscore-prefixed attributes on a namespace, got {name!r}")

        environment = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, jinja2.ext.loopcontrols]
        )
        environment.filters["tojson"] = tojson
        environment.globals["raise_exception"] = raise_exception
        environment.globals["strftime_now"] = strftime_now
        environment.globals["namespace"] = TemplateNamespace
        _ENVIRONMENT = environment
    return _ENVIRONMENT
