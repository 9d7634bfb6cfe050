"""benchmarks/bench_pooling_grid.py at its smoke size (2 segments, alike and different,
1/5 of the sizes, one short chain), so the pooling grid cannot rot: the JSON holds one row
per cell with the LPD of each pooling, the pointwise differences with their SE, and a
verdict consistent with the issue-17 criterion ``partial - max(complete, none) >= -2 SE``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_pooling_grid.py"


@pytest.mark.extended
def test_pooling_grid_smoke_writes_the_table(tmp_path):
    # < 60 s once nutpie's compile cache is warm; the first run on a machine compiles
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    payload = json.loads((tmp_path / "pooling_grid_smoke.json").read_text())
    cells = payload["cells"]
    assert [(c["segments"], c["scenario"]) for c in cells] == [(2, "alike"), (2, "different")]
    for c in cells:
        assert c["n_customers"] == sum(c["sizes"]) == 400
        lpds = {p: c["fits"][p]["lpd"] for p in ("complete", "partial", "none")}
        assert all(math.isfinite(v) and v < 0 for v in lpds.values())
        rival = max(("complete", "none"), key=lpds.get)
        assert c["best_rival"] == rival
        diff, se = c[f"partial_minus_{rival}"], c[f"partial_minus_{rival}_se"]
        # the pointwise differences sum to the difference of the totals
        assert diff == pytest.approx(lpds["partial"] - lpds[rival], abs=1e-6)
        assert se > 0 and c["z_vs_best"] == pytest.approx(diff / se)
        assert c["verdict"] == ("pass" if diff >= -2 * se else "FAIL")
    assert payload["machine"]["command"].endswith(f"--results-dir {tmp_path}")
    md = (tmp_path / "pooling_grid_smoke.md").read_text()
    assert "| 2 | alike |" in md and "| 2 | different |" in md
