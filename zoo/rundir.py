"""The run-directory format: what train.py and `python -m zoo.hf import` write, and what
zoo.runs.load (sample.py, train.init_from) and `python -m zoo.hf export` read.

    config.toml       the resolved config
    tokenizer.model   sentencepiece (absent for runs on pre-tokenised data)
    tokenizer.json    a Hugging Face tokenizer (an import's), read by the tokenizers library;
                      tokenizer_config.json beside it, kept as imported: its bos/eos tokens
                      are read, its chat template is kept for later. A run with both
                      tokenizer.json and tokenizer.model (an import of a model shipping both)
                      samples with tokenizer.json, as transformers' AutoTokenizer does
    source.json       an import's origin, {"hf_model_type": "mistral"}: the Hugging Face family
                      export writes (absent for runs trained here: export searches for one)
    checkpoints/N/    orbax checkpoints by step; `state` holds {params, opt_state, step}
                      (an import's: {params}), `data_position` the loader's state; complete
                      once orbax has written COMPLETE into it, verifiable once checksums.json
                      (zoo.checksums) lies beside
    metrics.jsonl, loss.png
    tensorboard/      TensorBoard event files (with tensorboardX installed)
    wandb/            Weights & Biases files and run.json, the wandb run's id (train.py --wandb)

config.toml, the tokenizer files and source.json are written atomically (a crash leaves the old file or the
new one). Nothing here needs jax or orbax.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from zoo import checksums
from zoo import config as zoo_config
from zoo.tokenizer import HFTokenizer, Tokenizer

CONFIG, TOKENIZER, CHECKPOINTS, METRICS, LOSS_CURVE = "config.toml", "tokenizer.model", "checkpoints", "metrics.jsonl", "loss.png"
SOURCE = "source.json"
TENSORBOARD = "tensorboard"  # TensorBoard event files (zoo.train.tensorboard)
WANDB = "wandb"  # Weights & Biases files and the wandb run's id (zoo.train.wandb_run)
TOKENIZER_JSON, TOKENIZER_CONFIG = "tokenizer.json", "tokenizer_config.json"
CHAT_TEMPLATE = "chat_template.jinja"  # where transformers 5 saves a chat template (else in TOKENIZER_CONFIG)
TOKENIZER_FILES = (TOKENIZER, TOKENIZER_JSON, TOKENIZER_CONFIG, CHAT_TEMPLATE)  # named as in a Hugging Face directory
COMPLETE = "_CHECKPOINT_METADATA"  # the file orbax writes into a checkpoint's directory last
GLOB_CHARACTERS = "*?[]\\"  # the checkpoint library matches paths as glob patterns, which these would change


class RunError(ValueError):
    """A run directory that cannot be loaded."""


def check_path(directory: str | Path) -> Path:
    """The absolute path of a run directory, refusing one the checkpoint library would misread."""
    path = Path(directory).absolute()
    bad = sorted({c for c in str(path) if c in GLOB_CHARACTERS})
    if bad:
        raise RunError(
            f"{str(path)!r} holds {' '.join(repr(c) for c in bad)}, which the checkpoint library reads as glob "
            f"patterns; use a path without any of {' '.join(GLOB_CHARACTERS)}"
        )
    return path


def checkpoints_dir(directory: Path) -> Path:
    return directory / CHECKPOINTS


def step_dir(directory: Path, step: int) -> Path:
    return directory / CHECKPOINTS / str(step)


def is_complete(checkpoint: Path) -> bool:
    """Whether the checkpoint directory `checkpoint` (checkpoints/N) was finished by orbax."""
    return (checkpoint / COMPLETE).is_file()


def checkpoint_steps(directory: Path) -> list[int]:
    """The steps of the checkpoint directories of a run directory (complete or not), newest first."""
    if not checkpoints_dir(directory).is_dir():
        return []
    return sorted((int(p.name) for p in checkpoints_dir(directory).iterdir() if p.name.isdigit() and p.is_dir()), reverse=True)


def write_config(directory: Path, config: zoo_config.Config) -> None:
    write_atomically(directory / CONFIG, zoo_config.to_toml(config).encode())


def write_tokenizer(directory: Path, tokenizer: Tokenizer | HFTokenizer) -> None:
    """tokenizer.model for sentencepiece; tokenizer.json (and tokenizer_config.json when it has one) for HFTokenizer."""
    if isinstance(tokenizer, HFTokenizer):
        if tokenizer.tokenizer_config is not None:
            write_atomically(directory / TOKENIZER_CONFIG, tokenizer.tokenizer_config)
        write_atomically(directory / TOKENIZER_JSON, tokenizer.tokenizer_json)
    else:
        write_atomically(directory / TOKENIZER, tokenizer.model_proto)


def judge(checkpoint: Path) -> tuple[str | None, bool]:
    """(what is wrong with a checkpoint directory that can be told without reading it, or None;
    whether its checksums vouch for it). A checkpoint with no manifest (an older zoo's, or one
    cut off right after its save) is (None, False): only reading it can tell."""
    if not is_complete(checkpoint):
        return f"it is not a complete checkpoint (no {COMPLETE})", False
    try:
        damage = checksums.damage(checkpoint)
    except FileNotFoundError:
        return None, False
    return damage, damage is None


def read_config(directory: Path) -> zoo_config.Config:
    if not (directory / CONFIG).is_file():
        raise RunError(f"{directory} is not a run directory: it has no {CONFIG}")
    try:
        return zoo_config.load(directory / CONFIG)
    except zoo_config.ConfigError as error:
        raise RunError(f"{directory / CONFIG} is damaged or not a zoo config: {error}") from None


def tokenizer_path(directory: Path) -> Path | None:
    """The file read_tokenizer reads: tokenizer.json, else tokenizer.model; None when the run has neither."""
    return next((directory / name for name in (TOKENIZER_JSON, TOKENIZER) if (directory / name).is_file()), None)


def read_tokenizer(directory: Path) -> Tokenizer | HFTokenizer | None:
    """The run's tokenizer (tokenizer.json's where it has one, else tokenizer.model's), None when
    it has none; RunError, one line naming the file, when it is damaged."""
    path = tokenizer_path(directory)
    if path is None:
        return None
    try:
        if path.name == TOKENIZER:
            return Tokenizer.load(path)
        config = directory / TOKENIZER_CONFIG
        return HFTokenizer.load(path, config if config.is_file() else None)
    except (ValueError, OSError) as error:
        raise RunError(str(error)) from None


def write_source(directory: Path, hf_model_type: str) -> None:
    write_atomically(directory / SOURCE, json.dumps({"hf_model_type": hf_model_type}).encode())


def read_source(directory: Path) -> str | None:
    """The Hugging Face model_type the run was imported from; None for a run trained here."""
    path = directory / SOURCE
    if not path.exists():
        return None
    try:
        model_type = json.loads(path.read_bytes()).get("hf_model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    if not isinstance(model_type, str):
        raise RunError(f'{path} is damaged: it should hold {{"hf_model_type": NAME}}; fix it, or delete it to let export choose a family')
    return model_type


def write_atomically(path: Path, data: bytes) -> None:
    """Writes `path` so that a crash leaves the old file or the new one, never a part."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
