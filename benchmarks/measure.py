"""What every benchmark measures, one implementation each: wall time, peak memory, the machine; and
the fresh processes measurements run in (so that a peak, a library's threads or kernels are their own).

A function run in a child by :func:`in_child` goes through this module's command line:
``python -m benchmarks.measure MODULE:FUNCTION KWARGS_JSON RESULT_JSON``.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import importlib
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import registry
from common.io import read_json, write_json_atomic
from common.machine import machine_info as study_machine
from experiments.units import available_cores

REPO_ROOT = Path(__file__).resolve().parents[1]


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and its wall seconds."""
    t0 = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - t0


def call_seconds(fn: Callable[[], Any], repeats: int) -> list[float]:
    """The wall seconds of each of ``repeats`` calls of ``fn``."""
    return [timed(fn)[1] for _ in range(repeats)]


def peak_mb(children: bool = False) -> float:
    """Peak resident memory so far in MB: this process's, or its largest finished child's (Linux ru_maxrss: KiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF).ru_maxrss / 1024


def memory() -> dict[str, Any]:
    """Peak resident memory of this process and of its largest finished child."""
    return {
        "self_max_rss_mb": peak_mb(),
        "children_max_rss_mb": peak_mb(children=True),
        "note": "ru_maxrss: this process, and the largest single child process finished so far",
    }


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info() -> dict[str, Any]:
    """The machine: :func:`common.machine.machine_info`'s description (CPU, vector level, thread variables)
    with the benchmark's additions: libraries' versions, memory, load, and PyTorch's default threads (asked
    in a child, so this process stays free of PyTorch)."""
    info = dataclasses.asdict(study_machine(deterministic=False))
    info.update(
        platform=platform.platform(),
        machine=platform.machine(),
        python=platform.python_version(),
        cpus_available=available_cores(),
        load_average_at_start=load_average(),
        versions=registry.library_versions(),
        memory_total_gb=round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1024**3, 1),
    )
    probe = "import torch; print(torch.get_num_threads(), torch.get_num_interop_threads())"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if done.returncode == 0:
        info["torch_num_threads"], info["torch_num_interop_threads"] = map(int, done.stdout.split())
    return info


def child_env(extra: dict[str, str] | None = None, root: Path = REPO_ROOT) -> dict[str, str]:
    """This environment, ``extra`` on top, with ``root`` first on PYTHONPATH."""
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **(extra or {}), "PYTHONPATH": path}


def run_child(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    """Run a child process in the repository root, passing its stderr through; raise with its last lines on failure."""
    tail: collections.deque[str] = collections.deque(maxlen=15)
    kwargs: dict[str, Any] = {"env": child_env(env), "cwd": REPO_ROOT, "stderr": subprocess.PIPE, "text": True}
    with subprocess.Popen(cmd, errors="replace", **kwargs) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            tail.append(line.rstrip())
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed with exit status {proc.returncode}: " + " | ".join(tail))


def in_child(name: str, what: str, result: Path | None = None, env: dict[str, str] | None = None, **kwargs) -> Any:
    """The function ``name`` (``"module:function"``) called with ``kwargs`` (JSON) in a fresh Python process
    with ``env``'s variables; its result, kept in ``result`` when given. RuntimeError when the child fails."""
    with tempfile.TemporaryDirectory(prefix="benchmark-") as tmp:
        path = Path(result or Path(tmp) / "result.json")
        path.unlink(missing_ok=True)
        args = [name, json.dumps(kwargs, default=str), str(path)]
        run_child([sys.executable, "-m", "benchmarks.measure", *args], what, env)
        return read_json(path)


def run_all(args: list[str], cache: Path, checkout: Path = REPO_ROOT, quiet: bool = False) -> float:
    """Wall seconds of ``experiments/run_all.py ARGS`` of ``checkout``, in a fresh process with its own
    decoded-image and feature cache (``STUDY_CACHE_DIR``)."""
    cmd = [sys.executable, str(checkout / "experiments" / "run_all.py"), *args]
    print(f"$ (cd {checkout} && STUDY_CACHE_DIR={cache} {' '.join(cmd)})", file=sys.stderr, flush=True)
    env = child_env({"STUDY_CACHE_DIR": str(cache)}, root=checkout)
    return timed(subprocess.run, cmd, cwd=checkout, env=env, check=True, stdout=subprocess.DEVNULL if quiet else None)[
        1
    ]


def function(name: str) -> Callable[..., Any]:
    """The function ``"module:name"`` names, its module imported."""
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _child(name: str, kwargs: str, result: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    write_json_atomic(result, function(name)(**json.loads(kwargs)))
    return 0


if __name__ == "__main__":
    sys.exit(_child(*sys.argv[1:]))
