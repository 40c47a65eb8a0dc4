"""A study's output folder, opened (:func:`experiments.open_study`): its config and results, the
report's tables as pandas DataFrames, the explained images and each model's maps as NumPy
arrays, and every figure of the report as a matplotlib Figure drawn by the report's own code.

It reads what the folder holds and nothing else: a part the folder lacks (an example folder
committed without its arrays, a study that has not finished) raises
:class:`common.errors.UnavailableError` saying which part and why, when it is asked for.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from common import registry
from common.config import SCALARS, SECTIONS, StudyConfig, from_dict
from common.errors import ChoiceError, NotAStudyError, StudyError, UnavailableError
from common.explanation import Explanation, channel_sum
from common.report import figures
from common.report.context import schema_note
from common.report.names import arm_key, method_title, model_title
from common.results import SCHEMA_VERSION, DatasetSummary, StudyMetrics, read_metrics
from common.typed_json import from_json
from experiments.layout import ArmPaths, prepare_data

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

HINT = "run_study(out=...) or experiments/run_all.py --out ... writes one"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NotAStudyError(f"{path} cannot be read: {exc}") from None


def _metrics(path: Path) -> StudyMetrics:
    """metrics.json (or evaluation.json) as typed results, of any schema version this code can read."""
    values = _read_json(path)
    version = values.get("schema_version", 0) if isinstance(values, dict) else None
    try:
        return read_metrics(values)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise NotAStudyError(
            f"{path} cannot be read as a study's results (schema version {version}; this code reads versions 0 to "
            f"{SCHEMA_VERSION}): {exc}"
        ) from None


class Study:
    """A study's output folder: what :func:`experiments.open_study` and :func:`experiments.run_study` return.

    Attributes
    ----------
    out : pathlib.Path
        The output folder.
    finished : bool
        Whether the report stage finished (metrics.json exists). A study whose evaluate stage
        finished but not its report reads its results from evaluation.json; one with its data
        stage only has a config and a data set but no results.
    """

    def __init__(self, out: Path, config: Mapping[str, Any], dataset: DatasetSummary, metrics: StudyMetrics | None):
        self.out = out
        self._config = dict(config)
        self._dataset = dataset
        self._metrics = metrics
        self.finished = (out / "metrics.json").is_file()
        self._explanations: dict[tuple[str, str, int | None], Explanation] = {}

    @classmethod
    def open(cls, out: str | os.PathLike) -> Study:
        """The study in ``out`` (see :func:`experiments.open_study`).

        Raises
        ------
        common.errors.NotAStudyError
            ``out`` is not a study's output folder, or its results cannot be read.
        """
        out = Path(os.path.abspath(Path(out).expanduser()))  # absolute, ".." folded, links kept
        if not out.is_dir():
            why = "it is a file" if out.exists() else "it does not exist"
            raise NotAStudyError(f"{out} is not a study's output folder: {why} ({HINT})")
        config, dataset = out / "config.yaml", out / "data" / "dataset.json"
        results = next((p for p in (out / "metrics.json", out / "evaluation.json") if p.is_file()), None)
        if results is None and not (config.is_file() and dataset.is_file()):
            raise NotAStudyError(
                f"{out} is not a study's output folder: it holds neither metrics.json nor config.yaml with "
                f"data/dataset.json ({HINT})"
            )
        metrics = None if results is None else _metrics(results)
        values = metrics.config if metrics is not None else {}
        if config.is_file():
            try:
                values = yaml.safe_load(config.read_text(encoding="utf-8")) or values
            except (OSError, yaml.YAMLError) as exc:
                raise NotAStudyError(f"{config} cannot be read: {exc}") from None
        summary = metrics.dataset if metrics is not None else from_json(DatasetSummary, _read_json(dataset))
        return cls(out, values, summary, metrics)

    def __repr__(self) -> str:
        state = "finished" if self.finished else "results only, no report" if self._metrics else "not finished"
        models = ", ".join(f"{model_title(n)} {e.test_accuracy:.4f}" for n, e in self._models().items()) or "no model"
        return f"<Study {str(self.out)!r}: {self._dataset.name}, {len(self.class_names)} classes; {models}; {state}>"

    # ------------------------------------------------------------------ config and results

    @cached_property
    def config(self) -> StudyConfig:
        """The study's config (config.yaml), without the sections of arms this process does not know."""
        known = (*SCALARS, *SECTIONS, *registry.ARMS)
        return from_dict({k: v for k, v in self._config.items() if k in known})

    @property
    def metrics(self) -> StudyMetrics:
        """The typed results (what metrics.json holds, :mod:`common.results`).

        Raises
        ------
        common.errors.UnavailableError
            The study has no results yet (its evaluate stage has not finished).
        """
        if self._metrics is None:
            raise UnavailableError(
                f"{self.out} holds no results yet: the study stopped before its evaluate stage; run it again "
                "with the same settings to finish it"
            )
        return self._metrics

    def _models(self) -> dict:
        return self._metrics.models if self._metrics is not None else {}

    @property
    def schema_version(self) -> int:
        """The schema version of the results (:data:`common.results.SCHEMA_VERSION` is this code's)."""
        return self.metrics.schema_version

    @property
    def schema_note(self) -> str | None:
        """What the report says of results of another schema version than this code's (None: the same)."""
        return schema_note(self.metrics.schema_version)

    @property
    def dataset(self) -> DatasetSummary:
        """The data set as the study used it: name, classes, image size, counts, skipped files."""
        return self._dataset

    @property
    def class_names(self) -> list[str]:
        """The K class names, in the order of the class indices."""
        return list(self._dataset.classes)

    @property
    def arms(self) -> list[str]:
        """The keys of the arms with results (e.g. ``["pytorch", "keras"]``), in the study's order."""
        return [arm_key(n) for n in self._models()]

    @property
    def methods(self) -> list[str]:
        """The keys of the methods whose maps the study holds (e.g. ``["deep", "gradient"]``)."""
        attributions = self._metrics.attributions if self._metrics is not None else {}
        return list(dict.fromkeys(m for by in attributions.values() for m in by))

    @property
    def training_seeds(self) -> list[int]:
        """The training seeds: a seed sweep's, else the one seed."""
        if self._metrics is not None and self._metrics.seeds is not None:
            return list(self._metrics.seeds.seeds)
        seeds = self._config.get("seeds")
        return list(seeds) if seeds else [int(self._config.get("seed", 0))]

    # ------------------------------------------------------------------ the report's tables

    def table(self, name: str) -> pd.DataFrame:
        """One of the report's tables by name (:attr:`tables`); each is also a property."""
        from common.report.tables import TABLES

        if name not in TABLES:
            raise ChoiceError(f"no table {name!r}; the tables: {', '.join(TABLES)}")
        return TABLES[name](self.metrics)

    tables = (
        "accuracy", "per_class", "agreement", "explainers", "quality", "verdicts", "seeds", "stability",
        "framework_check", "factorial",
    )  # fmt: skip
    accuracy = property(lambda self: self.table("accuracy"), doc="Test accuracy per model with its 95% interval.")
    per_class = property(lambda self: self.table("per_class"), doc="Precision, recall and F1 per model and class.")
    agreement = property(lambda self: self.table("agreement"), doc="Agreement between every pair of maps.")
    explainers = property(lambda self: self.table("explainers"), doc="Each model's maps per method: cost, additivity.")
    quality = property(lambda self: self.table("quality"), doc="Attribution quality per model x method (and random).")
    verdicts = property(lambda self: self.table("verdicts"), doc="Every verdict: model x method x check.")
    seeds = property(lambda self: self.table("seeds"), doc="A seed sweep's accuracy per model and seed.")
    stability = property(lambda self: self.table("stability"), doc="A seed sweep's map stability per model x method.")
    framework_check = property(
        lambda self: self.table("framework_check"), doc='"Is it the framework?": one network in both frameworks.'
    )
    factorial = property(lambda self: self.table("factorial"), doc="The 2 x 2: framework and architecture effects.")

    # ------------------------------------------------------------------ images and maps

    @property
    def test_positions(self) -> np.ndarray:
        """The explained images' positions in the test split (split.csv's order)."""
        if self._metrics is not None:
            return np.asarray(self._metrics.selection.explain_test_positions, dtype=np.int64)
        path = self.out / "data" / "selection.npz"
        if not path.is_file():
            raise UnavailableError(f"the explained images are not chosen yet: {path} is missing")
        with np.load(path) as z:
            return z["explain_idx"].astype(np.int64)

    @cached_property
    def _explained(self) -> tuple[np.ndarray, np.ndarray]:
        where = self._dataset.root or "scikit-learn's bundled digits"
        try:
            cfg = self.config  # (a config naming a weights file that has moved since is refused here)
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=self._dataset.image_size))
            data = prepare_data(cfg, split_csv=self.out / "split.csv")
        except (StudyError, OSError, ValueError) as exc:
            raise UnavailableError(
                f"the explained images are not available: the study's data ({where}) cannot be read here: {exc}"
            ) from None
        if data.data_key != self._dataset.data_key:
            raise UnavailableError(
                f"the explained images are not available: the data at {where} is not the data the study used "
                "(its content key differs)"
            )
        x_test, y_test = data.arrays("test")
        positions = self.test_positions
        return np.asarray(x_test[positions]), np.asarray(y_test[positions])

    @property
    def images(self) -> np.ndarray:
        """uint8 (N, H, W, C): the explained test images, in the order the maps and figures number them.

        Raises
        ------
        common.errors.UnavailableError
            The study's data cannot be read here (a data folder that moved).
        """
        return self._explained[0]

    @property
    def labels(self) -> np.ndarray:
        """int (N,): the explained images' true classes (indices of :attr:`class_names`)."""
        return self._explained[1]

    def _arm_spec(self, arm: str) -> registry.ArmSpec:
        from common.report.choose import choose_arms

        (name,) = choose_arms(list(self._models()), arm)
        try:
            return registry.arm_by_name(name)
        except KeyError:
            raise UnavailableError(f"arm {arm!r} is not registered in this process: no path to its files") from None

    def _unit_seed(self, seed: int | None) -> int | None:
        """The seed in the arm folders' names (a sweep's; its first by default), checked."""
        seeds = self.training_seeds
        if seed is not None and seed not in seeds:
            raise ChoiceError(f"seed {seed!r} is not one of this study's training seeds {seeds}")
        sweep = self._metrics is not None and self._metrics.seeds is not None
        return (seeds[0] if seed is None else seed) if sweep else None

    def explanation(self, arm: str, method: str, seed: int | None = None) -> Explanation:
        """One model's maps from one method, with their classes, probabilities and base values.

        Parameters
        ----------
        arm : str
            The arm's key (``"pytorch"``) or name (``"pytorch_cnn"``).
        method : str
            The method's key (``"deep"``, ``"gradient"``).
        seed : int, optional
            A seed sweep's training seed (default: its first, as the report shows).

        Returns
        -------
        common.explanation.Explanation
            ``attributions`` float32 (N, K', H, W, C) over the N explained images.

        Raises
        ------
        common.errors.ChoiceError
            An arm, method or seed the study does not hold.
        common.errors.UnavailableError
            The folder lacks the maps' file (e.g. an example folder committed without its arrays).
        """
        from common.report.choose import choose_methods

        spec = self._arm_spec(arm)
        (method,) = choose_methods(self.methods, method)
        unit = self._unit_seed(seed)
        key = (spec.key, method, unit)
        if key not in self._explanations:
            path = ArmPaths.of(self.out, spec, unit).attributions(method)
            if not path.is_file():
                raise UnavailableError(
                    f"the maps of {spec.title} by {method_title(method)} are not in this folder: "
                    f"{path.relative_to(self.out)} is missing (a folder copied without its arrays keeps only its "
                    "report and results; run the study into it to make them)"
                )
            self._explanations[key] = Explanation.load(path)
        return self._explanations[key]

    def maps(
        self,
        arm: str,
        method: str,
        seed: int | None = None,
        *,
        at: str | np.ndarray = "predicted",
        channels: bool = False,
    ) -> np.ndarray:
        """One model's maps of the explained images from one method, each at one class.

        Parameters
        ----------
        arm, method, seed
            As :meth:`explanation`.
        at : {"predicted", "true"} or array of int
            The class of each image's map: the one this model predicted (as the attribution grid
            shows), the true one (as the agreement compares them), or one class index per image.
        channels : bool
            Keep the colour channels (N, H, W, C) instead of summing them (N, H, W), the sum the
            report's figures and agreement use.

        Returns
        -------
        numpy.ndarray
            float32 (N, H, W), or (N, H, W, C) with ``channels``.

        Raises
        ------
        common.errors.UnavailableError
            A map at a class that was not explained (e.g. the true class of a correctly
            predicted image, with ``explain.classes: predicted``), or no maps in the folder.
        """
        ex = self.explanation(arm, method, seed)
        if isinstance(at, str) and at == "predicted":
            classes = np.argmax(ex.probabilities, axis=1)
        elif isinstance(at, str) and at == "true":
            classes = self.labels
        elif isinstance(at, str):
            raise ChoiceError(f"at must be 'predicted', 'true' or one class per image, got {at!r}")
        else:
            classes = np.asarray(at)
        try:
            maps = ex.maps_for(classes)
        except KeyError as exc:
            raise UnavailableError(f"no map at that class: {exc.args[0]} (explain.classes decides which)") from None
        return maps if channels else channel_sum(maps)

    # ------------------------------------------------------------------ figures

    @property
    def figure_names(self) -> list[str]:
        """The figures the study's report holds (each a name :meth:`figure` draws)."""
        attributions = self._metrics.attributions if self._metrics is not None else {}
        return figures.figure_keys(self.metrics, [(arm_key(n), m) for n, by in attributions.items() for m in by])

    def figure(self, name: str, *, seed: int | None = None, **options: Any) -> Figure:
        """A figure of the report, redrawn by the report's own code with ``options``.

        Parameters
        ----------
        name : str
            ``"training_curves"`` (option ``arms``), ``"confusion_matrices"`` (``arms``,
            ``classes``), ``"attribution_grid"`` (``images``, ``classes``, ``arms``,
            ``methods``), ``"quality_curves"`` (``arms``, ``methods``), ``"shap_image"``
            (``arm``, ``method``, ``images``, ``classes``, ``max_images``, ``max_classes``), or a
            report's ``"shap_<arm>_<method>"``. ``images`` are positions among the explained
            images (from 0, as the grid numbers them), ``classes`` class names or indices,
            ``arms`` arm keys or names, ``methods`` method keys.
        seed : int, optional
            A seed sweep's training seed whose maps the map figures show (default: the first).
        **options
            The options of that figure (:mod:`common.report.figures`).

        Returns
        -------
        matplotlib.figure.Figure
            Not registered with pyplot: show it in a notebook as a cell's value, save it with
            ``savefig``.

        Raises
        ------
        common.errors.ChoiceError
            An unknown figure, or an option naming what the study does not hold.
        common.errors.UnavailableError
            The study lacks what the figure is drawn from (its maps, its images, quality curves).
        """
        needs_maps = name in figures.MAP_FIGURES or (name.startswith("shap_") and name != "shap_image")
        data = figures.FigureData(self.metrics, self.class_names)
        if needs_maps:
            self._unit_seed(seed)
            data.explanations = _Explanations(self, seed)
            data.images, data.true_labels = self.images, self.labels
        return figures.figure(name, data, **options)

    @property
    def unavailable(self) -> list[str]:
        """What this folder cannot give, and why (an empty list: everything)."""
        missing = []
        if self._metrics is None:
            missing.append("results and tables: the study stopped before its evaluate stage")
        attributions = self._metrics.attributions if self._metrics else {}
        for arm, method in [(arm_key(n), m) for n, by in attributions.items() for m in by]:
            try:
                self.explanation(arm, method)
            except StudyError as exc:
                missing.append(f"maps of {arm} by {method}: {exc}")
        try:
            self.images  # noqa: B018 (loads them)
        except StudyError as exc:
            missing.append(f"images: {exc}")
        return missing


class _Explanations(Mapping):
    """A study's maps by (arm key, method key), each loaded when a figure asks for it."""

    def __init__(self, study: Study, seed: int | None):
        self._study, self._seed = study, seed
        attributions = study.metrics.attributions
        self._keys = [(arm_key(n), m) for n, by in attributions.items() for m in by]

    def __getitem__(self, key: tuple[str, str]) -> Explanation:
        if key not in self._keys:
            raise KeyError(key)
        return self._study.explanation(*key, seed=self._seed)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
