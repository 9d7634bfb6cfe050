"""Gamma-Gamma: the spend family (amount per purchase, independent of purchasing).

Model: each purchase amount is ``Gamma(p, rate nu)``; ``nu ~ Gamma(q, rate v)`` varies
across customers; ``q > 1`` so that the mean amount ``p v / (q - 1)`` exists. Given ``x``
purchases averaging ``zbar``, ``nu ~ Gamma(q + p x, rate v + x zbar)`` (conjugacy).

Reference: Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). "RFM and CLV: using
iso-value curves for customer base analysis". Journal of Marketing Research 42(4),
415-430; and Fader & Hardie (2013), "The Gamma-Gamma model of monetary value", eq. (4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bayesclv.errors import ModelSpecificationError
from bayesclv.families.base import Groups, ModelRows, SpendFamily, make_groups
from bayesclv.families.sampling import validate_positive
from bayesclv.ops import ops_for
from bayesclv.priors import GammaGammaPriors
from bayesclv.transforms import gamma_gamma_natural

__all__ = ["GAMMA_GAMMA", "GammaGammaParams", "gamma_gamma_logp"]


def gamma_gamma_logp(p, q, v, x, zbar):
    """Log-density of the mean spend ``zbar`` of ``x >= 1`` repeat purchases.

    Each purchase amount is Gamma(p, nu); ``nu`` varies across customers as
    Gamma(q, v). Integrating ``nu`` out (Fader & Hardie 2013, eq. 4):

    ``f(zbar | p, q, v, x) = Gamma(px+q) / (Gamma(px) Gamma(q))
        * v^q (x zbar)^(px-1) x / (v + x zbar)^(px+q)``.

    Only defined for customers with at least one repeat purchase (``x >= 1``,
    ``zbar > 0``); callers select those customers.
    """
    return _segment_part(q, v) + _frequency_part(p, q, x) + _spend_part(p, q, v, x, zbar)


def _segment_part(q, v):
    m = ops_for(q, v)
    return q * m.log(v) - m.gammaln(q)


def _frequency_part(p, q, x):
    m = ops_for(p, q, x)
    px = p * x
    return m.gammaln(px + q) - m.gammaln(px) + m.log(x)


def _spend_part(p, q, v, x, zbar):
    return _spend_data_part(p, x, zbar) + _spend_scale_part(p, q, v, x, zbar)


def _spend_data_part(p, x, zbar):
    """``(p x - 1) log(x zbar)``: linear in ``p``, so a sum over customers needs only
    ``sum(w x log(x zbar))`` and ``sum(w log(x zbar))`` per segment."""
    m = ops_for(p, x, zbar)
    return (p * x - 1.0) * m.log(x * zbar)


def _spend_scale_part(p, q, v, x, zbar):
    """``-(p x + q) log(v + x zbar)``: the one term that needs each customer."""
    m = ops_for(p, q, v, x, zbar)
    return -(p * x + q) * m.log(v + x * zbar)


# --------------------------------------------------------------------------- truth
@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma spend: ``nu ~ Gamma(q, rate v)``; each amount ``~ Gamma(p, rate nu)``.

    The mean amount of a customer is ``p / nu``; its population mean ``p v / (q - 1)``
    exists only for ``q > 1``.
    """

    p: float
    q: float
    v: float

    def __post_init__(self) -> None:
        validate_positive(self)


# --------------------------------------------------------------------------- family
class GammaGammaFamily(SpendFamily):
    name = "gamma_gamma"
    label = "Gamma-Gamma"
    params = ("p", "q", "v")
    unconstrained = ("log_mean_spend", "log_p", "log_q_minus_1")
    priors_class = GammaGammaPriors
    truth_class = GammaGammaParams

    def to_natural(self, **theta) -> dict:
        return gamma_gamma_natural(**theta)

    def logp(self, p, q, v, x, zbar):
        return gamma_gamma_logp(p, q, v, x, zbar)

    def mle_start(self) -> dict[str, float]:
        return {"log_mean_spend": 3.0, "log_p": 1.0, "log_q_minus_1": 1.0}

    def model_rows(self, rfm) -> ModelRows:
        """Customers with a repeat purchase and a positive mean repeat spend; repeat
        buyers whose repeat purchases were all free (``zbar = 0``) have no positive spend
        to model: they are counted in ``notes``, not hidden."""
        keep = (rfm.frequency > 0) & (rfm.monetary_value > 0)
        n_zero = int(((rfm.frequency > 0) & (rfm.monetary_value == 0)).sum())
        if not keep.any():
            raise ModelSpecificationError(
                "Gamma-Gamma needs customers with at least one repeat purchase (frequency > 0) "
                "and their mean repeat spend (monetary_value); this data has none."
            )
        cols = (rfm.frequency[keep].astype(np.float64), rfm.monetary_value[keep])
        msg = (
            (f"{n_zero} repeat buyer(s) with a mean repeat spend of 0 are left out (the "
             f"Gamma-Gamma model needs positive amounts)",) if n_zero else ()
        )
        return ModelRows(keep, cols, {"excluded_zero_spend": n_zero}, msg)

    def make_groups(self, seg, data, weight, n_segments: int) -> Groups:
        """Also, per segment, ``sum(w x log(x zbar))`` and ``sum(w log(x zbar))``: the data
        in the term that is linear in ``p``."""
        g = make_groups(seg, data, weight, n_segments)
        x, zbar = g.data
        log_xz = np.log(x * zbar)
        extra = dict(
            spend_x_log=np.bincount(g.seg, weights=g.weight * x * log_xz, minlength=n_segments),
            spend_log=np.bincount(g.seg, weights=g.weight * log_xz, minlength=n_segments),
        )
        return Groups(**{**g.__dict__, "extra": extra})

    def grouped_loglik(self, params: Mapping, g: Groups):
        """``(p x - 1) log(x zbar)`` summed per segment from its two data sums, leaving one
        ``log(v + x zbar)`` per customer row."""
        m = ops_for(*params.values())
        P = params
        at_pair = {k: v[g.fx_seg] for k, v in P.items()}
        at_row = {k: v[g.seg] for k, v in P.items()}
        x, zbar = g.data
        seg_part = _segment_part(P["q"], P["v"])
        freq = _frequency_part(at_pair["p"], at_pair["q"], g.fx_x)
        linear = P["p"] * g.extra["spend_x_log"] - g.extra["spend_log"]
        scale = _spend_scale_part(at_row["p"], at_row["q"], at_row["v"], x, zbar)
        return (
            m.sum(g.seg_weight * seg_part)
            + m.sum(g.fx_weight * freq)
            + m.sum(linear)
            + m.sum(g.weight * scale)
        )

    def check_draws(self, values) -> None:
        q = values["q"]
        if (q <= 1).any():
            raise ModelSpecificationError(
                f"Gamma-Gamma q must be > 1 in every draw for the mean spend p v / (q - 1) "
                f"to exist; {int((q <= 1).sum())} draws have q <= 1. Use a prior that keeps "
                f"q > 1."
            )

    # -- predictions -----------------------------------------------------------------
    def expected_spend(self, th, x, zbar) -> np.ndarray:
        """Conditional mean spend per purchase (Fader & Hardie 2013, eq. 5):
        ``E[Z | x, zbar] = p (v + x zbar) / (p x + q - 1)``, a weighted average of the
        population mean ``p v / (q - 1)`` (which it equals at ``x = 0``) and ``zbar``."""
        p, q, v = th["p"], th["q"], th["v"]
        x = np.asarray(x, dtype=np.float64)
        return p * (v + x * np.asarray(zbar, dtype=np.float64)) / (p * x + q - 1.0)

    def latent_given_history(self, th, x, zbar, rng) -> np.ndarray:
        """``nu | x purchases averaging zbar ~ Gamma(q + p x, rate v + x zbar)``."""
        return rng.standard_gamma(th["q"] + th["p"] * x) / (th["v"] + x * zbar)

    def sample_amounts(self, th, latent, rng) -> np.ndarray:
        return rng.standard_gamma(np.broadcast_to(th["p"], np.shape(latent))) / latent

    def sample_totals(self, th, latent, counts, rng) -> np.ndarray:
        """The sum of ``counts`` Gamma(p, nu) amounts is Gamma(p counts, nu)."""
        shape = np.broadcast_to(th["p"], np.shape(latent)) * counts
        pos = counts > 0
        return np.where(pos, rng.gamma(np.where(pos, shape, 1.0), 1.0 / latent), 0.0)

    def simulate_spend(self, pop, frequency, holdout_frequency, rng) -> dict:
        """Truth and observed spend of simulated customers: ``nu``, the acquisition
        amount, the mean of ``x`` repeat amounts (a Gamma(p x, nu) sum divided by ``x``)
        and the holdout total."""
        n = frequency.shape[0]
        p_s = pop["p"]
        nu = rng.gamma(pop["q"], 1.0 / pop["v"])
        first = rng.gamma(p_s, 1.0 / nu)
        monetary = np.zeros(n)
        rep = frequency > 0
        monetary[rep] = rng.gamma(p_s[rep] * frequency[rep], 1.0 / nu[rep]) / frequency[rep]
        hold_spend = np.zeros(n)
        hy = holdout_frequency > 0
        hold_spend[hy] = rng.gamma(p_s[hy] * holdout_frequency[hy], 1.0 / nu[hy])
        return {"nu": nu, "first": first, "monetary": monetary, "holdout_spend": hold_spend}


GAMMA_GAMMA = GammaGammaFamily()
