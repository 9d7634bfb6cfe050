"""Maps from each model's unconstrained parameters to its paper parameters.

Written once for NumPy and PyTensor (see ``bayesclv.ops``): the PyMC
models use them while sampling, and ``bayesclv.fit.population_params`` uses them on
NumPy draws to give a new segment's parameters.

Why these scales: ``(r, alpha)`` are strongly correlated in the posterior (their ratio,
the mean purchase rate, is what the data pin down); sampling ``log(r/alpha)`` and
``log r`` removes most of that correlation. Likewise ``(a, b)`` become the mean dropout
probability ``a/(a+b)`` (on the logit scale) and the concentration ``a+b``, and the
Gamma-Gamma ``(p, q, v)`` become the mean spend, ``p`` and ``q - 1``.
"""

from __future__ import annotations

from bayesclv.ops import ops_for


def bgnbd_natural(log_purchase_rate, log_r, logit_dropout, log_dropout_concentration):
    """r = e^log_r, alpha = r / rate, a = phi kappa, b = (1 - phi) kappa."""
    m = ops_for(log_purchase_rate, log_r, logit_dropout, log_dropout_concentration)
    r = m.exp(log_r)
    kappa = m.exp(log_dropout_concentration)
    phi = m.expit(logit_dropout)
    return {
        "r": r,
        "alpha": m.exp(log_r - log_purchase_rate),
        "a": phi * kappa,
        "b": m.expit(-logit_dropout) * kappa,
    }


def pareto_nbd_natural(log_purchase_rate, log_r, log_dropout_rate, log_s):
    m = ops_for(log_purchase_rate, log_r, log_dropout_rate, log_s)
    return {
        "r": m.exp(log_r),
        "alpha": m.exp(log_r - log_purchase_rate),
        "s": m.exp(log_s),
        "beta": m.exp(log_s - log_dropout_rate),
    }


def gamma_gamma_natural(log_mean_spend, log_p, log_q_minus_1):
    """q = 1 + e^log_q_minus_1 (> 1), v = mean (q - 1) / p."""
    m = ops_for(log_mean_spend, log_p, log_q_minus_1)
    return {
        "p": m.exp(log_p),
        "q": 1.0 + m.exp(log_q_minus_1),
        "v": m.exp(log_mean_spend + log_q_minus_1 - log_p),
    }


def __getattr__(name: str):
    """``UNCONSTRAINED``, ``NATURAL`` and ``TRANSFORMS`` by model name, read from the
    family registry (kept for backward compatibility; use ``bayesclv.families``)."""
    if name in ("UNCONSTRAINED", "NATURAL", "TRANSFORMS"):
        from bayesclv.families import FAMILIES

        if name == "UNCONSTRAINED":
            return {k: f.unconstrained for k, f in FAMILIES.items()}
        if name == "NATURAL":
            return {k: f.params for k, f in FAMILIES.items()}
        return {k: f.to_natural for k, f in FAMILIES.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
