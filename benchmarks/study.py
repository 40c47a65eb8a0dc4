"""The study benchmark's parts (:mod:`benchmarks.benchmark` runs them and records what each returns).

The framework-specific measurements run in processes of their own (:func:`benchmarks.measure.in_child`):
the efficiency worker, the published way and the scale part's workers; this process stays free of
PyTorch and TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.measure import in_child, memory, timed
from common import registry
from common.config import StudyConfig, load_config, selected_arms
from common.io import read_json
from common.results import StudyMetrics, read_metrics
from experiments.layout import stage_name

EFFICIENCY_GOAL = 0.8
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
        "the image B times, stacks the B background rows under it and runs one forward+backward over those 2B rows",
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


@dataclasses.dataclass
class Context:
    args: argparse.Namespace
    cfg: StudyConfig  # the benchmark study's config (OUT/study, first seed, maybe an empty cache)
    out: Path
    save_part: Callable[[str, dict[str, Any]], None]  # records a part's progress in benchmark.json
    cold_cache: Path | None  # the emptied cache folder of the stages part, if any
    study_ready: bool = False  # OUT/study holds a finished study of cfg made in this run

    @property
    def study(self) -> Path:
        return Path(self.cfg.out)  # type: ignore[arg-type]


def run_study(cfg: StudyConfig, force: bool):
    """:func:`experiments.pipeline.run_study`, imported when a study runs (it imports scikit-learn)."""
    from experiments.pipeline import run_study as run

    return run(cfg, force=force)


def with_cache(cfg: StudyConfig, cache_dir: str | None) -> StudyConfig:
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_dir=cache_dir))


def study_metrics(study: Path) -> StudyMetrics:
    return read_metrics(read_json(study / "metrics.json"))


def ensure_study(ctx: Context) -> str:
    """Make sure ``OUT/study`` holds a finished study of this configuration; say where it came from."""
    if ctx.study_ready:
        return "the stages part of this run"
    metrics = ctx.study / "metrics.json"
    if metrics.is_file() and read_json(metrics).get("config") == ctx.cfg.to_dict():
        return "an earlier run (OUT/study, same configuration)"
    log.info("benchmark: running the study first (its stage times are not the stages part)")
    run_study(ctx.cfg, force=False)
    ctx.study_ready = True
    return "run in this run as a prerequisite (stages cached where unchanged)"


def part_stages(ctx: Context) -> dict[str, Any]:
    if ctx.cold_cache is not None:
        shutil.rmtree(ctx.cold_cache, ignore_errors=True)
    run, wall = timed(run_study, ctx.cfg, force=True)
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
    cold = "empty at the start (decoded images and Keras features computed in this run)"
    return {
        "study": str(run.out),
        "cache": cold if ctx.cold_cache is not None else "the usual cache (may hold decoded images and features)",
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
        log.info("benchmark: efficiency of the %s arm in its own process", spec.title)
        settings = {"raw_seconds": ctx.args.raw_seconds, "explain_repeats": ctx.args.explain_repeats}
        try:
            result = ctx.out / "efficiency" / f"{spec.key}.json"
            what = f"the {spec.title} benchmark worker"
            results[spec.key] = in_child(
                "benchmarks.efficiency:run", what, result, study=ctx.study, arm=spec.key, **settings
            )
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
    by_stage = {s.stage: s for s in metrics.stages}
    steps = ["train", "predict", *(f"explain_{m}" for m in registry.METHODS)]
    names = {"data": "data", **{step: stage_name(spec, step) for step in steps}}
    seconds: dict[str, Any] = {key: by_stage[name].seconds if name in by_stage else None for key, name in names.items()}
    seconds["statuses"] = {name: by_stage[name].status for name in names.values() if name in by_stage}
    return seconds


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _step(published: float, project: float | None, **more: Any) -> dict[str, Any]:
    return {"published": published, "project": project, "ratio": _ratio(published, project), **more}


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
    passes = {m: registry.METHODS[m].passes(maps[m], 1, e["n_background"], project_nsamples) for m in maps}
    per_pass = {
        m: _ratio(_ratio(e[m]["seconds"], e[m].get("passes")), _ratio(proj[f"explain_{m}"], passes[m])) for m in maps
    }
    pub_total = train["seconds"] + train["test_seconds"] + e["deep"]["seconds"] + e["gradient"]["seconds"]
    steps = [proj[k] for k in ("data", "train", "predict", "explain_deep", "explain_gradient")]
    with_data = proj["train"] + proj["data"] if proj["train"] is not None and proj["data"] is not None else None
    return {
        "training": _step(
            train["seconds"], proj["train"], note="published fit (decoding every epoch) / the project's 'train' stage"
        ),
        "training_with_decoding": _step(
            train["seconds"],
            with_data,
            ratio=_ratio(train["seconds"], (proj["train"] or 0) + (proj["data"] or 0)),
            note="the project's data stage (hash, decode once, split; shared by both arms) counted in",
        ),
        "test_predictions": _step(train["test_seconds"], proj["predict"]),
        "deep_shap": _step(
            e["deep"]["seconds"],
            proj["explain_deep"],
            note="the same passes" if maps["deep"] == every else f"project: {maps['deep']} of {every} maps",
            ratio_per_pass=per_pass["deep"],
        ),
        "gradient_shap": _step(
            e["gradient"]["seconds"],
            proj["explain_gradient"],
            published_nsamples=e["gradient"]["nsamples"],
            project_nsamples=project_nsamples,
            ratio_per_pass=per_pass["gradient"],
        ),
        "total": _step(pub_total, sum(steps) if all(p is not None for p in steps) else None),
    }


def part_published(ctx: Context) -> dict[str, Any]:
    spec = registry.arm_spec(PUBLISHED_WAY_ARM)
    if ctx.cfg.data.root is None:
        return {"status": "skipped", "reason": "the published way reads image files; the digits set has none"}
    if spec not in selected_arms(ctx.cfg):
        reason = f"the published way is measured for the {spec.title} arm (--only {ctx.cfg.only})"
        return {"status": "skipped", "reason": reason}
    source = ensure_study(ctx)
    result = ctx.out / "published" / "result.json"
    nsamples = ctx.args.published_nsamples
    pub = in_child("benchmarks.published_way:run", "the published way", result, study=ctx.study, nsamples=nsamples)
    metrics = study_metrics(ctx.study)
    proj = project_seconds(metrics, spec)
    maps = {m: a.n_maps for m, a in metrics.attributions.get(spec.name, {}).items()}
    return {
        "study_from": source,
        "project_seconds": proj,
        "published": pub,
        "speedup": speedup(pub, proj, int(metrics.config["explain"]["nsamples"]), maps),
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


def _seed_study(ctx: Context, cfg: StudyConfig) -> tuple[StudyMetrics, str]:
    """One seed's study: the benchmark's own where it trained the same models, else run (explainers off)."""
    study_json = ctx.study / "metrics.json"
    if study_json.is_file() and _training_signature(read_json(study_json)["config"]) == _training_signature(
        cfg.to_dict()
    ):
        return study_metrics(ctx.study), str(ctx.study)
    log.info("benchmark: the study for seed %d (explainers off)", cfg.seed)
    return study_metrics(run_study(cfg, force=False).out), str(cfg.out)


def part_seeds(ctx: Context) -> dict[str, Any]:
    base_cache = load_config(ctx.args.config).data.cache_dir  # the usual cache, not the stages part's empty one
    runs: dict[str, Any] = {}
    explainers = "off (accuracy only; the explainers do not change the models)"
    result: dict[str, Any] = {"status": "running", "seeds": ctx.args.seeds, "runs": runs, "explainers": explainers}
    for seed in ctx.args.seeds:
        cfg = dataclasses.replace(
            with_cache(ctx.cfg, base_cache),
            seed=seed,
            out=str(ctx.out / "seeds" / f"seed-{seed}"),
            explain=dataclasses.replace(ctx.cfg.explain, methods=()),
        )
        (metrics, source), seconds = timed(_seed_study, ctx, cfg)
        runs[str(seed)] = {"from": source, "seconds": seconds, "models": seed_run(metrics)}
        ctx.save_part("seeds", {**result, "summary": seed_summary(runs)})
    published = {"published": published_accuracy(), "published_note": PUBLISHED_NOTE}
    return {**result, "status": "done", "summary": seed_summary(runs), **published, "memory": memory()}


def published_accuracy() -> dict[str, float]:
    """The published test accuracies by metrics.json model name (e.g. the PyTorch CNN's)."""
    return {registry.arm_spec(key).name: acc for key, acc in PUBLISHED_ACCURACY.items() if key in registry.ARMS}


def seed_summary(runs: dict[str, Any]) -> dict[str, Any]:
    """Mean, sample std (ddof 1; 0 for one seed), min and max of each arm's test accuracy."""
    names = sorted({n for r in runs.values() for n in r["models"]})
    published = published_accuracy()
    out = {}
    for name in names:
        models = [r["models"][name] for r in runs.values() if name in r["models"]]
        acc = [m["test_accuracy"] for m in models]
        weights = sorted({str(m["backbone_weights"]) for m in models if "backbone_weights" in m})
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

    a = ctx.args
    progress = lambda partial: ctx.save_part("scale", partial)
    record = run_scale(ctx.cfg, a.scale_sizes, steps=a.scale_steps, tmp_dir=a.scale_dir, on_progress=progress)
    return {**record, "memory": memory()}


# The parts, in the order they run.
RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "stages": part_stages,
    "efficiency": part_efficiency,
    "published": part_published,
    "seeds": part_seeds,
    "scale": part_scale,
}
