"""Model builders: an ``RFMData``, frozen priors and a pooling level in, a ``pm.Model`` out.

All builders share one structure (``_build``): unconstrained parameters per segment
(pooled completely, partially, or not at all; see ``bayesclv.models._common``),
mapped to the paper parameters by ``bayesclv.transforms``, and one ``pm.Potential``
holding the summed log-likelihood of ``bayesclv.likelihoods``, computed once per
distinct customer row and weighted by the number of customers sharing it.

Every natural parameter is a ``Deterministic`` with dims ``("segment",)`` whatever
the pooling, so everything downstream reads ``posterior[name]`` with dims
``(chain, draw, segment)`` and never special-cases the pooling.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pymc as pm

from bayesclv.data import RFMData
from bayesclv.errors import ModelSpecificationError
from bayesclv.families import get_family
from bayesclv.models._common import (
    ModelSpec,
    centered_mask,
    check_options,
    compress_rows,
    cv_name,
    natural_params,
    paired_params,
    register_spec,
    segment_information,
    unconstrained_params,
)
from bayesclv.priors import BGNBDPriors, CVPrior, GammaGammaPriors, ParetoNBDPriors

__all__ = ["build_model", "build_bgnbd", "build_mbgnbd", "build_pareto_nbd", "build_gamma_gamma"]

def _build(kind, rfm: RFMData, priors, pooling: str, parameterization: str) -> pm.Model:
    """The one builder: any family, any pooling (``kind`` is a family or its name)."""
    fam = get_family(kind)
    # a structural choice made from the data first (CNBD-k: k by profile likelihood)
    fam = fam.resolve(rfm)
    # a family whose data are not an RFMData (contractual: ContractData) checks its own
    getattr(fam, "check_options", check_options)(rfm, pooling, parameterization)
    prior_cls = fam.priors_class
    priors = prior_cls() if priors is None else priors
    if not isinstance(priors, prior_cls):
        raise ModelSpecificationError(
            f"{fam.name} needs priors of type {prior_cls.__name__}, got "
            f"{type(priors).__name__}."
        )
    modelled = fam.model_rows(rfm)
    seg = rfm.segment[modelled.mask]
    sizes = np.bincount(seg, minlength=rfm.n_segments)
    if pooling != "complete" and (sizes == 0).any():
        missing = [rfm.segment_names[i] for i in np.flatnonzero(sizes == 0)]
        raise ModelSpecificationError(
            f"{fam.label}: segments {missing} have no customer this model can use "
            f"({_what_enters(modelled)}), so their parameters cannot be estimated with "
            f"pooling={pooling!r}. Use pooling='complete', or merge those segments."
        )
    rows, weights = compress_rows([seg, *modelled.columns])
    seg_idx = rows[0].astype(np.int64)
    centered = (
        centered_mask(sizes, parameterization)
        if pooling == "partial"
        else np.zeros(rfm.n_segments, dtype=bool)
    )

    prior_by_name = {name: getattr(priors, name) for name in fam.unconstrained}
    information = None
    if pooling == "partial" and parameterization == "auto":
        information = _segment_information(fam, rows, weights, seg_idx, prior_by_name, rfm)
        start = _auto_start(prior_by_name, information, priors.segment_sigma)
    elif pooling == "partial":
        start = None
    else:
        start = _mode_start(fam, rows, weights, seg_idx, prior_by_name, rfm, pooling)

    coords = {"segment": list(rfm.segment_names)}
    with pm.Model(coords=coords) as model:
        thetas = unconstrained_params(
            prior_by_name,
            pooling=pooling,
            n_segments=rfm.n_segments,
            segment_sigma=priors.segment_sigma,
            centered=centered,
            information=information,
        )
        params = natural_params(fam.to_natural, thetas, fam.params)
        groups = fam.make_groups(seg_idx, rows[1:], weights, rfm.n_segments)
        pm.Potential("loglike", fam.grouped_loglik(params, groups))

    register_spec(
        model,
        ModelSpec(
            model=fam.name,
            pooling=pooling,
            segment_names=rfm.segment_names,
            time_unit=rfm.time_unit,
            priors=priors,
            params=fam.params,
            unconstrained=fam.unconstrained,
            n_customers=int(len(seg)),
            n_rows=int(len(weights)),
            segment_sizes=tuple(int(s) for s in sizes),
            centered=tuple(bool(c) for c in centered),
            parameterization=parameterization if pooling == "partial" else "",
            extra={
                "priors": asdict(priors),
                # customers the family leaves out (e.g. Gamma-Gamma: repeat buyers whose
                # repeat purchases were all free): counted, not hidden
                **modelled.notes,
                # Where NUTS can start without a MAP search (compiled model): for
                # partial pooling with parameterization="auto", every population mean
                # at the data-weighted centre (nu = 0), each segment at its conditional
                # mean (z = 0); for complete and no pooling, the posterior mode itself,
                # found on the NumPy log-likelihood (the same formulas).
                "start": start,
                "draws": fam.default_draws,
            },
        ),
    )
    register_customers(model, rows, [seg, *modelled.columns], rfm.customer_id[modelled.mask])
    return model


#: Constant data through which a built model carries its customers (see
#: :func:`register_customers`): the distinct rows, each customer's row, the customer ids.
CUSTOMER_VARS = ("bayesclv_rows", "bayesclv_customer_row", "bayesclv_customer_id")


def register_customers(model: pm.Model, rows, columns, customer_id) -> None:
    """Store in ``model`` which distinct row of the likelihood each customer is.

    ``rows`` are the distinct ``(segment, *data)`` rows the Potential sums over (from
    ``compress_rows``), ``columns`` the same columns per modelled customer, ``customer_id``
    their ids. ``fit`` reads them back (:func:`model_customers`) to store the pointwise
    log-likelihood per customer, ArviZ's ``log_likelihood`` group; as constant data they
    survive ``pm.do``, ``clone_model`` and pickling, like the spec. The ids are kept as
    JSON bytes (PyTensor has no string arrays).
    """
    table = np.column_stack([np.asarray(c, dtype=np.float64) for c in rows])
    stacked = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
    uniq, inverse = np.unique(stacked, axis=0, return_inverse=True)
    if uniq.shape != table.shape or not np.array_equal(uniq, table, equal_nan=True):
        raise AssertionError("register_customers: rows are not the distinct customer rows")
    ids = [v.item() if isinstance(v, np.generic) else v for v in np.asarray(customer_id).tolist()]
    payload = json.dumps([v if isinstance(v, int | float | str) else str(v) for v in ids])
    with model:
        pm.Data(CUSTOMER_VARS[0], table)
        pm.Data(CUSTOMER_VARS[1], inverse.ravel().astype(np.int64))
        pm.Data(CUSTOMER_VARS[2], np.frombuffer(payload.encode(), dtype=np.uint8))


def model_customers(model: pm.Model):
    """``(rows, customer_row, customer_id)`` stored by :func:`register_customers`, or
    ``None`` for a model that carries none (e.g. Abe's per-customer model)."""
    found = [model.named_vars.get(n) for n in CUSTOMER_VARS]
    if any(v is None for v in found):
        return None
    rows, customer_row, ids = (np.asarray(v.get_value()) for v in found)
    return rows, customer_row.astype(np.int64), np.asarray(json.loads(bytes(ids).decode()))


def _what_enters(modelled) -> str:
    n = int(modelled.mask.sum())
    return f"{n} of {modelled.mask.size} customers enter its likelihood"


def _auto_start(prior_by_name, information, segment_sigma):
    if information is None:
        return None
    centre = information[0]
    start = {}
    for j, (name, prior) in enumerate(prior_by_name.items()):
        spread = float(np.std(centre[:, j])) if centre.shape[0] > 1 else 0.0
        if isinstance(prior, CVPrior):
            start[cv_name(f"{name}_pop")] = float(CVPrior.cv(np.mean(centre[:, j])))
        else:
            start[f"{name}_nu"] = 0.0
        start[f"{name}_sigma"] = float(np.clip(spread, 0.05, segment_sigma))
        start[f"{name}_z"] = [0.0] * centre.shape[0]
    return start


def _mode_start(fam, rows, weights, seg_idx, prior_by_name, rfm, pooling):
    """The posterior mode of a completely pooled or unpooled model, as a start for NUTS.

    With these poolings each free variable is one of the model's unconstrained
    parameters with its Normal prior (or, under a :class:`CVPrior`, its coefficient of
    variation), so the mode is the one the NumPy log posterior gives
    (:func:`_segment_information`, all customers together or each segment on its own):
    no PyTensor compilation and no MAP search in the compiled model.
    """
    centre = _segment_information(
        fam, rows, weights, seg_idx, prior_by_name, rfm, pooled_only=pooling == "complete"
    )[0]
    start = {}
    for j, (name, prior) in enumerate(prior_by_name.items()):
        values = centre[:, j]
        if isinstance(prior, CVPrior):
            name, values = cv_name(name), CVPrior.cv(values)
        start[name] = float(values[0]) if pooling == "complete" else [float(v) for v in values]
    names = list(prior_by_name)
    for shape, rate, k_name in paired_params(prior_by_name, pooling):
        # the rate is sampled per unit of the shape (_prior_rv): log m - log k
        d = centre[:, names.index(rate)] - centre[:, names.index(shape)]
        del start[rate]
        start[f"{rate}_per_{k_name}"] = float(d[0]) if pooling == "complete" else d.tolist()
    return start


def _segment_information(fam, rows, weights, seg_idx, prior_by_name, rfm, pooled_only=False):
    """Each segment's own posterior mode and sd (NumPy likelihood + its prior); with
    ``pooled_only``, the mode and sd of all customers together (one row)."""
    names = list(prior_by_name)
    priors = [prior_by_name[n] for n in names]
    prior_mu = np.array([p.center for p in priors])
    prior_sd = np.array([p.spread for p in priors])
    data = rows[1:]
    masks = [seg_idx == k for k in range(rfm.n_segments)]

    def log_posterior(theta, k):
        keep = np.ones_like(weights, dtype=bool) if k < 0 else masks[k]
        nat = fam.to_natural(**dict(zip(names, theta, strict=True)))
        with np.errstate(all="ignore"):
            ll = fam.logp(*(nat[n] for n in fam.params), *(d[keep] for d in data))
        log_prior = sum(float(p.log_density(t)) for p, t in zip(priors, theta, strict=True))
        return float(np.sum(weights[keep] * ll)) + log_prior

    pooled = segment_information(
        lambda theta, _k: log_posterior(theta, -1), len(names), 1, prior_sd, prior_mu
    )
    if pooled_only:
        return pooled
    return segment_information(log_posterior, len(names), rfm.n_segments, prior_sd, pooled[0][0])


_COMMON_DOC = """
    Parameters
    ----------
    rfm : RFMData
        Calibration summary (``frequency``, ``recency``, ``T``{spend}, ``segment``).
    priors : {prior_cls}, optional
        Frozen prior spec; the defaults are weak and described in words in its docstring.
    pooling : {{"complete", "partial", "none"}}
        ``"complete"``: one set of parameters for all customers. ``"partial"``: each
        segment's parameters are drawn from a population distribution with its own
        hyperpriors (recommended with segments). ``"none"``: segments fitted independently.
    parameterization : {{"auto", "noncentered", "centered"}}
        Geometry of partial pooling (the model is the same; only the coordinates NUTS
        moves in differ). ``"auto"`` (default): each segment's parameters are sampled in
        coordinates scaled by how much its own data say (its unpooled posterior mode and
        sd, found once by a quick optimisation when the model is built): non-centred for
        segments whose data say little, centred on the data for large ones, and a smooth
        blend in between (see :func:`bayesclv.models._common.unconstrained_params`).
        ``"noncentered"`` suits small and alike segments; ``"centered"`` large segments
        that differ clearly.

    Returns
    -------
    pymc.Model
        With ``{params}`` as Deterministics of dims ``("segment",)``; fit it with
        :func:`bayesclv.fit`.
"""


def build_model(
    model,
    rfm: RFMData,
    priors=None,
    pooling: str = "partial",
    *,
    parameterization: str = "auto",
) -> pm.Model:
    """The model of any family: ``model`` is a name of :data:`bayesclv.families.FAMILIES`
    (``"bgnbd"``, ``"pareto_nbd"``, ``"gamma_gamma"``, ...) or a family object; the other
    arguments are those of :func:`build_bgnbd`, with the family's prior class."""
    return _build(model, rfm, priors, pooling, parameterization)


def build_bgnbd(
    rfm: RFMData,
    priors: BGNBDPriors | None = None,
    pooling: str = "partial",
    *,
    parameterization: str = "auto",
) -> pm.Model:
    """BG/NBD model of purchase frequency and dropout (Fader, Hardie & Lee 2005).

    Assumptions: while alive, a customer buys as a Poisson process with rate
    ``lambda ~ Gamma(r, alpha)``; after each purchase they drop out with probability
    ``p ~ Beta(a, b)``; ``lambda`` and ``p`` are independent across and within customers.
    Likelihood: :func:`bayesclv.likelihoods.bgnbd_logp` (FHL 2005 eq. 6).
    {doc}
    Examples
    --------
    >>> from bayesclv.datasets import load_cdnow_summary      # doctest: +SKIP
    >>> model = build_bgnbd(load_cdnow_summary(), pooling="complete")  # doctest: +SKIP
    >>> idata = bayesclv.fit(model)                                    # doctest: +SKIP

    References
    ----------
    Fader, Hardie & Lee (2005), Marketing Science 24(2), 275-284.
    """
    return _build("bgnbd", rfm, priors, pooling, parameterization)


def build_mbgnbd(
    rfm: RFMData,
    priors: BGNBDPriors | None = None,
    pooling: str = "partial",
    *,
    parameterization: str = "auto",
) -> pm.Model:
    """Modified BG/NBD (Batislam, Denizel & Filiztekin 2007).

    As BG/NBD, but a customer may also drop out right after the first purchase, so
    customers with no repeat purchase can be inactive. Likelihood:
    :func:`bayesclv.likelihoods.mbgnbd_logp`.
    {doc}
    """
    return _build("mbgnbd", rfm, priors, pooling, parameterization)


def build_pareto_nbd(
    rfm: RFMData,
    priors: ParetoNBDPriors | None = None,
    pooling: str = "partial",
    *,
    parameterization: str = "auto",
) -> pm.Model:
    """Pareto/NBD model (Schmittlein, Morrison & Colombo 1987).

    Assumptions: purchases are Poisson with rate ``lambda ~ Gamma(r, alpha)`` while
    alive; lifetimes are exponential with rate ``mu ~ Gamma(s, beta)``, independent of
    ``lambda``; dropout can happen at any time. Likelihood:
    :func:`bayesclv.likelihoods.pareto_nbd_logp` (log space, quadrature; fast with NUTS).
    {doc}
    """
    return _build("pareto_nbd", rfm, priors, pooling, parameterization)


def build_gamma_gamma(
    rfm: RFMData,
    priors: GammaGammaPriors | None = None,
    pooling: str = "partial",
    *,
    parameterization: str = "auto",
) -> pm.Model:
    """Gamma-Gamma model of spend per purchase (Fader, Hardie & Lee 2005; Colombo & Jiang 1999).

    Assumptions: each purchase amount is ``Gamma(p, nu)``; ``nu ~ Gamma(q, v)`` varies
    across customers; spend is independent of purchase frequency. Only customers with at
    least one repeat purchase enter (``monetary_value`` is the mean of repeat purchases);
    ``q > 1`` is enforced so the expected spend ``p v / (q - 1)`` exists. Likelihood:
    :func:`bayesclv.likelihoods.gamma_gamma_logp`.
    {doc}
    """
    return _build("gamma_gamma", rfm, priors, pooling, parameterization)


for _fn, _cls, _params, _spend in (
    (build_bgnbd, "BGNBDPriors", "r, alpha, a, b", ""),
    (build_mbgnbd, "BGNBDPriors", "r, alpha, a, b", ""),
    (build_pareto_nbd, "ParetoNBDPriors", "r, alpha, s, beta", ""),
    (build_gamma_gamma, "GammaGammaPriors", "p, q, v", ", ``monetary_value``"),
):
    _fn.__doc__ = _fn.__doc__.replace(
        "{doc}", _COMMON_DOC.format(prior_cls=_cls, params=_params, spend=_spend)
    )
