"""The JAX path of ``fit``: numpyro's NUTS on the same PyMC model gives the same posterior
layout and the published CDNOW Gamma-Gamma estimates (CPU here; the GPU path is measured
in benchmarks/bench_gpu.py when a GPU is available)."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import pytest

from bayesclv.data import RFMData
from bayesclv.fit import fit, posterior_params
from bayesclv.models import build_gamma_gamma

pytest.importorskip("numpyro")


@pytest.mark.slow
def test_numpyro_gives_the_nutpie_layout_and_the_published_spend_estimates():
    path = resources.files("bayesclv.datasets") / "data" / (
        "cdnow_customers_summary_with_transactions.csv"
    )
    df = pd.read_csv(path)
    rfm = RFMData.from_frame(
        df, customer_id="ID", frequency="x", recency="t_x", T="T", monetary_value="zbar"
    )
    idata = fit(build_gamma_gamma(rfm, pooling="complete"), sampler="numpyro", draws=300,
                tune=300, chains=2, random_seed=1, progressbar=False)  # fmt: skip
    params = posterior_params(idata)
    assert params["p"].dims == ("chain", "draw", "segment")
    assert params["p"].shape == (2, 300, 1)
    assert int(idata.sample_stats["diverging"].sum()) == 0
    # published MLE (Fader & Hardie): p = 6.25, q = 3.74, v = 15.44; the posterior
    # median of the well-identified mean spend p v / (q - 1) is within 2% of it
    mean_spend = float((params["p"] * params["v"] / (params["q"] - 1)).median())
    assert abs(mean_spend / (6.25 * 15.44 / 2.74) - 1) < 0.02
    assert np.isfinite(params["q"].values).all() and (params["q"].values > 1).all()
