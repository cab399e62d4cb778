"""Orbax checkpoints of the train state and the data position.

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames it
on success), so a run killed during a save keeps its previous checkpoint. The last
`keep` checkpoints are kept.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils


class Checkpoints:
    """The checkpoints of one run, under `directory`, one subdirectory per step."""

    def __init__(self, directory: str | Path, *, keep: int = 3):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True, create=True)
        self.directory = Path(directory).resolve()
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        """The steps of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data: grain.DatasetIterator) -> None:
        """Starts saving `state` and the data iterator's position; returns before it finishes."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data))
        self._manager.save(step, args=args, force=True)

    def restore(self, step: int, abstract_state: Any, data: grain.DatasetIterator) -> Any:
        """The state saved at `step`, laid out like `abstract_state`; `data` is moved to its saved position."""
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=grain.checkpoint.CheckpointRestore(data)
        )
        return self._manager.restore(step, args=args).state

    def set_aside(self, step: int) -> Path:
        """Moves an unreadable checkpoint out of the way (kept, not deleted) so its step can be saved
        again; every process calls this, process 0 moves it."""
        target = self.directory / f"unreadable-{step}-{int(time.time())}"
        if jax.process_index() == 0:
            (self.directory / str(step)).rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"zoo: set aside checkpoint {step}")
        self._manager.reload()
        return target

    def read_state(self, step: int) -> dict:
        """The state saved at `step` as nested dicts of arrays, without knowing its structure."""
        return self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state

    def close(self) -> None:
        """Waits for pending saves, then releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
