#!/usr/bin/env bash
# Create benchmarks/.venv-peers with the peer packages that bayesclv is compared against.
#
# Peers are never dependencies of bayesclv: they live in their own virtual environment
# (git-ignored) and run as child processes of the benchmark scripts
# (benchmarks/peers_worker.py).
#
# Usage (from the repository root):
#     bash benchmarks/peers_setup.sh            # uses python3 on PATH
#     PYTHON=python3.11 bash benchmarks/peers_setup.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-peers"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --upgrade pip
# setuptools: lifetimes imports pkg_resources (removed from setuptools >= 81).
"$venv/bin/python" -m pip install \
    "pymc-marketing==0.19.2" \
    "lifetimes==0.11.3" \
    "setuptools<81" \
    "nutpie"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md

for name in ("pymc-marketing", "pymc", "pytensor", "lifetimes", "nutpie", "numpy", "scipy"):
    print(f"{name}=={md.version(name)}")
import lifetimes  # noqa: F401  (checks pkg_resources is importable)
import pymc_marketing.clv  # noqa: F401
PY
