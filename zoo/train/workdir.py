"""A run's work directory: its resolved config, tokenizer, checkpoints and metrics.

Nothing here changes the directory until the new run is known to be able to start:
`check_resumable` and `tokenizer` only read; `prepare` then moves an earlier run aside
(with --fresh) and writes the new config and tokenizer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from zoo import rundir
from zoo.config import Config
from zoo.rundir import CHECKPOINTS, CONFIG, LOSS_CURVE, METRICS, SOURCE, TENSORBOARD, TOKENIZER_FILES, WANDB
from zoo.tokenizer import HFTokenizer, TextTokenizer, Tokenizer
from zoo.train.phase import Phase

RUN_FILES = (CONFIG, *TOKENIZER_FILES, SOURCE, CHECKPOINTS, METRICS, LOSS_CURVE, TENSORBOARD, WANDB)
PREVIOUS = "previous"  # earlier runs that --fresh set aside: PREVIOUS/<time>/


class TrainingError(RuntimeError):
    """A run that cannot start or go on as asked: its work directory, data or settings do not fit.
    `exit_code` is what train.py exits with: 2 for such input."""

    exit_code = 2


class Diverged(TrainingError):
    """The loss or the parameters stopped being finite."""

    exit_code = 1


def check_resumable(workdir: Path, config: Config, *, fresh: bool) -> None:
    """Refuses to resume checkpoints of a different model (or whose config cannot be read)."""
    saved = workdir / CONFIG
    if fresh or not (workdir / CHECKPOINTS).exists() or not saved.exists():
        return
    try:
        saved_model = rundir.read_config(workdir).model
    except rundir.RunError as error:
        raise TrainingError(f"{error}; fix it, or use --fresh to set this run aside") from None
    if saved_model != config.model:
        raise TrainingError(
            f"{workdir} holds checkpoints of a different model (see {saved}); "
            "use another --workdir, or --fresh to set them aside and start over"
        )


def tokenizer(
    workdir: Path, vocab_size: int, *, given: str | None, documents: Sequence[str] | None, fresh: bool, say=print
) -> TextTokenizer | None:
    """The run's tokenizer: the work directory's (unless `fresh`), else `given` (data.tokenizer: a
    sentencepiece .model or a Hugging Face tokenizer.json),
    else one trained on `documents`, else None (pre-tokenised data needs none).

    Training is deterministic, so every process of a multi-host run gets the same one; `say`
    reports its progress.
    """
    path = rundir.tokenizer_path(workdir)
    if path is not None and not fresh:
        result = _load(path, f"the work directory's {path.name}", "--fresh trains a new one (the old run is set aside)")
    elif given is not None:
        advice = "give a sentencepiece .model file or a Hugging Face tokenizer.json, or unset it to train one"
        result = _load(Path(given), "data.tokenizer", advice)
        path = Path(given)
    elif documents is None:
        return None
    else:
        training = Phase(say, f"training a {vocab_size}-piece tokenizer on {len(documents):,} documents")
        try:
            trained = Tokenizer.train(
                documents, vocab_size, progress=lambda done, total: training.progress(done, total, "merges"), setting="model.vocab_size"
            )
        except ValueError as error:
            raise TrainingError(str(error)) from None
        training.done()
        return trained
    if result.vocab_size > vocab_size:
        raise TrainingError(
            f"the tokenizer ({path}) has {result.vocab_size} tokens but "
            f"model.vocab_size is {vocab_size}; raise model.vocab_size or use a smaller tokenizer"
        )
    return result


def _load(path: Path, what: str, advice: str) -> TextTokenizer:
    """A tokenizer.json (with the tokenizer_config.json beside it, if any) or a sentencepiece model."""
    if not path.is_file():
        raise TrainingError(f"{what}: no file {str(path)!r}; {advice}")
    if path.suffix == ".json":
        config = path.with_name(rundir.TOKENIZER_CONFIG)
        try:
            return HFTokenizer.load(path, config if config.is_file() else None)
        except ValueError as error:
            raise TrainingError(f"{what}: {error}; {advice}") from None
    try:
        return Tokenizer.load(path)
    except ValueError:
        raise TrainingError(f"{what}: {str(path)!r} is not a sentencepiece model; {advice}") from None


def previous_run(workdir: Path) -> list[str]:
    """The files of an earlier run in `workdir`, which --fresh would set aside."""
    return [name for name in RUN_FILES if (workdir / name).exists()]


def prepare(workdir: Path, config: Config, tokenizer: TextTokenizer | None, *, fresh: bool) -> Path | None:
    """Creates the work directory and writes the config and the tokenizer (when it has none).

    `fresh` first moves an earlier run's files into PREVIOUS/<time>/ (nothing is deleted)
    and returns where they went. Call it from one process only.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    aside = None
    if fresh and previous_run(workdir):
        aside = workdir / PREVIOUS / time.strftime("%Y%m%d-%H%M%S")
        while aside.exists():
            aside = aside.with_name(aside.name + "+")
        aside.mkdir(parents=True)
        for name in previous_run(workdir):
            (workdir / name).rename(aside / name)
    rundir.write_config(workdir, config)
    if tokenizer is not None and rundir.tokenizer_path(workdir) is None:
        rundir.write_tokenizer(workdir, tokenizer)
    return aside
