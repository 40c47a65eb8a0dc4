"""Benchmark the study: stage times, explainer efficiency, the published way, accuracy over seeds.

Writes ``benchmark.json`` and ``benchmark.md`` (rendered from it with ``benchmarks/templates/``) into
``--out``. Parts (``--parts``; :mod:`benchmarks.study`): ``stages`` (the whole study, from an empty
cache unless ``--warm-cache``), ``efficiency`` (explainer rate / raw forward+backward rate, per arm in
its own process), ``published`` (the PyTorch arm the published notebook's way, with a same-results
check), ``seeds`` (accuracy over ``--seeds``, explainers off) and, only when asked for, ``scale``
(decoding speed and peak memory on synthetic folders of ``--scale-sizes`` images). The first seed
seeds the other parts. Each part is saved as soon as it finishes; parts not run this time are kept
from an earlier run of the same configuration. Results and method: ``benchmarks/BENCHMARKS.md``.

    python -m benchmarks.benchmark                      # the insects data at the published settings
    python -m benchmarks.benchmark --parts stages,efficiency --only pytorch
    python -m benchmarks.benchmark --parts scale --scale-sizes 1000,5000,20000
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import shlex
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any

from benchmarks import study
from benchmarks.measure import load_average, machine_info, now, timed
from common.config import StudyConfig, load_config
from common.errors import StudyError
from common.io import read_json, write_json_atomic, write_text_atomic
from experiments.flags import add_study_flags, config_overrides

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "templates"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "datasets" / "insects"
DEFAULT_CONFIG = REPO_ROOT / "experiments" / "configs" / "insects.yaml"
DEFAULT_OUT = REPO_ROOT / "reports" / "benchmark"
PARTS = tuple(study.RUNNERS)
DEFAULT_PARTS = ("stages", "efficiency", "published", "seeds")  # scale runs when asked for
BENCHMARK_VERSION = 1
OPTIONS = [  # flag, type, default, help: the benchmark's own settings
    ("--published-nsamples", int, 200, "GradientExplainer samples per image in the published way (shap's default)"),
    ("--raw-seconds", float, 10.0, "least seconds of timed raw forward+backward passes per batch size"),
    ("--explain-repeats", int, 2, "explainer calls per method in the efficiency part: the first cold, the best warm"),
    ("--scale-sizes", str, "1000,5000,20000", "comma-separated image counts of the scale part's synthetic folders"),
    ("--scale-steps", int, 2, "training and test batches each arm computes in the scale part"),
    ("--scale-dir", str, None, "where the scale part builds its temporary folders (None: the system's temp folder)"),
]

log = logging.getLogger("benchmark")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="data folder, or 'digits' (default: %(default)s)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML config (default: %(default)s)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the first also seeds the other parts")
    p.add_argument("--parts", default=",".join(DEFAULT_PARTS), help=f"comma-separated, of {','.join(PARTS)}")
    add_study_flags(p)  # the study's own flags: --image-size, --epochs-<arm>, --n-explain, ..., --only
    for flag, kind, default, text in OPTIONS:
        p.add_argument(flag, type=kind, default=default, help=f"{text} (default: %(default)s)")
    p.add_argument("--warm-cache", action="store_true", help="time the stages with the usual cache, not an empty one")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    args = p.parse_args(argv)
    try:
        args.scale_sizes = sorted({int(n) for n in args.scale_sizes.split(",") if n.strip()})
    except ValueError:
        p.error(f"--scale-sizes: comma-separated whole numbers, got {args.scale_sizes!r}")
    if not args.scale_sizes or min(args.scale_sizes) < 1:
        p.error("--scale-sizes: at least one positive image count")
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = [s for s in parts if s not in PARTS]
    if unknown or not parts:
        p.error(f"--parts: unknown part(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(PARTS)}")
    args.parts = [s for s in PARTS if s in parts]  # always in the order above
    return args


def benchmark_config(args: argparse.Namespace, out: Path, cold_cache: Path | None) -> StudyConfig:
    """The study's config from ``--config`` and the flags (output ``OUT/study``, the first seed), with the
    cache the stages are timed with: the empty ``cold_cache`` when the stages part runs, else the cache
    the study in ``OUT/study`` was made with. Raises ConfigError: a bad config file or value."""
    overrides = {
        "data.root": None if args.data == "digits" else str(Path(args.data).expanduser().resolve()),
        "out": str(out / "study"),
        "seed": args.seeds[0],
        **config_overrides(args),
    }
    cfg = load_config(args.config, overrides)
    if args.data == "digits" and cfg.data.root is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=None))
    if cold_cache is not None and "stages" in args.parts:
        return study.with_cache(cfg, str(cold_cache))
    if (out / "study" / "config.yaml").is_file():  # keep the cache the study was made with
        made = load_config(out / "study" / "config.yaml")
        if made.data.cache_dir == str(cold_cache):
            return study.with_cache(cfg, made.data.cache_dir)
    return cfg


class BenchmarkFile:
    """``benchmark.json`` and ``benchmark.md``, both rewritten atomically after every change."""

    def __init__(self, out: Path, header: dict[str, Any], requested: list[str]):
        self.out = out
        self.path = out / "benchmark.json"
        previous = read_json(self.path) if self.path.is_file() else {}
        kept = {}
        if previous.get("config") == header["config"] and previous.get("benchmark_version") == BENCHMARK_VERSION:
            kept = {k: v for k, v in previous.get("parts", {}).items() if k not in requested}
        elif previous:
            log.info("benchmark.json in %s was made with another configuration: starting afresh", out)
        self.doc = {**header, "parts": {**kept, **{p: {"status": "pending"} for p in requested}}}
        self.save()

    def set_part(self, part: str, value: dict[str, Any]) -> None:
        self.doc["parts"][part] = value
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.doc)
        write_text_atomic(self.out / "benchmark.md", render_markdown(self.doc))


# ----------------------------------------------------------------------------- Markdown


def _seconds(x: float | None) -> str:
    """Seconds: two decimals below 10 s, one above."""
    return "—" if x is None else f"{x:.2f}" if x < 10 else f"{x:.1f}"


@functools.cache
def _environment():
    """The Markdown environment, built once per process: Jinja2 then compiles each template
    once, not at every save of benchmark.md (0.1 s a template)."""
    from common.report.render import markdown_environment, verbatim

    env = markdown_environment(TEMPLATES)
    env.filters["secs"] = lambda x: verbatim(_seconds(x))
    env.filters["pct"] = lambda x: verbatim("—" if x is None else f"{100 * x:.1f}%")
    env.filters["mark"] = lambda x, goal: verbatim("—" if x is None else f"{x:.2f} {'✓' if x >= goal else '✗'}")
    env.filters["info_value"] = lambda x: verbatim(_seconds(x)) if isinstance(x, float) else x
    return env


def _rendered_part(name: str, p: dict[str, Any], command: str | None, macros: Any) -> dict[str, Any]:
    """One part for ``benchmark.md.j2``: its body from its macro, or why it has none."""
    from common.report.render import verbatim

    measured_by = p.get("status") == "done" and "measured_at" in p and p.get("command") != command
    part = {"name": name, "p": p, "body": None, "error": None, "measured_by": measured_by}
    if p.get("status") not in ("pending", "failed", "skipped"):
        try:
            part["body"] = verbatim(str(getattr(macros, name)(p)).strip("\n"))
        except Exception as exc:  # noqa: BLE001  (a view only: never lose benchmark.json over it)
            part["error"] = f"{type(exc).__name__}: {exc}"
    return part


def render_markdown(doc: dict[str, Any]) -> str:
    """The benchmark as Markdown tables, from benchmark.json's content only (``benchmark.md.j2``); each
    part by its macro in ``benchmark_parts.md.j2``, a part that cannot be rendered saying so."""
    env = _environment()
    macros = env.get_template("benchmark_parts.md.j2").module
    parts = [_rendered_part(n, p, doc.get("command"), macros) for n, p in doc.get("parts", {}).items() if n in PARTS]
    parts.sort(key=lambda part: PARTS.index(part["name"]))
    machine = doc.get("machine") or {}
    versions = machine.get("versions") or {}
    shown = ("platform", "cpus_available", "cpu_count", "memory_total_gb", "torch_num_threads")
    text = env.get_template("benchmark.md.j2").render(
        doc={k: doc.get(k) for k in ("date", "command", "data")},
        machine={k: machine.get(k) for k in shown},
        load_average=(machine.get("load_average_at_start") or [None])[0],
        versions={k: versions.get(k) for k in ("python", "torch", "tensorflow", "keras", "shap")},
        image_size=(doc.get("config") or {}).get("data", {}).get("image_size"),
        parts=parts,
    )
    return text.rstrip() + "\n"


# ----------------------------------------------------------------------------- main


def run_part(ctx: study.Context, bench: BenchmarkFile, part: str, command: str) -> bool:
    """Run one part and record it in benchmark.json; False if it failed (the other parts still run).

    Raises:
        StudyError: a user's mistake (recorded as the part's failure first).
    """
    log.info("benchmark: part %s", part)
    stamp = {"command": command}
    try:
        result, seconds = timed(study.RUNNERS[part], ctx)
    except StudyError as exc:
        bench.set_part(part, {"status": "failed", "error": str(exc), "measured_at": now(), **stamp})
        raise
    except Exception as exc:  # noqa: BLE001  (recorded; the other parts still run)
        log.error("benchmark: part %s failed: %s", part, exc)
        lines = traceback.format_exc().splitlines()[-12:]
        error = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": lines}
        bench.set_part(part, {**error, "measured_at": now(), **stamp})
        return False
    result.setdefault("status", "done")
    done = {"part_seconds": seconds, "measured_at": now(), **stamp, "load_average_after": load_average()}
    bench.set_part(part, {**result, **done})
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers if args.quiet else ():
        handler.setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = args.out.expanduser().resolve()
    cold_cache = None if args.warm_cache else out / "cache"
    try:
        cfg = benchmark_config(args, out, cold_cache)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = shlex.join(["python", "-m", "benchmarks.benchmark", *argv])
    header = {
        "benchmark_version": BENCHMARK_VERSION,
        "date": now(),
        "command": command,
        "executable": sys.executable,
        "cwd": os.getcwd(),
        "machine": machine_info(),
        "data": cfg.data.root or "digits (scikit-learn)",
        "config": cfg.to_dict(),
        "parts_requested": args.parts,
    }
    bench = BenchmarkFile(out, header, args.parts)
    ctx = study.Context(args, cfg, out, bench.set_part, cold_cache if "stages" in args.parts else None)
    try:
        failed = [part for part in args.parts if not run_part(ctx, bench, part, command)]
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if cold_cache is not None:
            shutil.rmtree(cold_cache, ignore_errors=True)  # decoded images and features of the timed run
    print(f"benchmark written to {out / 'benchmark.json'} and {out / 'benchmark.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
