"""Pareto/NBD NUTS on low-repeat data (issue 15): no divergences, honest width.

Low repeat buying over a short calibration tells little about how unequal customers'
dropout rates are (the shape ``s``, or the coefficient of variation ``1/sqrt(s)``). In
the old coordinates (``log(s/beta)``, ``cv``) the likelihood ridge bends away as
``log(s/beta) ~ H cv^2`` and NUTS diverged there (15-46 divergences per 4 x 1000 fit,
benchmarks/results/low_repeat_before.md). The dropout rate is now moved as the log
cumulative hazard at a reference time given ``s`` (``CVPrior.rate``), the prior unchanged.

The full measurement (2 x 1,000 customers, 4 seeds, both poolings, BG/NBD too) is
benchmarks/bench_low_repeat.py; this is its CI-sized check.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pymc as pm
import pytest

from bayesclv.fit import fit
from bayesclv.models import build_pareto_nbd
from bayesclv.models._common import _prior_rv
from bayesclv.priors import CVPrior, ParetoNBDPriors
from bayesclv.simulate import ParetoNBDParams, simulate_rfm


def _low_repeat(size: int, seed: int):
    """benchmarks/bench_low_repeat.py's regime (23% / 32% repeaters in U(13, 26) weeks),
    with times on whole days, so that customers share likelihood rows (a faster test)."""
    rfm = simulate_rfm(
        {"A": ParetoNBDParams(0.5, 21.0, 1.0, 40.0), "B": ParetoNBDParams(0.5, 12.0, 1.0, 40.0)},
        {"A": size, "B": size},
        T=(13.0, 26.0),
        holdout_length=9.0,
        random_seed=seed,
    )
    days = {"recency": np.round(rfm.recency * 7) / 7, "T": np.round(rfm.T * 7) / 7}
    return dataclasses.replace(rfm, **days)


def test_hazard_coordinates_invert_and_their_jacobian_is_the_derivative():
    log_rate = np.linspace(-14.0, 5.0, 39)
    log_k = np.array([-8.0, -2.0, 0.0, 2.0, 9.0])[:, None]
    log_t0 = math.log(50.0)
    w = CVPrior.log_hazard_from_rate(log_rate, log_k, log_t0)
    np.testing.assert_allclose(CVPrior.rate_from_log_hazard(w, log_k, log_t0), log_rate + 0 * log_k,
                               rtol=0, atol=1e-12)  # fmt: skip
    h = 1e-6
    slope = (CVPrior.rate_from_log_hazard(w + h, log_k, log_t0)
             - CVPrior.rate_from_log_hazard(w - h, log_k, log_t0)) / (2 * h)  # fmt: skip
    np.testing.assert_allclose(CVPrior.log_hazard_jacobian(w, log_k), np.log(slope), atol=1e-6)
    # the definition: H(t0) = s log1p(t0 m / s), away from the clipped branches
    s, m = math.exp(0.5), math.exp(-3.0)
    assert math.exp(CVPrior.log_hazard_from_rate(-3.0, 0.5, log_t0)) == pytest.approx(
        s * math.log1p(50.0 * m / s), rel=1e-12
    )


def test_the_coordinates_leave_the_prior_unchanged():
    """Prior only, sampled in the new coordinates: log(s/beta) is still Normal(log 0.02, 3)
    and cv HalfNormal(2), i.e. the Jacobian is right."""
    pr = ParetoNBDPriors()
    with pm.Model() as model:
        log_k = _prior_rv("log_s", pr.log_s)
        log_m = _prior_rv("log_dropout_rate", pr.log_dropout_rate, log_k=log_k, shape_name="s")
        pm.Deterministic("log_dropout_rate", log_m)
    assert {v.name for v in model.value_vars} == {"s_cv_log__", "log_dropout_rate_per_s_hazard__"}
    idata = pm.sample(draws=2000, tune=1000, chains=2, cores=1, model=model, random_seed=5,
                      target_accept=0.95, progressbar=False,
                      compute_convergence_checks=False)  # fmt: skip
    rate = idata.posterior["log_dropout_rate"].values.ravel()
    cv = idata.posterior["s_cv"].values.ravel()
    # ~1,000 effective draws: Monte Carlo sd ~0.1 for the mean, ~0.07 for the sd
    assert np.mean(rate) == pytest.approx(math.log(0.02), abs=0.4)
    assert np.std(rate) == pytest.approx(3.0, abs=0.3)
    assert np.median(cv) == pytest.approx(0.6745 * 2.0, rel=0.12)


@pytest.mark.slow
def test_pareto_nbd_complete_pooling_on_low_repeat_data_has_no_divergences():
    """Default priors, nutpie 2 x (300 + 300): no divergence, and the posterior says what
    the data cannot tell: the dropout CV spans from near-equal rates to very unequal ones,
    while the share of customers alive 26 weeks after acquisition is pinned down."""
    rfm = _low_repeat(600, seed=3)
    idata = fit(build_pareto_nbd(rfm, pooling="complete"), sampler="nutpie", chains=2,
                draws=300, tune=300, random_seed=3, progressbar=False)  # fmt: skip
    # old coordinates on these data sets, 4 x 1000: 111 and 3 divergences (seeds 1, 2),
    # R-hat 1.10; new: 2 and 0, R-hat 1.01 (benchmarks/results/low_repeat_geometry.md)
    assert int(idata.sample_stats["diverging"].sum()) <= 0.01 * idata.posterior.sizes["draw"] * 2
    s = idata.posterior["s"].values[..., 0].ravel()
    beta = idata.posterior["beta"].values[..., 0].ravel()
    cv_lo, cv_hi = np.quantile(1.0 / np.sqrt(s), [0.03, 0.97])
    assert cv_lo < 0.5 and cv_hi > 2.0  # wide: truth cv = 1, and it is inside
    alive = np.exp(-s * np.log1p(26.0 / beta))
    alive_lo, alive_hi = np.quantile(alive, [0.03, 0.97])
    assert alive_hi - alive_lo < 0.5 and alive_lo < 0.52 < alive_hi  # truth 40/66 = 0.61?
