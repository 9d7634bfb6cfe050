"""Pareto/GGG (Platzer & Reutterer 2016): the customer-level model of purchase regularity.

Every customer ``i`` has their own purchase rate ``lambda_i ~ Gamma(r, rate alpha)``,
regularity ``k_i ~ Gamma(t, rate gamma)`` and dropout rate ``mu_i ~ Gamma(s, rate beta)``.
While alive, the times between purchases are ``Gamma(shape k_i, rate k_i lambda_i)``
(mean ``1 / lambda_i``, coefficient of variation ``1 / sqrt(k_i)``: ``k_i = 1`` is the
Poisson process of the Pareto/NBD, a large ``k_i`` a clockwork buyer); the lifetime is
``tau_i ~ Exponential(mu_i)`` from the first purchase. Data per customer: ``x`` repeat
purchases, recency ``t_x``, age ``T`` (both from the first purchase) and ``litt``, the sum
of the logs of the ``x`` inter-purchase times (:attr:`bayesclv.data.RFMData.litt`).

Likelihood (exact, derived here)
--------------------------------
With ``c = k lambda``, ``U = T - t_x`` (the open gap) and ``Q(k, z)`` the upper regularised
incomplete gamma function, given ``(lambda, k, mu)`` and ``tau`` integrated out::

    L = prod_j Gamma-pdf(itt_j; k, c) x [e^{-mu T} Q(k, c U)
                                         + mu int_{t_x}^{T} e^{-mu tau} Q(k, c (tau - t_x)) dtau]

(Platzer & Reutterer 2016, the individual-level posterior of their appendix; BTYDplus
``pggg.mcmc.DrawParameters`` samples ``tau`` and evaluates ``P(alive)`` with this integral
by Simpson's 3/8 rule on 12 intervals). The first factor is ``exp(x (k log c - log
Gamma(k)) + (k - 1) litt - c t_x)``: the gaps enter only through ``x``, their sum ``t_x``
and ``litt``. The bracket needs no quadrature: integrating by parts,
``mu int_0^U e^{-mu u} Q(k, c u) du = 1 - e^{-mu U} Q(k, c U) - int_0^U e^{-mu u} g(u) du``
with ``g`` the Gamma(``k, c``) density, and ``int_0^U e^{-mu u} g(u) du = rho^k P(k, (c +
mu) U)`` with ``rho = c / (c + mu)`` (``P = 1 - Q``). So the bracket is
``e^{-mu t_x} [(1 - rho^k) + rho^k Q(k, (c + mu) U)]``: the probability that the next
purchase after ``t_x`` (a Gamma gap ``G``) comes neither before ``T`` nor before death,
``1 - E[e^{-mu G}; G < U]``. Both terms are positive (no cancellation), so
``log L = (gap term) - mu t_x + logaddexp(log(-expm1(-k log1p(mu / c))),
-k log1p(mu / c) + log Q(k, (c + mu) U))``. ``log Q`` is clamped at ``log(1e-300)``
(:data:`LOG_Q_FLOOR`): below it the first term dominates by ~280 orders of magnitude
unless ``k mu / c < 1e-280``. tests/test_pggg.py checks the value against the integral by
``scipy.integrate.quad`` over a grid of extreme parameters (``k`` from 0.05 to 1000,
``lambda`` from 1e-3 to 20, ``mu`` from 1e-5 to 5, ``x = 0`` included) and against the
Pareto/NBD likelihood at ``k = 1``.

P(alive) = P(tau > T | data, lambda, k, mu) = ``exp(log_alive - log L')`` with
``log_alive = -mu T + log Q(k, c U)`` and ``L'`` the bracket (:func:`pggg_log_alive`).

The gradient in ``k``
---------------------
PyTensor's gradient of ``gammaincc`` in the shape (``GammaIncCGrad``, PyTensor 2.38) is
wrong for large shapes: measured against central differences of SciPy's ``gammaincc``,
``d log Q / dk`` at ``(k, z) = (50, 40)`` is 1.9e15 instead of 0.0213 and NaN at
``(200, 180)`` and ``(1000, 1100)`` (fine, 1e-7 relative, for ``k <= 10``). So the
PyTensor graph of ``log Q`` (:func:`_log_q`) carries the exact value with a hand-made
gradient: in ``z`` the closed form ``-z^{k-1} e^{-z} / (Gamma(k) Q)``, in ``k`` a central
difference of the exact value with relative step :data:`K_STEP` (accurate to ~1e-7
relative, see the tests), given as the ``lop_overrides`` of an ``OpFromGraph``, so no
``GammaIncCGrad`` is ever built. (Not by stop-gradients, ``value + sg(d) (k - sg(k))``:
PyMC rewrites the log density before differentiating it, and those rewrites remove
``zero_grad``, which gave NaN gradients on grocery customers with ``t_x = T``.) The density
is exact either way, and NUTS would stay exact even with a rough gradient (leapfrog is
reversible and volume-preserving for any position-dependent force); the gradient only
sets the efficiency.

Sampling coordinates
--------------------
Population: ``log(r / alpha)``, ``log r``, ``log(t / gamma)``, ``log t``, ``log(s / beta)``,
``log s``, each Normal (:class:`ParetoGGGPriors`): the population means of ``lambda``,
``k``, ``mu`` and the three Gamma shapes, which are far less correlated in the posterior
than ``(r, alpha)`` themselves. Customers: non-centred in the population mean,
``lambda_i = exp(log(r / alpha)) g_i`` with ``g_i ~ Gamma(r, rate r)`` (mean 1), sampled
as ``log g_i`` (PyMC's log transform); likewise ``k_i`` and ``mu_i``. The spread
(the shape) stays centred: an exact non-centring ``g_i = F^{-1}(Phi(z_i); r)`` needs the
inverse incomplete gamma and its derivative in ``r``, which PyTensor does not provide.

References
----------
Platzer, M. and Reutterer, T. (2016). "Ticking away the moments: timing regularity helps
to better predict customer activity". Marketing Science 35(5), 779-799.
Platzer, M. (2016). BTYDplus R package, ``pggg.mcmc.DrawParameters``, ``pggg_palive``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import scipy.special as sps

from bayesclv import priors as _priors
from bayesclv.data import RFMData
from bayesclv.errors import ModelSpecificationError
from bayesclv.models._common import ModelSpec, check_options, register_spec
from bayesclv.ops import ops_for
from bayesclv.priors import NormalPrior

__all__ = [
    "ParetoGGGPriors",
    "build_pareto_ggg",
    "pggg_summary",
    "pggg_logp",
    "pggg_log_alive",
    "pggg_p_alive",
    "expected_holdout_purchases",
    "posterior_latents",
]

#: ``log Q`` is clamped at this value (see the module docstring).
LOG_Q_FLOOR = math.log(1e-300)
#: Relative step of the central difference that gives ``d log Q / d k``.
K_STEP = 1e-5
#: Population quantities reported by :func:`pggg_summary`.
POPULATION = ("r", "alpha", "t", "gamma", "s", "beta", "mean_lambda", "mean_k", "mean_mu")


@dataclass(frozen=True)
class ParetoGGGPriors:
    """Priors of the Pareto/GGG population, all Normal on the log scale.

    ``log_purchase_rate``: ``log(r / alpha)``, the population mean purchase rate per time
    unit (default centre 0.1 per week, sd 3: from one purchase a year to several a day).
    ``log_regularity``: ``log(t / gamma)``, the population mean of ``k`` (centre 1, the
    Poisson case; sd 1.5: mean ``k`` between 0.05 and 20 at 2 sd).
    ``log_dropout_rate``: ``log(s / beta)``, the mean dropout rate (centre 0.02 per week,
    a mean lifetime of a year; sd 3). ``log_r``, ``log_t``, ``log_s``: the Gamma shapes
    (centre 1, sd 1.5; coefficients of variation ``1 / sqrt(shape)`` from 0.2 to 4.5 at
    2 sd).
    """

    log_purchase_rate: NormalPrior = NormalPrior(math.log(0.1), 3.0)
    log_r: NormalPrior = NormalPrior(0.0, 1.5)
    log_regularity: NormalPrior = NormalPrior(0.0, 1.5)
    log_t: NormalPrior = NormalPrior(0.0, 1.5)
    log_dropout_rate: NormalPrior = NormalPrior(math.log(0.02), 3.0)
    log_s: NormalPrior = NormalPrior(0.0, 1.5)


# model_spec() rebuilds a model's priors by class name from bayesclv.priors' table; the
# class is listed there from here until priors.py lists it itself (one line).
_priors._PRIOR_CLASSES.setdefault(ParetoGGGPriors.__name__, ParetoGGGPriors)


# --------------------------------------------------------------------------- likelihood
def _log_q(m, k, z):
    """``log Q(k, z)`` clamped at :data:`LOG_Q_FLOOR`, for NumPy or PyTensor (``m``).

    PyTensor: the exact value with the gradient of the module docstring (closed form in
    ``z``, central difference in ``k``), never PyTensor's own ``GammaIncCGrad``.
    """
    if m.name == "numpy":
        with np.errstate(divide="ignore"):
            return np.maximum(np.log(sps.gammaincc(k, z)), LOG_Q_FLOOR)
    k, z = pt.broadcast_arrays(pt.as_tensor_variable(k), pt.as_tensor_variable(z))
    return _log_q_op(k.type, z.type)(k, z)


def _pt_log_q_value(k, z):
    return pt.maximum(pt.log(pt.gammaincc(k, z)), LOG_Q_FLOOR)


def _log_q_op(k_type, z_type):
    """``log Q`` as an ``OpFromGraph`` whose gradient is given (``lop_overrides``).

    An op of its own, because PyMC rewrites the log density ("canonicalize",
    "stabilize") before differentiating it, and those rewrites remove stop-gradients
    such as ``zero_grad``; an ``OpFromGraph`` keeps its gradient through them.
    ``inline=True``: expanded into the surrounding graph when the function is compiled
    (after differentiation; PyMC's pre-gradient rewrites do not inline it), which
    compiles much faster than an op with an inner function of its own.
    """
    from pytensor.compile.builders import OpFromGraph

    k_in, z_in = k_type(), z_type()

    def grad(inputs, outputs, output_grads):
        k, z = inputs
        (v,) = outputs
        (g,) = output_grads
        up = _pt_log_q_value(k * (1.0 + K_STEP), z)
        down = _pt_log_q_value(k * (1.0 - K_STEP), z)
        d_k = (up - down) / (2.0 * K_STEP * k)
        # d log Q / dz = -g(z) / Q; 0 where the value is clamped (flat there) and at
        # z = 0, where it is infinite for k < 1 but z is then a constant (U = 0).
        safe_z = pt.switch(z > 0, z, 1.0)
        d_z = -pt.exp((k - 1.0) * pt.log(safe_z) - safe_z - pt.gammaln(k) - v)
        d_z = pt.switch((z > 0) & (v > LOG_Q_FLOOR), d_z, 0.0)
        return [g * d_k, g * d_z]

    return OpFromGraph(
        [k_in, z_in], [_pt_log_q_value(k_in, z_in)], lop_overrides=grad, inline=True,
        name="log_gammaincc",
    )


def _log_add(m, a, b):
    hi = m.maximum(a, b)
    return hi + m.log1p(m.exp(m.minimum(a, b) - hi))


def _gap_terms(lam, k, mu, x, t_x, T, litt):
    m = ops_for(lam, k, mu, x, t_x, T, litt)
    c = k * lam
    gaps = x * (k * m.log(c) - m.gammaln(k)) + (k - 1.0) * litt - c * t_x
    log_rho_k = -k * m.log1p(mu / c)  # log (c / (c + mu))^k
    return m, c, gaps, log_rho_k


def pggg_logp(lam, k, mu, x, t_x, T, litt):
    """Per-customer Pareto/GGG log-likelihood given ``(lambda, k, mu)``, ``tau`` integrated out.

    ``log L`` of the module docstring (exact form of the integral over ``tau``);
    backend-neutral (NumPy or PyTensor, chosen by the arguments). Broadcasts.

    Parameters
    ----------
    lam, k, mu : purchase rate, regularity and dropout rate (> 0).
    x, t_x, T, litt : repeat purchases, recency, age and sum of log inter-purchase times
        (one time unit; ``litt = 0`` where ``x = 0``).
    """
    m, c, gaps, log_rho_k = _gap_terms(lam, k, mu, x, t_x, T, litt)
    dead_first = m.log(-m.expm1(log_rho_k))  # dies before the next purchase
    open_gap = log_rho_k + _log_q(m, k, (c + mu) * (T - t_x))
    return gaps - mu * t_x + _log_add(m, dead_first, open_gap)


def pggg_log_alive(lam, k, mu, x, t_x, T, litt):
    """``log P(data, tau > T | lambda, k, mu)``: ``gaps - mu T + log Q(k, k lambda (T - t_x))``.

    ``exp(pggg_log_alive - pggg_logp)`` is P(alive at ``T``) (:func:`pggg_p_alive`).
    """
    m, c, gaps, _ = _gap_terms(lam, k, mu, x, t_x, T, litt)
    return gaps - mu * T + _log_q(m, k, c * (T - t_x))


def pggg_p_alive(lam, k, mu, x, t_x, T):
    """P(alive at ``T``) per draw and customer (NumPy; broadcasts draws ``(..., n)`` against
    the data ``(n,)``): ``exp(log_alive - log L)``; ``litt`` cancels."""
    args = [np.asarray(a, dtype=np.float64) for a in (lam, k, mu, x, t_x, T)]
    zero = np.zeros_like(args[3])
    return np.exp(pggg_log_alive(*args, zero) - pggg_logp(*args, zero))


# --------------------------------------------------------------------------- prediction
def _residual_gap(k, c, U, rng):
    """The rest of the open gap: ``G - U`` for ``G ~ Gamma(k, c)`` given ``G > U``.

    Inverse transform on the conditional tail: ``G = Q^{-1}(k, v Q(k, c U)) / c``, ``v``
    uniform. Where ``Q(k, c U)`` underflows the customer is dead with probability ~1 and
    the gap is set to infinity (no purchase).
    """
    q0 = sps.gammaincc(k, c * U)
    v = rng.uniform(size=np.shape(k))
    with np.errstate(divide="ignore", invalid="ignore"):
        g = sps.gammainccinv(k, v * q0) / c
    g = np.where(q0 > 0, g, np.inf)
    return np.maximum(g - U, 0.0)


def _count_given_alive(k, c, mu, U, horizon, rng, max_events: int = 100_000):
    """Purchases in ``(T, T + horizon]`` of customers alive at ``T``, one simulation each:
    the residual gap, then Gamma(``k, c``) gaps, until the horizon or an Exponential(``mu``)
    remaining lifetime (memoryless) ends them."""
    k, c, mu, U = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (k, c, mu, U)))
    shape = k.shape
    k, c, mu, U = (a.ravel() for a in (k, c, mu, U))
    end = np.minimum(horizon, rng.exponential(1.0 / mu))
    s = _residual_gap(k, c, U, rng)
    count = np.zeros(k.shape, dtype=np.int64)
    active = np.flatnonzero(s < end)
    for _ in range(max_events):
        if active.size == 0:
            break
        count[active] += 1
        s[active] += rng.gamma(k[active], 1.0 / c[active])
        active = active[s[active] < end[active]]
    else:
        raise ModelSpecificationError(
            f"more than {max_events} simulated purchases in the horizon: the draws hold "
            f"purchase rates far beyond the data's (lambda max {c.max() / k.max():.3g})."
        )
    return count.reshape(shape)


def expected_holdout_purchases(lam, k, mu, x, t_x, T, horizon, *, random_seed, n_sims=1):
    """Expected purchases in ``(T, T + horizon]`` per draw and customer (NumPy).

    ``E = P(alive) E[N | alive]``: ``P(alive)`` in closed form (:func:`pggg_p_alive`) and
    ``E[N | alive]`` by simulation (no closed form for a Gamma renewal process started in
    the middle of a gap): ``n_sims`` simulated futures per draw and customer
    (:func:`_count_given_alive`), averaged, from ``numpy.random.default_rng(random_seed)``.
    With ``n_sims = 1`` the mean over draws is the posterior mean of holdout purchases,
    what Platzer & Reutterer (2016) report, with the alive/dead coin replaced by its
    probability (Rao-Blackwellised). Draws ``(..., n)`` broadcast against the data ``(n,)``.
    """
    rng = np.random.default_rng(random_seed)
    lam, k, mu = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (lam, k, mu))
    )
    x, t_x, T = (np.asarray(a, dtype=np.float64) for a in (x, t_x, T))
    U = np.broadcast_to(T - t_x, lam.shape)
    counts = np.zeros(lam.shape)
    for _ in range(int(n_sims)):
        counts += _count_given_alive(k, k * lam, mu, U, float(horizon), rng)
    return pggg_p_alive(lam, k, mu, x, t_x, T) * counts / int(n_sims)


def posterior_latents(idata) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-customer draws ``(lambda, k, mu)`` of a fit, each ``(chain, draw, customer)``."""
    post = idata.posterior
    return tuple(np.asarray(post[name].values, dtype=np.float64) for name in ("lambda", "k", "mu"))


# --------------------------------------------------------------------------- model
def build_pareto_ggg(rfm: RFMData, priors: ParetoGGGPriors | None = None) -> pm.Model:
    """Pareto/GGG with customer-level ``lambda_i``, ``k_i``, ``mu_i`` (Platzer & Reutterer 2016).

    Assumptions: while alive, customer ``i``'s inter-purchase times are independent
    ``Gamma(k_i, rate k_i lambda_i)``; the lifetime is Exponential(``mu_i``) from the
    first purchase; ``lambda_i ~ Gamma(r, alpha)``, ``k_i ~ Gamma(t, gamma)``,
    ``mu_i ~ Gamma(s, beta)``, all independent. Segments are ignored.

    Parameters
    ----------
    rfm : RFMData
        Needs ``frequency``, ``recency``, ``T`` and ``litt`` (the sum of log
        inter-purchase times; :func:`bayesclv.data.rfm_summary` computes it).
    priors : ParetoGGGPriors, optional
        Normal priors on the log population means and log Gamma shapes (see the class).

    Returns
    -------
    pymc.Model
        Deterministics ``r, alpha, t, gamma, s, beta``, ``mean_lambda, mean_k, mean_mu``
        and per customer ``lambda, k, mu`` (dim ``customer``); ``fit`` keeps these and
        drops the sampling coordinates ``g_*``.

    Examples
    --------
    >>> model = build_pareto_ggg(rfm)                       # doctest: +SKIP
    >>> idata = fit(model, sampler="nutpie", chains=2, draws=500)   # doctest: +SKIP
    >>> lam, k, mu = posterior_latents(idata)               # doctest: +SKIP
    >>> e = expected_holdout_purchases(lam, k, mu, rfm.frequency, rfm.recency, rfm.T,
    ...                                52.0, random_seed=1)  # doctest: +SKIP
    """
    check_options(rfm, "complete", "auto")
    priors = ParetoGGGPriors() if priors is None else priors
    if not isinstance(priors, ParetoGGGPriors):
        raise ModelSpecificationError(
            f"Pareto/GGG needs ParetoGGGPriors, got {type(priors).__name__}."
        )
    if rfm.litt is None:
        raise ModelSpecificationError(
            "Pareto/GGG needs each customer's sum of log inter-purchase times 'litt': make "
            "the RFMData with bayesclv.data.rfm_summary (it computes litt), or give a 'litt' "
            "column to RFMData.from_frame."
        )
    x, t_x, T, litt = (
        np.asarray(a, dtype=np.float64) for a in (rfm.frequency, rfm.recency, rfm.T, rfm.litt)
    )
    n = rfm.n_customers
    rate0 = max(float(x.sum()) / float(T.sum()), 1e-6)
    extra: dict = {
        "draws": 1000,
        # data-driven mean purchase rate; the other population values at the prior centres
        "start": {
            "log_purchase_rate": math.log(rate0),
            "log_r": 0.0,
            "log_regularity": 0.0,
            "log_t": 0.0,
            "log_dropout_rate": priors.log_dropout_rate.mu,
            "log_s": 0.0,
        },
    }
    with pm.Model(coords={"customer": np.asarray(rfm.customer_id)}) as model:

        def population(name, prior):
            return pm.Normal(name, prior.mu, prior.sigma)

        log_rate = population("log_purchase_rate", priors.log_purchase_rate)
        log_r = population("log_r", priors.log_r)
        log_reg = population("log_regularity", priors.log_regularity)
        log_t = population("log_t", priors.log_t)
        log_drop = population("log_dropout_rate", priors.log_dropout_rate)
        log_s = population("log_s", priors.log_s)
        r, t, s = pt.exp(log_r), pt.exp(log_t), pt.exp(log_s)
        pm.Deterministic("r", r)
        pm.Deterministic("alpha", pt.exp(log_r - log_rate))
        pm.Deterministic("t", t)
        pm.Deterministic("gamma", pt.exp(log_t - log_reg))
        pm.Deterministic("s", s)
        pm.Deterministic("beta", pt.exp(log_s - log_drop))
        pm.Deterministic("mean_lambda", pt.exp(log_rate))
        pm.Deterministic("mean_k", pt.exp(log_reg))
        pm.Deterministic("mean_mu", pt.exp(log_drop))
        # mean-1 Gammas: lambda_i = mean * g_i ~ Gamma(r, r / mean) = Gamma(r, alpha)
        g_lam = pm.Gamma("g_lambda", alpha=r, beta=r, dims="customer")
        g_k = pm.Gamma("g_k", alpha=t, beta=t, dims="customer")
        g_mu = pm.Gamma("g_mu", alpha=s, beta=s, dims="customer")
        lam = pm.Deterministic("lambda", pt.exp(log_rate) * g_lam, dims="customer")
        k = pm.Deterministic("k", pt.exp(log_reg) * g_k, dims="customer")
        mu = pm.Deterministic("mu", pt.exp(log_drop) * g_mu, dims="customer")
        pm.Potential("loglike", pt.sum(pggg_logp(lam, k, mu, x, t_x, T, litt)))
    per_customer = {"g_lambda", "g_k", "g_mu"}
    extra["var_names"] = [
        v.name for v in model.free_RVs + model.deterministics if v.name not in per_customer
    ]
    register_spec(
        model,
        ModelSpec(
            model="pareto_ggg",
            pooling="individual",
            segment_names=rfm.segment_names,
            time_unit=rfm.time_unit,
            priors=priors,
            params=("r", "alpha", "t", "gamma", "s", "beta"),
            unconstrained=(),
            n_customers=n,
            n_rows=n,
            segment_sizes=tuple(int(v) for v in rfm.segment_sizes()),
            parameterization="mean_noncentered",
            extra=extra,
        ),
    )
    return model


def pggg_summary(idata) -> pd.DataFrame:
    """Posterior medians and 94% intervals of the Pareto/GGG population quantities."""
    rows = []
    for name in POPULATION:
        draws = idata.posterior[name].values.ravel()
        lo, med, hi = np.quantile(draws, [0.03, 0.5, 0.97])
        rows.append({"quantity": name, "median": med, "lower_94": lo, "upper_94": hi})
    return pd.DataFrame(rows)
