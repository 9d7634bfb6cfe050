"""benchmarks/bench_real_data.py at its smoke size (CDNOW, BG/NBD and MBG/NBD, complete
and partial pooling, tiny draws), so the real-data benchmark cannot rot; with the
published maximum-likelihood BG/NBD column of the CDNOW table as an oracle."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_real_data.py"


@pytest.mark.slow
def test_real_data_smoke_runs_and_reproduces_the_published_mle(tmp_path):
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    payload = json.loads((tmp_path / "real_data_smoke.json").read_text())
    cdnow = payload["datasets"]["cdnow"]
    mle = cdnow["mle"]["bgnbd"]
    # Reutterer, Platzer & Schroeder (2021) table, CDNOW: BG/NBD MAE 0.785, BIAS -0.121,
    # LL -9582.429 (maximum likelihood)
    assert round(mle["MAE"], 3) == 0.785
    assert round(mle["BIAS"], 3) == -0.121
    assert mle["log_likelihood"] == pytest.approx(-9582.429, abs=1e-3)
    for key in ("bgnbd/complete", "bgnbd/partial", "mbgnbd/complete", "mbgnbd/partial"):
        r = cdnow["bayes"][key]
        assert all(math.isfinite(r[k]) for k in ("MAE", "RMSE", "BIAS", "lpd"))
        assert all(0 < v < 1 for v in r["pit"].values())
    assert "lpd_vs_complete_se" in cdnow["bayes"]["bgnbd/partial"]
    auto = cdnow["auto"]
    assert sum(auto["weights"].values()) == pytest.approx(1.0)
    assert math.isfinite(auto["lpd"])
    md = (tmp_path / "real_data_smoke.md").read_text()
    assert "published BG/NBD" in md and "reproduced to 3 decimals" in md
    assert (tmp_path / "real_data_smoke_cdnow.png").stat().st_size > 10_000
