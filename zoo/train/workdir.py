"""A run's work directory: its resolved config, tokenizer, checkpoints and metrics."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from zoo import config as zoo_config
from zoo.config import Config
from zoo.runs import CHECKPOINTS, CONFIG, LOSS_CURVE, METRICS, TOKENIZER
from zoo.tokenizer import Tokenizer


class TrainingError(RuntimeError):
    """A run that cannot go on as asked: its work directory, data or settings do not fit."""




def prepare(workdir: Path, config: Config, *, fresh: bool, write: bool) -> None:
    """Creates the work directory; refuses one whose checkpoints belong to a different model.

    `fresh` discards earlier checkpoints and metrics; only the writing process (`write`)
    changes files.
    """
    saved = workdir / CONFIG
    if not fresh and (workdir / CHECKPOINTS).exists() and saved.exists():
        if zoo_config.load(saved).model != config.model:
            raise TrainingError(
                f"{workdir} holds checkpoints of a different model (see {saved}); "
                "use another --workdir, or --fresh to discard them"
            )
    if write:
        workdir.mkdir(parents=True, exist_ok=True)
        if fresh:
            shutil.rmtree(workdir / CHECKPOINTS, ignore_errors=True)
            for name in (METRICS, LOSS_CURVE):
                (workdir / name).unlink(missing_ok=True)
        saved.write_text(zoo_config.to_toml(config))


def tokenizer(workdir: Path, vocab_size: int, *, given: str | None, documents: Sequence[str] | None) -> Tokenizer | None:
    """The run's tokenizer: the work directory's, else `given` (a path), else one trained on
    `documents`, else None (pre-tokenised data needs none).

    Training is deterministic, so every process of a multi-host run gets the same one.
    """
    path = workdir / TOKENIZER
    if path.exists():
        result = Tokenizer.load(path)
    elif given is not None:
        result = Tokenizer.load(given)
    elif documents is None:
        return None
    else:
        try:
            result = Tokenizer.train(documents, vocab_size)
        except ValueError as error:
            raise TrainingError(f"{error}; raise model.vocab_size") from None
    if result.vocab_size > vocab_size:
        raise TrainingError(
            f"the tokenizer ({path if path.exists() else given}) has {result.vocab_size} tokens but "
            f"model.vocab_size is {vocab_size}; raise model.vocab_size or use a smaller tokenizer"
        )
    return result
