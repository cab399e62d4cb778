"""Reading a Hugging Face config.json: typed fields, and no field left unread.

A Fields wraps one parsed JSON object. Each read names the field and the type it must
have. A field the object lacks reads as the family's transformers default for it, and
a null (or a lacking field without such a default) as the reader's fallback. Once a
family has read what it interprets, `refuse_unread` refuses every other field that holds
a value, unless it is one known not to change the forward pass (INERT: dropouts, token
ids, generation and output settings, bookkeeping, and each family's own such fields):
a field zoo does not interpret could make transformers compute another function.
"""

from __future__ import annotations

import json
import math
from typing import Any

from zoo.hf.mapping import HFConfigError

INERT = frozenset({
    # bookkeeping
    "_name_or_path", "architectures", "auto_map", "transformers_version", "_commit_hash", "tokenizer_class",
    "id2label", "label2id", "num_labels", "problem_type", "finetuning_task", "task_specific_params", "prefix",
    "use_bfloat16", "torchscript", "gradient_checkpointing", "_attn_implementation", "_attn_implementation_autoset",
    # outputs, caching and memory
    "output_attentions", "output_hidden_states", "output_scores", "return_dict", "return_dict_in_generate",
    "use_cache", "cache_implementation", "chunk_size_feed_forward", "tf_legacy_loss", "output_past",
    # training only
    "initializer_range", "initializer_factor", "attention_dropout", "hidden_dropout", "classifier_dropout",
    # special tokens (bos/eos are read on their own)
    "pad_token_id", "sep_token_id", "unk_token_id", "cls_token_id", "mask_token_id", "decoder_start_token_id",
    "forced_bos_token_id", "forced_eos_token_id",
    # generation defaults of transformers 4 configs
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty",
    "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    # composite-model settings a single model does not use (BERT and GPT-2 read theirs)
    "is_encoder_decoder", "is_decoder", "add_cross_attention", "cross_attention_hidden_size", "tie_encoder_decoder",
})

REQUIRED = object()
_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "floats": "a list of numbers"}


class Fields:
    """The fields of one JSON object of a Hugging Face config, read by typed getters that
    remember what was read. `where` names the object in errors ("config.json"), `family`
    the import reading it; `inert` the fields that may go unread; `defaults` the values of
    lacking fields; `aliases` maps other names transformers accepts to the one read."""

    def __init__(self, data: dict, where: str, family: str, inert=frozenset(), defaults=None, aliases=None):
        if not isinstance(data, dict):
            raise HFConfigError(f"{where} must be a JSON object of fields, not {json_kind(data)}")
        self.where, self.family, self.inert, self.defaults = where, family, inert, defaults or {}
        self.data = dict(data)
        for alias, name in (aliases or {}).items():
            if alias in self.data:
                value = self.data.pop(alias)
                if self.data.get(name, value) != value:
                    raise HFConfigError(f"{where}: {name}={_json(self.data[name])} and its other name {alias}={_json(value)} differ")
                self.data[name] = value
        self.read: set[str] = set()
        self.sections: dict[str, Fields] = {}

    def value(self, name: str) -> Any:
        """The raw value (None when null, or lacking without a default), marked as read."""
        self.read.add(name)
        return self.data[name] if name in self.data else self.defaults.get(name)

    def has(self, name: str) -> bool:
        return self.value(name) is not None

    # Each getter returns `fallback` for a null or lacking field (and refuses one when REQUIRED).

    def int(self, name: str, fallback: Any = REQUIRED) -> int:
        return self._typed(name, fallback, "int", lambda v: isinstance(v, int) and not isinstance(v, bool))

    def float(self, name: str, fallback: Any = REQUIRED) -> float:
        number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        value = self._typed(name, fallback, "float", number)
        return None if value is None else float(value)

    def bool(self, name: str, fallback: Any = REQUIRED) -> bool:
        return self._typed(name, fallback, "bool", lambda v: isinstance(v, bool))

    def str(self, name: str, fallback: Any = REQUIRED) -> str:
        return self._typed(name, fallback, "str", lambda v: isinstance(v, str))

    def strs(self, name: str) -> list[str] | None:
        """A list of strings (None when absent)."""
        value = self.value(name)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise HFConfigError(f"{self.where}: {name} must be a list of strings, not {_json(value)}")
        return value

    def floats(self, name: str, fallback: Any = REQUIRED) -> tuple[float, ...]:
        """A list of finite numbers (LongRoPE's factors)."""
        number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        value = self._typed(name, fallback, "floats", lambda v: isinstance(v, list) and all(map(number, v)))
        return value if value is fallback else tuple(float(v) for v in value)

    def ids(self, name: str) -> tuple[int, ...]:
        """Token ids given as one integer or a list of them (none when absent)."""
        value = self.value(name)
        values = [] if value is None else value if isinstance(value, list) else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise HFConfigError(f"{self.where}: {name} must be a token id or a list of them, not {_json(value)}")
        return tuple(dict.fromkeys(values))

    def section(self, name: str) -> Fields | None:
        """A nested object (rope_parameters) as Fields of its own, refused with this one."""
        value = self.value(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise HFConfigError(f"{self.where}: {name} must be an object of fields, not {_json(value)}")
        if name not in self.sections:
            self.sections[name] = Fields(value, f"{self.where} {name}", self.family)
        return self.sections[name]

    def expect(self, name: str, supported: Any, why: str = "") -> None:
        """Refuses `name` unless null, lacking or `supported` (the one value zoo implements)."""
        value = self.value(name)
        same_kind = isinstance(value, bool) == isinstance(supported, bool)
        if value is not None and not (same_kind and value == supported):
            raise HFConfigError(
                f"{self.where}: {name}={_json(value)} is not supported by zoo's {self.family} import "
                f"(it reads {_json(supported)} only{': ' + why if why else ''})"
            )

    def refuse_unread(self) -> None:
        """Raises for the fields no reader interpreted that hold a value and are not INERT."""
        for section in self.sections.values():
            section.refuse_unread()
        unknown = sorted(k for k, v in self.data.items() if k not in self.read and k not in self.inert and v is not None)
        if unknown:
            shown = ", ".join(f"{k}={_json(self.data[k])}" for k in unknown)
            raise HFConfigError(
                f"{self.where}: zoo's {self.family} import does not know {shown}; fields it does not interpret "
                "may change the model, so it refuses them (remove them if transformers ignores them too)"
            )

    def _typed(self, name: str, fallback: Any, kind: str, valid) -> Any:
        value = self.value(name)
        if value is None:
            if fallback is REQUIRED:
                raise HFConfigError(f"{self.where} has no {name} ({_KINDS[kind]}), which zoo's {self.family} import needs")
            return fallback
        if not valid(value):
            raise HFConfigError(f"{self.where}: {name} must be {_KINDS[kind]}, not {_json(value)}")
        return value


def _json(value: Any) -> str:
    """A value as JSON writes it (true, null, "text"), shortened."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def json_kind(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "true or false", type(None): "null"}.get(type(value), "a number")
