"""The grouped sum (terms once per segment / per (segment, x)) equals the per-customer sum."""

import numpy as np
import pytest

from bayesclv.likelihoods import bgnbd_logp, gamma_gamma_logp, mbgnbd_logp, pareto_nbd_logp
from bayesclv.likelihoods.grouped import grouped_loglik, make_groups
from bayesclv.models._common import compress_rows

LOGP = {"bgnbd": bgnbd_logp, "mbgnbd": mbgnbd_logp, "pareto_nbd": pareto_nbd_logp}
NAMES = {
    "bgnbd": ("r", "alpha", "a", "b"),
    "mbgnbd": ("r", "alpha", "a", "b"),
    "pareto_nbd": ("r", "alpha", "s", "beta"),
}


def _customers(rng, n=3000, n_segments=4):
    seg = rng.integers(0, n_segments, n)
    x = rng.poisson(rng.gamma(0.5, 4.0, n)).astype(float)
    T = rng.choice([30.0, 35.5, 39.0], n)
    t_x = np.where(x > 0, np.round(rng.uniform(0, 1, n) * T, 1), 0.0)
    return seg, x, t_x, T


@pytest.mark.parametrize("kind", ["bgnbd", "mbgnbd", "pareto_nbd"])
def test_grouped_purchase_loglik_equals_per_customer_sum(kind):
    rng = np.random.default_rng(1)
    seg, x, t_x, T = _customers(rng)
    params = {n: rng.uniform(0.3, 12.0, 4) for n in NAMES[kind]}
    expected = np.sum(LOGP[kind](*(params[n][seg] for n in NAMES[kind]), x, t_x, T))
    rows, w = compress_rows([seg, x, t_x, T])
    assert len(w) < len(seg)  # the compression is exercised
    got = grouped_loglik(kind, params, make_groups(rows[0], rows[1:], w, 4))
    assert got == pytest.approx(expected, rel=1e-12)


def test_grouped_gamma_gamma_equals_per_customer_sum():
    rng = np.random.default_rng(2)
    n = 2000
    seg = rng.integers(0, 3, n)
    x = rng.integers(1, 20, n).astype(float)
    zbar = np.round(rng.gamma(3.0, 10.0, n), 0) + 1.0
    params = {"p": rng.uniform(1, 8, 3), "q": rng.uniform(1.5, 6, 3), "v": rng.uniform(5, 30, 3)}
    expected = np.sum(
        gamma_gamma_logp(params["p"][seg], params["q"][seg], params["v"][seg], x, zbar)
    )
    rows, w = compress_rows([seg, x, zbar])
    got = grouped_loglik("gamma_gamma", params, make_groups(rows[0], rows[1:], w, 3))
    assert got == pytest.approx(expected, rel=1e-12)
