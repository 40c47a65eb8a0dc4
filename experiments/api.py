"""The study from Python: :func:`run_study` runs it as the command line does, :func:`open_study`
opens a finished (or partly finished) output folder as a :class:`~experiments.study.Study`.

The command line (:mod:`experiments.run_all`, the ``shap-study`` script) is a thin layer over
these: its flags are :func:`run_study`'s keyword arguments (``--n-explain 12`` is
``n_explain=12``, ``--seeds 0 1 2`` is ``seeds=[0, 1, 2]``, ``--no-assess`` is ``assess=False``),
and a user's mistake is a :class:`common.errors.StudyError` with a one-line message here, exit
status 2 there.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import numbers
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import ConfigError
from experiments.flags import DEFAULT_CONFIG, config_overrides, study_parser

if TYPE_CHECKING:
    from experiments.study import Study

log = logging.getLogger("study")


def run_study(
    data: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    **settings: Any,
) -> Study:
    """Run the study, as ``python experiments/run_all.py`` does, and open its output folder.

    The same stages, caching (a rerun skips every stage whose inputs are unchanged), output
    folder lock and errors as the command line; progress goes to stderr (the ``study`` logger,
    at INFO unless ``quiet``).

    Parameters
    ----------
    data : str or path, optional
        Data folder: ``train/`` + ``test/`` (or ``val/``) with one folder per class, or class
        folders only (default: scikit-learn's bundled digits set).
    config : str or path, optional
        YAML config file (default: ``experiments/configs/default.yaml``); settings override it.
    out : str or path, optional
        Output folder (default: the config's, else ``reports/<data set name>``).
    **settings
        The command line's other flags, by their names with ``_`` for ``-``: ``seed``,
        ``seeds`` (a list: a seed sweep), ``split_seed``, ``jobs``, ``scheduler``, ``threads``,
        ``image_size``, ``max_image_pixels``, ``epochs_<arm>`` (e.g. ``epochs_pytorch``),
        ``n_explain``, ``n_background``, ``nsamples``, ``classes``, ``keras_weights``,
        ``cache_dir``, ``deterministic``, ``only``, ``assess`` (``False``: ``--no-assess``),
        ``assess_budget``, ``assess_steps``, ``n_sanity``, ``dry_run``, ``force`` and ``quiet``.
        ``None`` leaves a setting at its default.

    Returns
    -------
    Study
        The output folder, opened (after ``dry_run=True``: with its data stage only).

    Raises
    ------
    common.errors.StudyError
        A user's mistake (an unknown setting or a bad value, bad data, a config no run could
        use, an output folder that cannot be written); nothing is run then.
    experiments.units.UnitsFailed
        Some units (arm x seed) failed; the others finished and keep their stages.
    OSError
        A path given that cannot be used.

    Examples
    --------
    >>> from experiments import run_study
    >>> study = run_study(only="pytorch", n_explain=6, epochs_pytorch=3)  # doctest: +SKIP
    >>> study.accuracy  # doctest: +SKIP
    """
    args = study_args(data, config, out, **settings)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with progress(args.quiet):
        folder = dry_run(args) if args.dry_run else run(args)
    return open_study(folder)


def open_study(out: str | os.PathLike) -> Study:
    """Open a study's output folder, finished or partly finished, as :class:`~experiments.study.Study`.

    Parameters
    ----------
    out : str or path
        A folder that :func:`run_study` or ``experiments/run_all.py`` wrote (e.g.
        ``reports/example-digits``).

    Returns
    -------
    Study

    Raises
    ------
    common.errors.NotAStudyError
        ``out`` is not a study's output folder, or its results cannot be read.

    Examples
    --------
    >>> from experiments import open_study
    >>> study = open_study("reports/example-digits")  # doctest: +SKIP
    >>> study.figure("attribution_grid", images=[0, 1, 2]).savefig("grid.png")  # doctest: +SKIP
    """
    from experiments.study import Study

    return Study.open(out)


def _flags() -> dict[str, argparse.Action]:
    """The command line's flags by destination name (``n_explain``), ``help`` aside."""
    parser = study_parser(None, DEFAULT_CONFIG)
    return {a.dest: a for a in parser._actions if a.dest != "help"}


def study_args(
    data: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    **settings: Any,
) -> argparse.Namespace:
    """:func:`run_study`'s arguments as the command line's parsed flags.

    Raises
    ------
    common.errors.ConfigError
        An unknown setting, or a value of the wrong kind or not among a flag's choices.
    """
    flags = _flags()
    args = argparse.Namespace(**{dest: action.default for dest, action in flags.items()})
    for name, value in settings.items():
        if name not in flags or name in ("data", "config", "out"):
            known = ", ".join(d for d in flags if d not in ("data", "config", "out"))
            raise ConfigError(f"run_study() has no setting {name!r}; its settings: {known}")
        if value is not None:
            setattr(args, name, _setting(flags[name], name, value))
    args.data = None if data is None else os.fspath(data)
    args.config = None if config is None else Path(config)
    args.out = None if out is None else os.fspath(out)
    return args


def _setting(action: argparse.Action, name: str, value: Any) -> Any:
    """One setting checked as its flag's parser would check it."""
    if action.nargs == 0:  # an on/off flag
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
        return value
    if action.nargs == "+":
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        values = [_value(action, name, v) for v in value]
        if not values:
            raise ConfigError(f"{name} must not be empty")
        return values
    return _value(action, name, value)


def _value(action: argparse.Action, name: str, value: Any) -> Any:
    kind = action.type
    if kind in (int, float):
        wanted = numbers.Integral if kind is int else numbers.Real
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise ConfigError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        value = kind(value)
    elif not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{name} must be a string or a path, got {value!r}")
    else:
        value = os.fspath(value)
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, action.choices))}; got {value!r}")
    return value


@contextlib.contextmanager
def progress(quiet: bool) -> Iterator[None]:
    """The study's progress on stderr while a run lasts: the ``study`` logger at INFO (WARNING when
    ``quiet``), printed by a handler of its own unless one is set up already (the command line's)."""
    logger = logging.getLogger("study")
    level, handler = logger.level, None
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    if not logger.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    try:
        yield
    finally:
        logger.setLevel(level)
        if handler is not None:
            logger.removeHandler(handler)


def study_config(args: argparse.Namespace):
    """The study's config: the YAML file (or the default one) with the flags on top."""
    from common.config import load_config

    overrides = {"data.root": args.data, "out": args.out, "seed": args.seed, "seeds": args.seeds}
    return load_config(
        args.config or DEFAULT_CONFIG, {**overrides, "split_seed": args.split_seed, **config_overrides(args)}
    )


def execution(args: argparse.Namespace):
    """How the units run (``jobs``, ``scheduler``, ``threads``).

    Raises
    ------
    common.errors.ConfigError
        A combination no run could use.
    """
    from experiments.units import Execution

    chosen = Execution(jobs=args.jobs, scheduler=args.scheduler, threads=args.threads)
    if chosen.problems():
        raise ConfigError("; ".join(chosen.problems()))
    return chosen


def run(args: argparse.Namespace) -> Path:
    """The whole study; its output folder."""
    from experiments.pipeline import run_study as run_pipeline

    cfg, how = study_config(args), execution(args)
    return run_pipeline(cfg, force=args.force, execution=how).out


def dry_run(args: argparse.Namespace) -> Path:
    """The data stage alone, then the counts, the skipped files and the planned work on stdout."""
    from common.data.dataset import format_counts_table
    from experiments.budget import allocate
    from experiments.data_stage import data_stage
    from experiments.layout import make_selection
    from experiments.plan import format_plan, planned_work

    cfg = study_config(args)
    execution(args)  # checked as a run would
    out, data, _ = data_stage(cfg)
    print(f"data set '{data.manifest.name}' ({data.manifest.layout}), {data.image_size}x{data.image_size} px")
    print(format_counts_table(data))
    print(f"skipped files: {len(data.manifest.skipped)}")
    for s in data.manifest.skipped:
        print(f"  {s.path}: {s.reason}")
    print(f"split written to {out / 'split.csv'}, the skipped files and why to {out / 'skipped.csv'}")
    selection = make_selection(cfg, data)
    n_explain, n_background = len(selection.explain_idx), len(selection.background_idx)
    plans = allocate(cfg, n_explain, len(data.classes), data.image_size) if cfg.assess.enabled else None
    print(format_plan(planned_work(cfg, n_explain, len(data.classes), n_background, plans), cfg.explain.classes))
    return out
