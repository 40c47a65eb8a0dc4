"""The machine a model was trained on, as far as it moves the numbers.

The same seed gives the same figures on every machine only where the kernels are the same:
TensorFlow's oneDNN picks kernels by the CPU's vector instructions (AVX2, AVX-512, ...), and
their float rounding differs, so ResNet50's accuracy can differ between laptops in the last
few test images. ``metrics.json`` records this (``machine``) next to every model so two
reports can be compared knowingly; ``deterministic: true`` in the config turns oneDNN off
and TensorFlow's op determinism on, for figures that match across machines.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Environment variables that choose kernels or thread counts, recorded as the process saw them.
THREAD_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "TF_ENABLE_ONEDNN_OPTS",
    "TF_DETERMINISTIC_OPS",
)
# x86 vector instruction levels, highest first, as /proc/cpuinfo's flags name them.
X86_LEVELS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"))


@dataclass
class MachineInfo:
    """Where a model was trained: the CPU, its vector level, and the kernel and thread settings."""

    cpu: str  # the CPU's model name, e.g. "AMD EPYC 7763 64-Core Processor"
    vector_isa: str  # highest vector instruction level, e.g. "AVX-512", "AVX2", "NEON", "unknown"
    cpu_count: int  # logical CPUs the operating system reports
    platform: str  # operating system and architecture, e.g. "Linux-6.8-x86_64"
    deterministic: bool  # the config's ``deterministic`` setting (oneDNN off, op determinism on)
    onednn: bool | None  # whether TensorFlow ran oneDNN kernels (None: TensorFlow not used by this arm)
    threads: dict[str, int | None] = field(default_factory=dict)  # framework -> intra-op threads it used
    environment: dict[str, str] = field(default_factory=dict)  # THREAD_ENV variables that were set

    def summary(self) -> str:
        """One line for the report, e.g. "AMD EPYC 7763 (AVX2), 2 CPUs, oneDNN on"."""
        parts = [f"{self.cpu} ({self.vector_isa})", f"{self.cpu_count} CPUs"]
        if self.onednn is not None:
            parts.append(f"oneDNN {'on' if self.onednn else 'off'}")
        parts += [f"{name} {n} threads" for name, n in self.threads.items() if n]
        if self.deterministic:
            parts.append("deterministic kernels")
        return ", ".join(parts)


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; macOS: sysctl; else platform.processor())."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    if sys.platform == "darwin":
        import subprocess

        try:
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def vector_isa() -> str:
    """The highest vector instruction level the CPU offers."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "NEON"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags: set[str] = set()
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
        return next((name for flag, name in X86_LEVELS if flag in flags), "unknown")
    return "unknown"


def _onednn() -> bool | None:
    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.util import _pywrap_util_port  # private, but the only switch TF reports
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def _threads() -> dict[str, int | None]:
    threads: dict[str, int | None] = {}
    if "torch" in sys.modules:
        threads["torch"] = int(sys.modules["torch"].get_num_threads())
    if "tensorflow" in sys.modules:
        n = int(sys.modules["tensorflow"].config.threading.get_intra_op_parallelism_threads())
        threads["tensorflow"] = n or os.cpu_count()  # 0: TensorFlow's default, one per CPU
    return threads


def machine_info(deterministic: bool) -> MachineInfo:
    """This process's machine and the settings its frameworks run with (read after training)."""
    return MachineInfo(
        cpu=cpu_model(),
        vector_isa=vector_isa(),
        cpu_count=os.cpu_count() or 1,
        platform=f"{platform.system()}-{platform.release()}-{platform.machine()}",
        deterministic=deterministic,
        onednn=_onednn(),
        threads=_threads(),
        environment={k: os.environ[k] for k in THREAD_ENV if k in os.environ},
    )


def deterministic_environment() -> dict[str, str]:
    """The environment of an arm's process for figures that match across machines: oneDNN
    off (Eigen's kernels, the same on every x86 CPU) and TensorFlow's op determinism on.
    Must be in place before TensorFlow is imported."""
    return {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_DETERMINISTIC_OPS": "1"}
