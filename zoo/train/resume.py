"""Where a run starts: the newest checkpoint that reads back whole, or step 0.

Checkpoints are tried newest first. One that is damaged (its checksums disagree, or it
has none and cannot be read) is set aside (renamed, never deleted) and the one before it
tried. One that is whole but does not fit this run (other shapes, a layout that cannot be
read here) stops the run with everything left in place: resuming from an older one or
from scratch would silently throw away progress.
"""

from __future__ import annotations

from typing import Any, Callable

from zoo import rundir
from zoo.console import first_line
from zoo.runs import Mismatch, quiet_checkpoint_library
from zoo.train.checkpoint import Checkpoints
from zoo.train.workdir import TrainingError


def restore_latest(checkpoints: Checkpoints, strategy, data, say: Callable[[str], None]) -> tuple[Any, int] | None:
    """(state, step) from the newest usable checkpoint, or None when there is none left."""
    for note in checkpoints.set_aside_strays():
        say(note)
    with quiet_checkpoint_library():
        return _restore_latest(checkpoints, strategy, data, say)


def _restore_latest(checkpoints: Checkpoints, strategy, data, say: Callable[[str], None]) -> tuple[Any, int] | None:
    target = strategy.restore_target()
    set_aside = 0
    for step in reversed(checkpoints.all_steps()):
        damage, verified = rundir.judge(checkpoints.step_dir(step))
        if damage is None:
            try:
                checkpoints.check_shapes(step, target)
                return strategy.from_saved(checkpoints.restore(step, target, data)), step
            except Mismatch as error:
                raise TrainingError(
                    f"checkpoint {step} in {checkpoints.directory} does not fit this run: {error}. It was written with other "
                    "settings (model, optimizer) or by a zoo whose parameter names differ; nothing was changed. Rerun with "
                    "those settings, use another --workdir, or --fresh to set this run aside"
                ) from None
            except Exception as error:  # orbax reports unreadable files with many error types
                if verified:
                    raise TrainingError(
                        f"checkpoint {step} in {checkpoints.directory} is intact (its checksums match) but cannot be read "
                        f"here: {type(error).__name__}: {first_line(error)}. Nothing was changed"
                    ) from None
                damage = f"it cannot be read ({type(error).__name__}: {first_line(error)})"
        kept = checkpoints.set_aside(step)
        set_aside += 1
        say(f"checkpoint {step} is damaged: {damage}; moved it to {kept} and trying the one before")
    if set_aside:
        say(f"no readable checkpoint is left ({set_aside} set aside): STARTING OVER FROM STEP 0, as a fresh run")
    return None

