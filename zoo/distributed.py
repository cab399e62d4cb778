"""Distributed start-up: how many processes a run has, and joining them before any other jax call."""

from __future__ import annotations

import os

import jax


def process_count(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> int:
    """How many processes the run has (1: a single-process run), checking the flags that say so.

    With `coordinator` ("host:port") all three must be given. Without it, clusters that
    jax detects itself (TPU pods, SLURM, Open MPI) count their processes.
    """
    if coordinator is not None:
        if num_processes is None or process_id is None:
            raise ValueError("a coordinator needs the number of processes and this process's id too")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"process id {process_id} is not in [0, {num_processes})")
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--coordinator {coordinator!r} is not HOST:PORT with a port in 1-65535, e.g. 10.0.0.1:1234")
        return num_processes
    if num_processes is not None or process_id is not None:
        raise ValueError("--num-processes and --process-id need --coordinator HOST:PORT (the address of process 0)")
    env = os.environ
    hosts = len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h])
    return max(hosts, int(env.get("SLURM_NTASKS", "1")), int(env.get("OMPI_COMM_WORLD_SIZE", "1")))


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_seconds: int = 100,
) -> None:
    """Joins a multi-process run (one process per host, see process_count) before any other jax
    call; a single process does nothing. A process silent for `heartbeat_seconds` counts as gone."""
    if process_count(coordinator, num_processes, process_id) == 1:
        return
    timeouts = dict(heartbeat_timeout_seconds=heartbeat_seconds)
    if coordinator is not None:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id, **timeouts)
    else:
        jax.distributed.initialize(**timeouts)
