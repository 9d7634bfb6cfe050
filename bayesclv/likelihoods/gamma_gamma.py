"""Gamma-Gamma spend log-likelihood.

Reference: Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). "RFM and CLV: using
iso-value curves for customer base analysis". Journal of Marketing Research 42(4),
415-430; and Fader & Hardie (2013), "The Gamma-Gamma model of monetary value", eq. (4).
"""

from __future__ import annotations

from bayesclv.likelihoods._ops import ops_for


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
