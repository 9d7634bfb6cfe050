"""Pareto/NBD: everything the package knows about it; the likelihood by quadrature.

Model (Schmittlein, Morrison & Colombo 1987): while alive, purchases are Poisson with rate
``lambda ~ Gamma(r, rate alpha)``; the lifetime is exponential with rate
``mu ~ Gamma(s, rate beta)``, independent of ``lambda``. Given the history and "alive at
T", ``lambda ~ Gamma(r + x, alpha + T)`` and ``mu ~ Gamma(s, beta + T)`` independently
(Fader & Hardie 2005, "A note on deriving the Pareto/NBD model and related expressions").

The log-likelihood is evaluated in log space by quadrature:

The usual closed form (Fader & Hardie 2005, "A note on deriving the Pareto/NBD model
and related expressions", eqs. 22-24) needs the Gauss hypergeometric function
2F1(r+s+x, s+1; r+s+x+1; z) at both ends of ``[t_x, T]`` and subtracts them. That
difference cancels catastrophically when ``T`` is close to ``t_x``, overflows for large
``x`` (lifetimes issue #25), and its derivatives in ``r`` and ``s`` need slow series
(the reason pymc-marketing defaults Pareto/NBD to MAP).

We use the integral that the closed form comes from instead (same note, eq. 17, with
the Gamma mixing integrated out):

``L = Gamma(r+x) alpha^r beta^s / Gamma(r)
      * [ (alpha+T)^-(r+x) (beta+T)^-s
          + s * Int_{t_x}^{T} f(tau) dtau ],   f = (alpha+tau)^-(r+x) (beta+tau)^-(s+1)``

The first term is "alive at T", the second "dropped out at tau in (t_x, T]".

Quadrature (one panel, ``N_NODES`` Gauss-Legendre nodes, per customer):

1. *Mass region.* With ``l = min(alpha, beta)`` and ``v = log(l + tau)``, the integrand
   times the Jacobian, ``exp(phi(v))``, is log-concave in ``v``. Its maximum on the
   interval is known in closed form (``t_x``, or an interior mode when ``r + x < 1``
   and ``alpha < beta``); Newton steps on the concave ``phi`` find the point ``t_E``
   where it has fallen ``E_FOLDS`` e-folds below that maximum (Newton on a concave
   function never stops short of the root, so the cut-off tail is below
   ``exp(-E_FOLDS)`` relative). The integral runs over ``[t_x, min(t_E, T)]``.
2. *Power-law variable.* ``w = log(m + tau)``, with the shift ``m`` chosen so that the
   log-slope of ``f`` in ``w`` is the same at both ends of the mass region (a secant
   fit of a power law), but capped at ``m + t_x <= M_CAP (l + t_x)`` so that the
   branch point of the smaller-scale factor, ``tau = -l``, stays away from the
   interval in ``w``. ``m`` ranges from "log of the small scale" (two-scale integrands)
   to "almost linear in tau" (integrands that decay over much less than their scales).
3. *Partial exponential map.* In ``w`` the integrand decays like ``exp(-(S - 1) w)``;
   the map ``y = exp(-(S - 1) w / UNDER_MAP)`` removes only a fraction of that slope.
   Removing all of it (the obvious choice) leaves a fractional power ``y^p`` at the
   far end and converges only algebraically (~n^-2); removing ``1/UNDER_MAP`` of it
   leaves ``y^(UNDER_MAP-1)`` times a smooth factor, which Gauss-Legendre integrates
   to high order.

All map quantities (``t_E``, ``m``, the slope, the nodes and their Jacobians) go through
``stop_gradient``: the integral does not depend on how it is discretised (the cut-off
tail is ``exp(-E_FOLDS)``), so the gradient is the quadrature of the integrand's
gradient at fixed nodes. This keeps the gradient graph to two logarithms per node.

Measured accuracy (``benchmarks/bench_pareto_logp.py``, worst relative error of the
log-likelihood, ``|got - ref| / max(1, |ref|)``, against ``scipy.integrate.quad`` of the
defining integral and the 2F1 closed form) with the 12 nodes used here:

* CDNOW (all 1,016 distinct rows, at the MLE and three other points): <= 2e-12;
* alpha, beta in 5..20, r, s in 0.2..20, x <= 40 (closed-form grid): 3e-12;
* r, s in 1e-3..1e3, alpha, beta within 2x, x <= 10,000, T <= 5,000: 5e-11;
* r, s in 0.1..2, alpha, beta in 1..50, x <= 1,000, T <= 500 ("realistic" grid): 7e-9;
  3,000 random draws from similar ranges: 2e-9;
* parameters 1e-3 and 1e3 together (extreme grid): 2e-3 (x = 0, alpha = 1e-3 against
  beta = 1, T = 5,000: a two-scale integrand over 15 units of ``v``).

Convergence in the node count is fast (the realistic grid goes 1e-5, 7e-9, 3e-11 at 8,
12, 16 nodes) but not exponential: the integrand's branch points (``tau = -alpha``,
``-beta``) and the map's own singularity at ``y = 0`` limit it. The previous version of
this function (16 nodes, power-law map matched at ``t_x``) had errors of 1e-4 to 1 on the
same grids. Cost: a gradient costs about as much as the previous 8-node version (the
discretisation carries no gradient; see the benchmark for timings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.special as sps

from bayesclv.families.base import History, PurchaseFamily, expm1_ratio, factorize_rows
from bayesclv.families.sampling import beta_order_stat, validate_positive
from bayesclv.numerics import pareto_window_log_pmf
from bayesclv.ops import ops_for
from bayesclv.priors import ParetoNBDPriors
from bayesclv.transforms import pareto_nbd_natural

__all__ = ["PARETO_NBD", "ParetoNBDParams", "pareto_nbd_logp", "pareto_nbd_individual_logp"]

#: Gauss-Legendre nodes per customer, e-folds kept below the maximum of the integrand,
#: Newton steps for the cut-off, fraction of the slope the map removes (1/UNDER_MAP),
#: and the cap on the power-law shift (see the module docstring). UNDER_MAP and M_CAP
#: were tuned for 12 nodes on the grids of the benchmark (5..9 and 1.5..4 tried).
N_NODES = 12
E_FOLDS = 40.0
N_NEWTON = 4
UNDER_MAP = 7.0
M_CAP = 2.0
_XI, _W = np.polynomial.legendre.leggauss(N_NODES)
_U = (_XI + 1.0) / 2.0  # nodes on [0, 1]
_LOG_W = np.log(_W / 2.0)  # weights on [0, 1]


def _mass_end(m, alpha, beta, rx, s, t_x, T):
    """End ``t_E`` of the mass region (where the integrand, in ``v = log(min(alpha,
    beta) + tau)``, is E_FOLDS below its maximum on ``[t_x, inf)``), or ``T``."""
    swap = alpha > beta
    lo = m.minimum(alpha, beta)
    e1 = m.where(swap, s + 1.0, rx)  # exponent of the factor with the smaller scale
    e2 = m.where(swap, rx, s + 1.0)
    k1 = e1 + e2 - 1.0
    log_d = m.log(m.maximum(m.maximum(alpha, beta) - lo, 1e-300))

    def phi(v):  # (1 - e1) v - e2 log(D + e^v)
        return (1.0 - e1) * v - e2 * (log_d + m.softplus(v - log_d))

    def dphi(v):
        return (1.0 - e1) - e2 * m.expit(v - log_d)

    v0, v1 = m.log(lo + t_x), m.log(lo + T)
    has_mode = e1 < 1.0
    q = m.where(has_mode, (1.0 - e1) / e2, 0.5)
    top = m.where(has_mode, m.maximum(log_d + m.log(q) - m.log1p(-q), v0), v0)
    # Start left of the root (slopes are >= -k1), then Newton: the first step lands on
    # the right of the root (concavity) and the next ones approach it from there.
    target = phi(top) - E_FOLDS
    v = top + E_FOLDS / k1
    for _ in range(N_NEWTON):
        v = v + (phi(v) - target) / m.maximum(-dphi(v), 1e-300)
    truncated = v < v1
    v_safe = m.minimum(v, v1)
    return m.where(truncated, m.exp(v_safe) - lo, T)


def pareto_nbd_logp(r, alpha, s, beta, x, t_x, T):
    """Per-customer Pareto/NBD log-likelihood (Schmittlein, Morrison & Colombo 1987).

    Parameters
    ----------
    r, alpha : Gamma distribution of purchase rates ``lambda`` (> 0).
    s, beta : Gamma distribution of dropout rates ``mu`` (> 0).
    x, t_x, T : frequency, recency and age in one time unit.

    Notes
    -----
    See the module docstring for the quadrature. Where ``T == t_x`` the dropout term is
    exactly 0 and is masked; the masked branch is computed on a safe positive interval so
    gradients stay finite.
    """
    m = ops_for(r, alpha, s, beta, x, t_x, T)
    rx = r + x
    log_const = m.gammaln(rx) - m.gammaln(r) + r * m.log(alpha) + s * m.log(beta)
    log_alive = -rx * m.log(alpha + T) - s * m.log(beta + T)
    has_gap = T - t_x > 0
    T_safe = m.where(has_gap, T, t_x + 1.0)

    # Discretisation: computed from parameter values only (no gradient flows through it).
    sg = m.stop_gradient
    a_, b_, rx_, s_ = sg(alpha), sg(beta), sg(rx), sg(s)
    t_end = _mass_end(m, a_, b_, rx_, s_, t_x, T_safe)

    def slope(tau):  # -d log f / d tau
        return rx_ / (a_ + tau) + (s_ + 1.0) / (b_ + tau)

    ratio = m.maximum(slope(t_x) / slope(t_end) - 1.0, 1e-12)
    mc = m.minimum((t_end - t_x) / ratio, M_CAP * (m.minimum(a_, b_) + t_x))  # m + t_x
    big_u = m.log1p((t_end - t_x) / mc)  # length of the interval in w
    d = (mc * slope(t_x) - 1.0) / UNDER_MAP  # slope removed by the map
    d = m.where(abs(d * big_u) < 1e-9, 1e-9 / big_u, d)
    c = -m.expm1(-d * big_u)
    e = m.expand
    du = -m.log1p(-e(c) * _U) / e(d)  # w - w(t_x) at the nodes
    tau = sg(e(t_x) + e(mc) * m.expm1(du))
    log_jac = sg(e(m.log(c / d) + m.log(mc)) + (e(d) + 1.0) * du)

    log_f = -e(rx) * m.log(e(alpha) + tau) - e(s + 1.0) * m.log(e(beta) + tau)
    log_dropout = m.log(s) + m.logsumexp(log_f + log_jac + _LOG_W, axis=-1)
    # log(exp(A) + exp(B)) = A + softplus(B - A); B is masked where there is no gap.
    return log_const + log_alive + m.where(has_gap, m.softplus(log_dropout - log_alive), 0.0)


def pareto_nbd_individual_logp(lam, mu, x, t_x, T):
    """Log-likelihood of one customer's history given their own rates (no mixing).

    Purchases are Poisson(``lam``) while alive; the lifetime is Exponential(``mu``):

    ``L = lam^x mu/(lam+mu) e^{-(lam+mu) t_x} + lam^(x+1)/(lam+mu) e^{-(lam+mu) T}``

    (Abe 2009, eq. 4; Schmittlein et al. 1987). The individual-level building block of the
    hierarchical Bayes Pareto/NBD (:func:`bayesclv.models.build_abe_pareto_nbd`).
    """
    m = ops_for(lam, mu, x, t_x, T)
    total = lam + mu
    log_lam, log_mu = m.log(lam), m.log(mu)
    a = log_mu - total * t_x
    b = log_lam - total * T
    hi = m.maximum(a, b)
    return x * log_lam - m.log(total) + hi + m.log(m.exp(a - hi) + m.exp(b - hi))


# --------------------------------------------------------------------------- truth
@dataclass(frozen=True)
class ParetoNBDParams:
    """Pareto/NBD population: ``lambda ~ Gamma(r, rate alpha)``, ``mu ~ Gamma(s, rate beta)``."""

    r: float
    alpha: float
    s: float
    beta: float

    def __post_init__(self) -> None:
        validate_positive(self)


# --------------------------------------------------------------------------- family
class ParetoNBDFamily(PurchaseFamily):
    name = "pareto_nbd"
    label = "Pareto/NBD"
    params = ("r", "alpha", "s", "beta")
    unconstrained = ("log_purchase_rate", "log_r", "log_dropout_rate", "log_s")
    priors_class = ParetoNBDPriors
    truth_class = ParetoNBDParams
    discount_scale = "beta"

    def to_natural(self, **theta) -> dict:
        return pareto_nbd_natural(**theta)

    def logp(self, r, alpha, s, beta, x, t_x, T):
        return pareto_nbd_logp(r, alpha, s, beta, x, t_x, T)

    def mle_start(self) -> dict[str, float]:
        return {"log_purchase_rate": -2.0, "log_r": 0.0, "log_dropout_rate": -3.0,
                "log_s": 0.0}

    # -- P(alive) and expectations ---------------------------------------------------
    def log_p_alive(self, th, x, t_x, T) -> np.ndarray:
        """``P(alive) = L_alive / L``: ``L_alive`` is the "still alive at T" term of the
        likelihood and ``L`` the likelihood itself (:func:`pareto_nbd_logp`, one
        implementation), so ``log P = log L_alive - log L``."""
        x = np.asarray(x, dtype=np.float64)
        t_x = np.asarray(t_x, dtype=np.float64)
        T = np.asarray(T, dtype=np.float64)
        r, alpha, s, beta = th["r"], th["alpha"], th["s"], th["beta"]
        rx = r + x
        log_alive = (
            sps.gammaln(rx) - sps.gammaln(r) + r * np.log(alpha) + s * np.log(beta)
            - rx * np.log(alpha + T) - s * np.log(beta + T)
        )
        return np.minimum(log_alive - pareto_nbd_logp(r, alpha, s, beta, x, t_x, T), 0.0)

    def expected_alive(self, th, x, T, t) -> np.ndarray:
        """Given alive, ``E[X(t) | lambda, mu] = lambda/mu (1 - exp(-mu t))``, so

        ``Phi = (r+x)/(alpha+T) * (beta+T)/(s-1) * [1 - ((beta+T)/(beta+T+t))^(s-1)]``

        (Schmittlein et al. 1987; Fader & Hardie 2005 note), with the limit
        ``(beta+T) log(1 + t/(beta+T))`` at ``s = 1`` (via ``expm1``)."""
        x = np.asarray(x, dtype=np.float64)
        T = np.asarray(T, dtype=np.float64)
        B = th["beta"] + T
        return (th["r"] + x) / (th["alpha"] + T) * B * expm1_ratio(
            th["s"] - 1.0, np.log1p(np.asarray(t, dtype=np.float64) / B)
        )

    def expected_alive_bounds(self, th, x, T, t):
        """``0 <= Phi <=`` the Poisson mean without dropout, ``(r + x) t / (alpha + T)``."""
        n = th["r"] + np.asarray(x, dtype=np.float64)
        upper = n * np.asarray(t, dtype=np.float64) / (th["alpha"] + np.asarray(T, dtype=float))
        return np.zeros_like(upper), upper

    def alive_tables(self, dp, g, x, T, times, wsets, n_jobs, direct):
        """Only ``R(s-1, log1p(t/B))``, ``B = beta + T``, depends on time, and only through
        ``(segment, T)``: summed once per unique ``(segment, T)`` and draw, then scaled
        per row by ``(r + x)/(alpha + T) * B``."""
        code, (gT, TT) = factorize_rows(g, T)
        th = dp.columns(gT)
        B = th["beta"] + TT
        eps = th["s"] - 1.0
        acc = np.zeros((len(wsets), *B.shape))
        for k in np.flatnonzero((wsets != 0).any(axis=0)):
            R = expm1_ratio(eps, np.log1p(times[k] / B))
            for j, w in enumerate(wsets[:, k]):
                if w != 0:
                    acc[j] += w * R
        thr = dp.columns(g)
        scale = (thr["r"] + x) / (thr["alpha"] + T) * (thr["beta"] + T)
        return acc[:, :, code] * scale

    # -- conditional simulation ------------------------------------------------------
    def latent_given_alive(self, th, x, T, rng) -> dict[str, np.ndarray]:
        lam = rng.gamma(th["r"] + x, 1.0 / (th["alpha"] + T))
        mu = rng.gamma(np.broadcast_to(th["s"], lam.shape), 1.0 / (th["beta"] + T))
        return {"lam": lam, "mu": mu}

    def window_log_pmf(self, latent, y, h) -> np.ndarray:
        """Lifetime ``tau ~ Exp(mu)``, ``Y ~ Poisson(lambda min(tau, h))``:
        ``P(Y=y) = e^{-mu h} Poisson(y; lambda h) + mu/(lambda+mu) (lambda/(lambda+mu))^y
        P(Gamma(y+1, 1) <= (lambda+mu) h)`` (the Poisson integrated over the lifetime)."""
        return pareto_window_log_pmf(latent["lam"], latent["mu"], y, h)

    def simulate_window(self, latent, h, rng) -> np.ndarray:
        lam, mu = latent["lam"], latent["mu"]
        tau = rng.standard_exponential(lam.shape) / mu
        return rng.poisson(lam * np.minimum(tau, h))

    def future_events(self, th, x, T, alive, horizon, rng):
        """The first purchase time (Lomax, ``lambda`` integrated out) and the dropout time
        (Lomax with ``(beta + T, s)``, ``mu`` integrated out) are drawn for every
        customer-draw; only those buying before both the horizon and their dropout get
        ``lambda | tau_1 ~ Gamma(n + 1, A + tau_1)`` and further exponential arrivals."""
        shape = alive.shape
        n_rate = th["r"] + x
        A = th["alpha"] + T
        B = th["beta"] + T
        with np.errstate(divide="ignore", over="ignore"):
            tau1 = A * np.expm1(-np.log(rng.random(shape)) / n_rate)
            end = np.minimum(horizon, B * np.expm1(-np.log(rng.random(shape)) / th["s"]))
        act_r, act_d = np.nonzero(alive & (tau1 <= end))
        pos = act_r * shape[1] + act_d
        tau = tau1[act_r, act_d]
        end_a = end[act_r, act_d]
        lam = rng.standard_gamma(n_rate[act_r, act_d] + 1.0) / (A[act_r, 0] + tau)
        out_pos, out_tau = [], []
        live = np.arange(tau.size)
        while live.size:
            out_pos.append(pos[live])
            out_tau.append(tau[live].copy())
            tau[live] += rng.standard_exponential(live.size) / lam[live]
            live = live[tau[live] <= end_a[live]]
        if not out_pos:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(out_pos), np.concatenate(out_tau)

    def simulate_history(self, pop, ages, h, rng) -> History:
        """Lifetime ``tau ~ Exp(mu)``; ``x ~ Poisson(lambda min(tau, T))`` and, given ``x``,
        the last of ``x`` uniform times on ``(0, min(tau, T)]`` is ``t_x``."""
        n = ages.shape[0]
        lam = rng.gamma(pop["r"], 1.0 / pop["alpha"])
        mu = rng.gamma(pop["s"], 1.0 / pop["beta"])
        tau = rng.standard_exponential(n) / mu
        window = np.minimum(tau, ages)
        x = rng.poisson(lam * window)
        t_x = window * beta_order_stat(rng, x, x)
        hold_window = np.clip(tau - ages, 0.0, h)
        y = rng.poisson(lam * hold_window)
        return History(
            latent={"lam": lam, "mu": mu},
            frequency=x,
            recency=t_x,
            alive_at_T=tau > ages,
            holdout_frequency=y,
            alive_at_end=tau > ages + h,
            dropout_time=tau,
            hold_end=ages + hold_window,
            hold_pinned=np.zeros(n, dtype=bool),
        )


PARETO_NBD = ParetoNBDFamily()
