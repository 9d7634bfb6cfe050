"""benchmarks/holdout_accuracy.py at its smoke size: every method in the one table, finite
metrics, and two oracles: the published FHL (2005) BG/NBD parameters give their published
holdout BIAS (-12.1%) and MAE (0.786), and lifetimes' MLE predictions equal bayesclv's
from the same parameters."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "holdout_accuracy.py"
PEERS_PYTHON = ROOT / "benchmarks" / ".venv-peers" / "bin" / "python"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("holdout_accuracy")
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--out-dir", str(out)]
    if not PEERS_PYTHON.exists():  # the peers venv is optional (benchmarks/peers_setup.sh)
        cmd += ["--peers", "none"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    stem = out / "holdout_accuracy_sample_smoke"
    return json.loads(stem.with_suffix(".json").read_text()), stem


@pytest.mark.extended
def test_smoke_table_has_every_method_with_finite_metrics(smoke):
    payload, stem = smoke
    rows = payload["rows"]
    expected = [
        "bayes/bgnbd+gg hierarchical (partial)",
        "bayes/bgnbd+gg pooled (complete)",
        "bayes/bgnbd+gg unpooled (none)",
        "mle/bgnbd+gg (bayesclv.classic)",
        "published/bgnbd+gg (FHL 2005 MLE, metric check)",
        "classic/textbook run rate",
        "classic/retention",
        "classic/historical",
    ]
    if PEERS_PYTHON.exists():
        expected.append("peer/lifetimes BG/NBD+GG (MLE)")
    assert [n for n in expected if n not in rows] == []
    assert payload["data"]["holdout_purchases"] == 1882
    assert payload["data"]["holdout_spend"] == pytest.approx(70976.39, abs=0.01)
    for name in expected:
        row = rows[name]
        assert "error" not in row, (name, row.get("error"))
        for q in ("purchases", "spend"):
            m = row["metrics"][q]
            for k in ("MAE", "RMSE", "MSLE", "BIAS", "predicted_total"):
                assert math.isfinite(m[k]), (name, q, k, m[k])
        if row["family"] != "classic":  # model-based: intervals and a density
            assert math.isfinite(row["lpd"]) and row["lpd"] < 0, name
            for q in ("purchases", "spend"):
                cov = [row["coverage"][q][p] for p in ("0.5", "0.8", "0.95")]
                assert all(0 <= c <= 1 for c in cov) and cov == sorted(cov), (name, q, cov)
    md = stem.with_suffix(".md").read_text()
    assert all(f"| {n} |" in md for n in expected)
    assert stem.with_suffix(".png").stat().st_size > 10_000


@pytest.mark.slow
def test_smoke_reproduces_published_holdout_figures(smoke):
    payload, _ = smoke
    rows = payload["rows"]
    pub = rows["published/bgnbd+gg (FHL 2005 MLE, metric check)"]["metrics"]["purchases"]
    assert pub["BIAS"] == pytest.approx(-0.121, abs=0.0015)
    assert pub["MAE"] == pytest.approx(0.786, abs=0.0015)
    # our MLE reproduces the published estimate, so its holdout figures match too
    mle = rows["mle/bgnbd+gg (bayesclv.classic)"]["metrics"]["purchases"]
    assert mle["MAE"] == pytest.approx(pub["MAE"], abs=0.002)
    if PEERS_PYTHON.exists():
        peer = rows["peer/lifetimes BG/NBD+GG (MLE)"]
        assert peer["formula_check_max_abs_diff_purchases"] < 1e-6
        assert peer["metrics"]["spend"]["MAE"] == pytest.approx(
            rows["mle/bgnbd+gg (bayesclv.classic)"]["metrics"]["spend"]["MAE"], rel=1e-3
        )
