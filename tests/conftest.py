"""Test-session set-up.

Under pytest-xdist (``make test`` runs two workers) each worker gets its own PyTensor
compile directory: PyTensor holds one lock per directory while it compiles a C module,
so workers sharing one would compile one at a time.
"""

import os

_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker and "base_compiledir" not in os.environ.get("PYTENSOR_FLAGS", ""):
    _base = os.path.join(os.path.expanduser("~"), ".pytensor", f"pytest-{_worker}")
    _flags = os.environ.get("PYTENSOR_FLAGS", "")
    os.environ["PYTENSOR_FLAGS"] = ",".join(f for f in (_flags, f"base_compiledir={_base}") if f)
