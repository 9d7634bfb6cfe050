"""Execute every notebook in ``notebooks/`` at the small size and fail on any error.

Each notebook is copied to a temporary directory and run there with nbclient in a fresh
``python3`` kernel (ipykernel from the environment running pytest) with
``BAYESCLV_NOTEBOOK_SMALL=1``, which every notebook reads in its first code cell to use
small fits (MAP or a few NUTS draws) and fewer customers. The committed notebooks, with
their full-size outputs, are never overwritten.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
KernelSpecManager = pytest.importorskip("jupyter_client.kernelspec").KernelSpecManager

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: Seconds allowed per cell; at the small size the slowest cell takes well under a minute.
CELL_TIMEOUT_S = 300


def test_notebooks_are_present():
    assert len(NOTEBOOKS) >= 6, f"expected the six notebooks in {NOTEBOOK_DIR}, got {NOTEBOOKS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_has_outputs_and_reads_the_size_knob(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cell"
    assert 'os.environ.get("BAYESCLV_NOTEBOOK_SMALL") == "1"' in code[0].source, (
        f"{path.name}: the first code cell must read the BAYESCLV_NOTEBOOK_SMALL size knob"
    )
    unexecuted = [i for i, c in enumerate(code) if c.source.strip() and c.execution_count is None]
    assert not unexecuted, f"{path.name}: code cells {unexecuted} were committed unexecuted"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} was committed with an error output: {errors[0].get('ename')}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes_at_small_size(path, tmp_path, monkeypatch):
    monkeypatch.setenv("BAYESCLV_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    work = tmp_path / path.name
    shutil.copy(path, work)
    nb = nbformat.read(work, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    # A kernel of another environment would test another installation of bayesclv.
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] in ("python", "python3", sys.executable) or Path(
        spec.argv[0]
    ).resolve() == Path(sys.executable).resolve(), (
        f"the 'python3' kernel runs {spec.argv[0]}, not this environment's {sys.executable}; "
        f"run `{sys.executable} -m ipykernel install --sys-prefix`"
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    ran = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.execution_count is not None for c in ran)
