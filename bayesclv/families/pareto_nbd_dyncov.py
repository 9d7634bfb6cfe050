"""Pareto/NBD with time-varying covariates (Bachmann, Meierer & Naef 2021).

Model (Bachmann, Meierer & Naef 2021, "The Role of Time-Varying Contextual Factors in
Latent Attrition Models for Customer Base Analysis", Marketing Science 40(4), 783-809;
CLVTools' ``pnbd`` with dynamic covariates): covariates ``z(t)`` (purchase) and ``w(t)``
(dropout) are constant within calendar periods (e.g. weeks); while alive, customer ``i``
buys as a Poisson process with rate ``lambda_i exp(gamma_p' z_i(t))`` and drops out with
hazard ``mu_i exp(gamma_d' w_i(t))``, ``lambda_i ~ Gamma(r, alpha)``,
``mu_i ~ Gamma(s, beta)``. With the cumulative multipliers from the first purchase,
``B(t) = int_0^t exp(gamma_p' z(u)) du`` and ``D(t) = int_0^t exp(gamma_d' w(u)) du``
(piecewise linear), integrating ``lambda`` and ``mu`` out gives (the paper's Appendix A.1
in integral form; the same step as for the stationary model, Fader & Hardie 2005 eq. 17)

``L = Gamma(r+x)/Gamma(r) alpha^r beta^s exp(gamma_p' S)
      [ (alpha + B(T))^-(r+x) (beta + D(T))^-s
        + s int_{t_x}^{T} exp(gamma_d' w(tau)) (alpha + B(tau))^-(r+x)
                          (beta + D(tau))^-(s+1) dtau ]``

where ``S`` is the sum of ``z`` over the customer's repeat purchases (each purchase's
rate enters the likelihood: the exact purchase times matter only through ``S``). The
first term is "alive at T", the second "dropped out at tau". CLVTools evaluates each
period's piece of the integral as a difference of two Gauss hypergeometric functions;
here each piece is integrated by Gauss-Legendre quadrature
(within a piece ``B`` and ``D`` are linear; see ``N_NODES`` for the map and its measured
accuracy); written once for NumPy and PyTensor. With all
coefficients 0 it is exactly the stationary Pareto/NBD likelihood (tested against
:func:`~bayesclv.families.pareto_nbd.pareto_nbd_logp`); on CLVTools' apparel data it
matches CLVTools' per-customer values (``tests/test_family_pareto_cov.py``).

Data: :func:`bayesclv.covariates.join_covariates` with a
:class:`~bayesclv.covariates.TimeVaryingCovariates` table and the transaction log puts a
:class:`~bayesclv.covariates.DynamicDesign` in ``rfm.meta["covariates"]``;
:meth:`ParetoNBDDynCovFamily.resolve` binds the family to it (the registry entry is
unbound). Parameters and standardisation as in
:mod:`bayesclv.families.pareto_nbd_cov`.

Predictions need the covariate path after ``T``: ``family.customer_data(rfm, idx,
horizon=h, table=...)`` returns the keyword arguments (calibration pieces and the future
pieces, :meth:`~bayesclv.covariates.DynamicDesign.future`, which raises naming the
customers and periods the table lacks).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bayesclv.errors import ModelSpecificationError
from bayesclv.families.base import ModelRows, expm1_ratio
from bayesclv.families.pareto_nbd_cov import (
    CovariateScales,
    ParetoNBDCovFamily,
    gamma_name,
)
from bayesclv.ops import NUMPY, ops_for

__all__ = ["PARETO_NBD_DYNCOV", "ParetoNBDDynCovFamily", "dyncov_terms", "simulate_dyncov"]

#: Quadrature of each covariate period's piece of the dropout integral. Within a piece
#: the integrand is ``(al + v)^-p (be + v)^-q`` (``p = r + x``, ``q = s + 1``; ``al``,
#: ``be`` the scales at the piece start over the multipliers) and decreasing; it is
#: integrated over the part where it is within ``E_FOLDS`` e-folds of its start, in
#: ``w = log(d + v)`` (``d = min(al, be)``, the nearer branch point) with the partial
#: exponential map ``y = 1 - exp(-kappa w)``, ``kappa`` = the initial log-slope /
#: ``UNDER_MAP`` (as for the stationary model, :mod:`bayesclv.families.pareto_nbd`), by
#: ``N_PANELS`` x ``N_NODES`` Gauss-Legendre nodes. Measured against
#: ``scipy.integrate.quad`` of the integral (300 random customers, periods up to 4.4
#: units, multipliers e^-4 .. e^4, x up to 60): worst relative error of the
#: log-likelihood 3e-7 with 8 nodes where rates per period reach 50, 9e-9 where they stay
#: below about 3 (1e-10 and 7e-12 with 12 nodes); on CLVTools' apparel data (weekly
#: periods) it agrees with CLVTools' closed form to 1e-11. ``UNDER_MAP`` was chosen on
#: those cases (1.5 .. 8 tried: 6 is best at 8-12 nodes).
N_PANELS = 1
N_NODES = 8
E_FOLDS = 40.0
UNDER_MAP = 6.0
_XI, _W = np.polynomial.legendre.leggauss(N_NODES)
_U = ((np.arange(N_PANELS)[:, None] + (_XI[None, :] + 1.0) / 2.0) / N_PANELS).ravel()
_LOG_W = np.tile(np.log(_W / (2.0 * N_PANELS)), N_PANELS)


def _piece_log_integrand(m, p, q, al, be, h):
    """Log of the quadrature terms of ``int_0^h (al + v)^-p (be + v)^-q dv`` (last axis
    the nodes; their log-sum-exp is the log integral). The map is computed without
    gradient (the integral does not depend on it), so the gradient is the quadrature of
    the integrand's gradient at fixed nodes."""
    sg = m.stop_gradient
    e = m.expand
    p_, q_, al_, be_ = sg(p), sg(q), sg(al), sg(be)
    d = m.minimum(al_, be_)
    # the integrand is below exp(-E_FOLDS) of its start once either factor alone is
    cut = m.minimum(
        al_ * m.expm1(m.minimum(E_FOLDS / p_, 700.0)), be_ * m.expm1(m.minimum(E_FOLDS / q_, 700.0))
    )
    span = m.log1p(m.minimum(h, cut) / d)  # length in w
    # partial exponential map: the integrand falls in w at least at its initial log-slope
    # k0 (log-concave), so y = 1 - exp(-kappa (w - w0)), kappa = k0 / UNDER_MAP, takes
    # out part of that fall (all of it would leave a fractional power at y -> Y)
    k0 = m.maximum(p_ * d / al_ + q_ * d / be_ - 1.0, 0.0)
    kappa = m.maximum(k0 / UNDER_MAP, 1e-6 / span)
    Y = -m.expm1(-kappa * span)
    y = e(Y) * _U
    u = -m.log1p(-y) / e(kappa)  # w - w0 at the nodes
    v = sg(e(d) * m.expm1(u))
    log_jac = sg(e(m.log(d)) + u + e(m.log(Y / kappa)) - m.log1p(-y))
    return -e(p) * m.log(e(al) + v) - e(q) * m.log(e(be) + v) + log_jac + _LOG_W


def _cumsum(m, x):
    if m.name == "numpy":
        return np.cumsum(x, axis=-1)
    import pytensor.tensor as pt

    return pt.cumsum(x, axis=-1)


def _linear(m, coefs, z):
    """``sum_j coefs[j] * z[..., j]`` with each coefficient broadcast over the last
    (period) axis of ``z[..., j]`` (coefficients are scalars or per-row ``(m,)``);
    zeros of ``z.shape[:-1]`` when there are no covariates."""
    eta = np.zeros(np.shape(z)[:-1])
    for j, g in enumerate(coefs):
        g = m.expand(g) if getattr(g, "ndim", 0) else g
        eta = eta + g * z[..., j]
    return eta


def dyncov_terms(r, alpha, s, beta, gp, gd, x, t_x, T, start, length, zp, zd, at):
    """``(log_const, log_alive, log_dropout, has_gap)`` of the dynamic-covariate likelihood.

    ``L = exp(log_const) [exp(log_alive) + exp(log_dropout)]`` (module docstring), with
    the dropout term only where ``has_gap`` (``T > t_x``; elsewhere ``log_dropout`` is a
    finite placeholder). Parameters are scalars or per-row
    ``(m,)``; ``x, t_x, T`` are ``(m,)``, ``start, length`` ``(m, K)`` (pieces from the
    first purchase), ``zp (m, K, p)``, ``zd (m, K, q)`` and ``at (m, p)`` the sums of
    ``zp`` over repeat purchases (NumPy data; parameters NumPy or PyTensor).
    """
    m = ops_for(r, alpha, s, beta, *gp, *gd)
    e = m.expand
    rx = r + x
    a = m.exp(_linear(m, gp, zp))  # (m, K) purchase multipliers
    c = m.exp(_linear(m, gd, zd))  # (m, K) dropout multipliers
    b_end = _cumsum(m, a * length)
    d_end = _cumsum(m, c * length)
    B_T = b_end[..., -1]
    D_T = d_end[..., -1]
    log_const = m.gammaln(rx) - m.gammaln(r) + r * m.log(alpha) + s * m.log(beta)
    for j, g in enumerate(gp):
        log_const = log_const + g * at[..., j]
    log_alive = -rx * m.log(alpha + B_T) - s * m.log(beta + D_T)

    # the pieces' overlap with (t_x, T]: data only. Only the pieces inside (t_x, T] are
    # integrated (gathered flat, one row per piece); a customer without any (T == t_x)
    # gets its first piece as a finite stand-in, masked by the caller.
    lo = np.maximum(start, np.asarray(t_x)[:, None])
    hi = np.minimum(start + length, np.asarray(T)[:, None])
    h = np.maximum(hi - lo, 0.0)
    used = h > 0
    has_gap = used.any(axis=-1)
    keep = used.copy()
    keep[~has_gap, 0] = True
    rows, cols = np.nonzero(keep)
    first = np.r_[True, rows[1:] != rows[:-1]]  # each row's first kept piece
    hk = np.where(used[rows, cols], h[rows, cols], 1.0)
    offset = (lo - start)[rows, cols]
    n_rows = start.shape[0]

    def take(v):  # a parameter (scalar or per row) at each kept piece
        return v if getattr(v, "ndim", 0) == 0 else v[rows]

    ak, ck = a[rows, cols], c[rows, cols]
    A0 = take(alpha) + (b_end - a * length)[rows, cols] + ak * offset  # alpha + B at lo
    Q0 = take(beta) + (d_end - c * length)[rows, cols] + ck * offset  # beta + D at lo
    # piece integral: c a^-p c^-q int_0^h (al + v)^-p (be + v)^-q dv, al = A0/a, be = Q0/c
    pk, qk = take(rx), take(s + 1.0)
    log_f = e(m.log(ck) - pk * m.log(ak) - qk * m.log(ck)) + _piece_log_integrand(
        m, pk, qk, A0 / ak, Q0 / ck, hk
    )
    log_piece = m.logsumexp(log_f, axis=-1)
    # per customer: log-sum-exp of its pieces, shifted by its first piece (the integrand
    # decreases along the customer's pieces, so nothing overflows)
    shift = m.stop_gradient(log_piece[np.flatnonzero(first)])
    total = _segment_sum(m, m.exp(log_piece - shift[np.cumsum(first) - 1]), rows, n_rows)
    log_dropout = m.log(s) + m.log(total) + shift
    return log_const, log_alive, log_dropout, has_gap


def _segment_sum(m, values, rows, n):
    if m.name == "numpy":
        return np.bincount(rows, weights=values, minlength=n)
    import pytensor.tensor as pt

    return pt.inc_subtensor(pt.zeros((n,))[rows], values)


def pareto_nbd_dyncov_logp(r, alpha, s, beta, gp, gd, x, t_x, T, start, length, zp, zd, at):
    """Per-customer log-likelihood (see :func:`dyncov_terms` for the arguments)."""
    m = ops_for(r, alpha, s, beta, *gp, *gd)
    log_const, log_alive, log_dropout, has_gap = dyncov_terms(
        r, alpha, s, beta, gp, gd, x, t_x, T, start, length, zp, zd, at
    )
    # log(exp(A) + exp(B)) = A + softplus(B - A); B only where the customer has a gap
    return log_const + log_alive + m.where(has_gap, m.softplus(log_dropout - log_alive), 0.0)


class ParetoNBDDynCovFamily(ParetoNBDCovFamily):
    """Pareto/NBD with time-varying covariates; bound by :meth:`resolve`."""

    name = "pareto_nbd_dyncov"
    label = "Pareto/NBD with time-varying covariates"
    design_kind = "dynamic"

    def __init__(self, scales: CovariateScales | None = None, design=None):
        super().__init__(scales)
        self.design = design

    def resolve(self, rfm):
        design = self._design(rfm)
        return type(self)(CovariateScales.of(design), design)

    def from_draws(self, values: Mapping):
        fam = super().from_draws(values)
        return fam if fam is self else type(self)(fam.scales, None)

    # -- model -------------------------------------------------------------------------
    def _coefs(self, gammas: Mapping):
        gp = [gammas[gamma_name("purchase", c)] for c in self.scales.purchase]
        gd = [gammas[gamma_name("dropout", c)] for c in self.scales.dropout]
        return gp, gd

    def logp(self, r, alpha, s, beta, *rest):
        """``logp(r, alpha, s, beta, *gammas, x, t_x, T, row)``: ``row`` is each
        customer's row in the bound design (a float column, as the builder's data are)."""
        if self.design is None:
            self._need_design()
        gammas, data = self.split(rest)
        x, t_x, T, row = data
        i = np.asarray(row).astype(np.int64)
        d = self.design
        gp, gd = self._coefs(gammas)
        return pareto_nbd_dyncov_logp(r, alpha, s, beta, gp, gd, x, t_x, T, d.start[i],
                                      d.length[i], d.z_purchase[i], d.z_dropout[i],
                                      d.at_purchase[i])  # fmt: skip

    def _need_design(self):
        raise ModelSpecificationError(
            f"{self.label}: the likelihood needs the covariate design; resolve the family "
            f"on an RFMData with time-varying covariates (join_covariates) first."
        )

    def model_rows(self, rfm) -> ModelRows:
        self._need_bound("building the data")
        design = self._design(rfm)
        if design is not self.design:
            raise ModelSpecificationError(
                f"{self.label}: this family is bound to another covariate design; resolve "
                f"it on this RFMData."
            )
        rows = design.rows(rfm.customer_id).astype(np.float64)
        mask = np.ones(rfm.n_customers, dtype=bool)
        return ModelRows(mask, (rfm.frequency.astype(np.float64), rfm.recency, rfm.T, rows))

    # -- consumers ---------------------------------------------------------------------
    def customer_data(self, rfm, idx=None, *, horizon: float | None = None, table=None) -> dict:
        """Keyword arguments for the methods below, for customers ``idx`` of ``rfm``:
        ``pieces`` (the calibration pieces, ``at_purchase``) and, with ``horizon``,
        ``future`` (:class:`~bayesclv.covariates.FuturePaths` of ``(T, T + horizon]``,
        from ``table`` or the joined table)."""
        design = self._design(rfm)
        rows = design.rows(rfm.customer_id)
        if idx is not None:
            rows = rows[np.asarray(idx)]
        out = {
            "pieces": {
                k: getattr(design, k)[rows]
                for k in ("start", "length", "z_purchase", "z_dropout", "at_purchase")
            }
        }
        if horizon is not None:
            out["future"] = design.future(horizon, table=table, rows=rows)
        return out

    def row_key(self, rfm) -> tuple[np.ndarray, ...]:
        """Columns that, with ``(segment, x, T)``, identify customers with equal predictions:
        each customer's own covariate path, i.e. its row (no two customers share one)."""
        return (self._design(rfm).rows(rfm.customer_id).astype(np.float64),)

    def _need(self, pieces, what):
        if pieces is None:
            raise ModelSpecificationError(
                f"{self.label}: {what} needs each customer's covariate path; pass "
                f"**family.customer_data(rfm, idx, horizon=...)."
            )

    def _columns(self, th, x, *data):
        """Per-customer views of parameters and data broadcast together (the base.py
        layouts: customers on the last axis of ``(n_draws, n)`` arrays, or on the first
        of ``(m, n_draws)`` ones with ``x`` of shape ``(m, 1)``): an iterator over the
        other positions, yielding flat ``(m,)`` parameters and data, and a function
        putting ``(m,)`` results back in the broadcast shape."""
        arrays = [np.asarray(v, dtype=np.float64) for v in (x, *data, *th.values())]
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        if len(shape) == 0:
            shape = (1,)
        axis = 0 if (np.ndim(x) == len(shape) >= 2 and np.shape(x)[-1] == 1) else -1
        moved = [np.moveaxis(np.broadcast_to(a, shape), axis, 0).reshape(shape[axis], -1)
                 for a in arrays]  # fmt: skip
        keys = list(th)
        n_cols = moved[0].shape[1]

        def cols():
            for c in range(n_cols):
                vals = [a[:, c] for a in moved]
                par = dict(zip(keys, vals[1 + len(data):], strict=True))
                par["gp"] = [par[gamma_name("purchase", n)] for n in self.scales.purchase]
                par["gd"] = [par[gamma_name("dropout", n)] for n in self.scales.dropout]
                yield c, vals[0], vals[1:1 + len(data)], par

        def put(out, c, val):
            out[:, c] = val

        def back(out):
            sh = (shape[axis], *[d for k, d in enumerate(shape) if k != axis % len(shape)])
            return np.moveaxis(out.reshape(sh), 0, axis).reshape(shape)

        return cols, put, back, (shape[axis], n_cols)

    def _terms(self, th, x, t_x, T, pieces):
        cols, put, back, size = self._columns(th, x, t_x, T)
        la_out, ll_out = np.empty(size), np.empty(size)
        for c, xx, (tx, TT), a in cols():
            rows = np.arange(size[0])
            lc, la, ld, gap = dyncov_terms(a["r"], a["alpha"], a["s"], a["beta"], a["gp"],
                                           a["gd"], xx, tx, TT, *_take(pieces, rows))
            put(la_out, c, lc + la)
            put(ll_out, c, lc + la + np.where(gap, np.logaddexp(0.0, ld - la), 0.0))
        return back(la_out), back(ll_out)

    def log_p_alive(self, th, x, t_x, T, pieces=None, future=None) -> np.ndarray:
        """``log P(alive at T) = log_const + log_alive - log L`` (one implementation)."""
        self._need(pieces, "P(alive)")
        alive, ll = self._terms(th, x, t_x, T, pieces)
        return np.minimum(alive - ll, 0.0)

    def p_alive(self, th, x, t_x, T, **cov) -> np.ndarray:
        return np.exp(self.log_p_alive(th, x, t_x, T, **cov))

    def p_alive_rows(self, th, x, t_x, T, **cov) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)[:, None]
        return self.p_alive(th, x, np.asarray(t_x)[:, None], np.asarray(T)[:, None], **cov)

    def _future_sums(self, th, x, T, t, pieces, future, bound: bool):
        """``E[X(T, T+t) | alive]`` (or, with ``bound``, its no-dropout upper bound)."""
        self._need(pieces, "expected purchases")
        self._need(future, "expected purchases (the future covariate path)")
        cols, put, back, size = self._columns(th, x, T, t)
        out = np.empty(size)
        st, ln = future.start, future.length
        for c, xx, (_, tt), a in cols():
            if np.any(tt > future.horizon + 1e-9):
                raise ModelSpecificationError(
                    f"{self.label}: asked for {float(tt.max()):g} time units ahead but the "
                    f"future covariate path covers {future.horizon:g}; pass a longer horizon "
                    f"to customer_data."
                )
            _, ln_c, zp, zd, _ = _take(pieces, np.arange(size[0]))
            A = a["alpha"] + np.sum(np.exp(_linear(NUMPY, a["gp"], zp)) * ln_c, axis=-1)
            Q = a["beta"] + np.sum(np.exp(_linear(NUMPY, a["gd"], zd)) * ln_c, axis=-1)
            hk = np.clip(np.minimum(st + ln, tt[:, None]) - st, 0.0, None)
            ak = np.exp(_linear(NUMPY, a["gp"], future.z_purchase))
            if bound:
                put(out, c, (a["r"] + xx) / A * np.sum(ak * hk, axis=-1))
                continue
            ck = np.exp(_linear(NUMPY, a["gd"], future.z_dropout))
            Dk = np.cumsum(ck * hk, axis=-1) - ck * hk
            s = a["s"][:, None]
            base = Q[:, None] + Dk
            L = np.log1p(ck * hk / base)
            piece = (ak / ck * np.exp(s * np.log(Q[:, None]) + (1.0 - s) * np.log(base))
                     * expm1_ratio(s - 1.0, L))  # fmt: skip
            put(out, c, (a["r"] + xx) / A * piece.sum(axis=-1))
        return back(out)

    def expected_alive(self, th, x, T, t, pieces=None, future=None) -> np.ndarray:
        """Given alive at ``T``, ``lambda ~ Gamma(r + x, alpha + B(T))`` and ``mu ~
        Gamma(s, beta + D(T))``, so ``E[X(T, T+t)] = (r + x)/(alpha + B(T)) sum_k a_k
        int_0^{h_k} (Q / (Q + D_k + c_k v))^s dv`` over the future pieces (``Q = beta +
        D(T)``, ``D_k`` the dropout multiplier integrated from ``T`` to piece ``k``), each
        ``(a_k / c_k) Q^s (Q + D_k)^(1-s) R(s - 1, log1p(c_k h_k / (Q + D_k)))`` with
        ``R(e, L) = (1 - exp(-e L)) / e`` (:func:`~bayesclv.numerics.expm1_ratio`)."""
        return self._future_sums(th, x, T, t, pieces, future, bound=False)

    def expected_alive_bounds(self, th, x, T, t, pieces=None, future=None):
        """``0 <= E <= (r + x)/(alpha + B(T)) int_0^t a(u) du`` (no dropout)."""
        up = self._future_sums(th, x, T, t, pieces, future, bound=True)
        return np.zeros_like(up), up

    def latent_given_alive(self, th, x, T, rng, pieces=None, future=None):
        """The base rates: ``lambda ~ Gamma(r + x, alpha + B(T))``, ``mu ~ Gamma(s, beta +
        D(T))`` (they scale the covariate multipliers of the future path)."""
        self._need(pieces, "latent rates")
        cols, put, back, size = self._columns(th, x, T)
        A, Q, n, s = (np.empty(size) for _ in range(4))
        for c, xx, _, a in cols():
            _, ln_c, zp, zd, _ = _take(pieces, np.arange(size[0]))
            put(A, c, a["alpha"] + np.sum(np.exp(_linear(NUMPY, a["gp"], zp)) * ln_c, -1))
            put(Q, c, a["beta"] + np.sum(np.exp(_linear(NUMPY, a["gd"], zd)) * ln_c, -1))
            put(n, c, a["r"] + xx)
            put(s, c, a["s"])
        A, Q, n, s = map(back, (A, Q, n, s))
        return {"lam": rng.gamma(n, 1.0 / A), "mu": rng.gamma(s, 1.0 / Q)}

    def window_log_pmf(self, latent, y, h):
        raise NotImplementedError(
            f"{self.label}: the holdout pmf with time-varying covariates is not implemented "
            f"(it depends on each customer's covariate path)."
        )

    def simulate_window(self, latent, h, rng):
        raise NotImplementedError(
            f"{self.label}: window simulation needs the covariate path; use simulate_dyncov."
        )

    def future_events(self, th, x, T, alive, horizon, rng, **cov):
        # a ModelSpecificationError (not NotImplementedError): what a user asked for, with
        # the choice that works, rather than a missing piece of the package
        raise ModelSpecificationError(
            f"{self.label}: simulated CLV (method='simulate') along each customer's future "
            f"covariate path is not implemented; use method='expected' (expected CLV per "
            f"posterior draw)."
        )


def _take(pieces, rows):
    return (pieces["start"][rows], pieces["length"][rows], pieces["z_purchase"][rows],
            pieces["z_dropout"][rows], pieces["at_purchase"][rows])  # fmt: skip


# --------------------------------------------------------------------------- simulation
def simulate_dyncov(
    *,
    r,
    alpha,
    s,
    beta,
    gamma_purchase,
    gamma_dropout,
    calendar,
    first_days,
    end_day,
    random_seed,
):
    """Simulate purchase days under the dynamic-covariate Pareto/NBD.

    ``calendar`` is a :class:`~bayesclv.covariates.TimeVaryingCovariates` (its columns
    are the covariates; ``gamma_purchase`` / ``gamma_dropout`` map column -> raw-scale
    coefficient), ``first_days`` the first purchase day of each customer (datetime-like,
    one per customer of ``calendar.customer_id``), ``end_day`` the last day simulated.
    Time runs in days here; rates are per day. Returns a DataFrame (``customer_id``,
    ``date``) with every purchase, first purchases included, and the latent
    ``lambda``/``mu`` per customer.

    Within the covariate grid, purchase and dropout times are drawn by inverting the
    piecewise-linear cumulative intensities ``B`` and ``D`` (a time change of unit-rate
    processes).
    """
    import pandas as pd

    from bayesclv.covariates import as_days

    rng = np.random.default_rng(random_seed)
    ids = calendar.customer_id
    n = len(ids)
    first = as_days(first_days)
    end = int(as_days([end_day])[0])
    pstart = as_days(calendar.period_start)
    pend = as_days(calendar.period_end)
    if pend[-1] <= end or np.any(first < pstart[0]):
        raise ModelSpecificationError(
            "simulate_dyncov: the calendar must cover every day simulated."
        )
    cols = calendar.columns
    gp = np.array([gamma_purchase.get(c, 0.0) for c in cols])
    gd = np.array([gamma_dropout.get(c, 0.0) for c in cols])
    vals = np.where(calendar.covered[..., None], calendar.values, 0.0)
    a = np.exp(vals @ gp)  # (n, K)
    c = np.exp(vals @ gd)
    lam = rng.gamma(r, 1.0 / alpha, n)
    mu = rng.gamma(s, 1.0 / beta, n)
    rows_out, days_out = [ids.copy()], [first.copy()]
    for i in range(n):
        lo = np.clip(pstart - first[i], 0, None).astype(float)
        hi = np.clip(pend - first[i], 0, None).astype(float)
        hi = np.minimum(hi, end + 1 - first[i])
        lo = np.minimum(lo, hi)
        knots = np.concatenate([[0.0], hi])
        Bk = np.concatenate([[0.0], np.cumsum(a[i] * (hi - lo))])
        Dk = np.concatenate([[0.0], np.cumsum(c[i] * (hi - lo))])
        horizon = float(end + 1 - first[i])
        tau = np.interp(rng.standard_exponential() / mu[i], Dk, knots, right=np.inf)
        stop = min(tau, horizon)
        b_stop = np.interp(stop, knots, Bk)
        k = rng.poisson(lam[i] * b_stop)
        if k:
            times = np.interp(rng.random(k) * b_stop, Bk, knots)
            days = first[i] + np.floor(times).astype(np.int64)
            rows_out.append(np.repeat(ids[i : i + 1], k))
            days_out.append(days)
    cust = np.concatenate(rows_out)
    days = np.concatenate(days_out)
    frame = pd.DataFrame({"customer_id": cust,
                          "date": pd.to_datetime(days * 86_400 * 10**9)})  # fmt: skip
    frame = frame.sort_values(["customer_id", "date"], kind="stable").reset_index(drop=True)
    return frame, {"lambda": lam, "mu": mu}


PARETO_NBD_DYNCOV = ParetoNBDDynCovFamily()
