"""Benchmark the study: stage times, explainer efficiency, the published way, accuracy over seeds.

One command writes ``benchmark.json`` and a Markdown table ``benchmark.md`` into
``--out`` (default ``reports/benchmark``). Parts (``--parts``, default all):

- ``stages``: the whole study (``experiments.pipeline.run_study(cfg, force=True)``) into
  ``OUT/study`` with an empty cache (decoded images, Keras features) unless
  ``--warm-cache``; every stage's seconds (the records ``run_study`` returns), each
  arm's ``train.json`` info (e.g. Keras ``feature_seconds``) and peak memory
  (``getrusage``: this process, and the largest child — the arms run in children);
- ``efficiency``: per arm, in a process of its own (``benchmarks.bench_worker``):
  the raw forward+backward rate of the trained logits model and each explainer's rate
  (passes it really makes / its seconds) on the study's images; efficiency = their ratio;
- ``published``: the PyTorch arm run the way the published notebook ran it
  (``benchmarks.published_way``: ImageFolder + DataLoader decoding every epoch, shap's
  defaults) against the project's stage times of this run, with a check that the results
  are the same (pixels, test accuracy, Deep SHAP maps of the same model);
- ``seeds``: the study for every ``--seeds`` seed (explainers off: accuracy only), mean,
  spread and the published figures;
- ``scale`` (only when asked for: ``--parts scale``): decoding speed (a pool of processes
  against one) and every process's peak memory on synthetic folders of ``--scale-sizes``
  images (``benchmarks.scale``).

The stages, efficiency and published parts use the first seed. Each part is written to
``benchmark.json`` as soon as it finishes, so a stopped run keeps what it measured; parts
not run this time are kept from an earlier run with the same configuration.
``benchmark.md`` is rendered from ``benchmark.json`` with ``benchmarks/templates/benchmark.md.j2``.

    python -m benchmarks.benchmark                      # the insects data at the published settings
    python -m benchmarks.benchmark --parts stages,efficiency --only pytorch
    python -m benchmarks.benchmark --parts scale --scale-sizes 1000,5000,20000
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import functools
import logging
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import registry
from common.config import StudyConfig, load_config, selected_arms
from common.errors import StudyError
from common.io import read_json, write_json_atomic, write_text_atomic
from common.results import StudyMetrics, read_metrics
from experiments.flags import add_study_flags, config_overrides

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "templates"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "datasets" / "insects"
DEFAULT_CONFIG = REPO_ROOT / "experiments" / "configs" / "insects.yaml"
DEFAULT_OUT = REPO_ROOT / "reports" / "benchmark"
PARTS = ("stages", "efficiency", "published", "seeds", "scale")
DEFAULT_PARTS = ("stages", "efficiency", "published", "seeds")  # scale runs when asked for
EFFICIENCY_GOAL = 0.8
BENCHMARK_VERSION = 1
PUBLISHED_WAY_ARM = "pytorch"  # the arm benchmarks.published_way re-implements (a key of common.registry.ARMS)
# Published headline accuracies on exactly the insects files (../shared/datasets/insects/SOURCE.md), by arm key.
PUBLISHED_ACCURACY = {"pytorch": 1.0, "keras": 0.972}
PUBLISHED_NOTE = (
    "published: custom CNN 100% (test/ used as validation), ResNet50 with ImageNet weights (frozen) "
    "+ augmentation 97.2%, one run each"
)

# How the passes are counted (the count itself: common.registry.MethodSpec.passes), as shap makes them.
PASS_COUNTING = {
    "deep": {
        "formula": "images x explained outputs x 2 x background",
        "why": "for every explained output and image, shap's DeepExplainer (PyTorch and TensorFlow alike) tiles "
        "the image B times, stacks the B background rows under it and runs one forward+backward over "
        "those 2B rows",
        "not_counted": "set-up: one forward over the background for expected_value, and the arm's forward of "
        "the explained images for f(x)",
    },
    "gradient": {
        "formula": "images x explained outputs x nsamples",
        "why": "for every explained output and image, shap's GradientExplainer draws nsamples points "
        "t*x + (1-t)*background[r] and takes their gradients in batches of the arm's explain batch size",
        "not_counted": "the arm's forwards of the background (E[f(background)]) and of the explained images",
    },
}

log = logging.getLogger("benchmark")


# ----------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data",
        default=str(DEFAULT_DATA),
        help=f"data folder, or 'digits' for scikit-learn's bundled set (default: {DEFAULT_DATA})",
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"YAML config (default: {DEFAULT_CONFIG})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="seeds of the seeds part; the first also seeds the other parts (default: 0 1 2)",
    )
    p.add_argument(
        "--parts",
        default=",".join(DEFAULT_PARTS),
        help=f"comma-separated parts to run, of {','.join(PARTS)} (default: {','.join(DEFAULT_PARTS)})",
    )
    add_study_flags(p)  # the study's own flags: --image-size, --epochs-<arm>, --n-explain, ..., --only
    p.add_argument(
        "--published-nsamples",
        type=int,
        default=200,
        help="GradientExplainer samples per image in the published way (default: shap's default, 200)",
    )
    p.add_argument(
        "--raw-seconds",
        type=float,
        default=10.0,
        help="least seconds of timed raw forward+backward passes per batch size (default: 10)",
    )
    p.add_argument(
        "--explain-repeats",
        type=int,
        default=2,
        help="explainer calls per method in the efficiency part: the first is cold (set-up included), "
        "the best later one warm (default: 2)",
    )
    p.add_argument(
        "--warm-cache",
        action="store_true",
        help="time the stages with the usual decode/feature cache instead of an empty one (default: empty)",
    )
    p.add_argument(
        "--scale-sizes",
        default="1000,5000,20000",
        help="comma-separated image counts of the scale part's synthetic folders (default: 1000,5000,20000)",
    )
    p.add_argument(
        "--scale-steps",
        type=int,
        default=2,
        help="training and test batches each arm computes in the scale part (default: 2)",
    )
    p.add_argument(
        "--scale-dir", help="where the scale part builds its temporary folders (default: the system's temp folder)"
    )
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


def study_config(args: argparse.Namespace, out: Path) -> StudyConfig:
    """The study's config from ``--config`` and the flags; output ``OUT/study``, seed = the first seed.

    Raises:
        ConfigError: a bad config file or value.
    """
    overrides = {
        "data.root": None if args.data == "digits" else str(Path(args.data).expanduser().resolve()),
        "out": str(out / "study"),
        "seed": args.seeds[0],
        **config_overrides(args),
    }
    cfg = load_config(args.config, overrides)
    if args.data == "digits" and cfg.data.root is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=None))
    return cfg


def benchmark_config(args: argparse.Namespace, out: Path, cold_cache: Path | None) -> StudyConfig:
    """:func:`study_config` with the cache the stages are timed with: the empty ``cold_cache`` when
    the stages part runs, else the cache the study in ``OUT/study`` was made with."""
    cfg = study_config(args, out)
    if cold_cache is not None and "stages" in args.parts:
        return with_cache(cfg, str(cold_cache))
    if (out / "study" / "config.yaml").is_file():  # keep the cache the study was made with
        made = load_config(out / "study" / "config.yaml")
        if made.data.cache_dir == str(cold_cache):
            return with_cache(cfg, made.data.cache_dir)
    return cfg


def with_cache(cfg: StudyConfig, cache_dir: str | None) -> StudyConfig:
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_dir=cache_dir))


# ----------------------------------------------------------------------------- machine and bookkeeping


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": registry.library_versions(),
        "thread_env": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
            if k in os.environ
        },
    }
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            kb = next(int(line.split()[1]) for line in fh if line.startswith("MemTotal:"))
        info["memory_total_gb"] = round(kb / 1024**2, 1)
    except (OSError, StopIteration, ValueError):
        info["memory_total_gb"] = None
    # The threads PyTorch uses by default, asked in a child so this process stays free of PyTorch.
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads(), torch.get_num_interop_threads())"],
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0:
        intra, inter = probe.stdout.split()
        info["torch_num_threads"], info["torch_num_interop_threads"] = int(intra), int(inter)
    return info


def memory() -> dict[str, Any]:
    """Peak resident memory so far (Linux ru_maxrss is in KiB)."""
    return {
        "self_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_max_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "note": "ru_maxrss: this process, and the largest single child process finished so far",
    }


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


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


def run_child(cmd: list[str], what: str) -> None:
    """Run a child Python process, passing its stderr through; raise with its last lines on failure."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    tail: collections.deque[str] = collections.deque(maxlen=15)
    with subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True, errors="replace") as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            tail.append(line.rstrip())
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed with exit status {proc.returncode}: " + " | ".join(tail))


# ----------------------------------------------------------------------------- the parts


@dataclasses.dataclass
class Context:
    args: argparse.Namespace
    cfg: StudyConfig  # the benchmark study's config (OUT/study, first seed, maybe an empty cache)
    out: Path
    bench: BenchmarkFile
    cold_cache: Path | None  # the emptied cache folder of the stages part, if any
    study_ready: bool = False  # OUT/study holds a finished study of cfg made in this run


def study_dir(ctx: Context) -> Path:
    return Path(ctx.cfg.out)  # type: ignore[arg-type]


def study_metrics(study: Path) -> StudyMetrics:
    return read_metrics(read_json(study / "metrics.json"))


def ensure_study(ctx: Context) -> str:
    """Make sure ``OUT/study`` holds a finished study of this configuration; say where it came from."""
    if ctx.study_ready:
        return "the stages part of this run"
    metrics = study_dir(ctx) / "metrics.json"
    if metrics.is_file() and read_json(metrics).get("config") == ctx.cfg.to_dict():
        return "an earlier run (OUT/study, same configuration)"
    from experiments.pipeline import run_study

    log.info("benchmark: running the study first (its stage times are not the stages part)")
    run_study(ctx.cfg, force=False)
    ctx.study_ready = True
    return "run in this run as a prerequisite (stages cached where unchanged)"


def part_stages(ctx: Context) -> dict[str, Any]:
    from experiments.pipeline import run_study

    if ctx.cold_cache is not None:
        shutil.rmtree(ctx.cold_cache, ignore_errors=True)
    t0 = time.perf_counter()
    run = run_study(ctx.cfg, force=True)
    wall = time.perf_counter() - t0
    ctx.study_ready = True
    stages = [dataclasses.asdict(r) for r in run.records]
    total = sum(s["seconds"] or 0.0 for s in stages)
    metrics = study_metrics(run.out)
    arms = {
        name: {
            "test_accuracy": m.test_accuracy,
            "train_seconds": m.train_seconds,
            "predict_seconds": m.predict_seconds,
            "info": m.info,
            "explain_seconds": {k: v.seconds for k, v in metrics.attributions.get(name, {}).items()},
        }
        for name, m in metrics.models.items()
    }
    return {
        "study": str(run.out),
        "cache": (
            "empty at the start (decoded images and Keras features computed in this run)"
            if ctx.cold_cache is not None
            else "the usual cache (may hold decoded images and features)"
        ),
        "wall_seconds": wall,
        "stages": stages,
        "sum_stage_seconds": total,
        "other_seconds": wall - total,
        "other_note": "arm processes' start-up and imports, selection",
        "arms": arms,
        "memory": memory(),
    }


def part_efficiency(ctx: Context) -> dict[str, Any]:
    source = ensure_study(ctx)
    results: dict[str, Any] = {}
    for spec in selected_arms(ctx.cfg):
        result = ctx.out / "efficiency" / f"{spec.key}.json"
        result.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.bench_worker",
            "--study",
            str(study_dir(ctx)),
            "--arm",
            spec.key,
            "--result",
            str(result),
            "--raw-seconds",
            str(ctx.args.raw_seconds),
            "--explain-repeats",
            str(ctx.args.explain_repeats),
        ]
        log.info("benchmark: efficiency of the %s arm in its own process", spec.title)
        try:
            run_child(cmd, f"the {spec.title} benchmark worker")
            results[spec.key] = read_json(result)
        except RuntimeError as exc:
            results[spec.key] = {"error": str(exc)}
    failed = [key for key, r in results.items() if "error" in r]
    if failed and len(failed) == len(results):
        raise RuntimeError("; ".join(results[key]["error"] for key in failed))
    return {
        "study_from": source,
        "goal": EFFICIENCY_GOAL,
        "frameworks": results,
        "pass_counting": PASS_COUNTING,
        "memory": memory(),
    }


def project_seconds(metrics: StudyMetrics, spec: registry.ArmSpec) -> dict[str, Any]:
    """The project's seconds of the data stage and of one arm's stages, from metrics.json's records."""
    from experiments.layout import stage_name

    by_stage = {s.stage: s for s in metrics.stages}
    names = {
        "data": "data",
        "train": stage_name(spec, "train"),
        "predict": stage_name(spec, "predict"),
        **{f"explain_{m}": stage_name(spec, f"explain_{m}") for m in registry.METHODS},
    }
    seconds: dict[str, Any] = {key: by_stage[name].seconds if name in by_stage else None for key, name in names.items()}
    seconds["statuses"] = {name: by_stage[name].status for name in names.values() if name in by_stage}
    return seconds


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def speedup(
    pub: dict[str, Any], proj: dict[str, Any], project_nsamples: int, project_maps: dict[str, int | None] | None = None
) -> dict[str, Any]:
    """Published seconds / project seconds per step, and in total.

    ``project_maps``: method -> the maps (image x class) the project's study explained; the
    published way explains every class, so with ``explain.classes`` other than ``all`` the
    explainers' like-for-like figure is the ratio per pass."""
    e, train = pub["explain"], pub["train"]
    every = e["n_images"] * e["n_classes"]
    maps = {m: (project_maps or {}).get(m) or every for m in ("deep", "gradient")}
    proj_passes = {
        m: registry.METHODS[m].passes(maps[m], 1, e["n_background"], project_nsamples) for m in ("deep", "gradient")
    }
    proj_grad_passes = proj_passes["gradient"]
    pub_total = train["seconds"] + train["test_seconds"] + e["deep"]["seconds"] + e["gradient"]["seconds"]
    steps = [proj[k] for k in ("data", "train", "predict", "explain_deep", "explain_gradient")]
    proj_total = sum(steps) if all(p is not None for p in steps) else None
    with_data = proj["train"] + proj["data"] if proj["train"] is not None and proj["data"] is not None else None
    return {
        "training": {
            "published": train["seconds"],
            "project": proj["train"],
            "ratio": _ratio(train["seconds"], proj["train"]),
            "note": "published fit (decoding every epoch) / the project's 'train' stage",
        },
        "training_with_decoding": {
            "published": train["seconds"],
            "project": with_data,
            "ratio": _ratio(train["seconds"], (proj["train"] or 0) + (proj["data"] or 0)),
            "note": "the project's data stage (hash, decode once, split; shared by both arms) counted in",
        },
        "test_predictions": {
            "published": train["test_seconds"],
            "project": proj["predict"],
            "ratio": _ratio(train["test_seconds"], proj["predict"]),
        },
        "deep_shap": {
            "published": e["deep"]["seconds"],
            "project": proj["explain_deep"],
            "ratio": _ratio(e["deep"]["seconds"], proj["explain_deep"]),
            "note": "the same passes" if maps["deep"] == every else f"project: {maps['deep']} of {every} maps",
            "ratio_per_pass": _ratio(
                _ratio(e["deep"]["seconds"], e["deep"].get("passes")), _ratio(proj["explain_deep"], proj_passes["deep"])
            ),
        },
        "gradient_shap": {
            "published": e["gradient"]["seconds"],
            "project": proj["explain_gradient"],
            "ratio": _ratio(e["gradient"]["seconds"], proj["explain_gradient"]),
            "published_nsamples": e["gradient"]["nsamples"],
            "project_nsamples": project_nsamples,
            "ratio_per_pass": _ratio(
                _ratio(e["gradient"]["seconds"], e["gradient"]["passes"]),
                _ratio(proj["explain_gradient"], proj_grad_passes),
            ),
        },
        "total": {"published": pub_total, "project": proj_total, "ratio": _ratio(pub_total, proj_total)},
    }


def part_published(ctx: Context) -> dict[str, Any]:
    spec = registry.arm_spec(PUBLISHED_WAY_ARM)
    if ctx.cfg.data.root is None:
        return {"status": "skipped", "reason": "the published way reads image files; the digits set has none"}
    if spec not in selected_arms(ctx.cfg):
        return {
            "status": "skipped",
            "reason": f"the published way is measured for the {spec.title} arm (--only {ctx.cfg.only})",
        }
    source = ensure_study(ctx)
    result = ctx.out / "published" / "result.json"
    result.unlink(missing_ok=True)
    run_child(
        [
            sys.executable,
            "-m",
            "benchmarks.published_way",
            "--study",
            str(study_dir(ctx)),
            "--result",
            str(result),
            "--nsamples",
            str(ctx.args.published_nsamples),
        ],
        "the published way",
    )
    pub = read_json(result)
    metrics = study_metrics(study_dir(ctx))
    proj = project_seconds(metrics, spec)
    return {
        "study_from": source,
        "project_seconds": proj,
        "published": pub,
        "speedup": speedup(
            pub,
            proj,
            int(metrics.config["explain"]["nsamples"]),
            {m: a.n_maps for m, a in metrics.attributions.get(spec.name, {}).items()},
        ),
        "ratio_definition": "published seconds / project seconds (> 1: the project is faster)",
        "memory": memory(),
    }


def _training_signature(config: dict[str, Any]) -> dict[str, Any]:
    """What decides the trained models and test predictions (not where outputs, caches or arms run)."""
    data = {k: v for k, v in config["data"].items() if k != "cache_dir"}
    arms = {
        key: {k: v for k, v in config[key].items() if k not in spec.settings_class().placement}
        for key, spec in registry.ARMS.items()
        if key in config
    }
    return {"seed": config["seed"], "only": config["only"], "data": data, **arms}


def seed_run(metrics: StudyMetrics) -> dict[str, Any]:
    """Each model's test accuracy in one seed's study."""
    return {
        name: {
            "test_accuracy": m.test_accuracy,
            "test_accuracy_ci95": m.test_accuracy_ci95,
            "n_test": int(sum(sum(row) for row in m.confusion_matrix)),
            **({"backbone_weights": m.backbone_weights} if m.backbone_weights is not None else {}),
        }
        for name, m in metrics.models.items()
    }


def part_seeds(ctx: Context) -> dict[str, Any]:
    from experiments.pipeline import run_study

    base_cache = load_config(ctx.args.config).data.cache_dir  # the usual cache, not the stages part's empty one
    runs: dict[str, Any] = {}
    result: dict[str, Any] = {
        "status": "running",
        "seeds": ctx.args.seeds,
        "runs": runs,
        "explainers": "off (accuracy only; the explainers do not change the models)",
    }
    for seed in ctx.args.seeds:
        cfg = dataclasses.replace(
            with_cache(ctx.cfg, base_cache),
            seed=seed,
            out=str(ctx.out / "seeds" / f"seed-{seed}"),
            explain=dataclasses.replace(ctx.cfg.explain, methods=()),
        )
        study_json = study_dir(ctx) / "metrics.json"
        t0 = time.perf_counter()
        if study_json.is_file() and _training_signature(read_json(study_json)["config"]) == _training_signature(
            cfg.to_dict()
        ):
            metrics, source = study_metrics(study_dir(ctx)), str(study_dir(ctx))
        else:
            log.info("benchmark: the study for seed %d (explainers off)", seed)
            metrics, source = study_metrics(run_study(cfg, force=False).out), cfg.out
        runs[str(seed)] = {"from": source, "seconds": time.perf_counter() - t0, "models": seed_run(metrics)}
        ctx.bench.set_part("seeds", {**result, "summary": seed_summary(runs)})
    return {
        **result,
        "status": "done",
        "summary": seed_summary(runs),
        "published": published_accuracy(),
        "published_note": PUBLISHED_NOTE,
        "memory": memory(),
    }


def published_accuracy() -> dict[str, float]:
    """The published test accuracies by metrics.json model name (e.g. the PyTorch CNN's)."""
    return {registry.arm_spec(key).name: acc for key, acc in PUBLISHED_ACCURACY.items() if key in registry.ARMS}


def seed_summary(runs: dict[str, Any]) -> dict[str, Any]:
    """Mean, sample std (ddof 1; 0 for one seed), min and max of each arm's test accuracy."""
    names = sorted({n for r in runs.values() for n in r["models"]})
    published = published_accuracy()
    out = {}
    for name in names:
        acc = [r["models"][name]["test_accuracy"] for r in runs.values() if name in r["models"]]
        weights = sorted(
            {
                str(r["models"][name].get("backbone_weights"))
                for r in runs.values()
                if name in r["models"] and "backbone_weights" in r["models"][name]
            }
        )
        out[name] = {
            "n_seeds": len(acc),
            "mean": statistics.fmean(acc),
            "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "min": min(acc),
            "max": max(acc),
            "published": published.get(name),
            **({"backbone_weights": weights} if weights else {}),
        }
    return out


def part_scale(ctx: Context) -> dict[str, Any]:
    from benchmarks.scale import run_scale

    return {
        **run_scale(
            ctx.cfg,
            ctx.args.scale_sizes,
            run_child,
            steps=ctx.args.scale_steps,
            tmp_dir=ctx.args.scale_dir,
            on_progress=lambda partial: ctx.bench.set_part("scale", partial),
        ),
        "memory": memory(),
    }


# ----------------------------------------------------------------------------- Markdown


def _seconds(x: float | None) -> str:
    """Seconds: two decimals below 10 s, one above."""
    return "—" if x is None else f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _percent(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


@functools.cache
def _environment():
    """The Markdown environment, built once per process: Jinja2 then compiles each template
    once, not at every save of benchmark.md (0.1 s a template)."""
    from common.report.render import markdown_environment, verbatim

    env = markdown_environment(TEMPLATES)
    env.filters["secs"] = lambda x: verbatim(_seconds(x))
    env.filters["pct"] = lambda x: verbatim(_percent(x))
    env.filters["mark"] = lambda x, goal: verbatim("—" if x is None else f"{x:.2f} {'✓' if x >= goal else '✗'}")
    env.filters["info_value"] = lambda x: verbatim(_seconds(x)) if isinstance(x, float) else x
    return env


def render_markdown(doc: dict[str, Any]) -> str:
    """The benchmark as Markdown tables, from benchmark.json's content only (``benchmark.md.j2``).

    Each part is rendered on its own (by its macro in ``benchmark_parts.md.j2``): a part whose
    record cannot be rendered says so instead, so a view never loses benchmark.json's content."""
    from common.report.render import verbatim

    env = _environment()
    macros = env.get_template("benchmark_parts.md.j2").module
    parts = []
    for name, p in doc.get("parts", {}).items():
        if name not in PARTS:
            continue
        part = {
            "name": name,
            "p": p,
            "body": None,
            "error": None,
            "measured_by": p.get("status") == "done" and "measured_at" in p and p.get("command") != doc.get("command"),
        }
        if p.get("status") not in ("pending", "failed", "skipped"):
            try:
                part["body"] = verbatim(str(getattr(macros, name)(p)).strip("\n"))
            except Exception as exc:  # noqa: BLE001  (a view only: never lose benchmark.json over it)
                part["error"] = f"{type(exc).__name__}: {exc}"
        parts.append(part)
    parts.sort(key=lambda part: PARTS.index(part["name"]))
    machine = doc.get("machine") or {}
    versions = machine.get("versions") or {}
    text = env.get_template("benchmark.md.j2").render(
        doc={k: doc.get(k) for k in ("date", "command", "data")},
        machine={
            k: machine.get(k)
            for k in ("platform", "cpus_available", "cpu_count", "memory_total_gb", "torch_num_threads")
        },
        load_average=(machine.get("load_average_at_start") or [None])[0],
        versions={k: versions.get(k) for k in ("python", "torch", "tensorflow", "keras", "shap")},
        image_size=(doc.get("config") or {}).get("data", {}).get("image_size"),
        parts=parts,
    )
    return text.rstrip() + "\n"


# ----------------------------------------------------------------------------- main

RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "stages": part_stages,
    "efficiency": part_efficiency,
    "published": part_published,
    "seeds": part_seeds,
    "scale": part_scale,
}


def run_part(ctx: Context, part: str, command: str) -> bool:
    """Run one part and record it in benchmark.json; False if it failed (the other parts still run).

    Raises:
        StudyError: a user's mistake (recorded as the part's failure first).
    """
    log.info("benchmark: part %s", part)
    t0 = time.perf_counter()
    try:
        result = RUNNERS[part](ctx)
    except StudyError as exc:
        ctx.bench.set_part(part, {"status": "failed", "error": str(exc), "measured_at": now(), "command": command})
        raise
    except Exception as exc:  # noqa: BLE001  (recorded; the other parts still run)
        log.error("benchmark: part %s failed: %s", part, exc)
        ctx.bench.set_part(
            part,
            {
                "status": "failed",
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc().splitlines()[-12:],
                "measured_at": now(),
                "command": command,
            },
        )
        return False
    result.setdefault("status", "done")
    ctx.bench.set_part(
        part,
        {
            **result,
            "part_seconds": time.perf_counter() - t0,
            "measured_at": now(),
            "command": command,
            "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
    )
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.quiet:
        for handler in logging.getLogger().handlers:
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
    ctx = Context(args, cfg, out, bench, cold_cache if "stages" in args.parts else None)
    failed = []
    try:
        for part in args.parts:
            if not run_part(ctx, part, command):
                failed.append(part)
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
