"""Summed log-likelihood of many customers, each term computed once where it can be.

A model's log-likelihood is a sum over customers, but most of each customer's terms do
not depend on the customer: some depend only on the segment's parameters (e.g.
``log Gamma(r)``), some on the parameters and the frequency ``x`` (e.g.
``log Gamma(r + x)``, ``log B(a, b + x)``). Each family's ``grouped_loglik`` evaluates
each group of terms once per segment, once per distinct ``(segment, x)``, and only the
rest per distinct customer row, then weights each by how many customers share it (see
the family modules for what each precomputes). The per-customer log-densities remain
the reference, and tests check that the two sums agree.
"""

from __future__ import annotations

import numpy as np

from bayesclv.families import get_family
from bayesclv.families.base import Groups

__all__ = ["Groups", "make_groups", "grouped_loglik"]


def make_groups(seg: np.ndarray, data, weight: np.ndarray, n_segments: int, kind=None) -> Groups:
    """Group distinct rows for ``kind``'s summed log-likelihood.

    Without ``kind`` the family is guessed from the data: three columns ``(x, t_x, T)``
    group as BG/NBD does (distinct ages and recencies, which Pareto/NBD ignores), two
    ``(x, zbar)`` as Gamma-Gamma.
    """
    if kind is None:
        kind = "bgnbd" if len(data) == 3 else "gamma_gamma"
    return get_family(kind).make_groups(seg, data, weight, n_segments)


def grouped_loglik(kind, params: dict, g: Groups):
    """Total log-likelihood of all customers (a scalar), for NumPy or PyTensor params.

    ``params`` maps each natural parameter name to an array of shape ``(n_segments,)``.
    """
    return get_family(kind).grouped_loglik(params, g)
