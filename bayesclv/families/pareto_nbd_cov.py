"""Pareto/NBD with static (time-invariant) covariates on purchase and dropout.

Model (Fader & Hardie 2007, "Incorporating time-invariant covariates into the Pareto/NBD
and BG/NBD models"; the parameterisation of CLVTools' ``pnbd`` with static covariates):
customer ``i`` with purchase covariates ``z_i`` and dropout covariates ``w_i`` has

``lambda_i ~ Gamma(r, rate alpha_i)``, ``alpha_i = alpha exp(-gamma_purchase' z_i)``
``mu_i ~ Gamma(s, rate beta_i)``,      ``beta_i = beta exp(-gamma_dropout' w_i)``

so a positive coefficient raises the mean purchase (dropout) rate by ``exp(gamma)`` per
unit of the covariate. Given ``alpha_i, beta_i`` a customer is an ordinary Pareto/NBD
customer: every formula is :mod:`bayesclv.families.pareto_nbd`'s, evaluated at the
customer's own scale parameters (one implementation per formula).

Data: :func:`bayesclv.covariates.join_covariates` puts a
:class:`~bayesclv.covariates.StaticDesign` in ``rfm.meta["covariates"]``;
:meth:`ParetoNBDCovFamily.resolve` binds the family to its columns and standardisation
(the registry entry has none and cannot build a model on its own).

Parameters: the paper parameters (``params``) are on the original scale of the
covariates: ``r, alpha, s, beta`` (``alpha``/``beta`` at covariates 0) and one
``gamma_purchase_<column>`` / ``gamma_dropout_<column>`` per covariate. The model samples
(``unconstrained``) and maximum likelihood optimises (:meth:`mle_view`) the coefficients
of the *standardised* columns, ``coef_purchase_<column> = gamma * sd``, and the mean
rates at the covariate means, so the geometry does not depend on the units of the
covariates; both are mapped back exactly (the map is linear on the log scale, so the
maximum-likelihood standard errors map exactly too).

Consumers (predictions, CLV) pass each customer's covariates to the family methods as
keyword arguments, as they pass ``**family.recency(t_x)``:
``family.customer_data(rfm, idx, horizon=h)`` returns them (here ``z_purchase``,
``z_dropout`` of shape ``(len(idx), p)``; the time-varying family adds the calibration
pieces and the future path of the horizon) and every method that takes ``th`` accepts
them; ``family.row_key(rfm)`` gives the columns that, with ``(segment, x, T)``, identify
customers with equal predictions (for tables computed once per distinct row). The
consumers hold the family bound to the draws' coefficients, ``FAMILIES[name].from_draws(
draws)`` (an unbound family refuses to predict rather than ignore the covariates).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from bayesclv.errors import ModelSpecificationError
from bayesclv.families.base import History, ModelRows, PurchaseFamily
from bayesclv.families.pareto_nbd import PARETO_NBD, pareto_nbd_logp
from bayesclv.ops import ops_for
from bayesclv.priors import CVPrior, NormalPrior, ParetoNBDPriors
from bayesclv.transforms import pareto_nbd_natural

__all__ = [
    "PARETO_NBD_COV",
    "ParetoNBDCovFamily",
    "ParetoNBDCovPriors",
    "CovariateScales",
    "StandardizedView",
]

BASE_PARAMS = ("r", "alpha", "s", "beta")
BASE_UNCONSTRAINED = PARETO_NBD.unconstrained


def gamma_name(process: str, column: str) -> str:
    """Paper name of a coefficient: ``gamma_purchase_<column>`` / ``gamma_dropout_<column>``."""
    return f"gamma_{process}_{column}"


def coef_name(process: str, column: str) -> str:
    """Sampled name of a standardised coefficient: ``coef_<process>_<column>``."""
    return f"coef_{process}_{column}"


# --------------------------------------------------------------------------- priors
@dataclass(frozen=True)
class ParetoNBDCovPriors:
    """Priors of the covariate Pareto/NBD families.

    The four base parameters as in :class:`~bayesclv.priors.ParetoNBDPriors`, with the
    rates now the mean purchase and dropout rates *at the covariate means*;
    ``coefficient`` is the prior of every coefficient of a standardised covariate
    (default Normal(0, 1): a one-sd change in a covariate multiplies a rate by a factor
    between e^-2 and e^2 with 95% prior probability). ``segment_sigma`` as for
    Pareto/NBD (under partial pooling the coefficients are pooled across segments too).
    """

    log_purchase_rate: NormalPrior = ParetoNBDPriors.log_purchase_rate
    log_r: NormalPrior = ParetoNBDPriors.log_r
    log_dropout_rate: NormalPrior = ParetoNBDPriors.log_dropout_rate
    log_s: NormalPrior | CVPrior = ParetoNBDPriors.log_s
    coefficient: NormalPrior = NormalPrior(0.0, 1.0)
    segment_sigma: float = 0.5

    def __post_init__(self) -> None:
        # the base fields are validated (and normalised) by Pareto/NBD's own priors
        base = ParetoNBDPriors(self.log_purchase_rate, self.log_r, self.log_dropout_rate,
                               self.log_s, self.segment_sigma)  # fmt: skip
        object.__setattr__(self, "log_s", base.log_s)
        if not isinstance(self.coefficient, NormalPrior):
            raise ModelSpecificationError(
                f"ParetoNBDCovPriors.coefficient must be a NormalPrior, got "
                f"{type(self.coefficient).__name__}."
            )

    def __getattr__(self, name: str):
        # every coefficient ``coef_<process>_<column>`` has the ``coefficient`` prior
        if name.startswith("coef_"):
            return object.__getattribute__(self, "coefficient")
        raise AttributeError(name)


# --------------------------------------------------------------------------- scales
@dataclass(frozen=True)
class CovariateScales:
    """The covariate columns of a bound family and their standardisation."""

    purchase: tuple[str, ...] = ()
    dropout: tuple[str, ...] = ()
    mean_purchase: tuple[float, ...] = ()
    sd_purchase: tuple[float, ...] = ()
    mean_dropout: tuple[float, ...] = ()
    sd_dropout: tuple[float, ...] = ()

    @classmethod
    def of(cls, design) -> CovariateScales:
        sp, sd = design.scale_purchase, design.scale_dropout
        return cls(tuple(design.purchase), tuple(design.dropout),
                   tuple(map(float, sp.mean)), tuple(map(float, sp.sd)),
                   tuple(map(float, sd.mean)), tuple(map(float, sd.sd)))  # fmt: skip

    @property
    def gammas(self) -> tuple[str, ...]:
        return tuple(gamma_name("purchase", c) for c in self.purchase) + tuple(
            gamma_name("dropout", c) for c in self.dropout
        )

    @property
    def coefs(self) -> tuple[str, ...]:
        return tuple(coef_name("purchase", c) for c in self.purchase) + tuple(
            coef_name("dropout", c) for c in self.dropout
        )

    def to_original(self, alpha_c, beta_c, coefs: Sequence):
        """Scale parameters at covariates 0 and raw-scale coefficients from the mean-rate
        scale parameters and the standardised coefficients (NumPy or PyTensor).

        ``alpha_c exp(-c' (z - m) / sd) = [alpha_c exp(gamma' m)] exp(-gamma' z)`` with
        ``gamma = c / sd``."""
        p = len(self.purchase)
        gp = [c / s for c, s in zip(coefs[:p], self.sd_purchase, strict=True)]
        gd = [c / s for c, s in zip(coefs[p:], self.sd_dropout, strict=True)]
        m = ops_for(alpha_c, beta_c, *coefs)
        shift_p = sum((g * mu for g, mu in zip(gp, self.mean_purchase, strict=True)), 0.0)
        shift_d = sum((g * mu for g, mu in zip(gd, self.mean_dropout, strict=True)), 0.0)
        return alpha_c * m.exp(shift_p), beta_c * m.exp(shift_d), gp + gd

    def jacobian(self) -> np.ndarray:
        """d(original)/d(optimised) on the MLE scales: ``(log r, log alpha, log s, log beta,
        gamma...)`` from ``(log r, log alpha_c, log s, log beta_c, coef...)`` (linear)."""
        p, q = len(self.purchase), len(self.dropout)
        J = np.eye(4 + p + q)
        for j in range(p):
            J[4 + j, 4 + j] = 1.0 / self.sd_purchase[j]
            J[1, 4 + j] = self.mean_purchase[j] / self.sd_purchase[j]
        for j in range(q):
            J[4 + p + j, 4 + p + j] = 1.0 / self.sd_dropout[j]
            J[3, 4 + p + j] = self.mean_dropout[j] / self.sd_dropout[j]
        return J


def individual_scales(alpha, beta, gammas: Mapping, scales: CovariateScales,
                      z_purchase, z_dropout):  # fmt: skip
    """``alpha_i = alpha exp(-gamma_p' z_i)``, ``beta_i = beta exp(-gamma_d' w_i)`` (NumPy
    or PyTensor); ``z_*`` have the covariates on their last axis."""
    m = ops_for(alpha, beta, *gammas.values())
    eta_p = 0.0
    for j, c in enumerate(scales.purchase):
        eta_p = eta_p + gammas[gamma_name("purchase", c)] * z_purchase[..., j]
    eta_d = 0.0
    for j, c in enumerate(scales.dropout):
        eta_d = eta_d + gammas[gamma_name("dropout", c)] * z_dropout[..., j]
    return alpha * m.exp(-eta_p), beta * m.exp(-eta_d)


class StandardizedView(PurchaseFamily):
    """What :func:`bayesclv.classic.fit_mle` optimises for a covariate family: the base
    parameters with the scales at the covariate means, and the standardised coefficients
    (real-valued, ``real_params``). ``report_mle`` maps the result back to the family's
    parameters, with the covariance mapped by the (linear) Jacobian."""

    def __init__(self, fam):
        self.fam = fam
        self.name, self.label = fam.name, f"{fam.label} (standardised covariates)"
        self.scales = fam.scales
        self.params = BASE_PARAMS + self.scales.coefs
        self.real_params = self.scales.coefs
        self.unconstrained = fam.unconstrained

    def model_rows(self, rfm) -> ModelRows:
        return self.fam.model_rows(rfm)

    def logp(self, r, alpha_c, s, beta_c, *rest):
        k = len(self.scales.coefs)
        alpha, beta, gammas = self.scales.to_original(alpha_c, beta_c, rest[:k])
        return self.fam.logp(r, alpha, s, beta, *gammas, *rest[k:])

    def report_mle(self, res):
        names = self.params
        th = np.array([math.log(res.params[n]) if n not in self.real_params else res.params[n]
                       for n in names])  # fmt: skip
        k = len(self.scales.coefs)
        alpha, beta, gammas = self.scales.to_original(
            math.exp(th[1]), math.exp(th[3]), list(th[4 : 4 + k])
        )
        est = {"r": res.params["r"], "alpha": float(alpha), "s": res.params["s"],
               "beta": float(beta)}  # fmt: skip
        est.update({g: float(v) for g, v in zip(self.scales.gammas, gammas, strict=True)})
        J = self.scales.jacobian()
        cov = J @ res.covariance_log @ J.T if res.covariance_log is not None else None
        out_names = BASE_PARAMS + self.scales.gammas
        se_scale = np.sqrt(np.diag(cov)) if cov is not None else np.full(len(out_names), np.nan)
        se = {n: float(v * (1.0 if i >= 4 else est[n]))
              for i, (n, v) in enumerate(zip(out_names, se_scale, strict=True))}  # fmt: skip
        return replace(res, params=est, se_log=dict(zip(out_names, map(float, se_scale),
                       strict=True)), se=se, covariance_log=cov)  # fmt: skip


# --------------------------------------------------------------------------- family
class ParetoNBDCovFamily(PurchaseFamily):
    """Pareto/NBD with static covariates; bound to its columns by :meth:`resolve`."""

    name = "pareto_nbd_cov"
    label = "Pareto/NBD with static covariates"
    priors_class = ParetoNBDCovPriors
    discount_scale = "beta"
    design_kind = "static"

    def __init__(self, scales: CovariateScales | None = None):
        self.scales = CovariateScales() if scales is None else scales
        self.params = BASE_PARAMS + self.scales.gammas
        self.unconstrained = BASE_UNCONSTRAINED + self.scales.coefs

    def __repr__(self) -> str:
        cols = (f"purchase {list(self.scales.purchase)}, dropout {list(self.scales.dropout)}"
                if self.bound else "no covariates bound")  # fmt: skip
        return f"<family {self.name!r} ({self.label}, {cols})>"

    @property
    def bound(self) -> bool:
        return bool(self.scales.purchase or self.scales.dropout)

    @property
    def real_params(self) -> tuple[str, ...]:
        """Paper parameters that are real-valued (the coefficients): consumers check the
        others are > 0 (:class:`bayesclv.predict.DrawParams`)."""
        return self.scales.gammas

    def _need_bound(self, what: str) -> None:
        if not self.bound:
            raise ModelSpecificationError(
                f"{self.label}: {what} needs the covariates; this family object has none "
                f"bound. Join them first (bayesclv.covariates.join_covariates) and use "
                f"FAMILIES[{self.name!r}].resolve(rfm) (the builder and fit_mle do this)."
            )

    # -- binding ---------------------------------------------------------------------
    def _design(self, rfm):
        from bayesclv.covariates import covariate_design

        design = covariate_design(rfm)
        if design.kind != self.design_kind:
            raise ModelSpecificationError(
                f"{self.label} needs {self.design_kind} covariates, but this RFMData carries "
                f"{design.kind} ones; use the matching family."
            )
        return design

    def resolve(self, rfm):
        """The family bound to the covariates ``rfm`` carries (``meta["covariates"]``)."""
        return type(self)(CovariateScales.of(self._design(rfm)))

    def not_applicable(self, rfm) -> str | None:
        design = rfm.meta.get("covariates") if hasattr(rfm, "meta") else None
        if design is None or design.kind != self.design_kind:
            return f"needs {self.design_kind} covariates (bayesclv.covariates.join_covariates)"
        return None

    def from_draws(self, values: Mapping):
        """The family as draws fix it. The standardisation is not in the draws: a family
        from draws can evaluate the paper parameters' formulas (predictions), not map
        sampled parameters (a new segment's population draws)."""
        names = set(values)
        pur = tuple(n.removeprefix("gamma_purchase_") for n in values
                    if n.startswith("gamma_purchase_"))  # fmt: skip
        drop = tuple(n.removeprefix("gamma_dropout_") for n in values
                     if n.startswith("gamma_dropout_"))  # fmt: skip
        if not (pur or drop) or not set(BASE_PARAMS) <= names:
            return self
        nan = (math.nan,)
        return type(self)(CovariateScales(pur, drop, nan * len(pur), nan * len(pur),
                                          nan * len(drop), nan * len(drop)))  # fmt: skip

    # -- model -------------------------------------------------------------------------
    def to_natural(self, **theta) -> dict:
        self._need_bound("the map from the sampled parameters")
        nat = pareto_nbd_natural(*(theta[n] for n in BASE_UNCONSTRAINED))
        alpha, beta, gammas = self.scales.to_original(
            nat["alpha"], nat["beta"], [theta[n] for n in self.scales.coefs]
        )
        out = {"r": nat["r"], "alpha": alpha, "s": nat["s"], "beta": beta}
        out.update(zip(self.scales.gammas, gammas, strict=True))
        return out

    def split(self, rest):
        """Coefficients (dict) and the data after them from ``logp``'s arguments."""
        k = len(self.scales.gammas)
        return dict(zip(self.scales.gammas, rest[:k], strict=True)), rest[k:]

    def logp(self, r, alpha, s, beta, *rest):
        """``logp(r, alpha, s, beta, *gammas, x, t_x, T, *z_purchase, *z_dropout)``:
        :func:`~bayesclv.families.pareto_nbd.pareto_nbd_logp` at ``alpha_i, beta_i``."""
        gammas, data = self.split(rest)
        x, t_x, T = data[:3]
        p = len(self.scales.purchase)
        z = data[3:]
        m = ops_for(r, alpha, *gammas.values())
        eta_p = 0.0
        for j, c in enumerate(self.scales.purchase):
            eta_p = eta_p + gammas[gamma_name("purchase", c)] * z[j]
        eta_d = 0.0
        for j, c in enumerate(self.scales.dropout):
            eta_d = eta_d + gammas[gamma_name("dropout", c)] * z[p + j]
        return pareto_nbd_logp(r, alpha * m.exp(-eta_p), s, beta * m.exp(-eta_d), x, t_x, T)

    def model_rows(self, rfm) -> ModelRows:
        self._need_bound("building the data")
        design = self._design(rfm)
        if (design.purchase, design.dropout) != (self.scales.purchase, self.scales.dropout):
            raise ModelSpecificationError(
                f"{self.label}: the family is bound to purchase {list(self.scales.purchase)}"
                f", dropout {list(self.scales.dropout)}, but the data carry purchase "
                f"{list(design.purchase)}, dropout {list(design.dropout)}; resolve it on "
                f"this RFMData."
            )
        rows = design.rows(rfm.customer_id)
        cols = [design.z_purchase[rows, j] for j in range(len(design.purchase))]
        cols += [design.z_dropout[rows, j] for j in range(len(design.dropout))]
        mask = np.ones(rfm.n_customers, dtype=bool)
        return ModelRows(mask, (rfm.frequency.astype(np.float64), rfm.recency, rfm.T, *cols))

    def mle_view(self) -> StandardizedView:
        self._need_bound("maximum likelihood")
        return StandardizedView(self)

    def mle_start(self) -> dict[str, float]:
        return {**PARETO_NBD.mle_start(), **dict.fromkeys(self.scales.coefs, 0.0)}

    # -- consumers: per-customer covariates as keyword arguments ------------------------
    def customer_data(self, rfm, idx=None, *, horizon=None, table=None) -> dict:
        """The keyword arguments consumers pass to the methods below for the customers
        ``idx`` (positions in ``rfm``; default all): ``z_purchase``, ``z_dropout`` of
        shape ``(len(idx), p)``. ``horizon`` and ``table`` are accepted for a uniform
        call with the time-varying family (static covariates need no future path)."""
        design = self._design(rfm)
        rows = design.rows(rfm.customer_id)
        if idx is not None:
            rows = rows[np.asarray(idx)]
        return {"z_purchase": design.z_purchase[rows], "z_dropout": design.z_dropout[rows]}

    def row_key(self, rfm) -> tuple[np.ndarray, ...]:
        """Columns that, with ``(segment, x, T)``, identify customers whose predictions are
        equal (for consumers that compute once per distinct row, e.g. the CLV engine's
        tables): the covariate values."""
        kw = self.customer_data(rfm)
        return tuple(kw["z_purchase"].T) + tuple(kw["z_dropout"].T)

    def individual(self, th: Mapping, like, z_purchase=None, z_dropout=None) -> dict:
        """``th`` with each customer's own ``alpha_i``, ``beta_i`` (Pareto/NBD's
        parameters): ``z_*`` are ``(m, p)`` and are laid out like the data array
        ``like`` (``(m,)`` or ``(m, 1)``)."""
        if not self.bound:
            raise ModelSpecificationError(
                f"{self.label}: this family object has no coefficients bound, so it would "
                f"ignore the covariates; use FAMILIES[{self.name!r}].from_draws(draws) (the "
                f"draws must carry the gamma_* coefficients) or .resolve(rfm)."
            )
        if z_purchase is None or z_dropout is None:
            raise ModelSpecificationError(
                f"{self.label}: pass each customer's covariates, "
                f"**family.customer_data(rfm, idx) (z_purchase=, z_dropout=)."
            )
        shape = np.shape(like)
        zp = np.asarray(z_purchase, dtype=np.float64)
        zd = np.asarray(z_dropout, dtype=np.float64)
        zp = zp.reshape(shape + (zp.shape[-1],)) if shape else zp
        zd = zd.reshape(shape + (zd.shape[-1],)) if shape else zd
        gammas = {g: th[g] for g in self.scales.gammas}
        alpha, beta = individual_scales(th["alpha"], th["beta"], gammas, self.scales, zp, zd)
        return {"r": th["r"], "alpha": alpha, "s": th["s"], "beta": beta}

    def log_p_alive(self, th, x, t_x, T, **cov) -> np.ndarray:
        return PARETO_NBD.log_p_alive(self.individual(th, x, **cov), x, t_x, T)

    def p_alive_rows(self, th, x, t_x, T, **cov) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)[:, None]
        return self.p_alive(th, x, np.asarray(t_x)[:, None], np.asarray(T)[:, None], **cov)

    def p_alive(self, th, x, t_x, T, **cov) -> np.ndarray:
        return np.exp(np.minimum(self.log_p_alive(th, x, t_x, T, **cov), 0.0))

    def expected_alive(self, th, x, T, t, **cov) -> np.ndarray:
        return PARETO_NBD.expected_alive(self.individual(th, x, **cov), x, T, t)

    def expected_alive_bounds(self, th, x, T, t, **cov):
        return PARETO_NBD.expected_alive_bounds(self.individual(th, x, **cov), x, T, t)

    def latent_given_alive(self, th, x, T, rng, **cov) -> dict[str, np.ndarray]:
        return PARETO_NBD.latent_given_alive(self.individual(th, x, **cov), x, T, rng)

    def window_log_pmf(self, latent, y, h) -> np.ndarray:
        return PARETO_NBD.window_log_pmf(latent, y, h)

    def simulate_window(self, latent, h, rng) -> np.ndarray:
        return PARETO_NBD.simulate_window(latent, h, rng)

    def future_events(self, th, x, T, alive, horizon, rng, **cov):
        return PARETO_NBD.future_events(self.individual(th, x, **cov), x, T, alive, horizon, rng)

    def simulate_history(self, pop, ages, h, rng, **cov) -> History:
        """``pop`` holds ``r, alpha, s, beta`` and the coefficients per customer (n,);
        ``cov`` the customers' covariates ``(n, p)``."""
        return PARETO_NBD.simulate_history(self.individual(pop, ages, **cov), ages, h, rng)


PARETO_NBD_COV = ParetoNBDCovFamily()
