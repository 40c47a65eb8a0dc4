"""The data stage: validate, decode and split the data, then write ``split.csv``, ``skipped.csv`` and the data summary,
holding the output folder's lock (:mod:`experiments.lock`) from here to the end of the run.

A user's mistake (bad data, a bad config, an output folder that cannot be written) stops the
run here, in one line, before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path

import yaml

from common.config import StudyConfig
from common.data.dataset import StudyData, dataset_summary
from common.data.split import write_skipped_csv, write_split_csv
from common.errors import StudyError
from common.io import write_json_atomic, write_text_atomic
from common.results import StageRecord
from common.typed_json import to_json
from experiments.faults import checkpoint
from experiments.layout import default_out, prepare_data
from experiments.lock import hold_output_folder

log = logging.getLogger("study")


def fit_to_data(cfg: StudyConfig, data: StudyData) -> StudyConfig:
    """``cfg`` with counts larger than the data set allows lowered to what it has, with a
    warning, so config.yaml, metrics.json and the report show what was used."""
    n_test, n_train = len(data.indices("test")), len(data.indices("train"))
    explain = cfg.explain
    if explain.n_explain is not None and explain.n_explain > n_test:
        log.warning("explain.n_explain %d is more than the %d test images: explaining all", explain.n_explain, n_test)
        explain = dataclasses.replace(explain, n_explain=n_test)
    if explain.n_background > n_train:
        log.warning(
            "explain.n_background %d is more than the %d training images: using all", explain.n_background, n_train
        )
        explain = dataclasses.replace(explain, n_background=n_train)
    return cfg if explain is cfg.explain else dataclasses.replace(cfg, explain=explain)


def check_output_folder(out: Path) -> None:
    """Raise StudyError, before any work, when ``out`` or the nearest folder above it that
    exists cannot hold the run's output (a file in the way, no write permission)."""
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise StudyError(f"output folder {out} is a file (or lies below one); choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StudyError(f"cannot write to the output folder {out}: permission denied; choose another --out")


def output_folder(cfg: StudyConfig, data: StudyData) -> Path:
    """The run's output folder, created.

    Raises:
        StudyError: it cannot be created or written to (a file in the way, no permission).
    """
    out = Path(cfg.out).expanduser() if cfg.out else default_out(data.manifest.name)
    check_output_folder(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StudyError(f"output folder {out} is a file (or lies below one); choose another --out") from None
    except OSError as exc:
        raise StudyError(f"cannot create the output folder {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise StudyError(f"cannot write to the output folder {out}: permission denied; choose another --out")
    return out


def data_stage(cfg: StudyConfig) -> tuple[Path, StudyData, StageRecord]:
    """Validate, decode and split the data, then write split.csv, skipped.csv (the files
    left out and why) and the data summary (holding the output folder's lock while writing).

    Raises:
        StudyError: for a user's mistake (bad data, bad config); nothing is written then.
    """
    with contextlib.ExitStack() as hold:
        _, out, data, record = run_data_stage(cfg, hold)
    return out, data, record


def run_data_stage(cfg: StudyConfig, hold: contextlib.ExitStack) -> tuple[StudyConfig, Path, StudyData, StageRecord]:
    """:func:`data_stage`, leaving the output folder's lock in ``hold``; also returns the
    config fitted to the data (:func:`fit_to_data`)."""
    t0 = time.perf_counter()
    if cfg.out:
        check_output_folder(Path(cfg.out).expanduser())  # before the data is decoded
    data = prepare_data(cfg)  # validates the data set before anything is written
    cfg = fit_to_data(cfg, data)
    out = output_folder(cfg, data)
    hold.enter_context(hold_output_folder(out))
    checkpoint("data decoded")
    write_split_csv(out / "split.csv", data.manifest, data.split)
    write_skipped_csv(out / "skipped.csv", data.manifest.skipped)
    write_json_atomic(out / "data" / "dataset.json", to_json(dataset_summary(data)))
    write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    record = StageRecord("data", "ran", time.perf_counter() - t0)
    log.info(
        "[stage] %-24s ran in %.1f s (%d images, %d classes, %d skipped files)",
        "data",
        record.seconds,
        len(data.labels),
        len(data.classes),
        len(data.manifest.skipped),
    )
    return cfg, out, data, record
