"""Benchmark the study: stage times, explainer efficiency, the published way, accuracy over seeds.

One command writes ``benchmark.json`` and a Markdown table ``benchmark.md`` into
``--out`` (default ``reports/benchmark``). Parts (``--parts``, default all):

- ``stages``: the whole study (``experiments.pipeline.run_study(cfg, force=True)``) into
  ``OUT/study`` with an empty cache (decoded images, Keras features) unless
  ``--warm-cache``; every stage's seconds (the report stage's from the study's log), each
  arm's ``train.json`` info (e.g. Keras ``feature_seconds``) and peak memory
  (``getrusage``: this process, and the largest child — the arms run in children);
- ``efficiency``: per framework, in a process of its own (``experiments/bench_worker.py``):
  the raw forward+backward rate of the trained logits model and each explainer's rate
  (passes it really makes / its seconds) on the study's images; efficiency = their ratio;
- ``published``: the PyTorch arm run the way the published notebook ran it
  (``experiments/published_way.py``: ImageFolder + DataLoader decoding every epoch, shap's
  defaults) against the project's stage times of this run, with a check that the results
  are the same (pixels, test accuracy, Deep SHAP maps of the same model);
- ``seeds``: the study for every ``--seeds`` seed (explainers off: accuracy only), mean,
  spread and the published figures.

The stages, efficiency and published parts use the first seed. Each part is written to
``benchmark.json`` as soon as it finishes, so a stopped run keeps what it measured; parts
not run this time are kept from an earlier run with the same configuration.

    python experiments/benchmark.py                     # the insects data at the published settings
    python experiments/benchmark.py --parts stages,efficiency --only pytorch
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
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
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.config import StudyConfig, load_config  # noqa: E402
from common.errors import StudyError  # noqa: E402
from common.io import read_json, write_json_atomic, write_text_atomic  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "datasets" / "insects"
DEFAULT_CONFIG = REPO_ROOT / "experiments" / "configs" / "insects.yaml"
DEFAULT_OUT = REPO_ROOT / "reports" / "benchmark"
PARTS = ("stages", "efficiency", "published", "seeds")
EFFICIENCY_GOAL = 0.8
BENCHMARK_VERSION = 1
# Published headline accuracies on exactly the insects files (../shared/datasets/insects/SOURCE.md).
PUBLISHED_ACCURACY = {"pytorch_cnn": 1.0, "keras_resnet50": 0.972}
PUBLISHED_NOTE = ("published: custom CNN 100% (test/ used as validation), ResNet50 with ImageNet weights (frozen) "
                  "+ augmentation 97.2%, one run each")

# How the passes were counted, checked in the installed shap's source (shap 0.51.0).
PASS_COUNTING = {
    "deep": {
        "formula": "images x explained outputs x 2 x background",
        "why": "for every explained output i and image j, shap tiles the image B times and stacks the B background "
               "rows under it, then runs one forward+backward over those 2B rows",
        "source": [
            {"file": "shap/explainers/_deep/deep_pytorch.py", "lines": "172-189",
             "code": "for i in outputs: for j in images: tiled_X = X[j].repeat(B, ...); "
                     "joint_x = torch.cat((tiled_X, self.data)); self.gradient(feature_ind, joint_x)"},
            {"file": "shap/explainers/_deep/deep_tf.py", "lines": "309-332",
             "code": "for i: for j: tiled_X = np.tile(X[j], (B, ...)); joint_input = np.concatenate([tiled_X, bg_data]); "
                     "self.run(self.phi_symbolic(feature_ind), self.model_inputs, joint_input)"},
        ],
        "not_counted": "set-up: one forward over the background for expected_value (deep_pytorch.py:52-60, "
                       "deep_tf.py:157-161), and the arm's forward of the explained images for f(x)",
    },
    "gradient": {
        "formula": "images x explained outputs x nsamples",
        "why": "for every explained output i and image j, shap draws nsamples points t*x + (1-t)*background[r] "
               "and takes their gradients in batches of batch_size (50 in both arms)",
        "source": [
            {"file": "shap/explainers/_gradient.py", "lines": "634-682 (PyTorch)",
             "code": "for i: for j: for k in range(nsamples): samples_input[k] = t*x + (1-t)*data[rind]; "
                     "for b in range(0, nsamples, batch_size): self.gradient(find, batch)"},
            {"file": "shap/explainers/_gradient.py", "lines": "365-390 (TensorFlow)",
             "code": "the same loops; self.run(self.gradient(find), self.model_inputs, batch)"},
        ],
        "not_counted": "the arm's forwards of the background (E[f(background)]) and of the explained images",
    },
}

log = logging.getLogger("benchmark")


# ----------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA),
                   help=f"data folder, or 'digits' for scikit-learn's bundled set (default: {DEFAULT_DATA})")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"YAML config (default: {DEFAULT_CONFIG})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="seeds of the seeds part; the first also seeds the other parts (default: 0 1 2)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts to run (default: {','.join(PARTS)})")
    p.add_argument("--only", choices=["pytorch", "keras"], help="one arm only (default: both)")
    p.add_argument("--image-size", type=int, help="square image side in pixels (default: from the config)")
    p.add_argument("--epochs-pytorch", type=int, help="PyTorch CNN epochs (default: from the config)")
    p.add_argument("--epochs-keras", type=int, help="Keras ResNet50 head epochs (default: from the config)")
    p.add_argument("--n-explain", type=int, help="explained test images (default: from the config)")
    p.add_argument("--n-background", type=int, help="SHAP background images (default: from the config)")
    p.add_argument("--nsamples", type=int, help="the project's Gradient SHAP samples per image (default: from the config)")
    p.add_argument("--keras-weights", help="imagenet, none or a weights file (default: from the config)")
    p.add_argument("--published-nsamples", type=int, default=200,
                   help="GradientExplainer samples per image in the published way (default: shap's default, 200)")
    p.add_argument("--raw-seconds", type=float, default=10.0,
                   help="least seconds of timed raw forward+backward passes per batch size (default: 10)")
    p.add_argument("--explain-repeats", type=int, default=2,
                   help="explainer calls per method in the efficiency part: the first is cold (set-up included), "
                        "the best later one warm (default: 2)")
    p.add_argument("--warm-cache", action="store_true",
                   help="time the stages with the usual decode/feature cache instead of an empty one (default: empty)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    args = p.parse_args(argv)
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
        "out": str(out / "study"), "seed": args.seeds[0], "only": args.only,
        "data.image_size": args.image_size, "pytorch.epochs": args.epochs_pytorch, "keras.epochs": args.epochs_keras,
        "explain.n_explain": args.n_explain, "explain.n_background": args.n_background,
        "explain.nsamples": args.nsamples, "keras.weights": args.keras_weights,
    }
    cfg = load_config(args.config, overrides)
    if args.data == "digits" and cfg.data.root is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=None))
    return cfg


# ----------------------------------------------------------------------------- machine and bookkeeping


def machine_info() -> dict[str, Any]:
    from experiments.pipeline import versions

    info: dict[str, Any] = {
        "platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor() or None,
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": versions(),
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                                                  "TF_NUM_INTEROP_THREADS") if k in os.environ},
    }
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            kb = next(int(line.split()[1]) for line in fh if line.startswith("MemTotal:"))
        info["memory_total_gb"] = round(kb / 1024**2, 1)
    except (OSError, StopIteration, ValueError):
        info["memory_total_gb"] = None
    # The threads PyTorch uses by default, asked in a child so this process stays free of PyTorch.
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads(), "
                            "torch.get_num_interop_threads())"], capture_output=True, text=True)
    if probe.returncode == 0:
        intra, inter = probe.stdout.split()
        info["torch_num_threads"], info["torch_num_interop_threads"] = int(intra), int(inter)
    return info


def memory() -> dict[str, Any]:
    """Peak resident memory so far (Linux ru_maxrss is in KiB)."""
    return {"self_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children_max_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "note": "ru_maxrss: this process, and the largest single child process finished so far"}


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


class StageLog(logging.Handler):
    """Catches the study's ``[stage] report ran in X s`` log line (the report stage is not in metrics.json)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.report_seconds: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("[stage]") and record.args and record.args[0] == "report":
            self.report_seconds = float(record.args[1])


def run_child(cmd: list[str], what: str) -> None:
    """Run a child Python process, passing its stderr through; raise with its last lines on failure."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    tail: collections.deque[str] = collections.deque(maxlen=15)
    with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, errors="replace") as proc:
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
    capture, study_log = StageLog(), logging.getLogger("study")
    level = study_log.level
    study_log.setLevel(logging.INFO)  # the report's time comes from its log line, even with --quiet
    study_log.addHandler(capture)
    try:
        t0 = time.perf_counter()
        run_study(ctx.cfg, force=True)
        wall = time.perf_counter() - t0
    finally:
        study_log.removeHandler(capture)
        study_log.setLevel(level)
    ctx.study_ready = True
    study = study_dir(ctx)
    metrics = read_json(study / "metrics.json")
    stages = list(metrics["stages"]) + [{"stage": "report", "status": "ran", "seconds": capture.report_seconds}]
    total = sum(s["seconds"] or 0.0 for s in stages)
    arms = {}
    for name, m in metrics["models"].items():
        arms[name] = {"test_accuracy": m["test_accuracy"], "train_seconds": m["train_seconds"],
                      "predict_seconds": m["predict_seconds"], "info": m["info"],
                      "explain_seconds": {k: v["seconds"] for k, v in metrics["attributions"].get(name, {}).items()}}
    return {"study": str(study),
            "cache": ("empty at the start (decoded images and Keras features computed in this run)"
                      if ctx.cold_cache is not None else "the usual cache (may hold decoded images and features)"),
            "wall_seconds": wall, "stages": stages, "sum_stage_seconds": total,
            "other_seconds": wall - total, "other_note": "arm processes' start-up and imports, selection",
            "arms": arms, "memory": memory()}


def part_efficiency(ctx: Context) -> dict[str, Any]:
    from experiments.pipeline import frameworks

    source = ensure_study(ctx)
    results: dict[str, Any] = {}
    for fw in frameworks(ctx.cfg):
        result = ctx.out / "efficiency" / f"{fw}.json"
        result.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "experiments.bench_worker", "--study", str(study_dir(ctx)), "--framework", fw,
               "--result", str(result), "--raw-seconds", str(ctx.args.raw_seconds),
               "--explain-repeats", str(ctx.args.explain_repeats)]
        log.info("benchmark: efficiency of the %s arm in its own process", fw)
        try:
            run_child(cmd, f"the {fw} benchmark worker")
            results[fw] = read_json(result)
        except RuntimeError as exc:
            results[fw] = {"error": str(exc)}
    failed = [fw for fw, r in results.items() if "error" in r]
    if failed and len(failed) == len(results):
        raise RuntimeError("; ".join(results[fw]["error"] for fw in failed))
    return {"study_from": source, "goal": EFFICIENCY_GOAL, "frameworks": results, "pass_counting": PASS_COUNTING,
            "memory": memory()}


def _project_seconds(metrics: dict[str, Any]) -> dict[str, Any]:
    by_stage = {s["stage"]: s for s in metrics["stages"]}

    def sec(name: str) -> float | None:
        return by_stage[name]["seconds"] if name in by_stage else None

    return {"data": sec("data"), "train": sec("train pytorch"), "predict": sec("predict pytorch"),
            "explain_deep": sec("explain_deep pytorch"), "explain_gradient": sec("explain_gradient pytorch"),
            "statuses": {k: by_stage[k]["status"] for k in by_stage if k == "data" or k.endswith("pytorch")}}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def part_published(ctx: Context) -> dict[str, Any]:
    if ctx.cfg.data.root is None:
        return {"status": "skipped", "reason": "the published way reads image files; the digits set has none"}
    if ctx.cfg.only == "keras":
        return {"status": "skipped", "reason": "the published way is measured for the PyTorch arm (--only keras)"}
    source = ensure_study(ctx)
    result = ctx.out / "published" / "result.json"
    result.unlink(missing_ok=True)
    run_child([sys.executable, "-m", "experiments.published_way", "--study", str(study_dir(ctx)), "--result",
               str(result), "--nsamples", str(ctx.args.published_nsamples)], "the published way")
    pub = read_json(result)
    metrics = read_json(study_dir(ctx) / "metrics.json")
    proj = _project_seconds(metrics)
    e = pub["explain"]
    proj_grad_passes = e["n_images"] * e["n_classes"] * metrics["config"]["explain"]["nsamples"]
    pub_total = pub["train"]["seconds"] + pub["train"]["test_seconds"] + e["deep"]["seconds"] + e["gradient"]["seconds"]
    parts = [proj[k] for k in ("data", "train", "predict", "explain_deep", "explain_gradient")]
    proj_total = sum(parts) if all(p is not None for p in parts) else None
    speedup = {
        "training": {"published": pub["train"]["seconds"], "project": proj["train"],
                     "ratio": _ratio(pub["train"]["seconds"], proj["train"]),
                     "note": "published fit (decoding every epoch) / the project's 'train pytorch' stage"},
        "training_with_decoding": {
            "published": pub["train"]["seconds"],
            "project": proj["train"] + proj["data"] if proj["train"] is not None and proj["data"] is not None else None,
            "ratio": _ratio(pub["train"]["seconds"], (proj["train"] or 0) + (proj["data"] or 0)),
            "note": "the project's data stage (hash, decode once, split; shared by both arms) counted in"},
        "test_predictions": {"published": pub["train"]["test_seconds"], "project": proj["predict"],
                             "ratio": _ratio(pub["train"]["test_seconds"], proj["predict"])},
        "deep_shap": {"published": e["deep"]["seconds"], "project": proj["explain_deep"],
                      "ratio": _ratio(e["deep"]["seconds"], proj["explain_deep"]), "note": "the same passes"},
        "gradient_shap": {
            "published": e["gradient"]["seconds"], "project": proj["explain_gradient"],
            "ratio": _ratio(e["gradient"]["seconds"], proj["explain_gradient"]),
            "published_nsamples": e["gradient"]["nsamples"], "project_nsamples": metrics["config"]["explain"]["nsamples"],
            "ratio_per_pass": _ratio(_ratio(e["gradient"]["seconds"], e["gradient"]["passes"]),
                                     _ratio(proj["explain_gradient"], proj_grad_passes))},
        "total": {"published": pub_total, "project": proj_total, "ratio": _ratio(pub_total, proj_total)},
    }
    return {"study_from": source, "project_seconds": proj, "published": pub, "speedup": speedup,
            "ratio_definition": "published seconds / project seconds (> 1: the project is faster)",
            "memory": memory()}


def _training_signature(config: dict[str, Any]) -> dict[str, Any]:
    """What decides the trained models and test predictions (not where outputs or caches go)."""
    data = {k: v for k, v in config["data"].items() if k != "cache_dir"}
    pytorch = {k: v for k, v in config["pytorch"].items() if k != "device"}
    return {"seed": config["seed"], "only": config["only"], "data": data, "pytorch": pytorch, "keras": config["keras"]}


def part_seeds(ctx: Context) -> dict[str, Any]:
    from experiments.pipeline import run_study

    base_cache = load_config(ctx.args.config).data.cache_dir  # the usual cache, not the stages part's empty one
    runs: dict[str, Any] = {}
    result: dict[str, Any] = {"status": "running", "seeds": ctx.args.seeds, "runs": runs,
                              "explainers": "off (accuracy only; the explainers do not change the models)"}
    for seed in ctx.args.seeds:
        cfg = dataclasses.replace(ctx.cfg, seed=seed, out=str(ctx.out / "seeds" / f"seed-{seed}"),
                                  data=dataclasses.replace(ctx.cfg.data, cache_dir=base_cache),
                                  explain=dataclasses.replace(ctx.cfg.explain, methods=()))
        study_metrics = study_dir(ctx) / "metrics.json"
        t0 = time.perf_counter()
        if (study_metrics.is_file()
                and _training_signature(read_json(study_metrics)["config"]) == _training_signature(cfg.to_dict())):
            metrics, source = read_json(study_metrics), str(study_dir(ctx))
        else:
            log.info("benchmark: the study for seed %d (explainers off)", seed)
            metrics, source = read_json(run_study(cfg, force=False) / "metrics.json"), cfg.out
        runs[str(seed)] = {
            "from": source, "seconds": time.perf_counter() - t0,
            "models": {name: {"test_accuracy": m["test_accuracy"], "test_accuracy_ci95": m.get("test_accuracy_ci95"),
                              "n_test": int(sum(sum(row) for row in m["confusion_matrix"])),
                              **({"backbone_weights": m.get("backbone_weights")} if "backbone_weights" in m else {})}
                       for name, m in metrics["models"].items()},
        }
        ctx.bench.set_part("seeds", {**result, "summary": seed_summary(runs)})
    return {**result, "status": "done", "summary": seed_summary(runs), "published": PUBLISHED_ACCURACY,
            "published_note": PUBLISHED_NOTE, "memory": memory()}


def seed_summary(runs: dict[str, Any]) -> dict[str, Any]:
    """Mean, sample std (ddof 1; 0 for one seed), min and max of each arm's test accuracy."""
    names = sorted({n for r in runs.values() for n in r["models"]})
    out = {}
    for name in names:
        acc = [r["models"][name]["test_accuracy"] for r in runs.values() if name in r["models"]]
        weights = sorted({str(r["models"][name].get("backbone_weights")) for r in runs.values()
                          if name in r["models"] and "backbone_weights" in r["models"][name]})
        out[name] = {"n_seeds": len(acc), "mean": statistics.fmean(acc),
                     "std": statistics.stdev(acc) if len(acc) > 1 else 0.0, "min": min(acc), "max": max(acc),
                     "published": PUBLISHED_ACCURACY.get(name), **({"backbone_weights": weights} if weights else {})}
    return out


# ----------------------------------------------------------------------------- Markdown


def _f(x: Any, fmt: str = ".1f") -> str:
    if x is None:
        return "–"
    if isinstance(x, (int, float)):
        return format(x, fmt)
    return str(x)


def _s(x: float | None) -> str:
    """Seconds: two decimals below 10 s, one above."""
    return "–" if x is None else f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def render_markdown(doc: dict[str, Any]) -> str:
    """The benchmark as Markdown tables, from benchmark.json's content only."""
    m = doc.get("machine", {})
    v = m.get("versions", {})
    lines = [
        "# Benchmark", "",
        f"- date: {doc.get('date')}",
        f"- command: `{doc.get('command')}`",
        f"- machine: {m.get('platform')}, {m.get('cpus_available')} of {m.get('cpu_count')} CPUs available, "
        f"{m.get('memory_total_gb')} GB; load average at start {_f((m.get('load_average_at_start') or [None])[0], '.2f')}",
        f"- versions: Python {v.get('python')}, torch {v.get('torch')} ({m.get('torch_num_threads')} threads), "
        f"TensorFlow {v.get('tensorflow')}, Keras {v.get('keras')}, shap {v.get('shap')}",
        f"- data: {doc.get('data')}; image size {doc.get('config', {}).get('data', {}).get('image_size')}",
        "",
    ]
    parts = doc.get("parts", {})
    for name, render in (("stages", _md_stages), ("efficiency", _md_efficiency), ("published", _md_published),
                         ("seeds", _md_seeds)):
        if name not in parts:
            continue
        p = parts[name]
        lines += [f"## {name.capitalize()}", ""]
        if p.get("status") == "done" and "measured_at" in p and p.get("command") != doc.get("command"):
            lines += [f"_Measured {p['measured_at']} by `{p['command']}`._", ""]
        if p.get("status") in ("pending", "failed", "skipped"):
            lines += [f"**{p['status']}**" + (f": {p.get('error') or p.get('reason')}" if p["status"] != "pending" else
                                              " (not finished)"), ""]
            continue
        try:
            lines += render(p) + [""]
        except (KeyError, TypeError, ValueError) as exc:  # a view only: never lose benchmark.json over it
            lines += [f"(could not render this part: {type(exc).__name__}: {exc}; see benchmark.json)", ""]
    return "\n".join(lines).rstrip() + "\n"


def _md_stages(p: dict[str, Any]) -> list[str]:
    lines = [f"The whole study, `run_study(cfg, force=True)`; cache: {p['cache']}.", "",
             "| stage | status | seconds |", "|---|---|---:|"]
    lines += [f"| {s['stage']} | {s['status']} | {_s(s['seconds'])} |" for s in p["stages"]]
    lines += [f"| other (arm processes' start-up and imports, selection) | | {_s(p['other_seconds'])} |",
              f"| **wall time** | | **{_s(p['wall_seconds'])}** |", ""]
    for name, a in p["arms"].items():
        info = a["info"]
        extra = ", ".join(f"{k} {_s(info[k]) if isinstance(info[k], float) else info[k]}"
                          for k in ("device", "feature_seconds", "feature_cache", "training_route", "backbone_weights")
                          if k in info)
        lines.append(f"- {name}: test accuracy {_pct(a['test_accuracy'])}; {extra}")
    mem = p["memory"]
    lines.append(f"- peak memory: this process {_f(mem['self_max_rss_mb'], '.0f')} MB, largest child (an arm) "
                 f"{_f(mem['children_max_rss_mb'], '.0f')} MB")
    return lines


def _md_efficiency(p: dict[str, Any]) -> list[str]:
    lines = [f"Rate = passes / explainer seconds; efficiency = rate / the raw forward+backward rate of the same model "
             f"at the explainer's batch size, in the same process (goal ≥ {p['goal']}). Explainer time: the arm's "
             "`explain` re-run in the worker on the study's images and background; cold = its first call in the "
             "process (set-up included: what the study pays), warm = the best later call (Keras reuses its "
             "explainer and TensorFlow graphs).", "",
             "| arm | explainer | passes | batch | raw (img/s) | cold (s) | cold rate (img/s) | cold efficiency | "
             "warm (s) | warm efficiency | study's (s) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []

    def mark(x: float | None) -> str:
        return "–" if x is None else f"{x:.2f} {'✓' if x >= p['goal'] else '✗'}"

    for fw, r in p["frameworks"].items():
        if "error" in r:
            lines.append(f"| {fw} | failed: {r['error'][:200]} | | | | | | | | | |")
            continue
        for method, e in r["explainers"].items():
            lines.append(f"| {r['arm']} | {method} | {e['passes']:,} = {e['pass_formula']} | {e['pass_batch_size']} | "
                         f"{_f(e['raw_images_per_second'])} | {_s(e['seconds'])} | {_f(e['images_per_second'])} | "
                         f"{mark(e['efficiency'])} | {_s(e.get('seconds_warm'))} | {mark(e.get('efficiency_warm'))} | "
                         f"{_s(e['study_seconds'])} |")
            if e.get("max_abs_diff_vs_study") is not None:
                notes.append(f"- {r['arm']} {method}: re-run maps vs the study's, max |diff| "
                             f"{_f(e['max_abs_diff_vs_study'], '.2e')}")
        notes.append(f"- {r['arm']}: threads {r['threads']}; worker peak memory {_f(r['max_rss_mb'], '.0f')} MB")
    lines += [""] + notes + ["", "Passes counted (checked in shap's source):"]
    for method, c in p["pass_counting"].items():
        where = "; ".join(f"`{src['file']}` lines {src['lines']}" for src in c["source"])
        lines.append(f"- {method}: {c['formula']} — {c['why']} ({where}). Not counted: {c['not_counted']}.")
    return lines


def _md_published(p: dict[str, Any]) -> list[str]:
    pub, s = p["published"], p["speedup"]
    lines = [f"PyTorch arm the published way ({pub['how']}) vs the project's stages ({p['study_from']}). "
             "Ratio = published / project seconds.", "",
             "| step | published (s) | project (s) | ratio |", "|---|---:|---:|---:|"]
    labels = {"training": "training", "training_with_decoding": "training (project: + data stage)",
              "test_predictions": "test predictions", "deep_shap": "Deep SHAP",
              "gradient_shap": f"Gradient SHAP (nsamples {s['gradient_shap']['published_nsamples']} vs "
                               f"{s['gradient_shap']['project_nsamples']})", "total": "**total**"}
    for key, label in labels.items():
        r = s[key]
        lines.append(f"| {label} | {_s(r['published'])} | {_s(r['project'])} | {_f(r['ratio'], '.2f')} |")
    t, same, px = pub["train"], pub["same_results"], pub["pixels"]
    ex = pub["explain"]
    pixels = ("identical" if px["identical"]
              else f"{px['n_images_differing']} differ, max |diff| {px['max_abs_diff']}")
    lines += ["",
              f"- published training: {_s(t['data_seconds'])} of {_s(t['seconds'])} s waiting for the DataLoader "
              "(decoding and resizing every epoch)",
              f"- Gradient SHAP per pass: ratio {_f(s['gradient_shap']['ratio_per_pass'], '.2f')}",
              f"- pixels: torchvision `Resize((S,S))` vs the project's decode on {px['n_images']} test images: "
              f"{pixels}",
              f"- normalised inputs (ToTensor+Normalize vs the model's Normalize on raw pixels): max |diff| "
              f"{_f(pub['inputs_max_abs_diff'], '.2e')}",
              f"- test accuracy, same seed: published way {_pct(same['published_test_accuracy'])}, project "
              f"{_pct(same['project_test_accuracy'])}; {same['n_test_predictions_differing']} of {same['n_test']} "
              f"predictions differ; max |weight diff| {_f(same['max_abs_weight_diff'], '.2e')}"]
    lines += [f"- differs from the project: {d}" for d in same.get("differences", [])]
    deep = ex["deep"]
    if "vs_project" in deep:
        d = deep["vs_project"]
        lines.append(f"- Deep SHAP maps of the same model, published way (normalised inputs) vs project (raw pixels): "
                     f"max |diff| {_f(d['max_abs_diff'], '.2e')} (largest attribution {_f(d['max_abs_attribution'], '.2e')}, "
                     f"relative {_f(d['max_rel_diff'], '.2e')})")
    elif "error" in deep:
        lines.append(f"- Deep SHAP the published way failed: {deep['error']}")
    g = ex["gradient"].get("vs_project_same_draws")
    if g:
        lines.append(f"- Gradient SHAP maps with the project's draws (nsamples {g['nsamples']}, rseed {g['rseed']}): "
                     f"max |diff| {_f(g['max_abs_diff'], '.2e')} (relative {_f(g['max_rel_diff'], '.2e')})")
    return lines


def _md_seeds(p: dict[str, Any]) -> list[str]:
    lines = [f"The study for seeds {', '.join(map(str, p['seeds']))} (explainers {p['explainers']}).", "",
             "| model | seeds | mean | std | min | max | published |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in p.get("summary", {}).items():
        lines.append(f"| {name} | {s['n_seeds']} | {_pct(s['mean'])} | {_pct(s['std'])} | {_pct(s['min'])} | "
                     f"{_pct(s['max'])} | {_pct(s['published'])} |")
    lines.append("")
    for seed, r in p["runs"].items():
        accs = ", ".join(f"{n} {_pct(m['test_accuracy'])} (n={m['n_test']})" for n, m in r["models"].items())
        lines.append(f"- seed {seed}: {accs}")
    for name, s in p.get("summary", {}).items():
        if "backbone_weights" in s:
            lines.append(f"- {name} backbone weights: {', '.join(s['backbone_weights'])}")
    if "published_note" in p:
        lines.append(f"- {p['published_note']}")
    return lines


# ----------------------------------------------------------------------------- main


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
        cfg = study_config(args, out)
        if cold_cache is not None and "stages" in args.parts:
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_dir=str(cold_cache)))
        elif (out / "study" / "config.yaml").is_file():  # keep the cache the study was made with
            made = load_config(out / "study" / "config.yaml")
            if made.data.cache_dir == str(cold_cache):
                cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_dir=made.data.cache_dir))
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = shlex.join(["python", "experiments/benchmark.py", *argv])
    header = {"benchmark_version": BENCHMARK_VERSION, "date": now(), "command": command,
              "executable": sys.executable, "cwd": os.getcwd(),
              "machine": machine_info(), "data": cfg.data.root or "digits (scikit-learn)", "config": cfg.to_dict(),
              "parts_requested": args.parts}
    bench = BenchmarkFile(out, header, args.parts)
    ctx = Context(args, cfg, out, bench, cold_cache if "stages" in args.parts else None)
    runners: dict[str, Callable[[Context], dict[str, Any]]] = {
        "stages": part_stages, "efficiency": part_efficiency, "published": part_published, "seeds": part_seeds}
    failed = []
    try:
        for part in args.parts:
            log.info("benchmark: part %s", part)
            t0 = time.perf_counter()
            try:
                result = runners[part](ctx)
            except StudyError as exc:
                bench.set_part(part, {"status": "failed", "error": str(exc), "measured_at": now(), "command": command})
                print(f"error: {exc}", file=sys.stderr)
                return 2
            except Exception as exc:  # noqa: BLE001  (recorded; the other parts still run)
                log.error("benchmark: part %s failed: %s", part, exc)
                failed.append(part)
                bench.set_part(part, {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                      "traceback": traceback.format_exc().splitlines()[-12:],
                                      "measured_at": now(), "command": command})
                continue
            result.setdefault("status", "done")
            bench.set_part(part, {**result, "part_seconds": time.perf_counter() - t0, "measured_at": now(),
                                  "command": command,
                                  "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None})
    finally:
        if cold_cache is not None:
            shutil.rmtree(cold_cache, ignore_errors=True)  # decoded images and features of the timed run
    print(f"benchmark written to {out / 'benchmark.json'} and {out / 'benchmark.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
