"""fit_many: independent models fitted at once (workers + this process), same results
as one after the other."""

from __future__ import annotations

import numpy as np
import pytest

from bayesclv.datasets import load_cdnow_rfm
from bayesclv.fit import fit, fit_many
from bayesclv.models import build_bgnbd, build_gamma_gamma


@pytest.fixture(scope="module")
def small():
    rfm = load_cdnow_rfm("sample")
    keep = np.arange(rfm.n_customers) % 4 == 0  # ~590 customers: fast compile and fit
    return rfm.subset(keep)


def test_fit_many_concurrent_matches_sequential(small):
    kwargs = dict(sampler="pymc", draws=60, tune=60, chains=2, cores=1, random_seed=3)
    models = [build_gamma_gamma(small, pooling="complete"), build_bgnbd(small, pooling="complete")]
    together = fit_many(models, **kwargs)
    assert [i.attrs["model"] for i in together] == ["gamma_gamma", "bgnbd"]
    one_by_one = [fit(m, **kwargs) for m in models]
    for a, b in zip(together, one_by_one, strict=True):
        for name in a.posterior.data_vars:
            np.testing.assert_array_equal(a.posterior[name].values, b.posterior[name].values)


def test_fit_many_raises_a_worker_error(small):
    import pymc as pm
    import pytensor.tensor as pt

    broken = build_gamma_gamma(small, pooling="complete")
    with broken:  # log density NaN everywhere: PyMC refuses the start, in the worker
        pm.Potential("broken", pt.as_tensor_variable(np.nan))
    good = build_bgnbd(small, pooling="complete")
    with pytest.raises(Exception, match="(?i)initial (evaluation|energy)"):
        fit_many([broken, good], sampler="pymc", draws=10, tune=10, chains=1, cores=1)
    assert fit_many([], sampler="map") == []


def test_nutpie_jax_backend_matches_numba_posterior(small):
    """nutpie_backend="jax" samples the same posterior (means within 3 MC standard errors
    of the numba backend's) and records the backend."""
    pytest.importorskip("jax")
    model = build_gamma_gamma(small, pooling="complete")
    kwargs = dict(sampler="nutpie", draws=300, tune=300, chains=2, random_seed=5)
    jax_fit = fit(model, nutpie_backend="jax", **kwargs)
    numba_fit = fit(model, **kwargs)
    assert jax_fit.attrs["nutpie_backend"] == "jax"
    assert numba_fit.attrs["nutpie_backend"] == "numba"
    for name in ("p", "q", "v"):
        a = jax_fit.posterior[name].values.ravel()
        b = numba_fit.posterior[name].values.ravel()
        se = np.sqrt(a.var() / 150 + b.var() / 150)  # ~ESS 150 per fit, conservative
        assert abs(a.mean() - b.mean()) < 3 * se, name
    with pytest.raises(Exception, match="nutpie_backend"):
        fit(model, nutpie_backend="cuda", **kwargs)
