"""Re-execute the notebooks in place at the small size, so that their committed outputs are
exactly what the committed code produces.

Usage (from the repository root)::

    .venv/bin/python notebooks/execute.py              # every notebooks/*.ipynb
    .venv/bin/python notebooks/execute.py 01 04        # those whose names start so
    .venv/bin/python notebooks/execute.py --jobs 1     # one notebook at a time

Each notebook runs with nbclient in a fresh ``python3`` kernel (the ipykernel of the
environment running this script), in a temporary working directory (so that nothing a
notebook writes lands in the repository), with ``BAYESCLV_NOTEBOOK_SMALL=1`` (every
notebook reads it in its first code cell and then fits small: MAP or a few NUTS draws),
``MPLBACKEND=Agg`` and ``PYTHONHASHSEED=0``; the notebooks seed every fit and simulation
themselves. The outputs are kept; what changes from run to run without the code changing
is stripped (execution timings in cell metadata and nbclient's bookkeeping), and
consecutive prints to one stream are joined into one output. A notebook is written back
only if it executed without error, so a failure leaves the committed file as it was (the
error is printed and the exit status is 1). Wall time: about 5 minutes for the six
notebooks with ``--jobs 2`` on an idle 2-core machine.

``tests/test_notebooks.py`` executes the notebooks the same way (it imports
:func:`execute_notebook` from here) and checks that the outputs it gets are the committed
ones, so run this script after changing a notebook or the library code it calls.

Full size: run a notebook without ``BAYESCLV_NOTEBOOK_SMALL`` (e.g. in Jupyter); do not
commit those outputs, the check compares against the small size.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent
#: Environment of every kernel (on top of this process's own).
SMALL_ENV = {"BAYESCLV_NOTEBOOK_SMALL": "1", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}
#: Seconds allowed per cell; at the small size the slowest cell takes well under a minute.
CELL_TIMEOUT_S = 300
#: Cell metadata keys that change between runs of the same code.
VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


def notebooks(prefixes=()) -> list[Path]:
    """The notebooks of ``notebooks/`` whose names start with one of ``prefixes`` (all if
    none), sorted."""
    found = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    if prefixes:
        found = [p for p in found if any(p.name.startswith(x) for x in prefixes)]
    return found


def strip_volatile(nb) -> None:
    """Remove, in place, metadata that differ between two runs of the same code."""
    for cell in nb.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
    nb.metadata.pop("widgets", None)
    nb.metadata.pop("papermill", None)


def execute_notebook(path: Path, workdir: Path | None = None):
    """Execute the notebook at ``path`` at the small size and return it (not written back).

    Runs in ``workdir`` (a fresh temporary directory if None) with :data:`SMALL_ENV` set
    in the kernel's environment. Raises ``nbclient.exceptions.CellExecutionError``, naming
    the cell, on any error.
    """
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in SMALL_ENV}
    os.environ.update(SMALL_ENV)  # the kernel inherits this process's environment
    try:
        with tempfile.TemporaryDirectory(prefix="bayesclv-nb-") as tmp:
            cwd = str(workdir if workdir is not None else tmp)
            client = nbclient.NotebookClient(
                nb,
                timeout=CELL_TIMEOUT_S,
                kernel_name="python3",
                record_timing=False,
                coalesce_streams=True,
                resources={"metadata": {"path": cwd}},
            )
            client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    strip_volatile(nb)
    return nb


def kernel_problem() -> str | None:
    """Why the ``python3`` kernel would not run this environment's Python, or None."""
    from jupyter_client.kernelspec import KernelSpecManager

    argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    if argv0 in ("python", "python3", sys.executable) or (
        Path(argv0).resolve() == Path(sys.executable).resolve()
    ):
        return None
    return (f"the 'python3' kernel runs {argv0}, not this environment's {sys.executable}; "
            f"run `{sys.executable} -m ipykernel install --sys-prefix`")


def _run_one(path: Path) -> tuple[str, float, str | None]:
    import nbformat

    start = time.perf_counter()
    try:
        nb = execute_notebook(path)
    except Exception as exc:  # noqa: BLE001 - reported, and the file is left unchanged
        return path.name, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
    nbformat.write(nb, path)
    return path.name, time.perf_counter() - start, None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="name prefixes, e.g. 01 04 (default: all)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="notebooks executed at the same time (default 2)")
    args = parser.parse_args(argv)
    paths = notebooks(args.names)
    if not paths:
        print(f"no notebook matches {args.names} in {NOTEBOOK_DIR}", file=sys.stderr)
        return 2
    problem = kernel_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    start = time.perf_counter()
    failed = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for name, seconds, error in pool.map(_run_one, paths):
            print(f"{name}: {'FAILED' if error else 'ok'} in {seconds:.0f} s", flush=True)
            if error:
                print(error, file=sys.stderr)
                failed.append(name)
    print(f"{len(paths) - len(failed)}/{len(paths)} notebooks re-executed in "
          f"{time.perf_counter() - start:.0f} s" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
