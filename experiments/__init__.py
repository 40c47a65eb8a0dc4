"""The study: its Python API, its command line, its stages and their orchestration, over ``common`` and the arms.

From Python: ``from experiments import run_study, open_study`` (:mod:`experiments.api`); a
study's output folder opened is a :class:`~experiments.study.Study` (tables as pandas
DataFrames, images and maps as NumPy arrays, every figure of the report). ``run_all`` is the
command line, a thin layer over ``run_study``; ``pipeline`` runs the stages (``data_stage``,
each arm's ``arm_stages`` in the arm's own process through ``arm_worker`` and ``units``,
``assess``, ``evaluate`` with ``evaluate_quality`` and ``sweep``, ``report_stage``); ``layout``
holds what they share (selection, artefact paths, unit configs), ``keys`` and ``sources`` the
stage keys derived from the code, ``stages`` the stamps that let a rerun skip finished stages.

``import experiments`` stays cheap: the API's module loads when one of its names is first used.
"""

import importlib

__all__ = ["run_study", "open_study", "Study"]
_LAZY = {"run_study": "experiments.api", "open_study": "experiments.api", "Study": "experiments.study"}


def __getattr__(name: str):
    # importlib rather than an import statement: the API is no part of any stage's code, so the
    # stage keys (experiments/sources.py reads import statements) do not follow it.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
