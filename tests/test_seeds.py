"""Seed sweeps (``--seeds``) and their units run in parallel through Dask (``--jobs``).

The studies here run the fake arm (``tests/fake_arm``, NumPy only) on the small test image
set, so a two-seed study takes seconds; the units still run as they do in a real study:
each one the arm worker in a fresh process, here or inside a Dask worker.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from common import registry
from common.config import load_config
from common.errors import ConfigError
from experiments.layout import unit_config
from experiments.run_all import main
from experiments.units import Execution, thread_env
from tests.fake_arm import SPEC as FAKE
from tests.fake_arm.arm import FAIL_SEED_VARIABLE


@pytest.fixture
def fake_arm(monkeypatch):
    monkeypatch.setitem(registry.ARMS, FAKE.key, FAKE)
    monkeypatch.delenv(FAIL_SEED_VARIABLE, raising=False)
    return FAKE


def _args(data, out, *extra: str, threads: str | None = "1") -> list[str]:
    """A fake-arm study; every unit with ``threads`` threads (the same in runs compared: the
    same arithmetic), or None for the default rule."""
    return [
        "--data",
        str(data),
        "--out",
        str(out),
        "--only",
        "fake",
        "--image-size",
        "32",
        "--n-explain",
        "4",
        "--n-background",
        "4",
        "--nsamples",
        "8",
        "--assess-steps",
        "4",
        *(["--threads", threads] if threads else []),
        *extra,
    ]


def _without_timings(obj):
    """metrics.json without wall times and without how the run was executed (jobs, hosts)."""
    if isinstance(obj, dict):
        return {
            k: _without_timings(v)
            for k, v in obj.items()
            if not (k.endswith("seconds") or k in {"stages", "execution"})
        }
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _statuses(out) -> dict[str, str]:
    return {s["stage"]: s["status"] for s in json.loads((out / "metrics.json").read_text())["stages"]}


def test_split_seed_and_training_seeds_are_separate_settings(fake_arm):
    single = load_config(overrides={"seed": 3})
    assert single.data_seed == 3 and single.training_seeds == (3,) and unit_config(single, 3) is single
    assert "seeds" not in single.to_dict() and "split_seed" not in single.to_dict()  # a single-seed config as before

    sweep = load_config(overrides={"seeds": [5, 6], "seed": 1})
    assert sweep.training_seeds == (5, 6) and sweep.data_seed == 1  # the split keeps --seed's value
    assert load_config(overrides={"seeds": [5, 6], "split_seed": 9}).data_seed == 9
    second = unit_config(sweep, 6)
    assert second.seed == 6 and second.data_seed == 1 and not second.assess.enabled  # assessed: the first seed only
    assert unit_config(sweep, 5).assess.enabled
    assert load_config(overrides=sweep.to_dict()) == sweep  # round trip through config.yaml
    with pytest.raises(ConfigError, match="distinct integers"):
        load_config(overrides={"seeds": [1, 1]})
    with pytest.raises(ValueError, match="not one of the study's seeds"):
        unit_config(sweep, 7)
    assert Execution(jobs=0).problems() and Execution(jobs=2, scheduler="tcp://x:1").problems()
    assert thread_env(None) == {} and thread_env(2)["OMP_NUM_THREADS"] == thread_env(2)["TF_NUM_INTRAOP_THREADS"] == "2"


@pytest.mark.slow
def test_two_workers_give_the_sequential_results_and_a_new_seed_runs_alone(fake_arm, split_folders, tmp_path):
    data = split_folders(tmp_path / "ds")
    sequential, parallel = tmp_path / "sequential", tmp_path / "parallel"
    assert main(_args(data, sequential, "--seeds", "0", "1")) == 0
    assert main(_args(data, parallel, "--seeds", "0", "1", "--jobs", "2")) == 0

    m_seq = json.loads((sequential / "metrics.json").read_text())
    m_par = json.loads((parallel / "metrics.json").read_text())
    assert m_seq["config"].pop("out") != m_par["config"].pop("out")  # the one setting that differs
    assert _without_timings(m_par) == _without_timings(m_seq)
    assert m_seq["execution"]["scheduler"] == "sequential (no Dask)"
    assert m_par["execution"]["scheduler"] == "local Dask cluster of 2 worker processes"
    assert {u["threads"] for u in m_par["execution"]["units"].values()} == {1}
    for seed in (0, 1):
        assert (parallel / "fake_linear" / f"seed-{seed}" / "model.npz").is_file()
        assert (parallel / "logs" / f"fake_seed-{seed}.log").is_file()

    s = m_par["seeds"]
    assert s["seeds"] == [0, 1] and s["split_seed"] == 0
    accuracies = [run["test_accuracy"]["fake_linear"] for run in s["runs"]]
    # The two seeds are two trainings (different initial weights), on one split.
    w0, w1 = (np.load(parallel / "fake_linear" / f"seed-{k}" / "model.npz")["weights"] for k in (0, 1))
    assert not np.allclose(w0, w1)
    acc = s["accuracy"]["fake_linear"]
    assert acc["n"] == 2 and acc["mean"] == pytest.approx(np.mean(accuracies))
    half = np.std(accuracies, ddof=1) / np.sqrt(2) * 12.706  # t(0.975, 1 df)
    assert acc["ci95"][1] - acc["mean"] == pytest.approx(half, abs=1e-3)
    stability = s["stability"]["fake_linear"]
    assert set(stability) == {"deep", "gradient"} and list(stability["deep"]["pairs"]) == ["seed-0~seed-1"]
    assert -1 <= stability["deep"]["rho"]["mean"] <= 1 and stability["deep"]["rho"]["n"] == 4
    assert set(s["agreement"]) == {"fake_deep~fake_gradient"} and s["agreement"]["fake_deep~fake_gradient"]["n"] == 2
    assert m_par["selection"] == m_seq["selection"]  # one split and one set of explained images
    report = (parallel / "report.md").read_text()
    assert "Across training seeds" in report and "Stability under retraining" in report

    # A rerun with one more seed computes only that seed (and the summaries); here without Dask,
    # whose units' stamps are the same files.
    assert main(_args(data, parallel, "--seeds", "0", "1", "2")) == 0
    ran = {stage for stage, status in _statuses(parallel).items() if status == "ran"}
    assert {stage for stage in ran if "seed-" in stage} == {
        "train fake seed-2",
        "predict fake seed-2",
        "explain_deep fake seed-2",
        "explain_gradient fake seed-2",
    }
    assert json.loads((parallel / "metrics.json").read_text())["seeds"]["accuracy"]["fake_linear"]["n"] == 3


@pytest.mark.slow
def test_a_failed_unit_is_reported_the_others_finish_and_a_rerun_resumes_it(
    fake_arm, split_folders, tmp_path, monkeypatch, capsys
):
    data = split_folders(tmp_path / "ds")
    out = tmp_path / "out"
    monkeypatch.setenv(FAIL_SEED_VARIABLE, "1")  # the Dask workers and the arm workers inherit it
    assert main(_args(data, out, "--seeds", "0", "1", "2", "--jobs", "2")) == 1
    err = capsys.readouterr().err
    log = out / "logs" / "fake_seed-1.log"
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]  # one line
    assert f"the Fake linear model arm, seed 1 failed with exit status 1; its log: {log}" in line
    assert "the others finished" in line
    assert "this training run fails on purpose" in log.read_text()
    assert not (out / "metrics.json").exists()  # no report from a partial study
    for seed in (0, 2):  # the other units finished
        assert (out / "fake_linear" / f"seed-{seed}" / "attributions_gradient.npz").is_file()

    monkeypatch.delenv(FAIL_SEED_VARIABLE)
    assert main(_args(data, out, "--seeds", "0", "1", "2")) == 0  # resumed without Dask: the same stamps
    statuses = _statuses(out)
    assert {stage for stage, status in statuses.items() if status == "ran" and "seed-" in stage} == {
        "train fake seed-1",
        "predict fake seed-1",
        "explain_deep fake seed-1",
        "explain_gradient fake seed-1",
    }
    assert statuses["assess_deep fake seed-0"] == "cached" and "assess_deep fake seed-1" not in statuses


@pytest.mark.slow
def test_units_run_on_an_existing_cluster_with_threads_shared_per_machine(fake_arm, split_folders, tmp_path):
    from dask.distributed import LocalCluster

    from experiments.units import available_cores

    data = split_folders(tmp_path / "ds")
    out = tmp_path / "out"
    args = _args(data, out, "--seeds", "3", "4", threads=None)  # each unit's threads follow the cluster's shape
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster:
        assert main([*args, "--scheduler", cluster.scheduler_address]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["execution"]["scheduler"] == cluster.scheduler_address
    units = m["execution"]["units"]
    assert set(units) == {"fake_seed-3", "fake_seed-4"}
    # one machine, one worker of 2 threads: 2 units at a time, each with half the cores
    assert {u["threads"] for u in units.values()} == {max(1, available_cores() // 2)}
    assert m["seeds"]["seeds"] == [3, 4] and m["seeds"]["split_seed"] == 0  # --seed's default splits
