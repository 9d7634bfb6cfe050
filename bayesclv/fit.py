"""Fitting: the only module that knows about samplers.

``fit(model, sampler=...)`` returns an ``arviz.InferenceData`` whatever the sampler
(PyMC NUTS, nutpie, numpyro, MAP, Laplace, ADVI), with the paper parameters in ``posterior`` as
``(chain, draw, segment)`` and the model's metadata in ``attrs``; MAP gives one chain
of one draw, and Laplace and ADVI give draws from their approximations, so nothing
downstream special-cases them.
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import arviz as az
import numpy as np
import pymc as pm
import xarray as xr

from bayesclv.errors import ModelSpecificationError, SavedModelError
from bayesclv.families import FAMILIES
from bayesclv.models._common import model_spec
from bayesclv.priors import priors_to_dict
from bayesclv.saved import FORMAT_VERSION, attr_json, load_fit, package_version, save_fit

__all__ = [
    "SAMPLERS",
    "LOG_LIKELIHOOD_AUTO_MAX",
    "fit",
    "fit_many",
    "posterior_params",
    "population_params",
    "save_fit",
    "load_fit",
]

SAMPLERS = ("pymc", "nutpie", "numpyro", "blackjax", "map", "laplace", "advi")


def _interactive() -> bool:
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _require(module: str, message: str):
    """Import an optional dependency, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelSpecificationError(message) from exc


def fit(
    model: pm.Model,
    *,
    sampler: str = "pymc",
    draws: int | None = None,
    tune: int = 1000,
    chains: int = 4,
    target_accept: float = 0.9,
    random_seed: int | None = None,
    progressbar: bool | None = None,
    cores: int | None = None,
    advi_iterations: int = 30_000,
    init: str = "auto",
    mass_matrix: str = "auto",
    nutpie_backend: str = "numba",
    log_likelihood: bool | str = "auto",
) -> az.InferenceData:
    """Fit a model built by a bayesclv builder.

    Parameters
    ----------
    model : pymc.Model
        From ``build_bgnbd``, ``build_pareto_nbd``, ``build_gamma_gamma``, ...
    sampler : {"pymc", "nutpie", "numpyro", "blackjax", "map", "laplace", "advi"}
        ``"pymc"``: PyMC's NUTS. ``"nutpie"``: nutpie's NUTS (Rust; needs the ``nutpie``
        extra), usually faster on these models. ``"numpyro"`` / ``"blackjax"``: the same
        model compiled to JAX, on a GPU when one is visible (needs ``jax`` and the
        sampler package; see benchmarks/bench_gpu.py). ``"map"``: the posterior mode (L-BFGS),
        returned as one chain of one draw; no uncertainty. ``"laplace"``: the Laplace
        approximation, a multivariate Normal on the sampled (unconstrained) scale centred
        at the posterior mode with the inverse of the exact Hessian there as covariance;
        ``chains x draws`` draws, importance-resampled toward the exact posterior
        (Pareto-smoothed; the k-hat is in ``attrs["timings"]``, and a warning says when
        it exceeds 0.7), mapped to the paper parameters. Seconds
        where NUTS takes minutes on millions of customers, and close to NUTS when every
        segment has many customers (the posterior is then nearly Normal); measured against
        NUTS in benchmarks/bench_laplace.py. ``"advi"``: mean-field ADVI,
        ``draws`` draws from the fitted approximation (one chain); an approximation,
        compare with NUTS before trusting its intervals.
    draws, tune, chains : int
        Posterior draws and tuning steps per chain, and number of chains (NUTS).
        ``draws=None`` (default): the number the model's builder recommends, 1000 for
        every model except Abe's HB Pareto/NBD (5000: at 4 x 1000 its ``var_log_mu``
        reaches a bulk ESS of only 80-150; see :func:`~bayesclv.models.build_abe_pareto_nbd`).
    target_accept : float
        NUTS target acceptance rate.
    random_seed : int, optional
        Seed; the same seed and data give the same draws.
    progressbar : bool, optional
        Default: on in interactive use (a terminal or a notebook), off otherwise.
    init : {"auto", "map", "default"}
        Where NUTS chains start. ``"auto"`` (default): at the start the builder derived
        on the NumPy log-likelihood, each chain nudged a little: for complete and no
        pooling the posterior mode itself, for partial pooling with
        ``parameterization="auto"`` the point implied by each segment's own mode. No
        compiled MAP search is needed (on the CDNOW sample's Pareto/NBD that search took
        18-42 s); otherwise as ``"map"``.
        ``"map"``: at the posterior mode found by a
        quick L-BFGS run, each chain nudged by a small random step on the unbounded
        parameters. With many customers the posterior is very narrow and far from the
        prior-centred default start; starting there makes warm-up spend its steps (and
        its step-size adaptation) on the approach, which shows up as divergences and
        tiny step sizes. ``"default"``: PyMC's / nutpie's own initialisation.
    mass_matrix : {"auto", "diag", "low_rank"}
        NUTS metric. ``"low_rank"``: nutpie's diagonal plus low-rank mass matrix, learnt
        from draws and gradients during tuning; it captures the remaining correlations
        between a model's parameters (e.g. Pareto/NBD's ``s`` and ``beta``). Measured on
        the CDNOW sample, Pareto/NBD, nutpie 4 x 1000: 8.0 leapfrog steps per draw with
        the diagonal metric, 4.7 with the low-rank one (wall 62.6 s -> 34.8 s with the
        previous likelihood). ``"auto"``: ``"low_rank"`` with nutpie, the diagonal
        metric with the other samplers (``"low_rank"`` is nutpie-only).

    nutpie_backend : {"numba", "jax"}
        How nutpie compiles the model (``sampler="nutpie"`` only). ``"numba"`` (default):
        the fastest gradient on a CPU, but compiling takes 15-40 s per model, every time.
        ``"jax"`` (needs the ``jax`` extra): compiles in a few seconds, but each gradient
        goes through Python and costs more. Measured on the CDNOW sample, Pareto/NBD,
        4 x 1000 (``benchmarks/bench_fit_speed.py --which pareto_nbd``): numba compile
        38 s + sampling 35 s, JAX 3 s + 49 s; JAX pays for itself when sampling takes less
        than about a minute and a half with numba.

    log_likelihood : {"auto", True, False}
        Store the pointwise log-likelihood per customer as ArviZ's ``log_likelihood``
        group (variable ``"purchases"`` or ``"spend"``, dims ``chain, draw,
        customer_id``), so ``az.loo(idata)`` and ``az.compare({...})`` work on the fit
        itself. The values are those of
        :func:`bayesclv.diagnostics.pointwise_log_likelihood` (one implementation),
        computed once per distinct customer row and expanded to customers. ``"auto"``
        (default): stored unless it would hold more than :data:`LOG_LIKELIHOOD_AUTO_MAX`
        values (1e8 float64 values, 0.8 GB, e.g. 25,000 customers x 4,000 draws; saving a
        fit holds its file image in memory too), in which case it is skipped and
        ``attrs["log_likelihood"]`` says so; compute it later with
        ``pointwise_log_likelihood(idata, rfm)`` if needed. ``True``: always (an error for
        a model that carries no customer rows); ``False``: never.

    Returns
    -------
    arviz.InferenceData
        ``posterior`` holds the paper parameters (dims ``chain, draw, segment``), the
        unconstrained parameters (e.g. ``log_r``; per segment, or one value under
        complete pooling) and, under partial pooling, the population parameters ``*_mu`` and
        ``*_sigma``. The sampling coordinates are in ``unconstrained_posterior`` (dim
        ``segment`` where they have one value per segment), under every pooling: the
        hierarchy's (non-centred ``*_z``, ``*_nu``, ``*_centered``, the population's
        ``*_pop_cv`` and ``*_mu_per_s``) and, under complete and no pooling, e.g.
        Pareto/NBD's ``s_cv`` and ``log_dropout_rate_per_s`` (behind ``log_s`` and
        ``log_dropout_rate``); a fit with none has no such group. Transformed copies
        (``*_log__``, nutpie) are dropped (PyMC's own sampler does not store them
        either). ``log_likelihood`` as above; ``sample_stats`` the sampler statistics
        (NUTS); ``attrs`` the model name, pooling, segment names, time unit, priors
        (JSON), sampler, timings, package version and whether the log-likelihood was
        stored (``"log_likelihood"``).
    """
    spec = model_spec(model)
    if sampler not in SAMPLERS:
        raise ModelSpecificationError(f"sampler={sampler!r}; use one of {SAMPLERS}.")
    if progressbar is None:
        progressbar = _interactive()
    if draws is None:
        draws = int(spec.extra.get("draws", 1000))
    for name, value in (("draws", draws), ("chains", chains)):
        if int(value) < 1:
            raise ModelSpecificationError(f"{name} must be >= 1, got {value}.")
    if int(tune) < 0:
        raise ModelSpecificationError(f"tune must be >= 0, got {tune}.")

    if mass_matrix not in ("auto", "diag", "low_rank"):
        raise ModelSpecificationError(
            f"mass_matrix={mass_matrix!r}; use 'auto', 'diag' or 'low_rank'."
        )
    if nutpie_backend not in ("numba", "jax"):
        raise ModelSpecificationError(f"nutpie_backend={nutpie_backend!r}; use 'numba' or 'jax'.")
    if mass_matrix == "low_rank" and sampler != "nutpie":
        raise ModelSpecificationError("mass_matrix='low_rank' needs sampler='nutpie'.")
    low_rank = sampler == "nutpie" and mass_matrix in ("auto", "low_rank")
    if init not in ("auto", "map", "default"):
        raise ModelSpecificationError(f"init={init!r}; use 'auto', 'map' or 'default'.")
    if log_likelihood not in ("auto", True, False):
        raise ModelSpecificationError(
            f"log_likelihood={log_likelihood!r}; use 'auto', True or False."
        )
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    initvals = None
    nuts = sampler in ("pymc", "nutpie", "numpyro", "blackjax")
    built_start = spec.extra.get("start")
    if nuts and init == "auto" and built_start:
        initvals = _jittered_starts(model, built_start, chains, random_seed)
    elif nuts and init in ("auto", "map"):
        initvals = _map_starts(model, chains, random_seed)
        timings["map_init_s"] = time.perf_counter() - t0
    # Variables to keep, where the builder names them (Abe's model drops its per-customer
    # sampling coordinates, which duplicate ``lambda`` and ``mu``): passed to the samplers
    # that can skip storing the others, and applied to every result below.
    keep = spec.extra.get("var_names")
    if sampler == "pymc":
        with model:
            idata = pm.sample(
                var_names=keep,
                initvals=initvals,
                init="adapt_diag" if initvals is not None else "auto",
                draws=draws,
                tune=tune,
                chains=chains,
                cores=cores if cores is not None else min(chains, 2),
                target_accept=target_accept,
                random_seed=random_seed,
                progressbar=progressbar,
                compute_convergence_checks=False,
                idata_kwargs={"log_likelihood": False},
            )
    elif sampler == "nutpie":
        nutpie = _require(
            "nutpie", "sampler='nutpie' needs the nutpie package: pip install 'bayesclv[nutpie]'."
        )
        t1 = time.perf_counter()
        backend = {}
        if nutpie_backend == "jax":
            _require("jax", "nutpie_backend='jax' needs JAX: pip install 'bayesclv[jax]'.")
            backend = {"backend": "jax", "gradient_backend": "jax"}
        if keep is not None:
            backend["var_names"] = keep
        init = {"initial_points": initvals[0], "jitter_rvs": set()} if initvals else {}
        compiled = None
        if nutpie_backend == "numba":
            # compiled once per machine (bayesclv.compile_cache); nutpie's own compiler
            # wherever the cache is off or cannot take the model
            from bayesclv.compile_cache import compile_nutpie_numba

            try:
                compiled, info = compile_nutpie_numba(model, var_names=keep, **init)
            except Exception as exc:  # noqa: BLE001  (nutpie's compiler says what is wrong)
                info = {"compile_cache": f"unavailable: {type(exc).__name__}: {exc}"[:300]}
            timings.update(info)
        if compiled is None:
            compiled = nutpie.compile_pymc_model(model, **init, **backend)
        timings["compile_s"] = time.perf_counter() - t1
        idata = nutpie.sample(
            compiled,
            draws=draws,
            tune=tune,
            chains=chains,
            cores=cores if cores is not None else min(chains, 2),
            target_accept=target_accept,
            seed=(
                random_seed
                if random_seed is not None
                else int(np.random.SeedSequence().entropy % 2**32)
            ),
            progress_bar=progressbar,
            low_rank_modified_mass_matrix=low_rank,
            save_warmup=False,  # not returned: keeping it only costs memory
        )
        # nutpie stores Deterministics alongside; drop its unconstrained copies of the
        # transformed variables if any, keep the same variables as PyMC's sampler.
        idata = az.InferenceData(posterior=idata.posterior, sample_stats=idata.sample_stats)
    elif sampler in ("numpyro", "blackjax"):
        # The same PyMC model, compiled to JAX by PyTensor and sampled by numpyro's or
        # blackjax's NUTS: runs on a GPU when JAX sees one (chains vectorised on it).
        jax = _require(
            "jax", f"sampler={sampler!r} needs JAX and {sampler}: pip install jax {sampler}."
        )
        chain_method = "vectorized" if jax.default_backend() == "gpu" else "parallel"
        with model:
            idata = pm.sample(
                draws=draws,
                tune=tune,
                chains=chains,
                target_accept=target_accept,
                random_seed=random_seed,
                progressbar=progressbar,
                initvals=initvals,
                nuts_sampler=sampler,
                nuts_sampler_kwargs={"chain_method": chain_method},
                compute_convergence_checks=False,
                idata_kwargs={"log_likelihood": False},
            )
        idata = az.InferenceData(posterior=idata.posterior, sample_stats=idata.sample_stats)
        timings["jax_backend"] = jax.default_backend()
    elif sampler == "map":
        with model:
            point = pm.find_MAP(progressbar=progressbar, seed=random_seed)
        idata = az.InferenceData(posterior=_point_to_posterior(model, point))
    elif sampler == "laplace":
        posterior, info = _laplace(
            model, built_start, chains=int(chains), draws=int(draws), random_seed=random_seed
        )
        idata = az.InferenceData(posterior=posterior)
        timings.update(info)
    else:  # advi
        with model:
            approx = pm.fit(
                n=advi_iterations,
                method="advi",
                random_seed=random_seed,
                progressbar=progressbar,
                callbacks=[pm.callbacks.CheckParametersConvergence(tolerance=1e-3)],
            )
            idata = approx.sample(draws, random_seed=random_seed)
        idata = az.InferenceData(posterior=idata.posterior)
    if keep is not None:  # the same variables whatever the sampler
        idata.posterior = idata.posterior[[v for v in keep if v in idata.posterior]]
    timings["total_s"] = time.perf_counter() - t0
    idata = _arviz_groups(idata, model, spec)
    t1 = time.perf_counter()
    ll_note = _add_log_likelihood(idata, model, spec, log_likelihood)
    if ll_note == "stored":
        timings["log_likelihood_s"] = time.perf_counter() - t1

    idata.attrs.update(
        {
            "bayesclv_version": package_version(),
            "bayesclv_format": FORMAT_VERSION,
            "model": spec.model,
            "pooling": spec.pooling,
            "segment_names": json.dumps(list(spec.segment_names)),
            "segment_sizes": json.dumps(list(spec.segment_sizes)),
            "time_unit": spec.time_unit,
            "priors": json.dumps(priors_to_dict(spec.priors)),
            "sampler": sampler,
            "draws": int(draws),
            "tune": int(tune) if sampler not in ("map", "laplace", "advi") else 0,
            "chains": int(chains) if sampler not in ("map", "advi") else 1,
            "random_seed": -1 if random_seed is None else int(random_seed),
            "mass_matrix": "low_rank" if low_rank else "diag",
            "nutpie_backend": nutpie_backend if sampler == "nutpie" else "",
            "n_customers": spec.n_customers,
            "n_rows": spec.n_rows,
            "timings": json.dumps(timings),
            "log_likelihood": ll_note,
        }
    )
    return idata


#: Most values ``fit(log_likelihood="auto")`` stores in the ``log_likelihood`` group
#: (chains x draws x customers): 1e8 float64 values are 0.8 GB.
LOG_LIKELIHOOD_AUTO_MAX = 100_000_000


def _named_params(spec) -> set[str]:
    """What stays in ``posterior``: paper and unconstrained parameters, and the
    population parameters of each unconstrained one."""
    names = set(spec.params) | set(spec.unconstrained)
    names |= {f"{u}_{k}" for u in spec.unconstrained for k in ("mu", "sigma")}
    return names


def _arviz_groups(idata: az.InferenceData, model: pm.Model, spec) -> az.InferenceData:
    """Internal coordinates out of ``posterior`` (into ``unconstrained_posterior``) and the
    model's plumbing (``bayesclv_*`` constant data) out of ``constant_data``.

    Internal, under every pooling: free variables that are not named parameters
    (:func:`_named_params`): under partial pooling ``*_z``, ``*_nu``, ``*_centered``, the
    population's ``*_pop_cv`` and ``*_mu_per_s``; under complete and no pooling the
    coefficient of variation behind a :class:`~bayesclv.priors.CVPrior` (``s_cv``) and a
    rate sampled per unit of its shape (``log_dropout_rate_per_s``). Transformed copies
    (``*__``, nutpie) are dropped: they duplicate a variable kept in one group or the
    other, and PyMC's sampler does not store them. A model no family describes (Abe's,
    Pareto/GGG) keeps its posterior as its builder chose.
    """
    groups = {g: idata[g] for g in idata.groups()}
    if "constant_data" in groups:
        cd = groups["constant_data"]
        cd = cd.drop_vars([v for v in cd.data_vars if str(v).startswith("bayesclv_")])
        if cd.data_vars:
            groups["constant_data"] = cd.drop_vars(
                [c for c in cd.coords if not any(c in cd[v].dims for v in cd.data_vars)]
            )
        else:
            del groups["constant_data"]
    if spec.model in FAMILIES:
        post = groups["posterior"]
        named = _named_params(spec)
        free = {rv.name for rv in model.free_RVs}
        drop = [v for v in post.data_vars if str(v).endswith("__")]
        # Every pooling: a free variable that is not a named parameter is a sampling
        # coordinate (partial: the hierarchy's ``*_z``, ``*_nu``, ``*_pop_cv``; complete
        # and none: e.g. Pareto/NBD's ``s_cv`` and ``log_dropout_rate_per_s``, behind the
        # Deterministics ``log_s`` and ``log_dropout_rate``), and moves. The builder's
        # start is keyed by these names, but it is read from the model, not the posterior.
        internal = [v for v in post.data_vars if v in free and v not in named]
        n_seg = len(spec.segment_names)
        moved = {}
        for v in internal:
            da = post[v]
            rename = {
                d: "segment"
                for d in da.dims
                if str(d).startswith(f"{v}_dim_") and da.sizes[d] == n_seg and da.ndim == 3
            }
            da = da.rename(rename)
            if rename:
                da = da.assign_coords(segment=list(spec.segment_names))
            moved[v] = da
        post = post.drop_vars([*drop, *internal])
        used = {d for v in post.data_vars.values() for d in v.dims}
        post = post.drop_vars([c for c in post.coords if c not in used])
        groups["posterior"] = post
        if moved:
            groups["unconstrained_posterior"] = xr.Dataset(moved)
    attrs = dict(idata.attrs)
    out = az.InferenceData(**groups)
    out.attrs.update(attrs)
    return out


def _add_log_likelihood(idata: az.InferenceData, model: pm.Model, spec, option) -> str:
    """Add the ``log_likelihood`` group (see ``fit``); return what was done, in words."""
    from bayesclv.diagnostics.comparison import log_likelihood_dataset
    from bayesclv.models.builders import model_customers

    if option is False:
        return "not stored: fit(log_likelihood=False)"
    stored = model_customers(model) if spec.model in FAMILIES else None
    if stored is None:
        if option is True:
            raise ModelSpecificationError(
                "fit(log_likelihood=True): this model carries no customer rows (it was not "
                "made by bayesclv.models.build_model); use log_likelihood='auto' or False."
            )
        return "not stored: the model carries no customer rows"
    rows, customer_row, ids = stored
    post = idata.posterior
    size = int(post.sizes["chain"] * post.sizes["draw"] * len(customer_row))
    if option == "auto" and size > LOG_LIKELIHOOD_AUTO_MAX:
        return (
            f"not stored: {size:,} values (chains x draws x customers) exceed "
            f"LOG_LIKELIHOOD_AUTO_MAX = {LOG_LIKELIHOOD_AUTO_MAX:,}; use "
            f"fit(log_likelihood=True) or bayesclv.diagnostics.pointwise_log_likelihood"
        )
    try:
        params = post[list(spec.params)]
        params.attrs = {"model": spec.model}
        ds = log_likelihood_dataset(params, FAMILIES[spec.model].kind, rows, customer_row, ids)
    except (ModelSpecificationError, SavedModelError, KeyError, ValueError) as exc:
        if option is True:
            raise
        return f"not stored: {type(exc).__name__}: {exc}"[:300]
    idata.add_groups(log_likelihood=ds)
    return "stored"


def fit_many(
    models: list[pm.Model],
    *,
    concurrent: bool = True,
    **fit_kwargs,
) -> list[az.InferenceData]:
    """Fit several independent models (e.g. a purchase model and Gamma-Gamma) at once.

    Each model gets ``fit(model, **fit_kwargs)``; the results come back in the order of
    ``models`` and are the same draws as fitting them one after the other with the same
    ``random_seed``. With ``concurrent=True`` (default) all models but the last are fitted
    in worker processes while the last one is fitted here. What overlaps is mostly
    compilation, which is single-threaded (nutpie's numba compilation of a model takes
    tens of seconds and leaves the other cores idle). Measured on the CDNOW master,
    partial pooling, BG/NBD + Gamma-Gamma, nutpie 4 x 1000, 2 cores, end to end:
    54.1 s at once against 69.6 s one after the other
    (``benchmarks/bench_master_partial.py``, which times both).

    Workers are started with the ``spawn`` method (no ``fork`` of a process that already
    runs sampler threads), so each pays an import of PyMC (a few seconds). A worker's
    error is raised here. Progress bars are shown for the model fitted here only.
    """
    models = list(models)
    if not models:
        return []
    if not concurrent or len(models) == 1:
        return [fit(model, **fit_kwargs) for model in models]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import cloudpickle

    child_kwargs = {**fit_kwargs, "progressbar": False}
    payloads = [
        cloudpickle.dumps((model, child_kwargs)) for model in models[:-1]
    ]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(payloads), mp_context=ctx) as pool:
        futures = [pool.submit(_fit_payload, payload) for payload in payloads]
        last = fit(models[-1], **fit_kwargs)
        results = [future.result() for future in futures]
    return [*results, last]


def _fit_payload(payload: bytes) -> az.InferenceData:
    """Worker side of :func:`fit_many`: unpickle a model (it carries its spec), fit it."""
    import cloudpickle

    model, kwargs = cloudpickle.loads(payload)
    return fit(model, **kwargs)


def _jittered_starts(model, start: dict, chains: int, random_seed) -> list[dict]:
    """One start per chain: ``start`` with small random steps on the unbounded scale."""
    rng = np.random.default_rng(random_seed)
    names = {rv.name for rv in model.free_RVs}
    out = []
    for _ in range(chains):
        point = {}
        for name, value in start.items():
            if name not in names:
                continue
            value = np.asarray(value, dtype=np.float64)
            if name.endswith(("_sigma", "_cv")):  # positive: jitter on the log scale
                point[name] = value * np.exp(rng.normal(0.0, 0.1, value.shape))
            else:
                point[name] = value + rng.normal(0.0, 0.1, value.shape)
        out.append(point)
    return out


def _map_starts(model: pm.Model, chains: int, random_seed: int | None) -> list[dict]:
    """Chain starting points: the MAP, nudged per chain on unbounded parameters.

    Scale parameters of the hierarchy (``*_sigma``) are kept away from 0: the mode of
    a hierarchical model can sit at (or run toward) sigma = 0, a poor place to start.
    """
    with model:
        point = pm.find_MAP(progressbar=False, seed=random_seed, maxeval=2000)
    rng = np.random.default_rng(random_seed)
    starts = []
    for _ in range(chains):
        start = {}
        for rv in model.free_RVs:
            value = np.asarray(point[rv.name], dtype=np.float64)
            if model.rvs_to_transforms.get(rv) is None:
                value = value + rng.normal(0.0, 0.02, value.shape)
            elif rv.name.endswith("_sigma"):
                value = np.maximum(value, 0.05)
            start[rv.name] = value
        starts.append(start)
    return starts


def _value_point(model: pm.Model, start: dict | None) -> dict:
    """The model's initial point on the sampled scale, overridden by ``start`` (values of
    the free variables on their own scale, e.g. a builder's data-derived start)."""
    point = model.initial_point()
    for rv in model.free_RVs:
        if not start or rv.name not in start:
            continue
        value = np.asarray(start[rv.name], dtype=np.float64)
        transform = model.rvs_to_transforms.get(rv)
        if transform is not None:
            value = np.asarray(transform.forward(value, *rv.owner.inputs).eval())
        point[model.rvs_to_values[rv].name] = value
    return point


def _laplace(
    model: pm.Model, start: dict | None, *, chains: int, draws: int, random_seed
) -> tuple[xr.Dataset, dict]:
    """Laplace approximation: Normal at the mode of the log density on the sampled scale.

    The mode is found by L-BFGS with the exact gradient; the Hessian is the central
    difference of the exact gradient (one pair of gradients per dimension, with a step
    relative to each coordinate's scale), symmetrised. The Normal draws are then
    importance-resampled toward the posterior (PSIS; skipped with a warning when the
    Pareto k-hat exceeds 0.7). Draws are mapped to the model's
    variables (constrained values and Deterministics) by the model's own graph, so the
    result has the same variables and dims as a NUTS posterior.
    """
    import scipy.optimize
    from pymc.blocking import DictToArrayBijection, RaveledVars

    t0 = time.perf_counter()
    point = _value_point(model, start)
    x0 = DictToArrayBijection.map(point)
    logp_dlogp = model.logp_dlogp_function(ravel_inputs=True)
    logp_dlogp.set_extra_values({})

    def negative(x):
        value, grad = logp_dlogp(x)
        if not np.isfinite(value):
            return np.inf, np.zeros_like(x)
        return -float(value), -np.asarray(grad, dtype=np.float64)

    res = scipy.optimize.minimize(
        negative,
        x0.data,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 10_000, "maxfun": 20_000, "gtol": 1e-8, "ftol": 1e-14},
    )
    mode = res.x
    grad_norm = float(np.max(np.abs(negative(mode)[1])))
    t1 = time.perf_counter()
    n = mode.size
    hess = np.empty((n, n))
    steps = 1e-5 * np.maximum(1.0, np.abs(mode))
    for i in range(n):
        up, down = mode.copy(), mode.copy()
        up[i] += steps[i]
        down[i] -= steps[i]
        hess[i] = (negative(up)[1] - negative(down)[1]) / (2 * steps[i])
    hess = 0.5 * (hess + hess.T)
    eig = np.linalg.eigvalsh(hess)
    if not (np.all(np.isfinite(eig)) and eig.min() > 0):
        raise ModelSpecificationError(
            "sampler='laplace': the log density's Hessian at the mode is not negative "
            f"definite (smallest curvature {eig.min():.3g}); the mode is on a ridge or at "
            "a boundary (e.g. a between-segment sigma running to 0), where a Normal "
            "approximation is meaningless. Use NUTS (sampler='nutpie' or 'pymc')."
        )
    chol = np.linalg.cholesky(hess)
    rng = np.random.default_rng(random_seed)
    m = chains * draws
    eps = rng.standard_normal((n, m))
    log_q = -0.5 * np.sum(eps**2, axis=0)  # up to a constant, which PSIS ignores
    flat = mode[:, None] + np.linalg.solve(chol.T, eps)  # covariance = hess^-1

    # Importance resampling toward the exact posterior: weights p(x) / q(x) for each
    # Normal draw, Pareto-smoothed (PSIS, Vehtari et al. 2024), then systematic
    # resampling. It removes most of the Normal's error in the means when the posterior
    # is mildly skewed; its k-hat says when the Normal is too far off to be repaired.
    t2 = time.perf_counter()
    log_p = np.array([float(logp_dlogp(flat[:, k])[0]) for k in range(m)])
    log_w = np.where(np.isfinite(log_p), log_p - log_q, -np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smoothed, khat = az.psislw(log_w - np.max(log_w))
    khat = float(khat)
    weights = np.exp(smoothed - np.max(smoothed))
    weights /= weights.sum()
    is_ess = float(1.0 / np.sum(weights**2))
    resampled = bool(khat <= 0.7 and np.isfinite(khat))
    if resampled:
        idx = np.searchsorted(np.cumsum(weights), (rng.random() + np.arange(m)) / m)
        flat = flat[:, rng.permutation(np.minimum(idx, m - 1))]
    else:
        warnings.warn(
            f"sampler='laplace': Pareto k-hat {khat:.2f} > 0.7, so the Normal approximation "
            "is far from the posterior here and its draws are returned unweighted; do not "
            "trust its intervals. Use NUTS (sampler='nutpie' or 'pymc').",
            UserWarning,
            stacklevel=3,
        )
    t3 = time.perf_counter()

    # The model's variables as functions of the sampled values: free variables on their
    # own scale and Deterministics (the sampled "*__" copies are left out, as in NUTS).
    outs = [v for v in model.unobserved_value_vars if not v.name.endswith("__")]
    fn = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore", point_fn=False)
    info = x0.point_map_info
    values: list[list] = [[] for _ in outs]
    for k in range(flat.shape[1]):
        point_k = DictToArrayBijection.rmap(RaveledVars(flat[:, k], info))
        outputs = fn(*[point_k[v.name] for v in model.value_vars])
        for store, value in zip(values, outputs, strict=True):
            store.append(value)
    coords = {k: list(v) for k, v in model.coords.items() if v is not None}
    data_vars = {}
    for var, store in zip(outs, values, strict=True):
        arr = np.asarray(store, dtype=np.float64)
        arr = arr.reshape((chains, draws, *arr.shape[1:]))
        dims = list(model.named_vars_to_dims.get(var.name, ()))
        if len(dims) != arr.ndim - 2:
            dims = [f"{var.name}_dim_{i}" for i in range(arr.ndim - 2)]
        data_vars[var.name] = (["chain", "draw", *dims], arr)
    posterior = xr.Dataset(
        data_vars, coords={"chain": np.arange(chains), "draw": np.arange(draws), **coords}
    )
    return posterior, {
        "laplace_mode_s": t1 - t0,
        "laplace_hessian_s": t2 - t1,
        "laplace_importance_s": t3 - t2,
        "laplace_psis_khat": khat,
        "laplace_importance_ess": is_ess,
        "laplace_resampled": resampled,
        "laplace_mode_max_abs_grad": grad_norm,
        "laplace_min_curvature": float(eig.min()),
        "laplace_optimizer_iterations": int(res.nit),
    }


def _point_to_posterior(model: pm.Model, point: dict) -> xr.Dataset:
    """A MAP point as a posterior of one chain and one draw, with the model's dims."""
    data_vars = {}
    for var in model.free_RVs + model.deterministics:
        name = var.name
        if name not in point:
            continue
        value = np.asarray(point[name])
        dims = list(model.named_vars_to_dims.get(name, ()))
        if len(dims) != value.ndim:
            dims = [f"{name}_dim_{i}" for i in range(value.ndim)]
        data_vars[name] = (["chain", "draw", *dims], value[None, None, ...])
    coords = {k: list(v) for k, v in model.coords.items() if v is not None}
    ds = xr.Dataset(data_vars, coords={"chain": [0], "draw": [0], **coords})
    return ds


def posterior_params(idata: az.InferenceData) -> xr.Dataset:
    """The paper parameters per draw and segment: dims ``(chain, draw, segment)``.

    ``attrs["model"]`` names the model; this is what ``bayesclv.predict`` and
    ``bayesclv.clv`` take.
    """
    kind = idata.attrs.get("model")
    if kind not in FAMILIES:
        raise SavedModelError(
            "This InferenceData does not come from bayesclv.fit (no 'model' attribute)."
        )
    ds = idata.posterior[list(FAMILIES[kind].params)]
    # a covariate family's coefficients (gamma_*) are parameters of the draws too
    fam = FAMILIES[kind].from_draws(idata.posterior)
    extra = [n for n in fam.params if n not in ds.data_vars and n in idata.posterior]
    if extra:
        ds = ds.assign({n: idata.posterior[n] for n in extra})
    ds = ds.assign_coords(segment=attr_json(idata, "segment_names"))
    ds.attrs = {"model": kind, "time_unit": idata.attrs.get("time_unit", "")}
    return ds


def population_params(
    idata: az.InferenceData, segment: str = "new", *, random_seed: int | None = None
) -> xr.Dataset:
    """Parameters of a segment unseen at fit time: one draw from the population per draw.

    Under partial pooling each unconstrained parameter of the new segment is drawn as
    ``mu + sigma * z`` with ``z ~ Normal(0, 1)``, per posterior draw, so the result
    carries both the uncertainty about the population and the spread between segments.
    Under complete pooling every segment shares the same parameters, which are returned.
    Under no pooling there is no population: an error says so.
    """
    kind = idata.attrs.get("model")
    pooling = idata.attrs.get("pooling")
    post = idata.posterior
    if kind not in FAMILIES:
        raise SavedModelError("This InferenceData does not come from bayesclv.fit.")
    fam = FAMILIES[kind].from_draws(post)
    if pooling == "none":
        raise ModelSpecificationError(
            "pooling='none' has no population distribution, so a new segment has no "
            "parameters; refit with pooling='partial'."
        )
    rng = np.random.default_rng(random_seed)
    thetas = {}
    for name in fam.unconstrained:
        if pooling == "complete":
            thetas[name] = post[name].values
        else:
            mu, sigma = post[f"{name}_mu"].values, post[f"{name}_sigma"].values
            thetas[name] = mu + sigma * rng.standard_normal(mu.shape)
    nat = fam.to_natural(**thetas)
    ds = xr.Dataset(
        {k: (("chain", "draw", "segment"), np.asarray(v)[..., None]) for k, v in nat.items()},
        coords={"chain": post.chain, "draw": post.draw, "segment": [segment]},
    )
    ds.attrs = {"model": kind, "time_unit": idata.attrs.get("time_unit", "")}
    return ds
