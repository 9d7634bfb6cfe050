"""Parameter recovery: simulate segments of very unequal size with known parameters,
fit with partial pooling, and check that the truth is inside the 94% intervals and
that the small segment is shrunk toward the population.

The full coverage study (50+ simulated data sets) is ``benchmarks/recovery_coverage.py``;
its segments are larger (up to 20,000 customers) than this CI-sized check.
"""

from __future__ import annotations

import numpy as np
import pytest

from bayesclv.data import RFMData
from bayesclv.fit import fit, posterior_params
from bayesclv.models import build_bgnbd
from bayesclv.simulate import BGNBDParams, GammaGammaParams, simulate_customers

TRUTH = {
    "tiny": BGNBDParams(r=0.30, alpha=6.0, a=0.9, b=3.0),
    "small": BGNBDParams(r=0.25, alpha=4.0, a=0.8, b=2.5),
    "medium": BGNBDParams(r=0.20, alpha=3.5, a=0.7, b=2.2),
    "large": BGNBDParams(r=0.25, alpha=5.0, a=0.75, b=2.6),
}
SIZES = {"tiny": 50, "small": 300, "medium": 1000, "large": 4000}


def simulated_rfm(seed: int) -> RFMData:
    """Customers acquired over 26 weeks, observed for 52 (ages in whole days; purchase
    times exact, as simulated: rounding recency down would bias the likelihood)."""
    rng = np.random.default_rng(seed)
    n = sum(SIZES.values())
    T = rng.integers(26 * 7, 52 * 7, n) / 7.0
    sim = simulate_customers(
        TRUTH, SIZES, T=T, spend=GammaGammaParams(6.0, 4.0, 15.0), random_seed=rng
    )
    return sim.to_rfm()


@pytest.mark.slow
def test_partial_pooling_recovers_segment_parameters_and_shrinks_the_small_one():
    rfm = simulated_rfm(seed=11)
    partial = fit(
        build_bgnbd(rfm, pooling="partial"),
        draws=500,
        tune=700,
        chains=2,
        target_accept=0.95,
        random_seed=3,
        progressbar=False,
    )
    params = posterior_params(partial)
    assert int(partial.sample_stats.diverging.sum()) <= 2
    # Mean purchase rate r/alpha and mean dropout a/(a+b): what each segment's data pin down.
    rate = params["r"] / params["alpha"]
    drop = params["a"] / (params["a"] + params["b"])
    covered = 0
    checks = 0
    for seg, truth in TRUTH.items():
        for _name, draws, true in (
            ("rate", rate.sel(segment=seg).values.ravel(), truth.r / truth.alpha),
            ("dropout", drop.sel(segment=seg).values.ravel(), truth.a / (truth.a + truth.b)),
        ):
            lo, hi = np.quantile(draws, [0.03, 0.97])
            checks += 1
            covered += lo <= true <= hi
    # 8 intervals at 94%: allow two misses (P(>=3 misses) is about 1.4%).
    assert covered >= checks - 2, (covered, checks)

    # Shrinkage: the 50-customer segment's rate sits closer to the population mean
    # under partial pooling than under no pooling, and with a narrower interval.
    none = fit(build_bgnbd(rfm, pooling="none"), sampler="map", progressbar=False)
    none_params = posterior_params(none)
    none_rate = (none_params["r"] / none_params["alpha"]).sel(segment="tiny").values.item()
    pop = float(np.exp(partial.posterior["log_purchase_rate_mu"]).median())
    partial_rate = float(rate.sel(segment="tiny").median())
    assert abs(np.log(partial_rate) - np.log(pop)) < abs(np.log(none_rate) - np.log(pop))
