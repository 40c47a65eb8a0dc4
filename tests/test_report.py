"""Figures and both reports from a synthetic run (no framework needed)."""

from __future__ import annotations

import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import numpy as np
from PIL import Image

from common import registry
from common.explanation import Explanation
from common.quality.agreement import agreement
from common.report.figures import build_figures
from common.report.render import write_reports
from common.results import SCHEMA_VERSION, read_metrics
from common.typed_json import to_json

FALLBACK = "Keras ResNet50 backbone: random (ImageNet weights unavailable) — this run is not transfer learning"
NASTY = "<b>x</b>"


def _explanation(method: str, n: int, k: int, size: int, seed: int) -> Explanation:
    rng = np.random.default_rng(seed)
    attr = rng.normal(size=(n, k, size, size, 3)).astype(np.float32)
    base = rng.normal(size=k).astype(np.float32)
    outputs = (attr.reshape(n, k, -1).sum(-1) + base).astype(np.float32)  # additive by construction
    z = np.exp(outputs - outputs.max(1, keepdims=True))
    probs = z / z.sum(1, keepdims=True)
    return Explanation(
        method=method,
        output="logits",
        attributions=attr,
        base_values=base,
        outputs=outputs,
        probabilities=probs.astype(np.float32),
        seconds=1.5,
        n_background=4,
        nsamples=None if method == "deep" else 8,
    )


def synthetic_run(classes=("cat", "dog|*wild*", NASTY), n=2, size=8, arms=("pytorch", "keras"), epochs=3, seed=0):
    """Typed metrics, explained images and Explanations shaped like the runner's."""
    k = len(classes)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    true = np.arange(n) % k
    models, explanations, attributions = {}, {}, {}
    for a, arm in enumerate(arms):
        key = registry.ARMS[arm].name
        m = {
            "test_accuracy": 0.9 - 0.1 * a,
            "test_accuracy_ci95": [0.8, 0.95],
            "per_class": {c: {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 5} for c in classes},
            "confusion_matrix": (np.eye(k, dtype=int) * 4 + 1).tolist(),
            "history": {
                "train_loss": list(np.linspace(2, 0.5, epochs)),
                "train_accuracy": list(np.linspace(0.3, 0.9, epochs)),
                "val_loss": list(np.linspace(2.1, 0.7, epochs)),
                "val_accuracy": list(np.linspace(0.3, 0.85, epochs)),
            },
            "best_val_epoch": epochs,
            "train_seconds": 12.3 + a,
            "predict_seconds": 0.1,
            "info": {"device": "cpu"},
        }
        if arm == "keras":
            m["backbone_weights"] = "random (ImageNet weights unavailable)"
        models[key] = m
        attributions[key] = {}
        for b, method in enumerate(("deep", "gradient")):
            ex = _explanation(method, n, k, size, seed=10 * a + b)
            explanations[(arm, method)] = ex
            attributions[key][method] = {
                "seconds": ex.seconds,
                "n_images": n,
                "n_background": 4,
                "output": "logits",
                "n_classes_explained": k,
                "nsamples": ex.nsamples,
                "additivity_max_abs_error": ex.additivity_max_abs_error,
            }
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "dataset": {
            "name": "synthetic <set>",
            "root": "/data/<weird> & path",
            "layout": "folders",
            "classes": list(classes),
            "image_size": size,
            "held_out_folder": "test",
            "resize": "PIL.BILINEAR",
            "data_key": "k",
            "counts": {s: {c: 5 for c in classes} for s in ("train", "val", "test")},
            "skipped": [{"path": "x/.DS_Store", "reason": "not an image"}],
        },
        "config": {
            "seed": 0,
            "data": {"root": "/data/<weird> & path"},
            "explain": {
                "output": "logits",
                "n_background": 4,
                "nsamples": 8,
                "methods": ["deep", "gradient"],
                "n_explain": n,
            },
        },
        "versions": {"python": "3.11.7", "shap": "0.51.0", "torch": "2.14.1" if "pytorch" in arms else None},
        "models": models,
        "attributions": attributions,
        "fallbacks": [FALLBACK] if "keras" in arms else [],
        "stages": [{"stage": "train pytorch", "status": "ran", "seconds": 12.3}],
        "selection": {"explain_test_positions": list(range(n)), "background_train_positions": [0, 1, 2, 3]},
    }
    if len(arms) == 2:
        metrics["comparison"] = {
            "mcnemar_p": 0.5,
            "only_pytorch_correct": 3,
            "only_keras_correct": 1,
            "both_correct": 9,
            "both_wrong": 2,
            "n": 15,
        }
        maps = {f"{arm}_{method}": ex.attributions for (arm, method), ex in explanations.items()}
        cls = {f"{arm}_{method}": ex.probabilities.argmax(1) for (arm, method), ex in explanations.items()}
        metrics["agreement"] = agreement(maps, cls)
    return read_metrics(metrics), images, true, list(classes), explanations


def _render(out: Path, **kw):
    metrics, images, true, classes, explanations = synthetic_run(**kw)
    figures = build_figures(out, metrics, images, true, classes, explanations)
    md, html = write_reports(out, metrics, figures)
    return metrics, figures, md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8")


def test_full_report(tmp_path):
    metrics, figures, md, html = _render(tmp_path)
    assert set(figures) == {
        "training_curves",
        "confusion_matrices",
        "attribution_grid",
        "shap_pytorch_deep",
        "shap_pytorch_gradient",
        "shap_keras_deep",
        "shap_keras_gradient",
    }
    for rel in figures.values():
        assert rel.startswith("figures/") and (tmp_path / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(tmp_path / rel) as png:  # opaque figures are stored without an alpha channel
            assert png.mode == "RGB" and min(png.size) > 100
        assert f"]({rel})" in md  # Markdown links the PNGs relatively
    # HTML is one self-contained file: every image is a data URI, nothing else is fetched
    srcs = re.findall(r'src="([^"]*)"', html)
    assert len(srcs) == len(figures) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "figures/" not in html.replace("(figure missing", "")
    assert not re.search(r'<link|href="(?!#)', html)
    # user strings are escaped, never raw
    assert "&lt;b&gt;x&lt;/b&gt;" in html and NASTY not in html
    assert "synthetic &lt;set&gt;" in html and "&lt;weird&gt; &amp; path" in html
    assert NASTY not in md and r"\<b\>x\</b\>" in md
    assert r"dog\|\*wild\*" in md and "dog|*wild*" in html
    # content
    for text in (md, html):
        assert FALLBACK in text
        assert "p = 0.500;" in text  # McNemar p
        assert "No significant difference between the two models" in text and "Macro" not in text
        assert "Keras ResNet50" in text and "PyTorch CNN" in text
        assert "random (ImageNet weights unavailable)" in text
        assert "logits" in text and "pre-softmax" in text
        assert "PyTorch Deep SHAP vs Keras Deep SHAP" in text
        assert "x/.DS" in text and "not an image" in text
        assert "0.51.0" in text
    # Markdown tables are well formed: every row of a table has as many cells as its header
    for block in re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.M):
        rows = [r for r in block.strip().split("\n")]
        widths = {len(re.split(r"(?<!\\)\|", r)) for r in rows}
        assert len(widths) == 1, block


def test_same_inputs_same_report(tmp_path):
    _, _, md1, html1 = _render(tmp_path / "a")
    _, _, md2, html2 = _render(tmp_path / "b")
    assert md1 == md2 and html1 == html2


def test_only_pytorch(tmp_path):
    metrics, figures, md, html = _render(tmp_path, arms=("pytorch",))
    assert metrics.comparison is None and metrics.agreement is None
    assert set(figures) == {
        "training_curves",
        "confusion_matrices",
        "attribution_grid",
        "shap_pytorch_deep",
        "shap_pytorch_gradient",
    }
    for text in (md, html):
        assert "PyTorch CNN only" in text
        assert "No paired comparison" in text
        assert "Keras ResNet50" not in text
    assert "## Fallbacks and caveats\n\nNone." in md


def test_no_explanations(tmp_path):
    metrics, images, true, classes, _ = synthetic_run(arms=("pytorch",))
    metrics.attributions = {}
    figures = build_figures(tmp_path, metrics, None, None, classes, {})
    assert set(figures) == {"training_curves", "confusion_matrices"}
    md, html = write_reports(tmp_path, metrics, figures)
    assert "No explanations were computed" in md.read_text(encoding="utf-8")


def test_no_module_of_common_imports_a_framework():
    code = (
        "import importlib, pkgutil, sys, common; "
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(common.__path__, 'common.')]; "
        "bad = [m for m in ('torch', 'tensorflow', 'keras', 'shap') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_grayscale_images_and_many_classes(tmp_path):
    from common.report.plots import attribution_grid_figure, save_figure
    from common.report.shap_plot import shap_image_figure

    k = 12
    ex = _explanation("deep", n=3, k=k, size=8, seed=1)
    ex.attributions = ex.attributions[..., :1].copy()  # one channel
    images = np.random.default_rng(0).integers(0, 256, size=(3, 8, 8, 1), dtype=np.uint8)
    names = [f"class {i} $with$ dollars" for i in range(k)]  # "$" must not be read as mathtext
    grid = save_figure(attribution_grid_figure(images, [0, 1, 2], names, {"PyTorch Deep SHAP": ex}), tmp_path / "g.png")
    shap_fig = shap_image_figure(images, ex, names, max_images=2, max_classes=3, title="t")
    shap_png = save_figure(shap_fig, tmp_path / "shap.png", bbox_inches="tight")
    for p in (grid, shap_png):
        assert p.read_bytes()[:4] == b"\x89PNG"


def test_mcnemar_p_is_written_with_its_relation():
    from common.report.text import fmt_p

    assert fmt_p(0.5) == "= 0.500" and fmt_p(1e-9) == "< 0.001" and fmt_p(None) == "= —"


def test_metrics_round_trip_through_json_and_an_older_schema_is_named(tmp_path):
    metrics, *_ = synthetic_run()
    plain = to_json(metrics)
    assert list(plain)[:2] == ["schema_version", "dataset"]
    assert plain["comparison"]["only_pytorch_correct"] == 3 and plain["comparison"]["only_keras_correct"] == 1
    assert "nsamples" not in plain["attributions"]["pytorch_cnn"]["deep"]  # empty optional fields are left out
    assert "backbone_weights" not in plain["models"]["pytorch_cnn"]
    again = read_metrics(plain)
    assert again == metrics and to_json(again) == plain
    assert again.comparison.only_a_correct == 3 and again.models["pytorch_cnn"].per_class["cat"].recall == 0.8

    # A metrics.json written before schema versions existed reads as version 0, and the report says so.
    old = {k: v for k, v in plain.items() if k != "schema_version"}
    md, html = write_reports(tmp_path, read_metrics(old), {})
    for text in (md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8")):
        assert "schema version 0" in text and "older version of the study" in text
    md, _ = write_reports(tmp_path, metrics, {})
    assert "schema version" not in md.read_text(encoding="utf-8")


def _estimate(mean: float, n: int = 2) -> dict:
    return {"mean": mean, "ci95": [mean - 0.05, mean + 0.05], "n": n}


def _quality(arms=("pytorch", "keras"), methods=("deep", "gradient", "gradinput")) -> dict:
    """A small metrics.json ``quality`` shaped like the assess stage's."""
    fractions = [0.0, 0.5, 1.0]
    by_arm = {}
    for arm in arms:
        per_method = {}
        for i, method in enumerate(methods):
            per_method[method] = {
                "n_images": 2,
                "n_sanity": 2,
                "deletion_auc": _estimate(0.11 + 0.01 * i),
                "insertion_auc": _estimate(0.41 - 0.01 * i),
                "deletion_p_vs_random": 0.0004,
                "insertion_p_vs_random": 0.25,
                "deletion_chance_fraction": _estimate(0.3),
                "sparseness": _estimate(0.7),
                "random_logit_rho": _estimate(-0.1),
                "random_logit_abs_rho": _estimate(0.6),
                "randomisation": {
                    "head": {"abs_rho": _estimate(0.62), "signed_rho": _estimate(0.06)},
                    "all": {"abs_rho": _estimate(0.52), "signed_rho": _estimate(0.01)},
                },
                "noise_floor_rho": _estimate(0.5) if method == "gradient" else None,
                "cross_library": (
                    {"library": "captum", "max_relative_difference": 1.1e-7, "rho": _estimate(1.0)}
                    if method == "deep"
                    else None
                ),
                "deletion_curve": [0.3, 0.1 + 0.01 * i, 0.1],
                "insertion_curve": [0.1, 0.4 - 0.01 * i, 0.3],
                "seconds": 1.0,
            }
        by_arm[registry.ARMS[arm].name] = {
            "fractions": fractions,
            "chance": 1 / 3,
            "random": {
                "n_orders": 2,
                "deletion_auc": _estimate(0.19),
                "insertion_auc": _estimate(0.18),
                "deletion_chance_fraction": _estimate(0.85),
                "deletion_curve": [0.3, 0.2, 0.1],
                "insertion_curve": [0.1, 0.2, 0.3],
            },
            "methods": per_method,
            "method_tests": {"deep~gradient": {"deletion_p": 0.562, "insertion_p": 0.031}},
            "seconds": 3.0,
        }
    return {
        "settings": {
            "steps": 2,
            "random_orders": 2,
            "deletion_fill": "the background set's mean image",
            "insertion_baseline": "a blurred copy",
            "explained_class": "each model's predicted class",
            "n_sanity": 2,
            "randomised_scopes": {"head": "the dense head", "all": "every learned weight"},
            "randomisation_rule": "re-drawn from a normal distribution",
            "sanity_threshold": 0.5,
        },
        "arms": by_arm,
        "findings": ["PyTorch CNN: <b>Deep SHAP</b> beats | random *order*.", "A second finding."],
    }


def _verdict(status: str, mean: float, n: int = 12, p_holm: float | None = 0.002, needed: int | None = None) -> dict:
    out = {"status": status, "n": n, "effect": _estimate(mean, n), "reference": 0.5, "p": p_holm, "p_holm": p_holm}
    return {**out, "rule": "a rule", **({"n_needed": needed} if needed else {})}


def _quality_v3() -> dict:
    """:func:`_quality` with what schema version 3 adds: verdicts, the null, SSIM, the Monte Carlo error."""
    quality = _quality()
    for name, arm in quality["arms"].items():
        few = name == "keras_resnet50"  # this arm's sanity checks had too few images
        arm.update(family_size=22, n_needed=10, winners={"deletion": "gradient"}, plan=None)
        arm["random_chance"] = {"median": 0.85, "n": 12, "censored": 3}
        if few:
            arm["more_images"] = {"n_needed": 10, "n_sanity": 1, "n_explained": 20, "flags": "--n-sanity 10",
                                  "seconds": 54.0}  # fmt: skip
        for method, mq in arm["methods"].items():
            sanity = _verdict("too few images", 0.06, 1, None, 10) if few else _verdict("pass", 0.06)
            mq["verdicts"] = {
                "deletion": _verdict("pass", -0.08),
                "insertion": _verdict("not significant", 0.01, p_holm=0.4),
                "randomisation_head": sanity,
                "randomisation_all": sanity,
                "random_logit": sanity,
            }
            for scope in ("head", "all"):
                mq["randomisation"][scope].update(ssim=_estimate(0.3), verdict=sanity)
            mq.update(deletion_effect=_estimate(-0.08), chance={"median": 0.3, "n": 12, "censored": 0})
            mq["null"] = {"signed_rho": _estimate(0.01), "abs_rho": _estimate(0.61), "ssim": _estimate(0.2)}
            if method == "gradient":
                mq["monte_carlo"] = {"relative_error": 0.057, "relative_standard_error": 0.061, "n": 12}
                mq["reliability"] = _estimate(0.86)
                mq["verdicts"]["monte_carlo"] = _verdict("pass", 0.001, p_holm=0.9)
    return quality


def _render_with_quality(out: Path, quality: dict | None = None):
    metrics, images, true, classes, explanations = synthetic_run()
    metrics = read_metrics({**to_json(metrics), "quality": quality or _quality_v3()})
    metrics.agreement.compared_class = "true"
    metrics.agreement.ceiling = {pair: 0.75 for pair in metrics.agreement.pairs}
    metrics.agreement.top_k = {pair: 0.31 for pair in metrics.agreement.pairs}
    metrics.agreement.top_k_fraction = 0.1
    figures = build_figures(out, metrics, images, true, classes, explanations)
    md, html = write_reports(out, metrics, figures)
    return figures, md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8")


def test_quality_section(tmp_path):
    figures, md, html = _render_with_quality(tmp_path)
    assert "quality_curves" in figures and f"]({figures['quality_curves']})" in md
    assert html.count('src="data:image/png;base64,') == len(figures)
    section = md[md.index("## Attribution quality") : md.index("## Data set")]
    faithfulness = section[section.index("### Faithfulness") : section.index("### Sanity checks")]
    rows = [r for r in faithfulness.splitlines() if r.startswith("| ") and not r.startswith("| Model")]
    # one random-order row and one row per method for each model
    for model in ("PyTorch CNN", "Keras ResNet50"):
        titles = [re.split(r"(?<!\\)\|", r)[2].strip() for r in rows if r.startswith(f"| {model} |")]
        assert titles == [
            "random order (2 per image)",
            "Deep SHAP",
            "Gradient SHAP",
            "Gradient × (x − mean background) (baseline)",
        ]
    for text in (md, html):
        assert "Attribution quality" in text and "Ceiling" in text
        assert "0.110 [0.060, 0.160]" in text  # deletion AUC with its interval
        assert "−0.08" in text or "-0.08" in text  # its difference from the random orders'
        assert "0.85" in text and "3 of 12" in text  # the random orders' fraction at chance, censored images
        assert "Deep SHAP vs Gradient SHAP: deletion p = 0.562" in text
        assert "a blurred copy" in text and "the dense head" in text
        assert "0.750" in text and "0.31" in text  # the agreement's ceiling and top-k columns
        assert "0.057 ± 0.061" in text  # Gradient SHAP's additivity beside its Monte Carlo error
        assert "by deletion, Gradient SHAP is more faithful" in text
        assert "--n-sanity 10" in text and "about 54 s more" in text  # what a verdict with too few images needs
    # the generated findings are shown verbatim but escaped
    assert r"\<b\>Deep SHAP\</b\> beats \| random \*order\*." in md and "<b>Deep SHAP" not in md
    assert "&lt;b&gt;Deep SHAP&lt;/b&gt; beats | random *order*." in html
    # every Markdown table keeps its column count
    for block in re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.M):
        assert len({len(re.split(r"(?<!\\)\|", r)) for r in block.strip().split("\n")}) == 1, block


def test_at_a_glance_heads_the_report_with_one_row_per_model_and_method(tmp_path):
    _, md, html = _render_with_quality(tmp_path)
    assert md.index("## At a glance") < md.index("## Fallbacks and caveats")
    glance = md[md.index("## At a glance") : md.index("## Fallbacks and caveats")]
    rows = [r for r in glance.splitlines() if r.startswith("| PyTorch") or r.startswith("| Keras")]
    assert len(rows) == 6  # two models x three methods
    pytorch_deep = rows[0]
    assert "[✓](#faithfulness)" in pytorch_deep and "Holm p = 0.002" in pytorch_deep and "n = 12" in pytorch_deep
    assert "[✓](#sanity-checks)" in pytorch_deep
    keras_deep = rows[3]
    assert "[too few images](#sanity-checks)" in keras_deep and "(needs 10)" in keras_deep
    assert 'id="faithfulness"' in html and 'href="#sanity-checks"' in html and 'id="at-a-glance"' in html
    assert html.index('id="at-a-glance"') < html.index("Fallbacks and caveats")


def test_an_older_quality_section_still_renders_and_says_so(tmp_path):
    _, md, html = _render_with_quality(tmp_path, {**_quality(), "arms": _quality()["arms"]})
    for text in (md, html):
        assert "Attribution quality" in text and "0.110 [0.060, 0.160]" in text
    metrics, *_ = synthetic_run()
    old = read_metrics({**to_json(metrics), "schema_version": 2, "quality": _quality()})
    md, _ = write_reports(tmp_path, old, {})
    text = md.read_text(encoding="utf-8")
    assert "schema version 2" in text and "older version of the study" in text


def test_no_quality_no_section(tmp_path):
    metrics, figures, md, html = _render(tmp_path)
    assert metrics.quality is None and "quality_curves" not in figures
    for text in (md, html):
        assert "Attribution quality" not in text and "At a glance" not in text
        assert "Noise floor" in text  # the agreement table of maps at each model's predicted class


def test_attribution_grid_one_scale_per_row():
    from common.report.plots import attribution_grid_figure

    metrics, images, true, classes, explanations = synthetic_run(n=3)
    columns = {registry.map_title(*key): ex for key, ex in explanations.items()}
    # make the columns' magnitudes differ a lot, so per-map scales would differ
    for j, ex in enumerate(columns.values()):
        ex.attributions = ex.attributions * (10.0**j)
    fig = attribution_grid_figure(images, true, classes, columns)
    axes = np.array(fig.axes[: 3 * (1 + len(columns))]).reshape(3, 1 + len(columns))
    for i in range(3):
        expected = max(
            float(np.abs(ex.attributions[i, int(np.argmax(ex.probabilities[i]))].sum(-1)).max())
            for ex in columns.values()
        )
        limits = set()
        for ax in axes[i, 1:]:
            grey, attribution = ax.get_images()  # the grey image under the map
            assert grey.get_cmap().name == "gray"
            limits.add((attribution.norm.vmin, attribution.norm.vmax))
        assert limits == {(-expected, expected)}, limits


def test_names_users_choose_are_escaped_in_both_reports(tmp_path):
    script, quotes, accents, long = "<script>alert(1)", "a&b\"c'd", "café noir", "n" * 199 + "Z"
    _, _, md, html = _render(tmp_path, classes=(script, quotes, accents, long))
    assert script not in html and "&lt;script&gt;alert(1)" in html
    assert quotes not in html and "a&amp;b&#34;c&#39;d" in html
    assert "<script" not in html.lower()  # no markup from a name, anywhere
    assert script not in md and r"\<script\>alert(1)" in md
    assert quotes in md  # Markdown: quotes and a lone ampersand are plain text, kept as typed
    for text in (md, html):
        assert accents in text and long in text  # kept whole, not mangled or cut


def _framework_sections() -> dict:
    """metrics.json's "Is it the framework?" and 2 x 2 parts, with known figures."""
    twin = {
        "deep": {"max_relative_difference": 3.2e-7, "rho": _estimate(0.9999, 12), "n_maps": 24,
                 "models_rho": 0.109, "models_ceiling": 1.0,
                 "verdict": {**_verdict("pass", 3.2e-7, 24, None), "reference": 1e-3,
                             "effect": {"mean": 3.2e-7, "ci95": [None, None], "n": 24}}},
        "gradient": {"max_relative_difference": 4.1e-6, "rho": _estimate(0.9998, 12), "n_maps": 24,
                     "ceiling": _estimate(0.83, 12), "models_rho": 0.097, "models_ceiling": 0.9,
                     "verdict": _verdict("pass", 0.17, 12, 0.99)},
    }  # fmt: skip
    comparison = {"mcnemar_p": 0.0001, "only_pytorch_correct": 30, "only_keras_correct": 2, "both_correct": 300,
                  "both_wrong": 28, "n": 360}  # fmt: skip
    comparisons = [
        {"factor": factor, "held": held, "arm_a": "pytorch_cnn", "arm_b": "keras_resnet50", "accuracy_difference": d,
         "comparison": comparison, "mcnemar_p_holm": p, "rho": {"deep": 0.5, "gradient": 0.45},
         "ceiling": {"deep": 1.0, "gradient": 0.9}, "n_images": {"deep": 20, "gradient": 20}}
        for factor, held, d, p in (("framework", "CNN", 0.012, 0.62), ("framework", "ResNet50", -0.02, 0.5),
                                   ("architecture", "PyTorch", 0.19, 0.0004), ("architecture", "Keras", 0.18, 0.0004))
    ]  # fmt: skip
    factorial = {
        "frameworks": ["PyTorch", "Keras"],
        "architectures": ["CNN", "ResNet50"],
        "cells": {"CNN": {"PyTorch": "pytorch_cnn", "Keras": "keras_resnet50"},
                  "ResNet50": {"PyTorch": "pytorch_cnn", "Keras": "keras_resnet50"}},
        "comparisons": comparisons,
        "retraining": {"pytorch_cnn": {"deep": _estimate(0.61)}, "keras_resnet50": {"deep": _estimate(0.55)}},
        "defaults": {"CNN": [["batch-norm epsilon", "1e-05", "0.001"]]},
    }  # fmt: skip
    check = {"source": "pytorch_cnn", "twin": "keras_twin_cnn", "other": "keras_resnet50", "test_accuracy": 0.9861,
             "twin_test_accuracy": 0.9861, "predictions_differ": 0, "n_test": 360, "methods": twin}  # fmt: skip
    return {"framework_check": check, "factorial": factorial}


def test_is_it_the_framework_and_the_two_by_two_sections(tmp_path):
    metrics, images, true, classes, explanations = synthetic_run()
    metrics = read_metrics({**to_json(metrics), "quality": _quality_v3(), **_framework_sections()})
    figures = build_figures(tmp_path, metrics, images, true, classes, explanations)
    md, html = (p.read_text(encoding="utf-8") for p in write_reports(tmp_path, metrics, figures))
    section = md[md.index("## Is it the framework?") : md.index("## Attribution quality")]
    assert "## Framework or architecture? The 2 × 2" in section
    for text in (section.replace("\\<", "<"), unescape(html)):
        assert "3.2e-07" in text and "0.109" in text and "0.830" in text  # difference, the arms' rho, the ceiling
        assert "Test accuracy: PyTorch CNN 0.9861, its twin 0.9861 (0 of 360" in text
        assert (
            "With identical weights (PyTorch CNN) the two frameworks' maps agree: Deep SHAP to 3e-07 of the largest "
            "value; Gradient SHAP to 4e-06 of the largest value (ρ 1.000, above two draws of one framework: 0.830); "
            "the differences between the two published arms' maps (ρ 0.10–0.11) come from the models, not from the "
            "frameworks."
        ) in text
        assert "+1.2 points" in text and "+19.0 points" in text  # the effects
        assert "Holm p = 0.620" in text and "Holm p < 0.001" in text
        framework_effect = "Framework effect, the same architecture in the two frameworks: accuracy CNN: +1.2 points"
        assert f"{framework_effect} (not significant" in text
        assert "Architecture effect" in text and "retraining ceiling 0.550" in text
        assert "batch-norm epsilon" in text
    glance = md[md.index("## At a glance") : md.index("## Fallbacks and caveats")]
    assert "Other framework, same weights" in glance and "[✓](#is-it-the-framework)" in glance
    assert 'id="is-it-the-framework"' in html and 'href="#is-it-the-framework"' in html
    for block in re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.M):  # every Markdown table keeps its column count
        assert len({len(re.split(r"(?<!\\)\|", r)) for r in block.strip().split("\n")}) == 1, block


def test_the_framework_sections_as_tables():
    from common.report.tables import factorial_table, framework_check_table

    metrics, *_ = synthetic_run()
    metrics = read_metrics({**to_json(metrics), **_framework_sections()})
    check = framework_check_table(metrics)
    assert check["method"].tolist() == ["deep", "gradient"] and set(check["status"]) == {"pass"}
    assert check.loc[0, "max_relative_difference"] == 3.2e-7 and check.loc[1, "ceiling"] == 0.83
    assert check.loc[0, "arm"] == "pytorch" and check.loc[0, "models_rho"] == 0.109
    design = factorial_table(metrics)
    assert len(design) == 8  # four comparisons x two methods
    assert design["factor"].tolist().count("framework") == 4
    first = design.iloc[0]
    assert (first["held"], first["method"], first["retraining_a"], first["retraining_b"]) == ("CNN", "deep", 0.61, 0.55)
    empty, _, _, _, _ = synthetic_run()
    assert framework_check_table(empty).empty and factorial_table(empty).empty
