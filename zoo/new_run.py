"""Writing a run directory made from another: adapters merged in, adapters imported, weights quantized."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

from flax import nnx

from zoo import config as zoo_config
from zoo import rundir
from zoo.layers.quantized import to_storage
from zoo.rundir import RunError
from zoo.train.checkpoint import Checkpoints


def check_new_run_directory(out_dir: Path) -> None:
    """RunError unless `out_dir` can become a new run directory."""
    rundir.check_path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"{out_dir} exists and is not a directory; write into a new directory")
    if rundir.checkpoints_dir(out_dir).exists():
        raise RunError(f"{out_dir} already holds checkpoints; write into a new directory")


def write_run(out_dir: Path, config: zoo_config.Config, params: nnx.State, step: int, copy_from: Sequence[Path]) -> None:
    """A run directory of `params` at checkpoint `step`, with each tokenizer file and the Hugging Face
    family (source.json) of the first of `copy_from` that has it; config.toml last, so the
    directory is a run only once complete."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    try:
        for name in (*rundir.TOKENIZER_FILES, rundir.SOURCE):
            found = next((d / name for d in copy_from if (d / name).is_file()), None)
            if found is not None:
                shutil.copyfile(found, out_dir / name)
                copied.append(out_dir / name)
        checkpoints = Checkpoints(rundir.checkpoints_dir(out_dir))
        checkpoints.save(step, {"params": to_storage(params)})
        checkpoints.close()
        rundir.write_config(out_dir, config)
    except BaseException:  # leave nothing half-written behind: the directory as it was
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        else:
            shutil.rmtree(rundir.checkpoints_dir(out_dir), ignore_errors=True)
            for path in copied:
                path.unlink(missing_ok=True)
        raise
