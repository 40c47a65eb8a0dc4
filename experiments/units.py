"""The study's units of work, run one after another or in parallel through Dask distributed.

A unit is one arm trained, explained and assessed with one training seed: the arm worker
(``python -m experiments.arm_worker``) in a fresh process, so TensorFlow and PyTorch never
share an interpreter. With ``jobs == 1`` and no scheduler (the default) the units run here,
one after another, their output echoed to this terminal. Otherwise each unit is a Dask task
that starts the same worker process: ``jobs`` local worker processes (a ``LocalCluster``),
or the workers of an existing cluster (``scheduler``: ``dask scheduler`` / ``dask worker``
by hand, or ``dask-jobqueue`` on Slurm), which must see the same output folder.

Every unit writes its output to ``<out>/logs/<unit>.log`` and what it ran with (threads,
host, exit status) to ``<out>/logs/<unit>.json``. A unit that fails does not stop the
others; :class:`UnitsFailed` then names each failed unit's arm, seed and log, and a rerun
runs only what is not yet current (the stage stamps), so it resumes the failed units.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.io import read_json, write_json_atomic
from experiments.faults import checkpoint

log = logging.getLogger("study")

REPO_ROOT = Path(__file__).resolve().parents[1]

# The variables that bound a process's intra-op threads: OpenMP (PyTorch's CPU pool, and
# most BLAS builds), MKL and OpenBLAS directly, and TensorFlow's two pools.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def available_cores() -> int:
    """Cores this process may run on (a Slurm job's or container's share, where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Execution:
    """How the units run: where, and with how many threads each."""

    jobs: int = 1  # local Dask worker processes; 1 (and no scheduler) = one after another, no Dask
    scheduler: str | None = None  # address of an existing Dask scheduler (tcp://host:8786); None = local
    threads: int | None = None  # intra-op threads per unit; None: library defaults, or cores // workers

    @property
    def sequential(self) -> bool:
        return self.scheduler is None and self.jobs == 1

    def problems(self) -> list[str]:
        problems = []
        if self.jobs < 1:
            problems.append(f"--jobs must be at least 1, got {self.jobs}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"--threads must be at least 1, got {self.threads}")
        if self.scheduler is not None and self.jobs != 1:
            problems.append("--jobs starts a local cluster; with --scheduler the cluster's workers run the units")
        return problems

    def describe(self) -> dict[str, Any]:
        """The setting as metrics.json records it (``execution``)."""
        if self.sequential:
            where = "sequential (no Dask)"
        else:
            where = self.scheduler or f"local Dask cluster of {self.jobs} worker processes"
        return {
            "jobs": self.jobs,
            "scheduler": where,
            "threads_per_unit": self.threads,
            "threads_rule": (
                f"{self.threads} per unit (set)"
                if self.threads is not None
                else "library defaults (every core)"
                if self.sequential
                else "cores of the worker's machine // Dask worker threads on it"
            ),
            "thread_variables": list(THREAD_VARIABLES),
        }


@dataclass(frozen=True)
class Unit:
    """One arm with one training seed."""

    arm: str  # the arm's key in common.registry.ARMS
    title: str  # the arm's title, for messages
    spec_json: str  # the arm's registry entry as JSON (an arm registered at run time runs in the worker too)
    seed: int | None  # training seed of a seed sweep; None: a single-seed study (flat layout)
    config_json: str = "{}"  # the study's resolved config (StudyConfig.to_dict()): the worker's only source
    # twins (arm keys) whose stages this unit's process runs after its own, in the same framework: one
    # start-up and import fewer ("Is it the framework?"); the runner asks this only where the twin's source ran first
    hosts: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.arm if self.seed is None else f"{self.arm}_seed-{self.seed}"

    @property
    def name(self) -> str:
        """In words, for messages: "the PyTorch CNN arm, seed 1"."""
        return f"the {self.title} arm" + ("" if self.seed is None else f", seed {self.seed}")


@dataclass
class UnitResult:
    """What one unit ran with and how it ended (``<out>/logs/<unit>.json``)."""

    unit: str  # Unit.label
    arm: str
    seed: int | None
    returncode: int | None  # None: the process never ran or its Dask task was lost
    log: str  # the unit's output, relative to the study folder
    threads: int | None  # intra-op threads the unit was given (None: library defaults)
    host: str
    seconds: float
    error: str | None = field(default=None)  # why the task failed outside the process, if it did


def log_path(out: Path, unit: Unit) -> Path:
    return out / "logs" / f"{unit.label}.log"


def record_path(out: Path, unit: Unit) -> Path:
    return out / "logs" / f"{unit.label}.json"


def thread_env(threads: int | None) -> dict[str, str]:
    """The environment that bounds a process's intra-op threads (nothing: library defaults)."""
    if threads is None:
        return {}
    return {name: str(threads) for name in THREAD_VARIABLES} | {"TF_NUM_INTEROP_THREADS": "1"}


def run_unit(
    out: str, unit: Unit, force: bool, threads: int | None, echo: bool = False, host_slots: dict | None = None
) -> UnitResult:
    """Run one unit's arm worker in a fresh process; here, or inside a Dask worker.

    Args:
        out: the study folder (as the machine running the unit sees it).
        threads: intra-op threads for the process; None = library defaults, or with
            ``host_slots`` (host -> Dask worker threads on it) this machine's cores shared among them.
        echo: also copy the worker's output to this process's stderr (the sequential path).
    """
    host = socket.gethostname()
    if threads is None and host_slots:
        threads = max(1, available_cores() // _slots_here(host_slots))
    study = Path(out)
    path = log_path(study, unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "experiments.arm_worker", "--out", out, "--arm", unit.arm, "--spec", unit.spec_json]
    cmd += ["--config-json", unit.config_json]
    if unit.seed is not None:
        cmd += ["--seed", str(unit.seed)]
    if force:
        cmd.append("--force")
    for twin in unit.hosts:
        cmd += ["--host", twin]
    # The worker imports this repository's packages; same working directory, so relative paths in the config hold.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    env.update(thread_env(threads))
    t0 = time.perf_counter()
    with open(path, "wb") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # Raw bytes as they come, so progress bars (carriage returns) reach the terminal as they were written.
        while chunk := proc.stdout.read1(65536):
            sink.write(chunk)
            sink.flush()
            if echo:
                _echo(chunk)
        returncode = proc.wait()
    seconds = time.perf_counter() - t0
    rel = str(path.relative_to(study))
    result = UnitResult(unit.label, unit.arm, unit.seed, returncode, rel, threads, host, seconds)
    write_json_atomic(record_path(study, unit), dataclasses.asdict(result))
    return result


def _echo(chunk: bytes) -> None:
    """Copy a worker's output to this process's stderr (a replaced stderr may have no byte buffer)."""
    sys.stderr.flush()
    if hasattr(sys.stderr, "buffer"):
        sys.stderr.buffer.write(chunk)
    else:
        sys.stderr.write(chunk.decode(errors="replace"))
    sys.stderr.flush()


def _slots_here(host_slots: dict[str, int]) -> int:
    """Dask worker threads on this machine: each runs one unit at a time."""
    from distributed import get_worker

    with contextlib.suppress(ValueError):
        host = get_worker().address.split("://")[-1].rsplit(":", 1)[0]
        return max(1, host_slots.get(host, 1))
    return 1


class UnitsFailed(RuntimeError):
    """Some units failed; the others finished. The message names each one's arm, seed and log."""

    def __init__(self, out: Path, failed: list[tuple[Unit, UnitResult]]):
        self.failed = failed

        def one(unit: Unit, result: UnitResult) -> str:
            code = result.returncode
            if code is None:
                how = f"failed ({result.error})"
            else:
                how = f"was killed by signal {-code}" if code < 0 else f"failed with exit status {code}"
            return f"{unit.name} {how}; its log: {out / result.log}"

        if len(failed) == 1:  # one line
            super().__init__(f"{one(*failed[0])}; the others finished and keep their stages, a rerun resumes it")
        else:
            lines = [f"{len(failed)} units failed; the others finished, and a rerun resumes the failed ones:"]
            super().__init__("\n".join([*lines, *(f"  {one(u, r)}" for u, r in failed)]))

    @property
    def user_mistake(self) -> bool:
        """Every failed worker stopped on a user's mistake (exit status 2): a message, not a bug."""
        return all(r.returncode == 2 for _, r in self.failed)


def run_units(out: Path, units: list[Unit], execution: Execution, force: bool = False) -> list[UnitResult]:
    """Run every unit (sequentially, or through Dask); return their results in the units' order.

    Raises:
        UnitsFailed: after every unit has ended, when one or more failed.
    """
    if not units:
        return []
    if execution.sequential:
        results = []
        for unit in units:
            log.info("starting %s in its own process", unit.name)
            checkpoint(f"before worker {unit.arm}")
            results.append(run_unit(str(out), unit, force, execution.threads, echo=True))
    else:
        results = _run_on_dask(out, units, execution, force)
    failed = [(u, r) for u, r in zip(units, results, strict=True) if r.returncode != 0]
    if failed:
        raise UnitsFailed(out, failed)
    return results


def _run_on_dask(out: Path, units: list[Unit], execution: Execution, force: bool) -> list[UnitResult]:
    from dask.distributed import Client, LocalCluster, as_completed

    # Dask's own INFO lines (scheduler and worker start-up, connections) would drown the study's.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        if execution.scheduler:
            client = stack.enter_context(Client(execution.scheduler))
            threads, host_slots = execution.threads, _host_slots(client)
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=execution.jobs,
                    threads_per_worker=1,  # one unit at a time per worker; the unit's process has its own threads
                    processes=True,
                    dashboard_address=":0",  # any free port: several studies may run at once
                    silence_logs=logging.WARNING,
                )
            )
            client = stack.enter_context(Client(cluster))
            threads, host_slots = execution.threads or max(1, available_cores() // execution.jobs), None
        log.info("running %d unit(s) on %s", len(units), client.scheduler_info()["address"])
        futures = {}
        for unit in units:
            log.info("submitting %s", unit.name)
            future = client.submit(run_unit, str(out), unit, force, threads, host_slots=host_slots, pure=False)
            futures[future] = unit
        results: dict[str, UnitResult] = {}
        for future in as_completed(futures):
            unit = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # the task itself failed (a lost worker): the unit did not end
                result = UnitResult(
                    unit.label,
                    unit.arm,
                    unit.seed,
                    None,
                    str(log_path(out, unit).relative_to(out)),
                    threads,
                    "",
                    0.0,
                    error=f"{type(exc).__name__}: {exc}",
                )
            state = "finished" if result.returncode == 0 else "FAILED"
            log.info("%s %s on %s in %.1f s (log: %s)", unit.name, state, result.host, result.seconds, result.log)
            results[unit.label] = result
    return [results[u.label] for u in units]


def _host_slots(client) -> dict[str, int]:
    """Host -> Dask worker threads on it (each runs one unit at a time)."""
    slots: dict[str, int] = {}
    for address, worker in client.scheduler_info()["workers"].items():
        host = address.split("://")[-1].rsplit(":", 1)[0]
        slots[host] = slots.get(host, 0) + int(worker.get("nthreads", 1))
    return slots


def unit_records(out: Path, units: list[Unit]) -> dict[str, dict]:
    """What each unit last ran with (``logs/<unit>.json``); units that never ran here are left out."""
    return {u.label: read_json(record_path(out, u)) for u in units if record_path(out, u).is_file()}
