"""BG/CNBD-k and MBG/CNBD-k: the regularity families (Erlang-k inter-purchase times).

Model (Reutterer, Platzer & Schröder 2021): while alive, a customer's times between
purchases are Erlang-k with rate ``lambda ~ Gamma(r, rate alpha)``: the purchases are
every k-th event ("phase") of a Poisson process of rate ``lambda``, so the mean time
between purchases is ``k / lambda`` and its coefficient of variation ``1 / sqrt(k)``
(regular buyers have a large ``k``). Right after each repeat purchase the customer drops
out with probability ``p ~ Beta(a, b)``; MBG/CNBD-k also tosses that coin after the first
purchase. ``k = 1`` is BG/NBD (MBG/NBD). One module, two registry entries, as for
:mod:`bayesclv.families.bgnbd`.

How ``k`` is handled
--------------------
``k`` is a small whole number, fixed per fit, chosen by maximum likelihood as in the
paper: :func:`profile_k` fits the four other parameters for ``k = 1, 2, ...`` and
:func:`choose_k` returns the ``k`` of the highest log-likelihood. (Marginalising over
``k`` inside one NUTS run is not the paper's model: ``k`` is one population-level
integer, so its posterior needs the marginal likelihood of each ``k``; the profile is
what the published figures use.) The family object carries ``k`` while building
(``BGCNBD.with_k(2)``; the registry entries ``FAMILIES["bgcnbd"]`` have no ``k`` and
cannot build a model), and the model stores it as a constant ``Deterministic`` ``k`` of
dims ``("segment",)``: every posterior draw has ``k`` next to ``r, alpha, a, b``
(``params`` below), so ``posterior_params``, saved fits, ``predict``, ``clv`` and
``diagnostics`` all receive it with the draws and the registry entry reads it from
there (``check_draws`` refuses draws whose ``k`` is not one whole number).

Data: besides ``x, t_x, T`` the likelihood needs each customer's sum of log
inter-purchase times ``litt`` (:attr:`bayesclv.data.RFMData.litt`, computed by
:func:`bayesclv.data.rfm_summary` and
:func:`bayesclv.bigdata.rfm_summary_parquet`).

Formulas (derived here; ``n = r + k x``, ``A = alpha + T``, ``u = T - t_x``,
``b' = b + x`` (BG) or ``b + x + 1`` (MBG); they are those of BTYDplus ``xbgcnbd.LL`` and
``xbgcnbd.PAlive``):

* likelihood: ``L = exp((k-1) litt) / ((k-1)!)^x * B(a, b')/B(a, b) * Gamma(n) alpha^r
  / (Gamma(r) A^n) * [S + 1{x > 0 or MBG} a/(b'-1) (A/(alpha+t_x))^n]`` with
  ``S = sum_{j<k} (n)_j / j! (u/A)^j``: the Erlang densities of the ``x`` gaps, the
  Erlang survival of the open gap ``u`` (alive), or a dropout right after the last
  purchase, with ``lambda`` and ``p`` integrated out;
* P(alive) = ``S / (S + 1{..} a/(b'-1) (A/(alpha+t_x))^n)``;
* given the history and alive at ``T``: the number ``J`` of phases completed in the
  open gap has ``P(J = j) = (n)_j/j! (u/A)^j / S`` (``j < k``), ``lambda | J ~
  Gamma(n + J, rate A)`` and ``p ~ Beta(a, b')``; the next purchase comes after
  ``k - J`` more phases, the following ones every ``k`` phases;
* purchases in ``(T, T + t]`` given alive: ``Y = min(K, G)`` with ``K = floor((M + J)
  / k)``, ``M ~ Poisson(lambda t)`` phases, and ``G ~ Geometric(p)`` on ``{1, 2, ...}``
  purchases before dropout, so ``E[Y] = E[C(K)]`` with ``C(m) = sum_{i<m} B(a, b'+i) /
  B(a, b')``; with ``lambda`` integrated out ``M | J`` is negative binomial, and
  :func:`erlang_phi` sums ``P(M + J = v) C(floor(v / k))`` exactly over the window of
  ``v`` holding all but ``~1e-15`` of the mass (no approximation such as BTYDplus's
  BG/NBD-with-``k alpha`` form of the conditional expectation).

Unlike BG/NBD, the future of a customer alive at ``T`` depends on the time since the
last purchase (the phase ``J``): :meth:`CNBDFamily.expected_alive`,
:meth:`~CNBDFamily.latent_given_alive` and :meth:`~CNBDFamily.future_events` take the
recency ``t_x`` as a keyword and refuse to guess it.

References
----------
Reutterer, T., Platzer, M. and Schröder, N. (2021). "Leveraging purchase regularity for
predicting customer behavior the easy way". International Journal of Research in
Marketing 38(1).
Platzer, M. and Reutterer, T. (2016). "Ticking away the moments: timing regularity
helps to better predict customer activity". Marketing Science 35(5).
Fader, Hardie & Lee (2005) and Batislam, Denizel & Filiztekin (2007) for ``k = 1``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.special as sps
from scipy import stats

from bayesclv.errors import ModelSpecificationError, NumericalError
from bayesclv.families.base import Groups, History, ModelRows, PurchaseFamily, make_groups
from bayesclv.families.sampling import beta_order_stat, geometric_count, validate_positive
from bayesclv.ops import ops_for
from bayesclv.priors import BGNBDPriors
from bayesclv.transforms import bgnbd_natural

__all__ = [
    "BGCNBD",
    "MBGCNBD",
    "CNBDFamily",
    "BGCNBDParams",
    "MBGCNBDParams",
    "KProfile",
    "cnbd_logp",
    "erlang_phi",
    "profile_k",
    "choose_k",
]

#: Largest ``k`` accepted (the likelihood's sum ``S`` stays far from overflow below it).
K_LIMIT = 50
#: Standard deviations and e-folds of tail kept outside the summation window of
#: :func:`erlang_phi` (the mass left out is below ~1e-15 of the total: measured against
#: a window twice as wide in the tests, and the mass inside is checked at run time).
_SD_WINDOW = 8.0
_TAIL_EFOLDS = 36.0
#: Window positions per batch of :func:`erlang_phi` (memory: ~10 arrays of this size).
_BATCH_ENTRIES = 1 << 20
#: Longest window :func:`erlang_phi` sums (beyond it the value is refused, not guessed).
_MAX_WINDOW = 1 << 24
#: Windows starting beyond this many purchases get ``C`` at their start from chunked
#: running sums (:func:`_cum_survival`) instead of from the window's own arrays.
_CLOSED_FORM_FROM = 1 << 16


# --------------------------------------------------------------------------- truth
def _check_k(obj) -> None:
    k = obj.k
    if not (float(k).is_integer() and 1 <= k <= K_LIMIT):
        raise ModelSpecificationError(
            f"{type(obj).__name__}: 'k' must be a whole number in 1..{K_LIMIT}, got {k!r}."
        )
    object.__setattr__(obj, "k", int(k))


@dataclass(frozen=True)
class BGCNBDParams:
    """BG/CNBD-k population: Erlang-``k`` gaps with ``lambda ~ Gamma(r, rate alpha)``,
    dropout ``p ~ Beta(a, b)`` after each repeat purchase."""

    r: float
    alpha: float
    a: float
    b: float
    k: int = 1

    def __post_init__(self) -> None:
        validate_positive(self)
        _check_k(self)


@dataclass(frozen=True)
class MBGCNBDParams:
    """MBG/CNBD-k population (as BG/CNBD-k, with a dropout coin after the first purchase)."""

    r: float
    alpha: float
    a: float
    b: float
    k: int = 1

    def __post_init__(self) -> None:
        validate_positive(self)
        _check_k(self)


# --------------------------------------------------------------------------- likelihood
def _whole_k(k) -> int:
    """The one whole number ``k`` holds (an int, or an array of equal whole numbers)."""
    arr = np.asarray(k, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if lo != hi or not lo.is_integer() or not 1 <= lo <= K_LIMIT:
        raise ModelSpecificationError(
            f"CNBD-k: k must be one whole number in 1..{K_LIMIT} (it is fixed per fit, not "
            f"estimated), got values in [{lo}, {hi}]. Choose it with "
            f"bayesclv.families.cnbd.profile_k / choose_k (maximum likelihood over k)."
        )
    return int(lo)


def _alive_sum(n, w, k: int):
    """``S = sum_{j<k} (n)_j / j! w^j`` (Horner; every term > 0, ``S >= 1``)."""
    acc = 1.0
    for j in range(k - 1, 0, -1):
        acc = 1.0 + (n + (j - 1.0)) / j * w * acc
    return acc


def _dropped_log_odds(r, alpha, a, b, x, t_x, T, *, k: int, modified: bool):
    """``log(a / (b' - 1)) + n (log A - log(alpha + t_x))`` and ``n``, ``log A``: the log
    of the "dropped right after the last purchase" term relative to ``A^-n``."""
    m = ops_for(r, alpha, a, b, x, t_x, T)
    n = r + k * x
    if modified:
        log_ratio = m.log(a) - m.log(b + x)
    else:
        log_ratio = m.log(a) - m.log(m.where(x > 0, b + x - 1.0, 1.0))
    log_A = m.log(alpha + T)
    return log_ratio + n * (log_A - m.log(alpha + t_x)), n, log_A


def _log_alive_sum(r, alpha, x, t_x, T, *, k: int):
    """``log S`` (0 for ``k = 1``)."""
    if k == 1:
        return 0.0
    m = ops_for(r, alpha, x, t_x, T)
    n = r + k * x
    return m.log(_alive_sum(n, (T - t_x) / (alpha + T), k))


def cnbd_logp(r, alpha, a, b, x, t_x, T, litt, *, k: int, modified: bool = False):
    """Per-customer BG/CNBD-k (``modified=False``) or MBG/CNBD-k log-likelihood.

    ``L`` of the module docstring, evaluated as ``r log alpha - log Gamma(r) - log B(a, b)
    + log Gamma(n) + log B(a, b') + log(S + D) - n log A + (k-1) litt - x log (k-1)!``
    with ``log(S + D) = log S + softplus(log D - log S)``, so neither term over- or
    underflows for large ``x``, ``T`` or ``k``. For ``k = 1`` it performs the operations of
    :func:`bayesclv.families.bgnbd.bgnbd_logp` (:func:`~bayesclv.families.bgnbd.mbgnbd_logp`)
    in the same order, plus two exact zeros: the values are equal bit for bit.
    Backend-neutral (NumPy or PyTensor); ``k`` is a Python int.

    Parameters
    ----------
    r, alpha : Gamma distribution of the phase rate ``lambda`` (> 0).
    a, b : Beta distribution of the dropout probability (> 0).
    x, t_x, T, litt : frequency, recency, age and sum of log gaps (one time unit).
    k : phases per purchase (Erlang order), a whole number >= 1.
    """
    regular = (k - 1.0) * litt - x * math.lgamma(k)
    return _timing_logp(r, alpha, a, b, x, t_x, T, k=k, modified=modified) + regular


def _timing_logp(r, alpha, a, b, x, t_x, T, *, k: int, modified: bool):
    """:func:`cnbd_logp` without ``(k-1) litt - x log (k-1)!``, which has no parameter."""
    m = ops_for(r, alpha, a, b, x, t_x, T)
    z, n, log_A = _dropped_log_odds(r, alpha, a, b, x, t_x, T, k=k, modified=modified)
    b_eff = b + x + 1.0 if modified else b + x
    seg = r * m.log(alpha) - m.gammaln(r) - m.betaln(a, b)
    freq = m.gammaln(n) + m.betaln(a, b_eff)
    if k == 1:
        dropped = m.softplus(z) if modified else m.where(x > 0, m.softplus(z), 0.0)
    else:
        log_S = _log_alive_sum(r, alpha, x, t_x, T, k=k)
        both = log_S + m.softplus(z - log_S)
        dropped = both if modified else m.where(x > 0, both, log_S)
    return seg + freq + (dropped - n * log_A)


# --------------------------------------------------------------------------- Phi
def _log_phase_weights(n, log_w, k: int) -> np.ndarray:
    """``log((n)_j / j! w^j)``, ``j = 0..k-1``, stacked on a new first axis."""
    out = [np.zeros(np.broadcast_shapes(np.shape(n), np.shape(log_w)))]
    with np.errstate(invalid="ignore"):  # -inf (w = 0) plus finite stays -inf
        for j in range(1, k):
            out.append(out[-1] + np.log(n + (j - 1.0)) - math.log(j) + log_w)
    return np.stack(out)


def _log_w(T, t_x, alpha) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(T, dtype=np.float64) - t_x) - np.log(alpha + T)


def _cum_survival(a, b_eff, N) -> tuple[np.ndarray, np.ndarray]:
    """``C(N) = sum_{i<N} c_i`` and ``log c_N``, ``c_i = B(a, b'+i) / B(a, b') = prod_{l<i}
    (b'+l) / (a+b'+l)``, by running sums in chunks of ``2^16`` terms.

    Used where the summation window of :func:`erlang_phi` starts far from 0. The closed
    form ``[(a+b'-1)(1 - c_N) - N c_N] / (a-1)`` (from ``B(x, y) = B(x+1, y) + B(x, y+1)``)
    is not used: it cancels as ``a -> 1`` and ``betaln``'s rounding (~1e-9 at ``b'+N ~
    1e5``) is amplified to ~1e-8 relative there, against ~1e-13 for the sums.
    """
    C = np.zeros(np.shape(N))
    log_c = np.zeros(np.shape(N))
    chunk = 1 << 16
    for i0 in range(0, int(np.max(N)), chunk):
        i = i0 + np.arange(chunk)[None, :]
        used = i < N[:, None]
        step = np.where(used, np.log1p(-a[:, None] / (a[:, None] + b_eff[:, None] + i)), 0.0)
        cum = log_c[:, None] + np.cumsum(step, axis=1)  # log c_{i+1}
        before = np.concatenate([log_c[:, None], cum[:, :-1]], axis=1)  # log c_i
        C = C + np.sum(np.where(used, np.exp(before), 0.0), axis=1)
        log_c = cum[:, -1]
    return C, log_c


def erlang_phi(n, A, a, b_eff, log_w, t, k: int) -> np.ndarray:
    """Expected purchases in ``(T, T + t]`` of an Erlang-``k`` customer alive at ``T``.

    ``n = r + k x``, ``A = alpha + T``, ``b'`` as in the module docstring and
    ``log_w = log(u / A)`` (``-inf`` when the last purchase was at ``T``). With ``q = t /
    (A + t)``, the phases ``N = J + M`` from the last purchase to ``T + t`` have
    ``P(N = v) = sum_j P(J = j) NB(v - j; n + j, q)``, which simplifies to
    ``NB(v; n, q) sum_{j<k} binom(v, j) z^j / S`` with ``z = (u / A) (1 - q) / q`` and
    ``S`` the likelihood's sum (the ratio of the two negative binomial terms is
    ``v!/(v-j)! / (n)_j ((1-q)/q)^j``), and ``Phi = sum_v P(N = v) C(floor(v / k))``.
    The sum runs over the window of ``v`` that leaves out 8 standard deviations below
    and 8 above plus 36 e-folds of the geometric tail ``q^v`` (what a small ``n``
    leaves); the probability inside is normalised to 1 (it is 1 up to the rounding of
    the start values) after a check that it is 1 to 1e-6, else :class:`NumericalError`.
    ``C`` is accumulated term by term (:func:`_cum_survival` up to the window's start
    when it starts beyond ``2^16 k``). Exact up to rounding; the cost is
    the window, about ``16 sd + 36 / (1 - q)`` terms (tens for a holdout year, thousands
    for long CLV horizons; windows over ``2^24`` terms are refused, not approximated).
    """
    shape = np.broadcast_shapes(*(np.shape(v) for v in (n, A, a, b_eff, log_w, t)))
    n, A, a, b_eff, log_w, t = (
        np.broadcast_to(np.asarray(v, dtype=np.float64), shape).ravel()
        for v in (n, A, a, b_eff, log_w, t)
    )
    out = np.zeros(n.shape)
    idx = np.flatnonzero(t > 0)
    if idx.size == 0:
        return out.reshape(shape)
    n, A, a, b_eff, log_w, t = (v[idx] for v in (n, A, a, b_eff, log_w, t))
    q = t / (A + t)
    log_q, log_1q = np.log(q), np.log1p(-q)
    log_S = sps.logsumexp(_log_phase_weights(n, log_w, k), axis=0)
    log_z = log_w + log_1q - log_q
    s_hi = n + (k - 1.0)
    mean_lo = n * q / (1.0 - q)
    mean_hi = s_hi * q / (1.0 - q) + (k - 1.0)
    sd = np.sqrt(s_hi * q) / (1.0 - q)
    lo = np.floor(np.maximum(mean_lo - _SD_WINDOW * sd, 0.0))
    hi = np.ceil(mean_hi + _SD_WINDOW * sd + _TAIL_EFOLDS / -log_q) + k
    width = hi - lo + 1.0
    if (width > _MAX_WINDOW).any():
        bad = int(np.argmax(width))
        raise NumericalError(
            f"CNBD-k expected purchases: the exact sum would need {width[bad]:.3g} terms "
            f"(n={n[bad]:.6g}, alpha+T={A[bad]:.6g}, t={t[bad]:.6g}, i.e. about "
            f"{mean_hi[bad]:.3g} +- {sd[bad]:.3g} phases); refused rather than approximated."
        )
    k_lo = np.where(lo >= _CLOSED_FORM_FROM * k, np.floor(lo / k), 0.0)
    cf = k_lo > 0
    c_start = np.zeros(n.shape)
    log_c0 = np.zeros(n.shape)
    if cf.any():
        c_start[cf], log_c0[cf] = _cum_survival(a[cf], b_eff[cf], k_lo[cf])
    span_k = np.floor(hi / k) - k_lo + 1.0  # C is needed at kappa in [k_lo, hi // k]
    cost = np.maximum(width, span_k)
    order = np.argsort(cost, kind="stable")
    res = np.empty(n.shape)
    start = 0
    while start < order.size:  # batches of similar cost within the entry budget
        size = max(1, int(_BATCH_ENTRIES // cost[order[start]]))
        stop = min(order.size, start + size)
        while stop - start > 1 and (stop - start) * cost[order[stop - 1]] > _BATCH_ENTRIES:
            stop = start + (stop - start) // 2
        sel = order[start:stop]
        res[sel] = _phi_batch(
            n[sel], a[sel], b_eff[sel], log_q[sel], log_1q[sel], log_z[sel], log_S[sel],
            lo[sel], width[sel], k_lo[sel], span_k[sel], c_start[sel], log_c0[sel], k,
        )
        start = stop
    out[idx] = res
    return out.reshape(shape)


def _phi_batch(n, a, b_eff, log_q, log_1q, log_z, log_S, lo, width, k_lo, span_k,
               c_start, log_c0, k):  # fmt: skip
    """``sum_v P(N = v) C(floor(v / k))`` for a batch of elements (see :func:`erlang_phi`)."""
    # Every element gets the batch's longest window: the extra terms are further terms
    # of the same sum (smaller still), so no mask is needed.
    B, L = n.size, int(width.max())
    v = lo[:, None] + np.arange(L)[None, :]  # (B, L)
    # log NB(v; n, q): gammaln at the window start, then the ratio of consecutive terms
    log_nb0 = sps.gammaln(n + lo) - sps.gammaln(n) - sps.gammaln(lo + 1.0) + n * log_1q
    log_nb0 = log_nb0 + lo * log_q
    step = np.log((n[:, None] + v[:, :-1]) / (v[:, :-1] + 1.0)) + log_q[:, None]
    log_nb = log_nb0[:, None] + np.concatenate([np.zeros((B, 1)), np.cumsum(step, axis=1)], 1)
    # sum_{j<k} binom(v, j) z^j by Horner (terms with j > v vanish through the factor 0)
    if k > 1:
        z = np.exp(log_z)[:, None]
        poly = np.ones(v.shape)
        for j in range(k - 1, 0, -1):
            poly = 1.0 + (v - (j - 1.0)) / j * z * poly
        log_nb += np.log(poly)
    pmf = np.exp(log_nb - log_S[:, None])
    # The window holds all but ~1e-15 of the probability, so its sum is 1 up to the
    # rounding of the gammaln start values (~1e-9 relative when n + v ~ 1e5, a factor
    # common to the whole window): dividing by it removes that error. A sum far from 1
    # would mean a wrong window, hence the check.
    mass = pmf.sum(axis=1)
    if not np.all(np.abs(mass - 1.0) < 1e-6):
        bad = int(np.argmax(np.abs(mass - 1.0)))
        raise NumericalError(
            f"CNBD-k expected purchases: the summation window holds probability "
            f"{mass[bad]:.12g}, not 1 (n={n[bad]:.6g}); please report this."
        )
    pmf /= mass[:, None]
    # C(kappa), kappa = k_lo .. k_lo + K - 1, with c_i = prod_{l<i} (b'+l)/(a+b'+l)
    K = int(np.max(np.floor((lo + (L - 1.0)) / k) - k_lo)) + 1
    kap = k_lo[:, None] + np.arange(K - 1)[None, :]
    log_ratio = np.log1p(-a[:, None] / (a[:, None] + b_eff[:, None] + kap))
    log_c = log_c0[:, None] + np.concatenate(
        [np.zeros((B, 1)), np.cumsum(log_ratio[:, :-1], axis=1)], axis=1
    )
    C = c_start[:, None] + np.concatenate([np.zeros((B, 1)), np.cumsum(np.exp(log_c), 1)], 1)
    col = np.clip(np.floor(v / k) - k_lo[:, None], 0, K - 1).astype(np.int64)
    return np.sum(pmf * np.take_along_axis(C, col, axis=1), axis=1)


# --------------------------------------------------------------------------- family
class CNBDFamily(PurchaseFamily):
    """BG/CNBD-k (``modified=False``) or MBG/CNBD-k, with ``k`` fixed or not yet chosen.

    ``k=None`` (the registry entries): the object reads ``k`` from the parameter draws and
    the data, but cannot build a model; :meth:`with_k` gives one that can.
    """

    params = ("r", "alpha", "a", "b", "k")
    unconstrained = ("log_purchase_rate", "log_r", "logit_dropout", "log_dropout_concentration")
    #: The unconstrained parameters and their meaning are BG/NBD's, with ``lambda`` the
    #: rate of the phases (``log_purchase_rate = log(r / alpha)`` is the log mean phase
    #: rate; purchases come ``k`` times less often).
    priors_class = BGNBDPriors
    discount_scale = "alpha"
    future_depends_on_recency = True

    def __init__(self, *, modified: bool, k: int | None = None):
        self.modified = modified
        self.name = "mbgcnbd" if modified else "bgcnbd"
        self.label = "MBG/CNBD-k" if modified else "BG/CNBD-k"
        self.truth_class = MBGCNBDParams if modified else BGCNBDParams
        self.extra = 1.0 if modified else 0.0
        if k is not None:
            k = _whole_k(k)
        self.k = k

    def __repr__(self) -> str:
        k = "k not chosen" if self.k is None else f"k={self.k}"
        return f"<family {self.name!r} ({self.label}, {k})>"

    def with_k(self, k: int) -> CNBDFamily:
        """The same family with ``k`` fixed: what :func:`bayesclv.models.build_model` needs."""
        return CNBDFamily(modified=self.modified, k=k)

    def from_draws(self, values: Mapping) -> CNBDFamily:
        """The family with the ``k`` of parameter draws (``values["k"]``, e.g. a
        posterior): what a consumer holding a fit and the registry entry needs to map
        unconstrained draws (``bayesclv.fit.population_params``)."""
        return self.with_k(_whole_k(np.asarray(values["k"])))

    def for_data(self, rfm, *, max_k: int = 12) -> CNBDFamily:
        """The family with the maximum-likelihood ``k`` on ``rfm`` (:func:`choose_k`)."""
        return self.with_k(choose_k(rfm, self, max_k=max_k))

    def not_applicable(self, rfm) -> str | None:
        """Needs each customer's sum of log inter-purchase times (``rfm.litt``)."""
        if getattr(rfm, "litt", None) is None:
            return ("needs rfm.litt, the sum of log inter-purchase times (rfm_summary "
                    "computes it; round_times drops it)")
        return None

    def resolve(self, rfm) -> CNBDFamily:
        """This family if it fixes ``k``, else :meth:`for_data` (a hook for the builder and
        ``fit_mle`` to choose ``k`` themselves)."""
        return self if self.k is not None else self.for_data(rfm)

    # -- model -----------------------------------------------------------------------
    def _need_k(self, what: str) -> int:
        if self.k is None:
            raise ModelSpecificationError(
                f"{self.label}: {what} needs k, which this family object does not fix. "
                f"Use FAMILIES[{self.name!r}].with_k(k) with k from "
                f"bayesclv.families.cnbd.choose_k(rfm, {self.name!r}) (maximum "
                f"likelihood over k = 1..12, as the paper does), or .for_data(rfm)."
            )
        return self.k

    def to_natural(self, **theta) -> dict:
        """BG/NBD's map, plus the constant ``k`` (a ``Deterministic`` in the model)."""
        k = float(self._need_k("the map from the sampled parameters (building a model, "
                               "a new segment's population draws)"))
        nat = bgnbd_natural(**theta)
        r = nat["r"]
        m = ops_for(r)
        # where(cond, k, k): the shape of r, the value k whatever r is (even inf or nan)
        nat["k"] = m.where(m.asarray(r) > 0.0, k, k)
        return nat

    def logp(self, r, alpha, a, b, k, x, t_x, T, litt):
        """:func:`cnbd_logp` with ``k`` from the argument (NumPy: must be one whole number)
        or, for PyTensor graphs, from the family object."""
        if ops_for(r, alpha, a, b, k).name == "numpy":
            k_int = _whole_k(k)
        else:
            k_int = self._need_k("a PyTensor log-likelihood")
        return cnbd_logp(r, alpha, a, b, x, t_x, T, litt, k=k_int, modified=self.modified)

    def model_rows(self, rfm) -> ModelRows:
        if rfm.litt is None:
            raise ModelSpecificationError(
                f"{self.label} needs each customer's sum of log inter-purchase times "
                f"(RFMData.litt), and this summary has none. bayesclv.rfm_summary and "
                f"bayesclv.bigdata.rfm_summary_parquet compute it from the transactions; "
                f"RFMData.from_frame reads a 'litt' column."
            )
        mask = np.ones(rfm.n_customers, dtype=bool)
        return ModelRows(
            mask, (rfm.frequency.astype(np.float64), rfm.recency, rfm.T, rfm.litt)
        )

    def make_groups(self, seg, data, weight, n_segments: int) -> Groups:
        """``(k-1) litt - x log (k-1)!`` does not depend on the parameters: it is summed
        once (``extra["constant"]``) and the rows are regrouped by ``(segment, x, t_x, T)``
        (``litt`` is continuous, so it would keep almost every repeat buyer distinct)."""
        k = self._need_k("grouping the likelihood")
        x, t_x, T, litt = (np.asarray(d, dtype=np.float64) for d in data)
        w = np.asarray(weight, dtype=np.float64)
        constant = float(np.sum(w * ((k - 1.0) * litt - x * math.lgamma(k))))
        rows, inv = np.unique(
            np.column_stack([np.asarray(seg, dtype=np.float64), x, t_x, T]), axis=0,
            return_inverse=True,
        )  # fmt: skip
        wr = np.bincount(inv.ravel(), weights=w, minlength=rows.shape[0])
        g = make_groups(rows[:, 0].astype(np.int64), (rows[:, 1], rows[:, 2], rows[:, 3]),
                        wr, n_segments)  # fmt: skip
        return Groups(**{**g.__dict__, "extra": {"constant": np.asarray(constant)}})

    def grouped_loglik(self, params: Mapping, g: Groups):
        k = self._need_k("the grouped log-likelihood")
        m = ops_for(*params.values())
        P = {n: params[n][g.seg] for n in ("r", "alpha", "a", "b")}
        x, t_x, T = g.data
        ll = _timing_logp(P["r"], P["alpha"], P["a"], P["b"], x, t_x, T, k=k,
                          modified=self.modified)  # fmt: skip
        # + the parameter-free part, (k-1) litt - x log (k-1)!, summed in make_groups
        return m.sum(g.weight * ll) + float(g.extra["constant"])

    def check_draws(self, values: Mapping[str, np.ndarray]) -> None:
        _whole_k(values["k"])

    def mle_start(self) -> dict[str, float]:
        return {"log_purchase_rate": -1.0, "log_r": 0.0, "logit_dropout": -1.0,
                "log_dropout_concentration": 1.0}  # fmt: skip

    # -- P(alive) --------------------------------------------------------------------
    def log_p_alive(self, th, x, t_x, T) -> np.ndarray:
        """``-softplus(log D - log S)`` (module docstring); 0 for BG/CNBD-k with ``x = 0``."""
        k = _whole_k(th["k"])
        x = np.asarray(x, dtype=np.float64)
        t_x = np.asarray(t_x, dtype=np.float64)
        T = np.asarray(T, dtype=np.float64)
        r, alpha, a, b = th["r"], th["alpha"], th["a"], th["b"]
        z, _, _ = _dropped_log_odds(r, alpha, a, b, x, t_x, T, k=k, modified=self.modified)
        lp = -np.logaddexp(0.0, z - _log_alive_sum(r, alpha, x, t_x, T, k=k))
        return lp if self.modified else np.where(x > 0, lp, 0.0)

    # -- expectations ----------------------------------------------------------------
    def _recency(self, t_x, T, what: str) -> np.ndarray:
        """``t_x`` as given, or 0 when every age is 0 (a new customer); else an error."""
        if t_x is not None:
            return np.asarray(t_x, dtype=np.float64)
        T = np.asarray(T, dtype=np.float64)
        if np.all(T == 0):
            return np.zeros_like(T)
        raise ModelSpecificationError(
            f"{self.label}: {what} of a customer alive at T depends on the time since the "
            f"last purchase (the Erlang phase), so it needs the recency: pass t_x=... "
            f"(the consumers of the family interface do not pass it yet)."
        )

    def expected_alive(self, th, x, T, t, *, t_x=None) -> np.ndarray:
        """:func:`erlang_phi` (exact); needs ``t_x`` (keyword) unless every ``T`` is 0."""
        k = _whole_k(th["k"])
        t_x = self._recency(t_x, T, "the expected number of purchases")
        x = np.asarray(x, dtype=np.float64)
        T = np.asarray(T, dtype=np.float64)
        alpha = th["alpha"]
        return erlang_phi(
            th["r"] + k * x, alpha + T, th["a"], th["b"] + x + self.extra,
            _log_w(T, t_x, alpha), np.asarray(t, dtype=np.float64), k,
        )  # fmt: skip

    def expected_alive_bounds(self, th, x, T, t, *, t_x=None):
        """``0 <= Phi <= min(E[K], E[G])``: ``K <= (M + J) / k`` with ``E[M | J] = (n + J) t / A``
        and ``J <= k - 1``, and ``E[G] = (a + b' - 1) / (a - 1)`` when ``a > 1``."""
        k = _whole_k(th["k"])
        x = np.asarray(x, dtype=np.float64)
        T = np.asarray(T, dtype=np.float64)
        n_hi = th["r"] + k * x + (k - 1.0)
        upper = (n_hi * np.asarray(t, dtype=np.float64) / (th["alpha"] + T) + (k - 1.0)) / k
        a, b_eff = th["a"], th["b"] + x + self.extra
        with np.errstate(divide="ignore", invalid="ignore"):
            e_g = np.where(a > 1.0, (a + b_eff - 1.0) / (a - 1.0), np.inf)
        upper = np.minimum(upper, e_g)
        return np.zeros_like(upper), upper

    # -- conditional simulation ------------------------------------------------------
    def latent_given_alive(self, th, x, T, rng, *, t_x=None) -> dict[str, np.ndarray]:
        """``J`` (phases of the open gap), then ``lambda | J`` and ``p`` (module docstring);
        the latent dict also carries ``k``."""
        k = _whole_k(th["k"])
        t_x = self._recency(t_x, T, "the latent phase")
        x = np.asarray(x, dtype=np.float64)
        T = np.asarray(T, dtype=np.float64)
        n = th["r"] + k * x
        lp = _log_phase_weights(n, _log_w(T, t_x, th["alpha"]), k)
        cum = np.cumsum(np.exp(lp - sps.logsumexp(lp, axis=0)), axis=0)
        u = rng.random(cum.shape[1:])
        phase = np.minimum(np.sum(cum[:-1] < u, axis=0), k - 1).astype(np.float64)
        lam = rng.gamma(n + phase, 1.0 / (th["alpha"] + T))
        p = rng.beta(np.broadcast_to(th["a"], lam.shape), th["b"] + x + self.extra)
        return {"lam": lam, "p": p, "phase": phase, "k": np.full(lam.shape, float(k))}

    def window_log_pmf(self, latent, y, h) -> np.ndarray:
        """``Y = min(K, G)``, ``K = floor((M + J) / k)``, ``M ~ Poisson(lambda h)``:
        ``P(Y=0) = P(M <= k-J-1)`` and ``P(Y=y) = (1-p)^(y-1) [P(K=y) + p P(K>y)]`` with
        ``P(K=y) = sum_{i<k} Poisson(yk - J + i)`` and ``P(K>y) = P(M >= (y+1)k - J)``."""
        lam, p, J = latent["lam"], latent["p"], latent["phase"]
        k = _whole_k(latent["k"])
        mu = lam * h
        y = np.asarray(y)
        with np.errstate(divide="ignore"):
            y1 = np.maximum(y, 1)
            base = y1 * k - J
            at_y = sps.logsumexp(
                np.stack([stats.poisson.logpmf(base + i, mu) for i in range(k)]), axis=0
            )
            above = stats.poisson.logsf(base + k - 1, mu)
            # xlog1py: 0 log(1 - p) = 0 also where a Beta draw rounded p to 1
            pos = sps.xlog1py(y1 - 1, -p) + np.logaddexp(at_y, np.log(p) + above)
            zero = stats.poisson.logcdf(k - 1 - J, mu)
            return np.where(y > 0, pos, zero)

    def simulate_window(self, latent, h, rng) -> np.ndarray:
        lam, p, J = latent["lam"], latent["p"], latent["phase"]
        k = _whole_k(latent["k"])
        K = (rng.poisson(lam * h) + J.astype(np.int64)) // k
        u = 1.0 - rng.random(lam.shape)
        with np.errstate(divide="ignore"):
            G = np.maximum(np.ceil(np.log(u) / np.log1p(-p)), 1.0)
        return np.minimum(G, K).astype(np.int64)

    def future_events(self, th, x, T, alive, horizon, rng, *, t_x=None):
        """Per alive customer-draw: ``J``, ``lambda``, ``p`` given alive
        (:meth:`latent_given_alive`); the first purchase after ``Gamma(k - J, lambda)``,
        the next ones every ``Gamma(k, lambda)``, a dropout coin after each."""
        shape = alive.shape
        t_x = self._recency(t_x, T, "the future purchase times")
        lat = self.latent_given_alive(th, x, T, rng, t_x=t_x)
        k = _whole_k(th["k"])
        act_r, act_d = np.nonzero(alive)
        lam = np.broadcast_to(lat["lam"], shape)[act_r, act_d]
        p_drop = np.broadcast_to(lat["p"], shape)[act_r, act_d]
        J = np.broadcast_to(lat["phase"], shape)[act_r, act_d]
        pos = act_r * shape[1] + act_d
        tau = rng.standard_gamma(k - J) / lam
        out_pos, out_tau = [], []
        live = np.flatnonzero(tau <= horizon)
        while live.size:
            out_pos.append(pos[live])
            out_tau.append(tau[live].copy())
            live = live[rng.random(live.size) >= p_drop[live]]
            tau[live] += rng.standard_gamma(float(k), live.size) / lam[live]
            live = live[tau[live] <= horizon]
        if not out_pos:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(out_pos), np.concatenate(out_tau)

    def simulate_history(self, pop, ages, h, rng) -> History:
        """Exact, without materialising purchase times (``k`` may differ by customer).

        ``P ~ Poisson(lambda T)`` phases in ``(0, T]``, ``K = floor(P / k)`` purchases if
        alive, ``N`` purchases before dropout (``Geometric(p)`` on {1, ...}; MBG: on
        {0, ...}); ``x = min(N, K)``; the ``x k``-th phase is at ``t_x = T Beta(xk, P -
        xk + 1)`` and the gaps are ``t_x`` times a ``Dirichlet(k, ..., k)`` (sums of ``k``
        spacings of uniform order statistics), which gives ``litt``. The holdout goes on
        with ``Poisson(lambda h)`` more phases. ``latent`` holds ``lam``, ``p`` and, as an
        observable the summaries need, ``litt``.
        """
        k = np.asarray(pop["k"], dtype=np.float64)
        if not np.all((k >= 1) & (k == np.round(k))):
            raise ModelSpecificationError("simulate_history: k must be whole numbers >= 1.")
        ki = k.astype(np.int64)
        lam = rng.gamma(pop["r"], 1.0 / pop["alpha"])
        p = rng.beta(pop["a"], pop["b"])
        n_buy = geometric_count(rng, p)  # purchases up to and including the dropout one
        if self.modified:
            n_buy -= 1.0
        P = rng.poisson(lam * ages)
        K = P // ki
        x = np.minimum(n_buy, K).astype(np.int64)
        alive_T = n_buy > K
        t_x = ages * beta_order_stat(rng, x * ki, P)
        # litt = x log t_x + sum log D_i, D ~ Dirichlet(k, ..., k) over the x gaps
        n_g = int(x.sum())
        owner = np.repeat(np.arange(x.size), x)
        g = rng.standard_gamma(k[owner]) if n_g else np.zeros(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_sum = np.log(np.bincount(owner, weights=g, minlength=x.size))
            litt = np.bincount(owner, weights=np.log(g), minlength=x.size) + x * (
                np.log(t_x) - log_sum
            )
        litt = np.where(x > 0, litt, 0.0)
        # holdout: phases in (T, T + h]
        remaining = np.where(alive_T, n_buy - K, 0.0)
        Ph = rng.poisson(lam * h)
        Kh = (P + Ph) // ki - K
        y = np.minimum(remaining, Kh).astype(np.int64)
        drop_in_hold = alive_T & (remaining <= Kh)
        alive_end = alive_T & ~drop_in_hold
        # the dropout purchase is phase (K + y) k overall, i.e. number (K + y) k - P of Ph
        idx = np.where(drop_in_hold, (K + y) * ki - P, 0)
        hold_drop = ages + h * beta_order_stat(rng, idx, Ph)
        hold_end = np.where(drop_in_hold, hold_drop, ages + h)
        dropout = np.where(alive_T, np.where(drop_in_hold, hold_drop, np.inf), t_x)
        rest = np.where(alive_end, n_buy * ki - (P + Ph), 0.0)  # phases to the last buy
        finite = alive_end & np.isfinite(rest)
        dropout[finite] = ages[finite] + h + rng.gamma(rest[finite], 1.0 / lam[finite])
        return History(
            latent={"lam": lam, "p": p, "litt": litt},
            frequency=x,
            recency=t_x,
            alive_at_T=alive_T,
            holdout_frequency=y,
            alive_at_end=alive_end,
            dropout_time=dropout,
            hold_end=hold_end,
            hold_pinned=drop_in_hold,
        )

    # -- maximum likelihood ------------------------------------------------------------
    def fixed_params(self) -> dict[str, float]:
        return {"k": float(self._need_k("maximum likelihood"))}

    def mle_view(self) -> _FixedK:
        """The family with ``k`` left out of ``params`` (``r, alpha, a, b`` only): what
        :func:`bayesclv.classic.fit_mle` can maximise over. Its results lack ``k``;
        :func:`profile_k` adds it."""
        return _FixedK(self, self._need_k("maximum likelihood"))


class _FixedK(PurchaseFamily):
    """The family with ``k`` fixed and left out of ``params``: what
    :func:`bayesclv.classic.fit_mle` maximises over (``r, alpha, a, b``)."""

    params = ("r", "alpha", "a", "b")

    def __init__(self, fam: CNBDFamily, k: int):
        self.fam, self.k = fam, k
        self.name, self.label = fam.name, f"{fam.label} (k={k})"
        self.unconstrained = fam.unconstrained

    def model_rows(self, rfm) -> ModelRows:
        return self.fam.model_rows(rfm)

    def logp(self, r, alpha, a, b, x, t_x, T, litt):
        return cnbd_logp(r, alpha, a, b, x, t_x, T, litt, k=self.k, modified=self.fam.modified)


# --------------------------------------------------------------------------- choosing k
@dataclass(frozen=True)
class KProfile:
    """Maximum likelihood of a CNBD-k family for each ``k`` tried.

    ``fits[k]`` is the :class:`bayesclv.classic.MLEResult` at that ``k`` (its ``params``
    include ``k``); ``k`` is the one with the highest log-likelihood.
    """

    family: str
    fits: dict
    k: int

    @property
    def best(self):
        """The MLE at the chosen ``k``."""
        return self.fits[self.k]

    def table(self) -> pd.DataFrame:
        """One row per ``k``: log-likelihood, estimates, converged."""
        rows = [{"k": k, "log_likelihood": f.log_likelihood, **{n: f.params[n] for n in
                 ("r", "alpha", "a", "b")}, "converged": f.converged}
                for k, f in sorted(self.fits.items())]  # fmt: skip
        return pd.DataFrame(rows).set_index("k")


def profile_k(
    rfm,
    family: str | CNBDFamily = "bgcnbd",
    *,
    max_k: int = 12,
    early_stop: bool = True,
    weights=None,
    initial: Mapping[str, float] | None = None,
) -> KProfile:
    """Profile likelihood over ``k``: the MLE of ``r, alpha, a, b`` for ``k = 1..max_k``.

    As the paper (and BTYDplus ``xbgcnbd.EstimateParameters``) does, the search stops
    early (``early_stop``) once the log-likelihood has fallen twice in a row. Each fit is
    :func:`bayesclv.classic.fit_mle` (L-BFGS-B on the log parameters, Hessian standard
    errors) started at ``initial`` (default ``r=1, alpha=3, a=1, b=3``).
    """
    from bayesclv.classic import fit_mle
    from bayesclv.families import get_family

    fam = get_family(family, "purchase")
    if not isinstance(fam, CNBDFamily):
        raise ModelSpecificationError(f"profile_k needs a CNBD-k family, got {fam.name!r}.")
    if not (1 <= int(max_k) <= K_LIMIT):
        raise ModelSpecificationError(f"max_k must be in 1..{K_LIMIT}, got {max_k!r}.")
    start = dict(initial or {"r": 1.0, "alpha": 3.0, "a": 1.0, "b": 3.0})
    fits: dict[int, object] = {}
    lls: list[float] = []
    for k in range(1, int(max_k) + 1):
        res = fit_mle(fam.with_k(k).mle_view(), rfm, weights=weights, initial=start)
        fits[k] = replace(res, params={**res.params, "k": float(k)})
        lls.append(res.log_likelihood)
        if early_stop and k > 2 and lls[-1] < lls[-2] < lls[-3]:
            break
    best = int(max(fits, key=lambda kk: fits[kk].log_likelihood))
    return KProfile(family=fam.name, fits=fits, k=best)


def choose_k(rfm, family: str | CNBDFamily = "bgcnbd", *, max_k: int = 12) -> int:
    """The maximum-likelihood ``k`` (:func:`profile_k`)."""
    return profile_k(rfm, family, max_k=max_k).k


BGCNBD = CNBDFamily(modified=False)
MBGCNBD = CNBDFamily(modified=True)
