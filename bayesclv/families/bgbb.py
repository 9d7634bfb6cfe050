"""BG/BB: everything the package knows about the beta-geometric/beta-Bernoulli family.

Model (Fader, Hardie & Shang 2010, section 2): after the first transaction (time 0) a
customer has discrete transaction opportunities 1, 2, ... While alive they transact at
each opportunity with probability ``p ~ Beta(alpha, beta)``; at the start of every
opportunity a living customer becomes inactive for good with probability
``theta ~ Beta(gamma, delta)``. The summary of ``n`` opportunities is ``x`` (repeat
transactions) and ``t_x`` (the opportunity of the last one, 0 if none); in
:class:`~bayesclv.data.RFMData` they are ``frequency``, ``recency`` and ``T = n``, whole
numbers in a period time unit (e.g. ``"year"`` for annual donations).

"Alive" (``p_alive``, ``latent_given_alive``, ``future_events``) means *alive at
opportunity n + 1*, the first one after calibration: FHS (2010) eq. (11), the published
P(alive) (0.11 / 0.59 / 0.93 on the donations data). A customer who is not alive then
makes no future transaction, so ``E[X(n, n + n*)] = P(alive) * Phi(n*)`` with ``Phi`` the
expectation given alive (eq. 13 is that product). Given the history and alive at
``n + 1`` the individual parameters are independent and conjugate:
``p ~ Beta(alpha + x, beta + n - x)`` and ``theta ~ Beta(gamma, delta + n + 1)``.

Time arguments (``t``, ``h``, ``horizon``) count opportunities; a non-integer value means
its floor (with a 1e-9 tolerance for floating-point round-off), i.e. the whole
opportunities in ``(n, n + t]``. Continuous discounting therefore sees a step function:
use ``discounting="per_period"`` with BG/BB.

References
----------
Fader, P. S., Hardie, B. G. S. and Shang, J. (2010). "Customer-base analysis in a
discrete-time noncontractual setting". Marketing Science 29(6), 1086-1108: eq. (5)
(likelihood), eq. (11) (P(alive)), eq. (13) (conditional expectation), eq. (7)
(expected transactions of a new customer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import scipy.special as sps
from scipy import stats

from bayesclv.errors import ModelSpecificationError, describe_rows
from bayesclv.families.base import History, ModelRows, PurchaseFamily
from bayesclv.families.sampling import validate_positive
from bayesclv.ops import ops_for
from bayesclv.priors import CVPrior, NormalPrior

__all__ = ["BGBB", "BGBBParams", "BGBBPriors", "bgbb_logp", "bgbb_natural"]

#: Floating-point tolerance when a time argument is floored to whole opportunities.
_WHOLE_TOL = 1e-9
#: Log-scale offset that switches off the padded entries of the eq. (5) sum: they are
#: set 1000 nats below the "alive" term, so they add exp(-1000) (zero in double
#: precision) to the likelihood and nothing to its gradient, and stay finite (no
#: ``log(0)`` whose gradient would be NaN).
_OFF = 1000.0


def _whole(t) -> np.ndarray:
    """Whole opportunities in a window of length ``t`` (floor, round-off tolerant)."""
    return np.floor(np.asarray(t, dtype=np.float64) + _WHOLE_TOL)


# --------------------------------------------------------------------------- priors
def _check_prior_fields(obj) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name == "segment_sigma":
            if not (math.isfinite(value) and value > 0):
                raise ModelSpecificationError(
                    f"{type(obj).__name__}.segment_sigma must be finite and > 0, got {value}."
                )
        elif not isinstance(value, NormalPrior | CVPrior):
            raise ModelSpecificationError(
                f"{type(obj).__name__}.{f.name} must be a NormalPrior, got "
                f"{type(value).__name__}."
            )


@dataclass(frozen=True)
class BGBBPriors:
    """Priors of the BG/BB model, on the means and concentrations of its two Betas.

    Unconstrained parameters and what the defaults say in words:

    - ``logit_purchase`` = logit(alpha / (alpha + beta)), the mean probability that a
      living customer transacts at an opportunity. Default Normal(0, 1.5): 5% to 95%
      within two standard deviations.
    - ``log_purchase_concentration`` = log(alpha + beta), how alike customers'
      transaction probabilities are (2 with mean 0.5 is a uniform Beta). Default
      Normal(log 2, 1.5): from strongly U-shaped (0.1) to tightly bunched (40).
    - ``logit_dropout`` = logit(gamma / (gamma + delta)), the mean probability of
      becoming inactive at each opportunity. Default Normal(logit 0.2, 1.5): from about
      1% to 85% per opportunity.
    - ``log_dropout_concentration`` = log(gamma + delta). Default Normal(log 3, 1.5).
    - ``segment_sigma``: HalfNormal scale of the between-segment standard deviation of
      each unconstrained parameter under partial pooling. Default 0.5.

    Why these scales: ``(alpha, beta)`` are strongly correlated in the posterior (the
    data pin down their ratio, the mean transaction probability, much better than their
    sum), and so are ``(gamma, delta)``; mean and concentration are nearly orthogonal,
    the decomposition BG/NBD uses for its dropout Beta. The prior predictive check in
    ``tests/test_family_bgbb.py`` shows what the defaults imply for six opportunities.
    """

    logit_purchase: NormalPrior = NormalPrior(0.0, 1.5)
    log_purchase_concentration: NormalPrior = NormalPrior(math.log(2.0), 1.5)
    logit_dropout: NormalPrior = NormalPrior(math.log(0.2 / 0.8), 1.5)
    log_dropout_concentration: NormalPrior = NormalPrior(math.log(3.0), 1.5)
    segment_sigma: float = 0.5

    def __post_init__(self) -> None:
        _check_prior_fields(self)


def bgbb_natural(
    logit_purchase, log_purchase_concentration, logit_dropout, log_dropout_concentration
):
    """alpha = phi_p kappa_p, beta = (1 - phi_p) kappa_p; gamma, delta likewise."""
    m = ops_for(logit_purchase, log_purchase_concentration, logit_dropout,
                log_dropout_concentration)  # fmt: skip
    kp = m.exp(log_purchase_concentration)
    kd = m.exp(log_dropout_concentration)
    return {
        "alpha": m.expit(logit_purchase) * kp,
        "beta": m.expit(-logit_purchase) * kp,
        "gamma": m.expit(logit_dropout) * kd,
        "delta": m.expit(-logit_dropout) * kd,
    }


# --------------------------------------------------------------------------- truth
@dataclass(frozen=True)
class BGBBParams:
    """BG/BB population: ``p ~ Beta(alpha, beta)``, ``theta ~ Beta(gamma, delta)``."""

    alpha: float
    beta: float
    gamma: float
    delta: float

    def __post_init__(self) -> None:
        validate_positive(self)


# --------------------------------------------------------------------------- likelihood
def _bgbb_terms(alpha, beta, gamma, delta, x, t_x, n):
    """``(log A, log sum_i B_i)`` of FHS (2010) eq. (5).

    ``A = B(alpha+x, beta+n-x)/B(alpha, beta) * B(gamma, delta+n)/B(gamma, delta)`` is
    "alive through opportunity n"; ``B_i = B(alpha+x, beta+t_x-x+i)/B(alpha, beta) *
    B(gamma+1, delta+t_x+i)/B(gamma, delta)``, ``i = 0..n-t_x-1``, is "became inactive at
    the start of opportunity t_x+i+1". The sum has a data-dependent length; it is
    evaluated over a fixed trailing axis of length ``max(n - t_x)`` (read from the data,
    which must be NumPy arrays) with the entries beyond ``n - t_x - 1`` set ``_OFF``
    nats below ``log A`` and a max-shifted log-sum-exp, so PyTensor differentiates it.
    """
    m = ops_for(alpha, beta, gamma, delta)
    x, t_x, n = (np.asarray(v, dtype=np.float64) for v in (x, t_x, n))
    gap = n - t_x
    width = max(1, int(np.max(gap))) if gap.size else 1
    i = np.arange(width, dtype=np.float64)
    log_norm = m.betaln(alpha, beta) + m.betaln(gamma, delta)
    log_alive = (
        m.betaln(alpha + x, beta + n - x) + m.betaln(gamma, delta + n) - log_norm
    )
    e = m.expand
    j = t_x[..., None] + i  # opportunity of the dropout minus one: t_x + i
    log_b = (
        m.betaln(e(alpha + x), e(beta - x) + j)
        + m.betaln(e(gamma + 1.0), e(delta) + j)
        - e(log_norm)
    )
    keep = i < gap[..., None]
    log_b = m.where(keep, log_b, e(log_alive) - _OFF)
    return log_alive, m.logsumexp(log_b, axis=-1)


def bgbb_logp(alpha, beta, gamma, delta, x, t_x, n):
    """Per-customer BG/BB log-likelihood, FHS (2010) eq. (5).

    ``L = A + sum_{i=0}^{n-t_x-1} B_i`` (see :func:`_bgbb_terms`), evaluated as
    ``log A + softplus(log sum B - log A)``; where ``t_x = n`` the sum is empty and the
    softplus underflows to exactly 0.

    Parameters
    ----------
    alpha, beta : Beta distribution of the transaction probability ``p`` (> 0).
    gamma, delta : Beta distribution of the dropout probability ``theta`` (> 0).
    x, t_x, n : repeat transactions, opportunity of the last one, opportunities (whole
        numbers, NumPy arrays; ``0 <= x <= t_x <= n``).
    """
    m = ops_for(alpha, beta, gamma, delta)
    log_alive, log_dropped = _bgbb_terms(alpha, beta, gamma, delta, x, t_x, n)
    return log_alive + m.softplus(log_dropped - log_alive)


def _survival_sum(gamma, D, count) -> np.ndarray:
    """``sum_{k=0}^{count-1} E[(1 - theta)^k]`` for ``theta ~ Beta(gamma, D)``, elementwise.

    ``E[(1-theta)^k] = B(gamma, D+k)/B(gamma, D)`` is accumulated by its exact ratio
    ``(D+k-1)/(gamma+D+k-1)`` (no cancellation near ``gamma = 1``, where the closed form
    of eq. (13) is 0/0; O(count) work).
    """
    count = np.asarray(count, dtype=np.float64)
    shape = np.broadcast_shapes(np.shape(gamma), np.shape(D), count.shape)
    out = np.zeros(shape)
    ratio = np.ones(shape)
    top = int(count.max()) if count.size else 0
    for k in range(top):
        out += np.where(k < count, ratio, 0.0)
        ratio = ratio * ((D + k) / (gamma + D + k))
    return out


# --------------------------------------------------------------------------- family
class BGBBFamily(PurchaseFamily):
    name = "bgbb"
    label = "BG/BB"
    params = ("alpha", "beta", "gamma", "delta")
    unconstrained = (
        "logit_purchase", "log_purchase_concentration", "logit_dropout",
        "log_dropout_concentration",
    )  # fmt: skip
    priors_class = BGBBPriors
    truth_class = BGBBParams
    # Continuous discounting places its nodes by this scale; BG/BB's expectation is a
    # step function of time, so use per-period discounting (module docstring).
    discount_scale = "delta"
    discrete_time = True

    # -- model -----------------------------------------------------------------------
    def to_natural(self, **theta) -> dict:
        return bgbb_natural(**theta)

    def logp(self, alpha, beta, gamma, delta, x, t_x, n):
        return bgbb_logp(alpha, beta, gamma, delta, x, t_x, n)

    def mle_start(self) -> dict[str, float]:
        return {"logit_purchase": 0.0, "log_purchase_concentration": math.log(2.0),
                "logit_dropout": math.log(0.25), "log_dropout_concentration": math.log(3.0)}

    def not_applicable(self, rfm) -> str | None:
        """Discrete-time data only: whole opportunities, at most one per period."""
        try:
            self.model_rows(rfm)
        except ModelSpecificationError as exc:
            return str(exc).split(";")[0]
        return None

    def model_rows(self, rfm) -> ModelRows:
        """Every customer; recency and ``T`` must be whole opportunities with
        ``frequency <= recency``."""
        x = rfm.frequency.astype(np.float64)
        t_x, n = rfm.recency, rfm.T
        for col, v in (("recency", t_x), ("T", n)):
            bad = v != np.round(v)
            if bad.any():
                raise ModelSpecificationError(
                    f"BG/BB needs whole numbers of transaction opportunities; column "
                    f"'{col}' is fractional for {int(bad.sum())} customers "
                    f"({describe_rows(rfm.customer_id[bad])}). Summarise the data in "
                    f"periods (one opportunity per period, e.g. time_unit='year')."
                )
        bad = x > t_x
        if bad.any():
            raise ModelSpecificationError(
                f"BG/BB: 'frequency' exceeds 'recency' for {int(bad.sum())} customers "
                f"({describe_rows(rfm.customer_id[bad])}); at most one transaction per "
                f"opportunity, so x <= t_x."
            )
        return ModelRows(np.ones(rfm.n_customers, dtype=bool), (x, t_x, n))

    # -- P(alive) --------------------------------------------------------------------
    def log_p_alive(self, th, x, t_x, T) -> np.ndarray:
        """log P(alive at opportunity n + 1 | x, t_x, n), FHS (2010) eq. (11):
        ``A B(gamma, delta+n+1)/B(gamma, delta+n) / L`` with ``A`` the "alive through n"
        term of the likelihood, i.e. ``-softplus(log sum B - log A) -
        log1p(gamma / (delta + n))``."""
        T = np.asarray(T, dtype=np.float64)
        with np.errstate(divide="ignore"):
            log_alive, log_dropped = _bgbb_terms(
                th["alpha"], th["beta"], th["gamma"], th["delta"], x, t_x, T
            )
        return -np.logaddexp(0.0, log_dropped - log_alive) - np.log1p(
            th["gamma"] / (th["delta"] + T)
        )

    def p_alive_rows(self, th, x, t_x, T) -> np.ndarray:
        """Computed once per distinct ``(x, t_x, T)`` of the group (there are at most
        ``(n+1)(n+2)/2`` per age ``n``) and gathered."""
        key = np.column_stack([np.asarray(v, dtype=np.float64) for v in (x, t_x, T)])
        uniq, inv = np.unique(key, axis=0, return_inverse=True)
        pa = self.p_alive(th, uniq[:, :1], uniq[:, 1:2], uniq[:, 2:3])
        return pa[inv.ravel()]

    # -- expectations ----------------------------------------------------------------
    def expected_alive(self, th, x, T, t) -> np.ndarray:
        """Expected transactions in opportunities ``n+1 .. n+floor(t)`` given alive at
        ``n + 1``: ``E[p] * sum_{k=0}^{floor(t)-1} E[(1-theta)^k]`` with
        ``p ~ Beta(alpha+x, beta+n-x)`` and ``theta ~ Beta(gamma, delta+n+1)``; times
        P(alive) this is FHS (2010) eq. (13)."""
        x = np.asarray(x, dtype=np.float64)
        T = np.asarray(T, dtype=np.float64)
        mean_p = (th["alpha"] + x) / (th["alpha"] + th["beta"] + T)
        return mean_p * _survival_sum(th["gamma"], th["delta"] + T + 1.0, _whole(t))

    def alive_tables(self, dp, g, x, T, times, wsets, n_jobs, direct):
        """One pass over the opportunities up to the horizon: the running sum of
        ``E[(1-theta)^k]`` is the expectation at every whole time at once."""
        th = dp.columns(g)
        counts = _whole(times).astype(np.int64)
        top = int(counts.max()) if counts.size else 0
        weight = np.zeros((len(wsets), top + 1))
        for k, c in enumerate(counts):
            weight[:, c] += wsets[:, k]
        mean_p = (th["alpha"] + x) / (th["alpha"] + th["beta"] + T)
        D = th["delta"] + T + 1.0
        out = np.zeros((len(wsets), *mean_p.shape))
        run = np.zeros(mean_p.shape)
        ratio = np.ones(mean_p.shape)
        for c in range(1, top + 1):
            run += ratio
            ratio *= (D + (c - 1)) / (th["gamma"] + D + (c - 1))
            for s in np.flatnonzero(weight[:, c]):
                out[s] += weight[s, c] * run
        return out * mean_p

    # -- conditional simulation ------------------------------------------------------
    def latent_given_alive(self, th, x, T, rng) -> dict[str, np.ndarray]:
        a, b, g, d = np.broadcast_arrays(
            th["alpha"] + x, th["beta"] + T - x, th["gamma"], th["delta"] + T + 1.0
        )
        return {"p": rng.beta(a, b), "theta": rng.beta(g, d)}

    def window_log_pmf(self, latent, y, h) -> np.ndarray:
        """A customer alive at the first of ``H = floor(h)`` opportunities is alive for
        ``L`` of them, ``P(L = l) = theta (1-theta)^(l-1)`` for ``l < H`` and
        ``(1-theta)^(H-1)`` for ``l = H``, and transacts ``Binomial(L, p)`` times."""
        p, theta = latent["p"], latent["theta"]
        y = np.asarray(y)
        H = int(_whole(h))
        shape = np.broadcast_shapes(np.shape(p), np.shape(theta), y.shape)
        if H == 0:
            return np.broadcast_to(np.where(y == 0, 0.0, -np.inf), shape).copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            log_stay, log_leave = np.log1p(-theta), np.log(theta)
            terms = []
            log_reach = np.zeros(np.shape(theta))  # log P(L >= l)
            for ell in range(1, H + 1):
                log_len = log_reach + (log_leave if ell < H else 0.0)
                terms.append(np.broadcast_to(log_len + stats.binom.logpmf(y, ell, p), shape))
                log_reach = log_reach + log_stay
            return sps.logsumexp(np.stack(terms), axis=0)

    def simulate_window(self, latent, h, rng) -> np.ndarray:
        p, theta = np.broadcast_arrays(latent["p"], latent["theta"])
        H = _whole(h)
        return rng.binomial(np.minimum(_alive_count(theta, rng), H).astype(np.int64), p)

    def future_events(self, th, x, T, alive, horizon, rng):
        """Transactions at opportunities ``T+1 .. T+floor(horizon)`` (returned as
        ``1, 2, ...`` after ``T``) of the alive customer-draws, with ``p`` and ``theta``
        drawn from their law given the history and alive at ``T + 1``."""
        shape = alive.shape
        H = int(_whole(horizon))
        act_r, act_d = np.nonzero(alive)
        if H == 0 or act_r.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        pos = act_r * shape[1] + act_d

        def at(v):
            return np.broadcast_to(v, shape)[act_r, act_d]

        p = rng.beta(at(th["alpha"] + x), at(th["beta"] + T - x))
        theta = rng.beta(at(th["gamma"]), at(th["delta"] + T + 1.0))
        span = np.minimum(_alive_count(theta, rng), H)
        out_pos, out_tau = [], []
        live = np.arange(pos.size)
        for k in range(1, H + 1):
            live = live[span[live] >= k]
            if live.size == 0:
                break
            buy = live[rng.random(live.size) < p[live]]
            out_pos.append(pos[buy])
            out_tau.append(np.full(buy.size, float(k)))
        if not out_pos:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(out_pos), np.concatenate(out_tau)

    def simulate_history(self, pop, ages, h, rng) -> History:
        """Opportunity by opportunity: the customer leaves at the start of opportunity
        ``D ~ Geometric(theta)`` on {1, 2, ...} (alive for ``1..D-1``) and transacts at
        each opportunity while alive with probability ``p``. ``alive_at_T`` is "alive at
        opportunity T + 1" and ``dropout_time`` is ``D`` (the convention of
        :meth:`p_alive`); ages and ``h`` must be whole numbers."""
        ages = np.asarray(ages, dtype=np.float64)
        frac = ages != np.round(ages)
        if frac.any() or _whole(h) != h:
            raise ModelSpecificationError(
                "BG/BB simulates whole transaction opportunities: pass a whole number (or "
                "an array of whole numbers) as T, not a (min, max) range, and a whole "
                f"holdout_length (got {int(frac.sum())} fractional ages, holdout {h!r})."
            )
        n_cust = ages.shape[0]
        p = rng.beta(pop["alpha"], pop["beta"])
        theta = rng.beta(pop["gamma"], pop["delta"])
        # alive at 0; the first coin is tossed at the start of opportunity 1, so the first
        # opportunity no longer alive is Geometric(theta) on {1, 2, ...}
        leave = _alive_count(theta, rng)
        n = ages.astype(np.int64)
        end = n + int(h)
        x = np.zeros(n_cust, dtype=np.int64)
        t_x = np.zeros(n_cust, dtype=np.int64)
        y = np.zeros(n_cust, dtype=np.int64)
        live = np.arange(n_cust)
        k = 1
        while live.size:
            live = live[(k < leave[live]) & (k <= end[live])]
            buy = live[rng.random(live.size) < p[live]]
            cal = buy[k <= n[buy]]
            x[cal] += 1
            t_x[cal] = k
            y[buy[k > n[buy]]] += 1
            k += 1
        return History(
            latent={"p": p, "theta": theta},
            frequency=x,
            recency=t_x.astype(np.float64),
            alive_at_T=leave > n + 1,
            holdout_frequency=y,
            alive_at_end=leave > end + 1,
            dropout_time=leave,
            hold_end=(end).astype(np.float64),
            hold_pinned=np.zeros(n_cust, dtype=bool),
        )


def _alive_count(theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``Geometric(theta)`` on {1, 2, ...} by inversion, as float (``inf`` where ``theta``
    is 0): the opportunities a customer alive at the first one stays alive for, or the
    first opportunity a customer alive at time 0 is no longer alive at."""
    theta = np.asarray(theta, dtype=np.float64)
    u = 1.0 - rng.random(theta.shape)  # in (0, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        count = np.ceil(np.log(u) / np.log1p(-np.minimum(theta, 1.0)))
    return np.where(theta > 0, np.maximum(np.nan_to_num(count, nan=1.0), 1.0), np.inf)


BGBB = BGBBFamily()
