"""Interrupted, repeated and concurrent runs lose nothing and mix nothing up.

Every study here is the fake arm's (NumPy only, a few seconds), run through the real command
line: in a process of its own (``python -m tests.fake_study``) where a test kills the runner
with SIGKILL at a named point or holds it there (:mod:`experiments.faults`), else through
``run_all.main`` in this process (:func:`run_here`), whose arm still runs in a process of
its own that the same variables kill. One uninterrupted study, made once per session, is the
reference every other run must reproduce.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import html as html_lib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common import registry
from common.config import load_config
from common.machine import cpu_model
from experiments import data_stage, faults, keys, stages, units
from experiments.run_all import main
from tests.fake_arm import SECOND_SPEC
from tests.fake_arm import SPEC as FAKE

REPO = Path(__file__).resolve().parents[1]
# n_explain above the 6 test images on purpose: the run explains all 6 and says so
SETTINGS = ["--only", "fake", "--image-size", "32", "--n-explain", "100", "--n-background", "4", "--nsamples", "8"]
SETTINGS += ["--no-assess"]
FAKE_STAGES = ["train fake", "predict fake", "explain_deep fake", "explain_gradient fake"]


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDY_TEST_")}
    return {**env, "PYTHONPATH": str(REPO), "STUDY_CACHE_DIR": str(cache), **extra}


def _command(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tests.fake_study", "--data", str(data), "--out", str(out), *SETTINGS, *extra]


def fake_study(data: Path, out: Path, cache: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    """The fake arm's study through the command line; ``env``: e.g. STUDY_TEST_KILL_AT="..."."""
    return subprocess.run(_command(data, out, *extra), capture_output=True, text=True, cwd=REPO, env=_env(cache, **env))


def comparable(metrics: dict) -> dict:
    """metrics.json without what may differ between equal runs: wall times, stage records and
    the output folder's name."""

    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if not (k.endswith("seconds") or k == "stages")}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    stripped = strip(metrics)
    del stripped["config"]["out"]
    return stripped


def statuses(out: Path) -> dict[str, str]:
    return {s["stage"]: s["status"] for s in json.loads((out / "metrics.json").read_text())["stages"]}


def run_statuses(stderr: str) -> dict[str, str]:
    """Each stage's status ("ran" or "cached") as a run logged it."""
    return dict(re.findall(r"^\[stage\] (.+?)\s+(ran|cached)\b", stderr, flags=re.M))


def evaluation(out: Path) -> dict:
    return json.loads((out / "evaluation.json").read_text())


class StoppedAtReport(Exception):
    """An in-process run stopped where its report stage would start (the kill's stand-in here)."""


def run_here(
    mp: pytest.MonkeyPatch, data: Path, out: Path, cache: Path, *extra: str, report=False, two_fakes=False, **env: str
) -> tuple[int | None, str]:
    """The fake arm's study through ``run_all.main`` in this process: (exit status, log).

    It spares a runner process's start-up (1.5 s: its imports); the arm still runs in a process
    of its own, which ``env`` (e.g. STUDY_TEST_KILL_AT) reaches and a kill point there stops as
    under a runner process. ``report=False`` stops the run where the report stage would start
    (status None; evaluation.json holds every figure the report shows). ``two_fakes``: the
    fake arm and a second one (SECOND_SPEC) instead of the fake arm alone (no ``--only``). The
    log holds the runner's messages, then its stderr (with the arm's output it echoed)."""

    def checkpoint(point: str) -> None:  # this process runs pytest: no kill or hold here
        if point == "start report" and not report:
            raise StoppedAtReport

    logger, messages, stderr = logging.getLogger("study"), [], io.StringIO()
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    level = logger.level
    with mp.context() as m:
        for name in [k for k in os.environ if k.startswith("STUDY_TEST_")]:
            m.delenv(name)
        m.setenv("STUDY_CACHE_DIR", str(cache))
        for name, value in env.items():
            m.setenv(name, value)
        for module in (stages, data_stage, units):
            m.setattr(module, "checkpoint", checkpoint)
        for key in list(registry.ARMS) if two_fakes else []:  # (one dict, which modules share by name)
            m.delitem(registry.ARMS, key)
        for spec in (FAKE, SECOND_SPEC) if two_fakes else (FAKE,):
            m.setitem(registry.ARMS, spec.key, spec)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stderr(stderr):
                status = main(
                    ["--data", str(data), "--out", str(out), *(SETTINGS[2:] if two_fakes else SETTINGS), *extra]
                )
        except StoppedAtReport:
            status = None
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
    return status, "\n".join([*messages, stderr.getvalue()])


@pytest.fixture
def here(monkeypatch):
    """:func:`run_here` with this test's monkeypatch: ``here(data, out, cache, *flags, **kw)``."""
    return functools.partial(run_here, monkeypatch)


def model_arrays(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / FAKE.name / FAKE.model_filename) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def reference(tmp_path_factory, split_folders):
    """One uninterrupted fake-arm study, in this process: (data folder, output folder, cache,
    metrics, log)."""
    root = tmp_path_factory.mktemp("reference")
    data = split_folders(root / "ds", n_train=8, n_test=2)
    out, cache = root / "out", root / "cache"
    with pytest.MonkeyPatch.context() as mp:
        status, log = run_here(mp, data, out, cache, report=True)
    assert status == 0, log[-3000:]
    return data, out, cache, json.loads((out / "metrics.json").read_text()), log


def _copy(reference, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(reference[1], out)
    (out / ".study.pid").unlink(missing_ok=True)
    return out


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    """Until ``path`` exists (the held run reached its point); fails if the run ended first."""
    deadline = time.monotonic() + 120  # a safety net against a hung test, not a speed goal
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


# ----------------------------------------------------------------------------- the reference run


def test_the_reference_run_explains_what_it_has_and_says_so(reference):
    data, out, _, m, stderr = reference
    assert m["config"]["explain"]["n_explain"] == 6  # 100 asked, 6 test images
    assert m["attributions"][FAKE.name]["deep"]["n_images"] == 6
    assert "explain.n_explain 100 is more than the 6 test images: explaining all" in stderr
    assert "n_explain: 6" in (out / "config.yaml").read_text()
    assert list(m["models"]) == [FAKE.name] and [s for s in statuses(out) if s.endswith("fake")] == FAKE_STAGES
    machine = m["machine"][FAKE.name]
    assert machine["cpu"] == cpu_model() and machine["cpu_count"] == os.cpu_count() and not machine["deterministic"]
    for report in ("report.md", "report.html"):
        assert "Machine" in (out / report).read_text() and cpu_model() in (out / report).read_text()


def test_split_csv_hashes_are_the_files_hashes(reference):
    data, out, _, m, _ = reference
    with open(out / "split.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    files = sorted(p for p in data.rglob("*") if p.is_file())
    assert sorted(r["path"] for r in rows) == sorted(p.relative_to(data).as_posix() for p in files)
    for row in rows:
        path = data / row["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"], row["path"]
        assert path.parent.name == row["label"]  # the class is the file's folder
        assert (row["split"] == "test") == (path.parts[-3] == "test")  # the held-out folder is the test split
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    assert counts == {s: sum(m["dataset"]["counts"][s].values()) for s in counts}


def _md_rows(md: str, heading: str) -> list[list[str]]:
    """The body rows of the first table below ``heading`` in a Markdown report."""
    section = md.split(f"{heading}\n", 1)[1]
    table = re.search(r"((?:^\|.*\|\n)+)", section, flags=re.M).group(1).strip().splitlines()
    return [[c.strip() for c in row.strip("|").split("|")] for row in table[2:]]


def test_report_figures_are_the_metrics_figures(reference):
    _, out, _, m, _ = reference
    model = m["models"][FAKE.name]
    deep = m["attributions"][FAKE.name]["deep"]
    md = (out / "report.md").read_text()
    (row,) = _md_rows(md, "## Test accuracy")
    assert float(row[1]) == pytest.approx(model["test_accuracy"], abs=5e-5)
    lo, hi = (float(x) for x in row[2].strip("[]").split(","))
    assert (lo, hi) == pytest.approx(tuple(model["test_accuracy_ci95"]), abs=5e-5)
    assert int(row[4]) == model["best_val_epoch"]
    deep_row = next(r for r in _md_rows(md, "### Explainers") if "Deep SHAP" in r[1])
    assert (int(deep_row[4]), int(deep_row[5]), int(deep_row[6])) == (
        deep["n_images"],
        deep["n_maps"],
        deep["n_background"],
    )
    # the HTML report: the accuracy cell follows the model's name
    html = html_lib.unescape((out / "report.html").read_text())
    cells = re.findall(r"<tr><td>([^<]*)</td><td class=\"num\">([0-9.]+)</td>", html)
    assert cells and float(dict(cells)[row[0]]) == pytest.approx(model["test_accuracy"], abs=5e-5)


# ----------------------------------------------------------------------------- kills, repeats, two runs


def test_killed_runs_resume_to_the_uninterrupted_result(reference, tmp_path, here):
    data, ref_out, _, _, _ = reference
    out, cache = tmp_path / "out", tmp_path / "cache"  # a fresh cache: this run decodes too
    # the runner killed while it holds the lock: the lock does not outlive it
    killed = fake_study(data, out, cache, STUDY_TEST_KILL_AT="data decoded")
    assert killed.returncode == -9 and (out / ".study.pid").is_file()
    # an arm's process killed mid-stage (trained, not saved), then after writing a stage's
    # outputs but before its stamp: one line naming the arm and its log, exit status 1
    for point in ("fitted train fake", "written explain_deep fake"):
        status, log = here(data, out, cache, STUDY_TEST_KILL_AT=point)
        assert status == 1, log[-3000:]
        last = log.strip().splitlines()[-1]
        assert last.startswith("error: the Fake linear model arm was killed by signal 9; its log: ")
        assert last.split("its log: ")[1].split(";")[0] == str(out / "logs" / "fake.log")
        assert (out / "logs" / "fake.log").is_file() and not (out / "metrics.json").exists()
    status, log = here(data, out, cache)
    assert status is None, log[-3000:]
    s = run_statuses(log)
    # train and predict finished before the last kill; explain_deep's outputs had no stamp: it ran again
    assert (s["train fake"], s["predict fake"], s["explain_deep fake"]) == ("cached", "cached", "ran")
    # every figure as the uninterrupted run's (and, as this study began from nothing, two fresh runs agree)
    assert comparable(evaluation(out)) == comparable(evaluation(ref_out))
    assert all(np.array_equal(a, model_arrays(ref_out)[k]) for k, a in model_arrays(out).items())
    assert (out / "split.csv").read_bytes() == (ref_out / "split.csv").read_bytes()


def test_a_crashed_arm_keeps_the_other_arms_stages_and_a_rerun_resumes_only_it(reference, tmp_path, here):
    data, _, cache, _, _ = reference
    out = tmp_path / "out"
    (tmp_path / "fakes.yaml").write_text("seed: 0\n")  # the shipped configs have sections for the real arms
    fakes = ["--config", str(tmp_path / "fakes.yaml")]
    status, log = here(data, out, cache, *fakes, two_fakes=True, STUDY_TEST_KILL_AT="start train fake")
    assert status == 1, log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the Fake linear model arm was killed by signal 9" in errors[0]
    assert str(out / "logs" / "fake.log") in errors[0]
    # the second arm ran after the first one crashed, and kept every stage
    stamps = {p.stem for p in (out / "stages").glob("*_fake2.json") if not p.stem.startswith("worker_")}
    assert stamps == {st.replace(" fake", "_fake2") for st in FAKE_STAGES}
    assert not (out / "metrics.json").exists()
    status, log = here(data, out, cache, *fakes, two_fakes=True)
    assert status is None and (out / "evaluation.json").is_file(), log[-3000:]
    s = run_statuses(log)
    assert all(s[st] == "ran" for st in FAKE_STAGES)
    assert all(s[st.replace("fake", "fake2")] == "cached" for st in FAKE_STAGES)
    assert "starting the Second fake model arm" not in log


def test_a_second_run_on_one_folder_is_refused_and_the_first_keeps_its_own_settings(reference, tmp_path, here):
    data, ref_out, cache, _, _ = reference
    out, release = tmp_path / "out", tmp_path / "release"
    first = subprocess.Popen(
        _command(data, out),  # stopped where its report would start: evaluation.json holds its figures
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_env(
            cache,
            **{faults.WAIT_ENV: f"before worker {FAKE.key}", faults.WAIT_FILE_ENV: str(release)},
            **{faults.KILL_ENV: "start report"},
        ),
    )
    try:
        _wait_for(release.with_name("release.reached"), first)
        status, log = here(data, out, cache, "--seed", "1", "--epochs-fake", "6")
        assert status == 2
        lines = [line for line in log.splitlines() if line.startswith("error:")]
        assert lines == [
            f"error: another study (PID {first.pid}) is writing to {out}; wait for it to finish or choose another --out"
        ]
        # Whatever lands in OUT/config.yaml meanwhile, the first run's arm computes what its runner asked.
        (out / "config.yaml").write_text("seed: 1\nfake:\n  epochs: 6\n")
    finally:
        release.touch()
        _, stderr = first.communicate()
    assert first.returncode == -9 and "[stage] evaluate " in stderr, stderr[-3000:]
    m = evaluation(out)
    assert m["config"]["seed"] == 0 and len(m["models"][FAKE.name]["history"]["train_loss"]) == 3
    assert comparable(m) == comparable(evaluation(ref_out))


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, ended but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.is_file() and "\nState:\tZ" in status.read_text())


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_an_arm_does_not_outlive_its_killed_runner(reference, tmp_path):
    data, _, cache, _, _ = reference
    out, release = tmp_path / "out", tmp_path / "release"
    runner = subprocess.Popen(
        _command(data, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env=_env(cache, **{faults.WAIT_ENV: "start train fake", faults.WAIT_FILE_ENV: str(release)}),
    )
    reached = release.with_name("release.reached")
    _wait_for(reached, runner)
    worker = int(reached.read_text())  # the arm's process, held before training
    runner.kill()  # kill -9: the runner cannot stop its child
    runner.wait()
    deadline = time.monotonic() + 60  # a safety net, not a speed goal
    while _alive(worker):
        assert time.monotonic() < deadline, "the arm's process outlived its runner"
        time.sleep(0.05)


def test_damaged_artefacts_are_recomputed_with_a_warning(reference, tmp_path, here):
    _, ref_out, cache, _, _ = reference
    out = _copy(reference, tmp_path)
    (out / "evaluation.json").unlink()  # so the figures compared below are this run's
    arm = out / FAKE.name
    model = arm / FAKE.model_filename
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # truncated
    attributions = arm / "attributions_deep.npz"
    attributions.write_bytes(attributions.read_bytes()[:100])
    predictions = arm / "predictions.npz"  # same size, one byte changed: only the hash can tell
    raw = bytearray(predictions.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    predictions.write_bytes(bytes(raw))
    status, log = here(reference[0], out, cache)
    assert status is None, log[-3000:]
    for path, stage in ((model, "train fake"), (attributions, "explain_deep fake"), (predictions, "predict fake")):
        assert f"{path}: " in log and f"recomputing the {stage} stage" in log
    s = run_statuses(log)
    assert (s["train fake"], s["predict fake"], s["explain_deep fake"]) == ("ran", "ran", "ran")
    assert s["explain_gradient fake"] == "cached"
    assert comparable(evaluation(out)) == comparable(evaluation(ref_out))
    assert all(np.array_equal(a, model_arrays(ref_out)[k]) for k, a in model_arrays(out).items())


def test_force_recomputes_every_stage_to_the_same_figures(reference, tmp_path, here):
    data, _, cache, _, _ = reference
    out = _copy(reference, tmp_path)
    (out / "evaluation.json").unlink()
    status, log = here(data, out, cache, "--force")
    assert status is None, log[-3000:]
    assert set(run_statuses(log).values()) == {"ran"} and "cached" not in log
    assert comparable(evaluation(out)) == comparable(evaluation(reference[1]))


def test_other_explained_images_retrain_nothing_and_the_report_says_which_stages_were_reused(reference, tmp_path, here):
    data, _, cache, ref, _ = reference
    out = _copy(reference, tmp_path)
    status, log = here(data, out, cache, "--n-explain", "3", report=True)  # the last --n-explain wins
    assert status == 0, log[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    s = statuses(out)
    assert (s["train fake"], s["predict fake"], s["explain_deep fake"]) == ("cached", "cached", "ran")
    assert m["attributions"][FAKE.name]["deep"]["n_images"] == 3
    ran = {st["stage"]: st["seconds"] for st in ref["stages"]}
    assert all(st["seconds"] == ran[st["stage"]] for st in m["stages"] if st["status"] == "cached")  # the first cost
    assert "their seconds are those of the run that produced them" in (out / "report.md").read_text()
    assert comparable(m)["models"] == comparable(ref)["models"]


def test_an_added_image_recomputes_the_data_stage_and_everything_after(reference, tmp_path, here):
    ref_data, _, cache, ref, _ = reference
    data = tmp_path / "ds"
    shutil.copytree(ref_data, data)
    shutil.copy(data / "train" / "ants" / "01.png", data / "train" / "ants" / "99.png")  # one image added
    out = _copy(reference, tmp_path)
    status, log = here(data, out, cache)
    assert status is None, log[-3000:]
    s = run_statuses(log)
    assert set(s.values()) == {"ran"} and set(s) == {"data", *FAKE_STAGES, "evaluate"}  # nothing stale is reused
    m = evaluation(out)
    assert m["dataset"]["data_key"] != ref["dataset"]["data_key"]
    n = sum(sum(c.values()) for c in m["dataset"]["counts"].values())
    assert n == sum(sum(c.values()) for c in ref["dataset"]["counts"].values()) + 1
    assert "train/ants/99.png" in (out / "split.csv").read_text()


# ----------------------------------------------------------------------------- caches and keys


def test_two_processes_filling_one_cache_entry_leave_one_valid_entry(tmp_path, split_folders):
    data = split_folders(tmp_path / "ds", n_train=30, n_test=10, size=64, pattern="noise")
    cache = tmp_path / "cache"
    code = "import sys; from common.data.dataset import load_study_data; load_study_data(sys.argv[1], 48)"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(data)], cwd=REPO, env=_env(cache), stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    assert [p.wait() for p in procs] == [0, 0], [p.stderr.read()[-2000:] for p in procs]
    from common.data.dataset import load_study_data

    entries = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert not [e for e in entries if ".tmp" in e], entries  # nothing half-written left behind
    first = load_study_data(data, 48, cache_dir=cache)
    again = load_study_data(data, 48, cache_dir=tmp_path / "fresh")  # decoded anew
    assert np.array_equal(first.images, again.images) and first.data_key == again.data_key
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == entries  # read, not rewritten


def test_the_cache_lives_outside_the_checkout(monkeypatch, tmp_path):
    from common.data.decode import default_cache_dir

    monkeypatch.delenv("STUDY_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert default_cache_dir() == tmp_path / "xdg" / "shap-framework-study"
    assert not default_cache_dir().is_relative_to(REPO)
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    cfg = load_config(overrides={"data.cache_dir": str(tmp_path / "flag")})  # --cache-dir
    assert cfg.data.cache_dir == str(tmp_path / "flag")


def test_deterministic_kernels_have_train_keys_of_their_own():
    from types import SimpleNamespace

    from common import registry

    selection = SimpleNamespace(key="s")
    for spec in registry.ARMS.values():
        plain = keys.arm_keys(load_config(), "d", selection, spec)
        det = keys.arm_keys(load_config(overrides={"deterministic": True}), "d", selection, spec)
        assert all(plain[k] != det[k] for k in plain)
    from common.machine import deterministic_environment

    assert deterministic_environment() == {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_DETERMINISTIC_OPS": "1"}
