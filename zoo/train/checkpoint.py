"""Orbax checkpoints of the train state and the data position.

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames it
on success), so a run killed during a save keeps its previous checkpoint. The last
`keep` checkpoints are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grain
import orbax.checkpoint as ocp


class Checkpoints:
    """The checkpoints of one run, under `directory`, one subdirectory per step."""

    def __init__(self, directory: str | Path, *, keep: int = 3):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True, create=True)
        self._manager = ocp.CheckpointManager(Path(directory).resolve(), options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

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

    def close(self) -> None:
        """Waits for pending saves, then releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
