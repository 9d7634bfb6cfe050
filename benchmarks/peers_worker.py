"""One benchmark job in a fresh process: ours (bayesclv venv) or a peer (peers venv).

Run by ``benchmarks/_common.py:run_job`` as ``PYTHON peers_worker.py JOB_JSON``; prints one
line ``RESULT {json}`` with wall seconds (total, and compile when the tool reports it),
peak resident memory from ``resource.getrusage`` (this process and its largest waited-for
child, e.g. PyMC's chain processes), the sampler's quality figures (R-hat max, bulk ESS
min, divergences over the paper parameters) and the estimates (posterior medians or MLE).

This file imports only numpy/pandas/arviz at the top so it runs in either venv: bayesclv
is imported only for ``lib == "ours"``; pymc-marketing and lifetimes only for peers.

Job keys: ``lib`` ("ours" | "pymc_marketing" | "lifetimes"), ``model`` ("bgnbd" |
"pareto_nbd" | "gamma_gamma"), ``method`` ("pymc" | "nutpie" | "mle" | "map"; for
pymc-marketing "mcmc" = its default NUTS sampler), ``data`` (path of a CSV with
customer_id, frequency, recency, T, monetary_value[, segment]), ``pooling``, ``draws``,
``tune``, ``chains``, ``target_accept``, ``seed``, ``mle_repeats``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time

import numpy as np
import pandas as pd

PAPER = {
    "bgnbd": ("r", "alpha", "a", "b"),
    "pareto_nbd": ("r", "alpha", "s", "beta"),
    "gamma_gamma": ("p", "q", "v"),
}


def _rss_mb() -> dict:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"rss_self_mb": self_kb / 1024, "rss_child_max_mb": child_kb / 1024}


def _nuts_quality(idata, names: tuple[str, ...]) -> dict:
    import arviz as az

    post = idata.posterior[[n for n in names if n in idata.posterior]]
    rhat = az.rhat(post)
    ess = az.ess(post, method="bulk")
    out = {
        "rhat_max": float(max(float(rhat[n].max()) for n in rhat.data_vars)),
        "ess_bulk_min": float(min(float(ess[n].min()) for n in ess.data_vars)),
        "medians": {n: _median(post[n]) for n in post.data_vars},
    }
    stats = idata.sample_stats if "sample_stats" in idata.groups() else {}
    out["divergences"] = int(stats["diverging"].sum()) if "diverging" in stats else None
    out["grad_evals"] = int(stats["n_steps"].sum()) if "n_steps" in stats else None
    out["n_draws_total"] = int(post.sizes["chain"] * post.sizes["draw"])
    return out


def _median(da) -> float | list[float]:
    med = da.median(("chain", "draw")).values
    return float(med) if med.ndim == 0 else [float(v) for v in med.ravel()]


def _repeat_buyers(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["frequency"] > 0) & (df["monetary_value"] > 0)].reset_index(drop=True)


def run_ours(job: dict, df: pd.DataFrame) -> dict:
    from bayesclv import classic
    from bayesclv.data import RFMData
    from bayesclv.fit import fit
    from bayesclv.models import build_bgnbd, build_gamma_gamma, build_pareto_nbd

    model, method = job["model"], job["method"]
    seg = "segment" if "segment" in df.columns else None
    t0 = time.perf_counter()
    rfm = RFMData.from_frame(df, customer_id="customer_id", segment=seg)
    if method == "mle":
        fn = {"bgnbd": classic.fit_bgnbd, "pareto_nbd": classic.fit_pareto_nbd,
              "gamma_gamma": classic.fit_gamma_gamma}[model]  # fmt: skip
        times = []
        for _ in range(int(job.get("mle_repeats", 5))):
            t = time.perf_counter()
            res = fn(rfm)
            times.append(time.perf_counter() - t)
        return {
            "fit_s": statistics.median(times),
            "fit_s_all": times,
            "estimates": dict(res.params),
            "log_likelihood": res.log_likelihood,
            "converged": res.converged,
        }
    build = {"bgnbd": build_bgnbd, "pareto_nbd": build_pareto_nbd,
             "gamma_gamma": build_gamma_gamma}[model]  # fmt: skip
    pm_model = build(rfm, pooling=job.get("pooling", "complete"))
    build_s = time.perf_counter() - t0
    # "nutpie-jax": nutpie with its JAX backend (fit's nutpie_backend="jax")
    sampler, _, backend = method.partition("-")
    idata = fit(
        pm_model,
        sampler=sampler,
        **({"nutpie_backend": backend} if backend else {}),
        draws=job["draws"],
        tune=job["tune"],
        chains=job["chains"],
        target_accept=job["target_accept"],
        random_seed=job["seed"],
        progressbar=False,
        cores=job.get("cores"),
    )
    timings = json.loads(idata.attrs["timings"])
    out = {
        "build_s": build_s,
        "fit_s": timings["total_s"],
        "compile_s": timings.get("compile_s"),
        "compile_cache": timings.get("compile_cache"),
        "n_rows_likelihood": int(idata.attrs["n_rows"]),
        "n_customers": int(idata.attrs["n_customers"]),
        # bayesclv.fit's default: min(chains, 2) parallel chains.
        "cores": job.get("cores") or min(job["chains"], 2),
    }
    out.update(_nuts_quality(idata, PAPER[model]))
    return out


def run_pymc_marketing(job: dict, df: pd.DataFrame) -> dict:
    from pymc_marketing import clv

    model = job["model"]
    t0 = time.perf_counter()
    if model == "gamma_gamma":
        data = _repeat_buyers(df)[["customer_id", "frequency", "monetary_value"]]
        m = clv.GammaGammaModel(data=data)
    else:
        cls = {"bgnbd": clv.BetaGeoModel, "pareto_nbd": clv.ParetoNBDModel}[model]
        m = cls(data=df[["customer_id", "frequency", "recency", "T"]])
    m.build_model()
    build_s = time.perf_counter() - t0
    from pymc.sampling.parallel import _cpu_count

    # None = pymc-marketing's default, which leaves ``cores`` to pm.sample:
    # min(4, cpu_count() // 2), i.e. 1 on a 2-CPU machine (chains run one after another).
    cores = job.get("cores")
    extra = {} if cores is None else {"cores": cores}
    t1 = time.perf_counter()
    idata = m.fit(
        **extra,
        method="mcmc",
        draws=job["draws"],
        tune=job["tune"],
        chains=job["chains"],
        target_accept=job["target_accept"],
        random_seed=job["seed"],
        progressbar=False,
    )
    fit_s = time.perf_counter() - t1
    out = {"build_s": build_s, "fit_s": fit_s, "compile_s": None,
           "n_customers": int(len(m.data)),
           "cores": cores if cores is not None else min(4, _cpu_count())}  # fmt: skip
    out.update(_nuts_quality(idata, PAPER[model]))
    return out


def run_lifetimes(job: dict, df: pd.DataFrame) -> dict:
    import lifetimes

    model = job["model"]
    if model == "gamma_gamma":
        d = _repeat_buyers(df)
        fitter_cls, args = lifetimes.GammaGammaFitter, (d["frequency"], d["monetary_value"])
    else:
        fitter_cls = {"bgnbd": lifetimes.BetaGeoFitter, "pareto_nbd": lifetimes.ParetoNBDFitter}[
            model
        ]
        args = (df["frequency"], df["recency"], df["T"])
    times = []
    for _ in range(int(job.get("mle_repeats", 5))):
        f = fitter_cls(penalizer_coef=0.0)
        t = time.perf_counter()
        f.fit(*args)
        times.append(time.perf_counter() - t)
    params = {k: float(v) for k, v in f.params_.items()}
    if model == "gamma_gamma":
        params = {"p": params["p"], "q": params["q"], "v": params["v"]}
    return {
        "fit_s": statistics.median(times),
        "fit_s_all": times,
        "estimates": params,
        # lifetimes' own objective is scaled; bench_fit_speed computes the log-likelihood
        # of these estimates with bayesclv's likelihoods, the same as for ours.
        "log_likelihood": None,
    }


def run_pymc_marketing_clv(job: dict, df: pd.DataFrame) -> dict:
    """pymc-marketing's expected CLV on given posterior draws (no fitting).

    Job keys: ``posterior`` (``.npz`` with ``r, alpha, a, b, p, q, v``, each
    ``(chain, draw)``), ``future_t`` (months), ``discount_rate`` (per month),
    ``time_unit`` ("W": pymc-marketing multiplies months by 4.345 weeks) and optionally
    ``memory_limit_mb`` (address-space limit: an allocation beyond it raises MemoryError,
    reported as ``out_of_memory`` instead of endangering the machine). A ``BetaGeoModel``
    and a ``GammaGammaModel`` are built on ``df`` and their ``idata`` replaced by the
    draws; then ``GammaGammaModel.expected_customer_lifetime_value`` (which averages the
    spend over draws and calls ``clv.utils.customer_lifetime_value``) is timed, and
    separately the per-customer mean, 3 %/97 % quantiles and per-draw portfolio total.
    """
    import arviz as az
    import xarray as xr
    from pymc_marketing import clv

    if job.get("memory_limit_mb"):
        lim = int(job["memory_limit_mb"]) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    draws = np.load(job["posterior"])
    post = lambda names: az.InferenceData(  # noqa: E731
        posterior=xr.Dataset({k: (("chain", "draw"), draws[k]) for k in names})
    )
    out: dict = {"n_customers": int(len(df)), "n_draws": int(draws["r"].size)}
    t0 = time.perf_counter()
    bg = clv.BetaGeoModel(data=df[["customer_id", "frequency", "recency", "T"]])
    bg.build_model()
    gg = clv.GammaGammaModel(
        data=_repeat_buyers(df)[["customer_id", "frequency", "monetary_value"]]
    )
    gg.build_model()
    bg.idata, gg.idata = post(("r", "alpha", "a", "b")), post(("p", "q", "v"))
    out["build_s"] = time.perf_counter() - t0
    data = df[["customer_id", "frequency", "recency", "T", "monetary_value"]].copy()
    try:
        t1 = time.perf_counter()
        value = gg.expected_customer_lifetime_value(
            transaction_model=bg,
            data=data,
            future_t=int(job["future_t"]),
            discount_rate=float(job["discount_rate"]),
            time_unit=job.get("time_unit", "W"),
        )
        out["clv_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        mean = value.mean(("chain", "draw"))
        value.quantile([0.03, 0.97], dim=("chain", "draw"))
        total = value.sum("customer_id")
        out["summary_s"] = time.perf_counter() - t2
        out["portfolio_mean"] = float(total.mean())
        out["first_means"] = [float(v) for v in mean.values[:5]]
        out["out_of_memory"] = False
    except MemoryError as err:
        out["out_of_memory"] = True
        out["error"] = f"MemoryError at the {job.get('memory_limit_mb')} MB limit: {err}"
        out["failed_after_s"] = time.perf_counter() - t0 - out["build_s"]
    return out


def _thin(da, max_draws: int) -> list[float]:
    """Draws of a scalar parameter, flattened over (chain, draw) and evenly thinned."""
    vals = np.asarray(da.values, dtype=float).ravel()
    step = max(1, int(np.ceil(vals.size / max_draws)))
    return [float(v) for v in vals[::step]]


def run_peer_holdout(job: dict, df: pd.DataFrame) -> dict:
    """Holdout predictions of a peer's BG/NBD + Gamma-Gamma, with the peer's own formulas.

    ``lib == "peer_holdout"`` (used by ``holdout_accuracy.py``); ``peer``: "lifetimes"
    (MLE) or "pymc_marketing" (``method`` "map" or "mcmc"); ``horizon``: holdout length
    in the data's time unit. Returns, per customer in ``df`` order, the peer's
    conditional expected purchases over ``horizon`` and conditional expected spend per
    purchase (Fader & Hardie 2013, eq. 5; x = 0 gives the population mean), for
    pymc-marketing averaged over all posterior draws; the fitted parameters (MLE / MAP
    values, or up to ``max_param_draws`` thinned posterior draws); fit and predict seconds.
    """
    h = float(job["horizon"])
    rb = _repeat_buyers(df)
    if job["peer"] == "lifetimes":
        import lifetimes

        t0 = time.perf_counter()
        bg = lifetimes.BetaGeoFitter(penalizer_coef=0.0)
        bg.fit(df["frequency"], df["recency"], df["T"])
        t1 = time.perf_counter()
        gg = lifetimes.GammaGammaFitter(penalizer_coef=0.0)
        gg.fit(rb["frequency"], rb["monetary_value"])
        t2 = time.perf_counter()
        purchases = bg.conditional_expected_number_of_purchases_up_to_time(
            h, df["frequency"], df["recency"], df["T"]
        )
        spend = gg.conditional_expected_average_profit(df["frequency"], df["monetary_value"])
        t3 = time.perf_counter()
        params = {k: [float(bg.params_[k])] for k in ("r", "alpha", "a", "b")}
        params.update({k: [float(gg.params_[k])] for k in ("p", "q", "v")})
    else:
        from pymc_marketing import clv

        method = job.get("method", "map")
        kw: dict = {}
        if method == "mcmc":
            kw = dict(draws=job["draws"], tune=job["tune"], chains=job["chains"],
                      target_accept=job["target_accept"], random_seed=job["seed"],
                      progressbar=False)  # fmt: skip
            if job.get("cores") is not None:
                kw["cores"] = job["cores"]
        t0 = time.perf_counter()
        bg = clv.BetaGeoModel(data=df[["customer_id", "frequency", "recency", "T"]])
        bg.fit(method=method, **kw)
        t1 = time.perf_counter()
        gg = clv.GammaGammaModel(data=rb[["customer_id", "frequency", "monetary_value"]])
        gg.fit(method=method, **kw)
        t2 = time.perf_counter()
        purchases = bg.expected_purchases(future_t=h).mean(("chain", "draw")).values
        spend = (
            gg.expected_customer_spend(df[["customer_id", "frequency", "monetary_value"]])
            .mean(("chain", "draw"))
            .values
        )
        t3 = time.perf_counter()
        n = int(job.get("max_param_draws", 1000))
        params = {k: _thin(bg.idata.posterior[k], n) for k in ("r", "alpha", "a", "b")}
        params.update({k: _thin(gg.idata.posterior[k], n) for k in ("p", "q", "v")})
    return {
        "fit_s": t2 - t0,
        "fit_s_purchase": t1 - t0,
        "fit_s_spend": t2 - t1,
        "predict_s": t3 - t2,
        "params": params,
        "pred_purchases": [float(v) for v in np.asarray(purchases, dtype=float)],
        "pred_spend_per_purchase": [float(v) for v in np.asarray(spend, dtype=float)],
    }


def run_lifetimes_purchases(job: dict, df: pd.DataFrame) -> dict:
    """lifetimes' maximum-likelihood purchase models and their own conditional expected
    purchases over ``horizon`` (``lib == "lifetimes_purchases"``, used by
    ``bench_real_data.py`` as an outside check); ``models``: a list of ``bgnbd``,
    ``mbgnbd``, ``pareto_nbd``."""
    import lifetimes

    fitters = {"bgnbd": lifetimes.BetaGeoFitter, "mbgnbd": lifetimes.ModifiedBetaGeoFitter,
               "pareto_nbd": lifetimes.ParetoNBDFitter}
    h = float(job["horizon"])
    out = {}
    for model in job["models"]:
        t0 = time.perf_counter()
        try:
            f = fitters[model](penalizer_coef=0.0)
            f.fit(df["frequency"], df["recency"], df["T"])
            pred = f.conditional_expected_number_of_purchases_up_to_time(
                h, df["frequency"], df["recency"], df["T"])
            out[model] = {"params": {k: float(v) for k, v in f.params_.items()},
                          "pred_purchases": [float(v) for v in np.asarray(pred, dtype=float)],
                          "fit_s": time.perf_counter() - t0}
        except Exception as exc:  # a peer failure is reported, not fatal
            out[model] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return out


def main() -> None:
    job = json.loads(sys.argv[1])
    t_start = time.perf_counter()
    df = pd.read_csv(job["data"])
    runner = {"ours": run_ours, "pymc_marketing": run_pymc_marketing,
              "lifetimes": run_lifetimes,
              "pymc_marketing_clv": run_pymc_marketing_clv,
              "peer_holdout": run_peer_holdout,
              "lifetimes_purchases": run_lifetimes_purchases}[job["lib"]]  # fmt: skip
    out = runner(job, df)
    out["process_s"] = time.perf_counter() - t_start
    out.update(_rss_mb())
    out["pid"] = os.getpid()
    out["n_input_customers"] = int(len(df))
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
