"""Orbax checkpoints of the train state and the data position, each file checksummed.

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames it
on success), so a run killed during a save keeps its previous checkpoint. Once a save is
complete, a manifest of its files' checksums is written beside it (checksums.py), so a
restore can tell silent damage from a checkpoint that is whole but does not fit. The data
position is the loader's state as JSON, the same for every process, so a checkpoint
restores onto any number of processes and devices. The last `keep` checkpoints are kept.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from zoo import checksums, rundir, runs


class Checkpoints:
    """The checkpoints of one run, under `directory`, one subdirectory per step."""

    def __init__(self, directory: str | Path, *, keep: int = 3):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True, create=True)
        self.directory = Path(directory).resolve()
        handlers = {"state": ocp.StandardCheckpointHandler(), "data_position": ocp.JsonCheckpointHandler()}
        with runs.quiet_checkpoint_library():  # it reads what is there, strays included: zoo reports those
            self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
        self._unsealed: int | None = None  # the step saved last, whose manifest is not yet written
        self._sealing: list[threading.Thread] = []

    def all_steps(self) -> list[int]:
        """The steps of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def save(self, step: int, state: Any, data: grain.DatasetIterator | None = None) -> None:
        """Starts saving `state` and the data iterator's position (none without one: an import's
        params); returns before it finishes."""
        self._seal()
        items = {"state": ocp.args.StandardSave(state)}
        if data is not None:
            items["data_position"] = ocp.args.JsonSave(json.loads(json.dumps(data.get_state())))  # plain JSON types
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)
        self._unsealed = step

    def _seal(self) -> None:
        """Waits for the pending save, then (process 0, in the background) writes its manifest."""
        if self._unsealed is None:
            return
        self._manager.wait_until_finished()
        step, self._unsealed = self._unsealed, None
        if jax.process_index() == 0:
            thread = threading.Thread(target=self._write_manifest, args=(step,), name=f"zoo-checksums-{step}")
            thread.start()
            self._sealing.append(thread)

    def _write_manifest(self, step: int) -> None:
        try:
            checksums.write_manifest(self.step_dir(step))
        except OSError:  # the step was deleted meanwhile (keep_checkpoints) or the disk refused: it stays unverifiable
            pass

    def check_shapes(self, step: int, abstract_state: Any) -> None:
        """Raises Mismatch when the saved state's entries or shapes differ from `abstract_state`'s."""
        runs.check_fits(self._manager.item_metadata(step)["state"], abstract_state)

    def restore(self, step: int, abstract_state: Any, data: grain.DatasetIterator) -> Any:
        """The state saved at `step`, laid out like `abstract_state`; then `data` is moved to its saved position."""
        restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        data.set_state(self._data_position(step))
        return restored.state

    def _data_position(self, step: int) -> dict:
        if (self.step_dir(step) / "data_position").exists():
            return self._manager.restore(step, args=ocp.args.Composite(data_position=ocp.args.JsonRestore())).data_position
        legacy = sorted((self.step_dir(step) / "data").glob("process_*.json"))  # grain's own per-process files
        if not legacy:
            raise FileNotFoundError(f"{self.step_dir(step)} holds no data position")
        return json.loads(legacy[0].read_text())

    def set_aside_strays(self) -> list[str]:
        """Moves entries named like a checkpoint that are not one (a file, a directory orbax never
        finished) out of the way, so nothing mistakes them for a step or deletes them; says what
        moved where. Every process calls this, process 0 moves them."""
        strays = [p for p in sorted(self.directory.iterdir()) if p.name.isdigit() and not rundir.is_complete(p)]
        stamp = int(time.time())
        targets = [self.directory / f"stray-{path.name}-{stamp}" for path in strays]
        self._by_process_0(lambda: [path.rename(target) for path, target in zip(strays, targets)], "set aside strays")
        if strays:
            self._manager.reload()
        return [f"{path} is not a complete checkpoint; moved it to {target}" for path, target in zip(strays, targets)]

    def _by_process_0(self, change, what: str) -> None:
        """Runs `change` on process 0 once every process has looked at the directory as it was,
        and returns once it is done everywhere."""
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"zoo: before {what}")
        if jax.process_index() == 0:
            change()
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"zoo: after {what}")

    def set_aside(self, step: int) -> Path:
        """Moves an unreadable checkpoint out of the way (kept, not deleted) so its step can be saved
        again; every process calls this, process 0 moves it."""
        target = self.directory / f"unreadable-{step}-{int(time.time())}"
        self._by_process_0(lambda: self.step_dir(step).rename(target), f"set aside checkpoint {step}")
        self._manager.reload()
        return target

    def read_state(self, step: int) -> dict:
        """The state saved at `step` as nested dicts of arrays, without knowing its structure."""
        return self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state

    def close(self) -> None:
        """Waits for pending saves and their manifests, then releases the manager."""
        self._seal()
        for thread in self._sealing:
            thread.join()
        self._manager.wait_until_finished()
        self._manager.close()
