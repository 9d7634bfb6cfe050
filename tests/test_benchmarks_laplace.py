"""benchmarks/bench_laplace.py at its smoke size (CI): it runs, compresses the customers
into far fewer likelihood rows, and the Laplace fit recovers the simulated purchase rates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.extended
def test_laplace_benchmark_smoke_recovers_the_simulated_rates():
    res = subprocess.run([sys.executable, "benchmarks/bench_laplace.py", "--smoke"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    payload = json.loads((ROOT / "benchmarks/results/laplace_20000_smoke.json").read_text())
    full = payload["laplace_all"]
    assert full["bgnbd"]["rows"] < 20_000 / 2  # week rounding: many customers share a row
    for model in ("bgnbd", "gamma_gamma"):
        assert np.isfinite(full[model]["timings"]["laplace_psis_khat"])
    truth = payload["truth"]
    rate = np.asarray(full["bgnbd"]["mean"]["r"]) / np.asarray(full["bgnbd"]["mean"]["alpha"])
    true_rate = np.asarray([t["r"] / t["alpha"] for t in truth.values()])
    # 2,000 customers per segment: each segment's mean purchase rate within 25%
    assert np.max(np.abs(rate / true_rate - 1)) < 0.25
