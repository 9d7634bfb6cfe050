"""BG/NBD and MBG/NBD: everything the package knows about the beta-geometric families.

Model (FHL 2005, section 2): while alive a customer buys as a Poisson process with rate
``lambda ~ Gamma(r, rate alpha)``; right after each repeat purchase they drop out with
probability ``p ~ Beta(a, b)``. MBG/NBD (Batislam, Denizel & Filiztekin 2007) tosses the
dropout coin after the first purchase too, so customers without repeat purchases may be
inactive. The two differ by that one coin: one module, two registry entries.

Given the history ``(x, t_x, T)`` and "alive at T" the individual parameters are
conjugate: ``lambda ~ Gamma(r + x, alpha + T)`` and ``p ~ Beta(a, b + x)`` (BG/NBD) or
``Beta(a, b + x + 1)`` (MBG/NBD).

References
----------
Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). "Counting your customers the easy
way: an alternative to the Pareto/NBD model". Marketing Science 24(2), 275-284: eq. (6)
(likelihood), eq. (10) (conditional expectation) and the note "Computing P(alive) using
the BG/NBD model" (P(alive)).
Batislam, E. P., Denizel, M. and Filiztekin, A. (2007). "Empirical validation and
comparison of models for customer base analysis". IJRM 24(3), 201-209: eq. (3)
(likelihood) and the MBG/NBD conditional expectation and P(alive).
Abramowitz & Stegun 15.3.5 (Pfaff transformation of 2F1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bayesclv.families.base import (
    Groups,
    History,
    PurchaseFamily,
    expm1_ratio,
    factorize_rows,
    make_groups,
    parallel_map,
)
from bayesclv.families.sampling import beta_order_stat, geometric_count, validate_positive
from bayesclv.numerics import (
    bg_cheb_reliable,
    bg_expected_alive,
    bg_expected_alive_times,
    bg_pfaff_G,
    bg_window_log_pmf,
)
from bayesclv.ops import ops_for
from bayesclv.priors import BGNBDPriors
from bayesclv.transforms import bgnbd_natural

__all__ = ["BGNBD", "MBGNBD", "BGNBDParams", "MBGNBDParams", "bgnbd_logp", "mbgnbd_logp"]

#: Rows whose ``w = H / (alpha + T + H)`` exceeds this (young customers with a small
#: ``alpha``) are computed directly instead of by the Chebyshev interpolant.
_W_CUT = 0.95
#: Relative accuracy aimed at by the interpolant (and checked at run time).
_CHEB_TOL = 1e-12
#: Target number of (draw x row) elements per array operation.
_WORK_ELEMENTS = 2_000_000


# --------------------------------------------------------------------------- truth
@dataclass(frozen=True)
class BGNBDParams:
    """BG/NBD population: ``lambda ~ Gamma(r, rate alpha)``, ``p ~ Beta(a, b)``."""

    r: float
    alpha: float
    a: float
    b: float

    def __post_init__(self) -> None:
        validate_positive(self)


@dataclass(frozen=True)
class MBGNBDParams:
    """MBG/NBD population (as BG/NBD, but a customer may also drop out at time 0)."""

    r: float
    alpha: float
    a: float
    b: float

    def __post_init__(self) -> None:
        validate_positive(self)


# --------------------------------------------------------------------------- likelihood
def _segment_part(r, alpha, a, b):
    """Terms of the BG/NBD and MBG/NBD log-likelihoods that depend on parameters only."""
    m = ops_for(r, alpha, a, b)
    return r * m.log(alpha) - m.gammaln(r) - m.betaln(a, b)


def _frequency_part(r, a, b, x, *, modified=False):
    """Terms that depend on the parameters and ``x`` only, and the log of the Beta ratio
    (``a / (b+x-1)``, or ``a / (b+x)`` for MBG/NBD) that weighs the "dropped at t_x" term."""
    m = ops_for(r, a, b, x)
    if modified:
        return m.gammaln(r + x) + m.betaln(a, b + x + 1.0), m.log(a) - m.log(b + x)
    b_safe = m.where(x > 0, b + x - 1.0, 1.0)
    return m.gammaln(r + x) + m.betaln(a, b + x), m.log(a) - m.log(b_safe)


def _timing_part(r, alpha, x, t_x, T, log_ratio, *, modified=False):
    """Terms that need each customer's recency and age."""
    m = ops_for(r, alpha, x, t_x, T, log_ratio)
    log_alpha_T = m.log(alpha + T)
    dropped = _dropped_part(r, x, log_alpha_T, m.log(alpha + t_x), log_ratio, modified=modified)
    return dropped - (r + x) * log_alpha_T


def _dropped_part(r, x, log_alpha_T, log_alpha_tx, log_ratio, *, modified=False):
    """``log(1 + a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))``, 0 where ``x = 0`` (BG/NBD):
    the weight of "dropped out right after the last purchase", given ``log(alpha+T)``
    and ``log(alpha+t_x)`` (computed once per distinct age and recency when grouped)."""
    m = ops_for(r, x, log_alpha_T, log_alpha_tx, log_ratio)
    z = log_ratio + (r + x) * (log_alpha_T - log_alpha_tx)
    return m.softplus(z) if modified else m.where(x > 0, m.softplus(z), 0.0)


def bgnbd_logp(r, alpha, a, b, x, t_x, T):
    """Per-customer BG/NBD log-likelihood, FHL (2005) eq. (6).

    ``L = B(a, b+x)/B(a, b) * Gamma(r+x) alpha^r / Gamma(r)
          * [(alpha+T)^-(r+x) + 1{x>0} a/(b+x-1) (alpha+t_x)^-(r+x)]``.

    The bracket is evaluated as ``(alpha+T)^-(r+x) * (1 + exp(z))`` with ``softplus``
    so neither term under- or overflows for large ``x`` or ``T``; for ``x = 0`` the
    second term is masked after being computed on safe values, which keeps gradients
    finite. The terms are grouped by what they depend on (parameters, ``x``, each
    customer) so that :meth:`BGNBDFamily.grouped_loglik` can compute each group once per
    segment or per distinct ``(segment, x)``.

    Parameters
    ----------
    r, alpha : shape and rate of the Gamma distribution of purchase rates (> 0).
    a, b : Beta distribution of the dropout probability after each purchase (> 0).
    x, t_x, T : frequency (repeat purchases), recency and age, in one time unit.
    """
    freq, log_ratio = _frequency_part(r, a, b, x)
    return _segment_part(r, alpha, a, b) + freq + _timing_part(r, alpha, x, t_x, T, log_ratio)


def mbgnbd_logp(r, alpha, a, b, x, t_x, T):
    """Per-customer MBG/NBD log-likelihood (Batislam et al. 2007, eq. 3).

    ``L = Gamma(r+x) alpha^r / Gamma(r) * [B(a, b+x+1)/B(a, b) (alpha+T)^-(r+x)
          + B(a+1, b+x)/B(a, b) (alpha+t_x)^-(r+x)]``; the ratio of the two Beta
    functions is ``a / (b + x)``, and the sum is evaluated with ``softplus``.
    """
    freq, log_ratio = _frequency_part(r, a, b, x, modified=True)
    return (
        _segment_part(r, alpha, a, b)
        + freq
        + _timing_part(r, alpha, x, t_x, T, log_ratio, modified=True)
    )


# --------------------------------------------------------------------------- Phi
def _cheb_nodes(m: int, W: float) -> tuple[np.ndarray, np.ndarray]:
    """Chebyshev points on [0, W] and the matrix turning values into coefficients."""
    j = np.arange(m)
    theta = np.pi * (j + 0.5) / m
    nodes = W / 2.0 * (1.0 + np.cos(theta))
    to_coef = 2.0 / m * np.cos(np.outer(theta, np.arange(m)))  # values @ to_coef = coefs
    to_coef[:, 0] /= 2.0
    return nodes, to_coef


# --------------------------------------------------------------------------- family
class BGNBDFamily(PurchaseFamily):
    """BG/NBD (``modified=False``) or MBG/NBD (``modified=True``)."""

    params = ("r", "alpha", "a", "b")
    unconstrained = ("log_purchase_rate", "log_r", "logit_dropout", "log_dropout_concentration")
    priors_class = BGNBDPriors
    discount_scale = "alpha"

    def __init__(self, *, modified: bool):
        self.modified = modified
        self.name = "mbgnbd" if modified else "bgnbd"
        self.label = "MBG/NBD" if modified else "BG/NBD"
        self.truth_class = MBGNBDParams if modified else BGNBDParams
        #: b_eff = b + x + extra: MBG/NBD's coin after the first purchase.
        self.extra = 1.0 if modified else 0.0

    # -- model -----------------------------------------------------------------------
    def to_natural(self, **theta) -> dict:
        return bgnbd_natural(**theta)

    def logp(self, r, alpha, a, b, x, t_x, T):
        return (mbgnbd_logp if self.modified else bgnbd_logp)(r, alpha, a, b, x, t_x, T)

    def mle_start(self) -> dict[str, float]:
        return {"log_purchase_rate": -2.0, "log_r": 0.0, "logit_dropout": -1.0,
                "log_dropout_concentration": 1.0}

    def make_groups(self, seg, data, weight, n_segments: int) -> Groups:
        """Also the distinct ``(segment, T)`` and ``(segment, t_x)``, each row's index into
        them, and per ``(segment, T)`` the customers and their repeat purchases: ages
        and recencies take few distinct values, so ``log(alpha + T)`` and
        ``log(alpha + t_x)`` are computed once each."""
        g = make_groups(seg, data, weight, n_segments)
        x, t_x, T = g.data
        ages, age_idx = np.unique(np.column_stack([g.seg, T]), axis=0, return_inverse=True)
        recs, rec_idx = np.unique(np.column_stack([g.seg, t_x]), axis=0, return_inverse=True)
        age_idx, rec_idx = age_idx.ravel(), rec_idx.ravel()
        extra = dict(
            age_idx=age_idx,
            age_seg=ages[:, 0].astype(np.int64),
            age_T=ages[:, 1],
            age_weight=np.bincount(age_idx, weights=g.weight, minlength=len(ages)),
            age_weight_x=np.bincount(age_idx, weights=g.weight * x, minlength=len(ages)),
            rec_idx=rec_idx,
            rec_seg=recs[:, 0].astype(np.int64),
            rec_t=recs[:, 1],
        )
        return Groups(**{**g.__dict__, "extra": extra})

    def grouped_loglik(self, params: Mapping, g: Groups):
        """Each customer row costs one ``softplus``: the ``-(r + x) log(alpha + T)`` term
        is summed per ``(segment, T)`` with weights ``sum(w)`` and ``sum(w x)``."""
        m = ops_for(*params.values())
        P, e = params, g.extra
        at_pair = {k: v[g.fx_seg] for k, v in P.items()}
        x = g.data[0]
        seg_part = _segment_part(P["r"], P["alpha"], P["a"], P["b"])
        freq, log_ratio = _frequency_part(
            at_pair["r"], at_pair["a"], at_pair["b"], g.fx_x, modified=self.modified
        )
        log_age = m.log(P["alpha"][e["age_seg"]] + e["age_T"])  # per (segment, T)
        log_rec = m.log(P["alpha"][e["rec_seg"]] + e["rec_t"])  # per (segment, t_x)
        dropped = _dropped_part(
            P["r"][g.seg], x, log_age[e["age_idx"]], log_rec[e["rec_idx"]],
            log_ratio[g.fx], modified=self.modified,
        )
        age_part = -(P["r"][e["age_seg"]] * e["age_weight"] + e["age_weight_x"]) * log_age
        return (
            m.sum(g.seg_weight * seg_part)
            + m.sum(g.fx_weight * freq)
            + m.sum(age_part)
            + m.sum(g.weight * dropped)
        )

    # -- P(alive) --------------------------------------------------------------------
    def _log_ab(self, a, b, x):
        """``log(a) - log(b + x - 1)`` (BG/NBD, 0-safe at ``x = 0``) or ``log(a/(b + x))``."""
        if self.modified:
            return np.log(a) - np.log(b + x)
        return np.log(a) - np.log(np.where(x > 0, b + x - 1.0, 1.0))

    def log_p_alive(self, th, x, t_x, T) -> np.ndarray:
        """BG/NBD (FHL 2005, P(alive) note, eq. 2): ``1 / (1 + 1{x>0} a/(b+x-1)
        ((alpha+T)/(alpha+t_x))^(r+x))``; MBG/NBD (Batislam et al. 2007): the same with
        ``a/(b+x)`` and no indicator. Evaluated as ``-softplus(z)``, ``z`` the log of the
        second term, so nothing overflows for large ``x`` or ``T``."""
        x = np.asarray(x, dtype=np.float64)
        t_x = np.asarray(t_x, dtype=np.float64)
        T = np.asarray(T, dtype=np.float64)
        r, alpha = th["r"], th["alpha"]
        z = self._log_ab(th["a"], th["b"], x) + (r + x) * (
            np.log(alpha + T) - np.log(alpha + t_x)
        )
        lp = -np.logaddexp(0.0, z)
        return lp if self.modified else np.where(x > 0, lp, 0.0)

    def p_alive(self, th, x, t_x, T) -> np.ndarray:
        """``1 / (1 + exp(z))``, exact to the last bit of :meth:`p_alive_rows`."""
        x = np.asarray(x, dtype=np.float64)
        growth = np.log(th["alpha"] + np.asarray(T, dtype=np.float64)) - np.log(
            th["alpha"] + np.asarray(t_x, dtype=np.float64)
        )
        pa = _p_from_log_odds(self._log_ab(th["a"], th["b"], x) + (th["r"] + x) * growth)
        return pa if self.modified else np.where(x > 0, pa, 1.0)

    def p_alive_rows(self, th, x, t_x, T) -> np.ndarray:
        """The logs are taken once per distinct ``x``, ``T`` and ``t_x`` of the group
        (whole days give few distinct values) and gathered; the arithmetic is that of
        :meth:`p_alive`, so results are bit-identical to it."""
        ux, xc = np.unique(x, return_inverse=True)
        uT, Tc = np.unique(T, return_inverse=True)
        ut, tc = np.unique(t_x, return_inverse=True)
        alpha = th["alpha"]
        uxf = ux.astype(np.float64)[:, None]
        log_ab = self._log_ab(th["a"], th["b"], uxf)
        log_T = np.log(alpha + uT[:, None])
        log_t = np.log(alpha + ut[:, None])
        rx = th["r"] + np.asarray(x, dtype=np.float64)[:, None]
        pa = _p_from_log_odds(log_ab[xc] + rx * (log_T[Tc] - log_t[tc]))
        if not self.modified:
            pa[np.asarray(x) == 0] = 1.0
        return pa

    # -- expectations ----------------------------------------------------------------
    def expected_alive(self, th, x, T, t) -> np.ndarray:
        """``Phi = E_p[(1 - (1 + p t/A)^-n) / p]``, ``n = r + x``, ``A = alpha + T``,
        ``p ~ Beta(a, b + x)`` (MBG/NBD: ``b + x + 1``): FHL (2005) eq. (10) bracket,
        evaluated by :func:`bayesclv.numerics.bg_expected_alive` (finite and exact over the
        whole prior support, a + b = 1 and huge a, b included; the plain 2F1 form with
        Euler's and Pfaff's transformations is not)."""
        x = np.asarray(x, dtype=np.float64)
        T = np.asarray(T, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64)
        return bg_expected_alive(th["r"] + x, th["alpha"] + T, th["a"],
                                 th["b"] + x + self.extra, t)

    def _exact_tables(self, th, x, T, times, wsets) -> np.ndarray:
        """``sum_k wsets[j, k] Phi(times[k])`` for elementwise (draw, row) pairs: ``th``
        values and ``x, T`` are 1-D of one length; returns ``(n_sets, n_pairs)``."""
        phi = bg_expected_alive_times(th["r"] + x, th["alpha"] + T, th["a"],
                                      th["b"] + x + self.extra, times)
        return wsets @ phi.T

    def expected_alive_bounds(self, th, x, T, t):
        """With ``k = t / (alpha + T)`` and ``n = r + x``: given ``p`` the expectation is
        ``f(p) = (1 - (1 + p k)^-n) / p``, decreasing in ``p``, so ``f(1) <= Phi <= f(0)``:
        at least the chance of one more purchase, at most the Poisson mean ``n k``."""
        n = th["r"] + np.asarray(x, dtype=np.float64)
        k = np.asarray(t, dtype=np.float64) / (th["alpha"] + np.asarray(T, dtype=np.float64))
        return -np.expm1(-n * np.log1p(k)), n * k

    def alive_tables(self, dp, g, x, T, times, wsets, n_jobs, direct):
        """Tables without one hyp2f1 per draw, row and time.

        ``Phi(t) = c [R(a-1, log1p(t/A)) - (1+t/A)^(1-a) G_x(w)]`` with ``w = t/(A+t)`` (the
        2F1 form, :func:`bayesclv.numerics.bg_pfaff_G`). ``G_x`` depends on the draw and
        ``(segment, x)`` only, is analytic on ``[0, 1)`` and is evaluated at ``w <= W = max
        H/(alpha+T+H)``: it is interpolated by a Chebyshev series on ``[0, W]`` (``m``
        hyp2f1 calls per draw and unique ``(segment, x)``; ``m`` from the Bernstein-ellipse
        rate set by the branch point ``w = 1``, Trefethen, *Approximation Theory and
        Approximation Practice*, ch. 8). The sum over times is linear in the coefficients,
        so per draw and unique ``(segment, T)`` we precompute ``Q_i = sum_k weight_k
        (1+t_k/A)^(1-a) T_i(xi(w_k))`` and each row is a dot product ``c (E - C_x . Q_T)``.
        Rows with ``W > 0.95`` use ``direct``. A (draw, row) pair is trusted only where
        :func:`bayesclv.numerics.bg_cheb_reliable` holds (the 2F1 form does not amplify the
        interpolation error), its table converged (last three coefficients below 1e-13 of
        the largest) and its values lie in the exact bounds; the other pairs are
        recomputed exactly. A sample is re-checked against ``direct`` at run time and the
        whole table falls back to it if the interpolant misses ``1e-9`` relative accuracy.
        """
        N, U = dp.n_draws, len(g)
        H = float(times[-1])
        if H <= 0:
            return np.zeros((len(wsets), N, U))
        out = np.empty((len(wsets), N, U))
        xcode, (gx, xx) = factorize_rows(g, x)
        tcode, (gT, TT) = factorize_rows(g, T)
        alpha_min = dp.values["alpha"].min(axis=0)
        w_max_T = H / (alpha_min[gT] + TT + H)
        ok_T = w_max_T <= _W_CUT
        ok = ok_T[tcode]
        if (~ok).any():
            sel = np.flatnonzero(~ok)
            out[:, :, sel] = direct(dp, g[sel], x[sel], T[sel], times, wsets)
        if not ok.any():
            return out
        W = float(w_max_T[ok_T].max())
        z = 2.0 / W - 1.0
        rho = z + math.sqrt(z * z - 1.0)
        m = int(np.clip(math.ceil(-math.log(_CHEB_TOL) / math.log(rho)) + 4, 8, 96))
        nodes, to_coef = _cheb_nodes(m, W)

        th_x = dp.columns(gx)
        c_x = th_x["a"] + th_x["b"] + xx + self.extra - 1.0
        A1 = c_x - (th_x["r"] + xx)
        eps_x = th_x["a"] - 1.0
        thT = dp.columns(gT)
        A_T = thT["alpha"] + TT
        eps_T = thT["a"] - 1.0
        n_sets = len(wsets)
        use = np.flatnonzero((wsets != 0).any(axis=0))
        rows = np.flatnonzero(ok)
        # Work per block of draws, end to end; blocks small enough for the Chebyshev
        # recurrence below to run in cache (arrays of ~32k values, contiguous per degree).
        dblock = max(1, min(_WORK_ELEMENTS // max(1, len(gx) * m), 32_768 // max(1, len(gT))))
        unconverged = np.zeros((N, len(gx)), dtype=bool)  # (draw, (segment, x)) tables

        def run(d0: int) -> None:
            with np.errstate(all="ignore"):  # untrusted pairs are recomputed below
                _run(d0)

        def _run(d0: int) -> None:
            sl = slice(d0, min(d0 + dblock, N))
            # Chebyshev coefficients of G per draw and unique (segment, x): (nd, Ux, m)
            with np.errstate(all="ignore"):
                vals = bg_pfaff_G(A1[sl, :, None], eps_x[sl, :, None], c_x[sl, :, None], nodes)
            coef = vals @ to_coef
            mag = np.abs(coef)
            with np.errstate(invalid="ignore"):
                unconverged[sl] = ~(mag[..., -3:].max(axis=-1) <= 1e-13 * mag.max(axis=-1))
            # Q[j, i] = sum_k wsets[j, k] base_k T_i(xi_k) and E[j] per unique (segment, T)
            A_s, e_s = A_T[sl], eps_T[sl]
            Q = np.zeros((n_sets, m, *A_s.shape))
            E = np.zeros((n_sets, *A_s.shape))
            cur = np.empty(A_s.shape)
            for k in use:
                t = times[k]
                L = np.log1p(t / A_s)
                base = np.exp(-e_s * L)
                xi = np.clip(2.0 * (t / (A_s + t)) / W - 1.0, -1.0, 1.0)
                two_xi = 2.0 * xi
                R = expm1_ratio(e_s, L)
                for j in range(n_sets):
                    wk = wsets[j, k]
                    if wk == 0:
                        continue
                    E[j] += wk * R
                    Qj = Q[j]
                    prev2 = wk * base  # T_0 term
                    Qj[0] += prev2
                    if m == 1:
                        continue
                    prev1 = prev2 * xi  # T_1 term
                    Qj[1] += prev1
                    for deg in range(2, m):  # T_i = 2 xi T_(i-1) - T_(i-2), in place
                        np.multiply(two_xi, prev1, out=cur)
                        cur -= prev2
                        Qj[deg] += cur
                        prev2, prev1, cur = prev1, cur, prev2
            # Rows: c_x (E_T - coef_x . Q_T)
            nd = A_s.shape[0]
            rblock = max(1, _WORK_ELEMENTS // (nd * m))
            Qt = [np.ascontiguousarray(Q[j].transpose(1, 2, 0)) for j in range(n_sets)]
            for r0 in range(0, len(rows), rblock):
                rs = rows[r0 : r0 + rblock]
                cx, ct = xcode[rs], tcode[rs]
                C = coef[:, cx, :]
                for j in range(n_sets):
                    dot = np.einsum("nrm,nrm->nr", C, Qt[j][:, ct, :])
                    out[j, sl][:, rs] = c_x[sl][:, cx] * (E[j][:, ct] - dot)

        parallel_map(run, range(0, N, dblock), n_jobs)

        # Pairs (draw, row) the interpolant cannot be trusted for are recomputed exactly:
        # where numerics.bg_cheb_reliable says the 2F1 form amplifies the table's error
        # (large a, b; c near 0), where the table did not converge, where a value leaves
        # the exact bounds. A sample is then checked against the direct evaluation.
        sub = np.ix_(np.arange(N), rows)
        th_rows = {k: v[:, g[rows]] for k, v in dp.values.items()}
        xr_, Tr = x[rows][None, :], T[rows][None, :]
        t_pos = times[times > 0]
        with np.errstate(all="ignore"):
            trusted = bg_cheb_reliable(
                th_rows["r"] + xr_, th_rows["alpha"] + Tr, th_rows["a"],
                th_rows["b"] + xr_ + self.extra, float(t_pos.min()), H, W,
            )
        trusted &= ~unconverged[:, xcode[rows]]
        lo, hi = self.expected_alive_bounds(dp.columns(g), x, T, H)
        tol = 1e-9 * hi + 1e-300
        with np.errstate(invalid="ignore"):
            in_bounds = np.isfinite(out).all(axis=0) & (out[-1] >= lo - tol) & (out[-1] <= hi + tol)
            in_bounds &= (out >= -tol).all(axis=0) & (out <= out[-1] + tol).all(axis=0)
        trusted &= in_bounds[sub]
        d_bad, r_bad = np.nonzero(~trusted)
        if d_bad.size:
            rr = rows[r_bad]
            th_bad = {k: v[d_bad, g[rr]] for k, v in dp.values.items()}
            out[:, d_bad, rr] = self._exact_tables(th_bad, x[rr], T[rr], times, wsets)
        rng = np.random.default_rng(0)
        pick_r = rng.choice(rows, size=min(len(rows), 32), replace=False)
        pick_d = rng.choice(N, size=min(N, 4), replace=False)
        ref = direct(dp.subset(pick_d), g[pick_r], x[pick_r], T[pick_r], times, wsets)
        got = out[:, pick_d][:, :, pick_r]
        scale = np.maximum(np.abs(ref), 1e-300)
        if np.max(np.abs(got - ref) / scale) > 1e-9:
            return direct(dp, g, x, T, times, wsets)
        return out

    # -- conditional simulation ------------------------------------------------------
    def latent_given_alive(self, th, x, T, rng) -> dict[str, np.ndarray]:
        lam = rng.gamma(th["r"] + x, 1.0 / (th["alpha"] + T))
        p = rng.beta(np.broadcast_to(th["a"], lam.shape), th["b"] + x + self.extra)
        return {"lam": lam, "p": p}

    def window_log_pmf(self, latent, y, h) -> np.ndarray:
        """``Y = min(N, K)`` with ``K ~ Poisson(lambda h)`` arrivals and ``N ~
        Geometric(p)`` on {1, 2, ...} purchases before dropout (the coin is tossed after
        each purchase), so ``P(Y=0) = e^{-lambda h}`` and, for ``y >= 1``,
        ``P(Y=y) = (1-p)^{y-1} [Poisson(y; lambda h) + p P(K > y)]``."""
        return bg_window_log_pmf(latent["lam"], latent["p"], y, h)

    def simulate_window(self, latent, h, rng) -> np.ndarray:
        lam, p = latent["lam"], latent["p"]
        K = rng.poisson(lam * h)
        u = 1.0 - rng.random(lam.shape)
        with np.errstate(divide="ignore"):
            N = np.maximum(np.ceil(np.log(u) / np.log1p(-p)), 1.0)
        return np.minimum(N, K).astype(np.int64)

    def future_events(self, th, x, T, alive, horizon, rng):
        """The first future purchase time, with ``lambda ~ Gamma(n, A)`` integrated out,
        is Lomax: ``P(tau_1 > s) = (A/(A+s))^n``, drawn by inversion; only customer-draws
        with ``tau_1`` inside the horizon need more random numbers. For those,
        ``lambda | tau_1 ~ Gamma(n+1, A+tau_1)`` (conjugate update by one exponential
        inter-arrival), then the process runs on: dropout with ``p ~ Beta(a, b_eff)``
        after each purchase, next arrival after ``Exp(lambda)``. The two-stage draw of
        ``(tau_1, lambda)`` has exactly the joint law of drawing ``lambda`` first."""
        shape = alive.shape
        n_rate = th["r"] + x
        A = th["alpha"] + T
        with np.errstate(divide="ignore", over="ignore"):
            tau1 = A * np.expm1(-np.log(rng.random(shape)) / n_rate)
        act_r, act_d = np.nonzero(alive & (tau1 <= horizon))
        pos = act_r * shape[1] + act_d
        tau = tau1[act_r, act_d]
        lam = rng.standard_gamma(n_rate[act_r, act_d] + 1.0) / (A[act_r, 0] + tau)
        a = np.broadcast_to(th["a"], shape)[act_r, act_d]
        b_eff = np.broadcast_to(th["b"] + x + self.extra, shape)[act_r, act_d]
        p_drop = rng.beta(a, b_eff)
        out_pos, out_tau = [], []
        live = np.arange(tau.size)
        while live.size:
            out_pos.append(pos[live])
            out_tau.append(tau[live].copy())
            # right after each purchase, dropout with probability p
            live = live[rng.random(live.size) >= p_drop[live]]
            tau[live] += rng.standard_exponential(live.size) / lam[live]
            live = live[tau[live] <= horizon]
        if not out_pos:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(out_pos), np.concatenate(out_tau)

    def simulate_history(self, pop, ages, h, rng) -> History:
        """The number of repeat purchases before dropout is ``N ~ Geometric(p)`` on
        {1, 2, ...} (MBG/NBD: on {0, 1, ...}); with ``K ~ Poisson(lambda T)`` arrivals,
        ``x = min(N, K)``, alive at ``T`` iff ``N > K``, and given ``K`` the ``x``-th
        arrival is ``T * Beta(x, K - x + 1)``. The holdout continues the same process
        (memorylessness of the Poisson process and of the geometric count)."""
        lam = rng.gamma(pop["r"], 1.0 / pop["alpha"])
        p = rng.beta(pop["a"], pop["b"])
        n_buy = geometric_count(rng, p)  # repeat purchases before dropout (may be inf)
        if self.modified:
            n_buy -= 1.0
        K = rng.poisson(lam * ages)
        x = np.minimum(n_buy, K).astype(np.int64)
        alive_T = n_buy > K
        t_x = ages * beta_order_stat(rng, x, K)
        remaining = np.where(alive_T, n_buy - K, 0.0)
        Kh = rng.poisson(lam * h)
        y = np.minimum(remaining, Kh).astype(np.int64)
        drop_in_hold = alive_T & (remaining <= Kh)
        alive_end = alive_T & ~drop_in_hold
        hold_drop = ages + h * beta_order_stat(rng, np.where(drop_in_hold, y, 0), Kh)
        hold_end = np.where(drop_in_hold, hold_drop, ages + h)
        # Dropout after the end: the rest of the N-th arrival wait is Gamma(N - K - Kh, lam).
        rest = np.where(alive_end, n_buy - K - Kh, 0.0)
        finite_rest = alive_end & np.isfinite(rest)
        dropout = np.where(alive_T, np.where(drop_in_hold, hold_drop, np.inf), t_x)
        dropout[finite_rest] = (
            ages[finite_rest] + h + rng.gamma(rest[finite_rest], 1.0 / lam[finite_rest])
        )
        return History(
            latent={"lam": lam, "p": p},
            frequency=x,
            recency=t_x,
            alive_at_T=alive_T,
            holdout_frequency=y,
            alive_at_end=alive_end,
            dropout_time=dropout,
            hold_end=hold_end,
            hold_pinned=drop_in_hold,
        )


def _p_from_log_odds(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(z))`` (0 when ``exp(z)`` overflows, where P is below 1e-308)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(z))


BGNBD = BGNBDFamily(modified=False)
MBGNBD = BGNBDFamily(modified=True)
