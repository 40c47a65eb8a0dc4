"""The example notebook (``examples/compare_frameworks.ipynb``) runs, top to bottom, in a Jupyter
kernel, and is committed without outputs.

The kernel runs it on the session's small study (``tests/small_study.py``): a cell after the
notebook's "parameters" cell (papermill's convention) points it at the small study's data, config
and output folder with its settings, and an IPython start-up file registers the two fake arms in
the kernel. ``run_study`` there finds every stage of the small study cached, so the kernel reads
what the session made rather than training again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.small_study import KERNEL_STARTUP, SETTINGS

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "compare_frameworks.ipynb"


def test_the_notebook_is_committed_without_outputs():
    """What nbstripout would leave: no outputs, no execution counts, no metadata beyond the kernel's name."""
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert set(nb["metadata"]) <= {"kernelspec", "language_info"}
    assert set(nb["metadata"].get("language_info", {})) <= {"name"}
    for cell in nb["cells"]:
        assert set(cell["metadata"]) <= {"tags"}, cell["metadata"]
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["source"]


def test_the_notebook_runs_on_the_small_study(small_study, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    settings = {k: v for k, v in SETTINGS.items() if k != "seeds"}
    nb.cells.insert(
        at + 1,
        nbformat.v4.new_code_cell(
            f"DATA = {str(small_study.data)!r}\nCONFIG = {str(small_study.config)!r}\nOUT = {str(small_study.out)!r}\n"
            f"SEEDS = {SETTINGS['seeds']!r}\nSETTINGS = {settings!r}\nSETTINGS['quiet'] = False"
        ),
    )
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-fake-arms.py").write_text(KERNEL_STARTUP)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # this checkout's packages in the kernel, as in this process
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO / "examples")}}
    )
    client.execute()
    outputs = {i: c.outputs for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    run_cell = next(c for c in nb.cells if "run_study(" in c.source)
    log = "".join(o.get("text", "") for o in run_cell.outputs if o.get("name") == "stderr")
    ran = [line.split()[1] for line in log.splitlines() if line.startswith("[stage]") and " ran in " in line]
    assert "[stage] report" in log and ran == ["data"]  # the session's study, reused (the data stage always runs)
    shown = [(nb.cells[i].source.splitlines()[-1], set(o.get("data", {}))) for i, out in outputs.items() for o in out]
    kinds = {line: data for line, data in shown if data}
    assert "text/html" in kinds["study.accuracy"] and "text/html" in kinds["study.stability"]
    assert "image/png" in kinds['study.figure("attribution_grid", images=[0, 1, 2])']
    assert "image/png" in kinds['study.figure("quality_curves", arms=study.arms[0], methods="deep")']
