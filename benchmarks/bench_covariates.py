"""Covariate Pareto/NBD families against CLVTools 0.12.1 on its apparel data, and recovery.

``--extra``: NUTS through ``build_model`` for the time-varying family on simulated data,
and the seasonal recovery at a low purchase rate (``results/covariates_extra.*``).

Oracle: CLVTools 0.12.1 (``pnbd`` with static and with dynamic covariates) on the apparel
data in ``../shared/data/clvtools_apparel`` (600 customers, weekly, calibration to
2006-12-31 = 104 weeks), as recorded by the R oracle of neilmurrayee/clvtools
(``tests/fixtures/inference_pnbd_staticcov.json``, ``dyncov_ll_grid.json``,
``dyncov_fit.json``, ``dyncov_fit_full.json``, ``dyncov_palive.csv``,
``dyncov_predict_holdout.csv``; ``_manifest.json`` says CLVTools 0.12.1). Measured here:

* static covariates (Gender, Channel on both processes): our MLE (``fit_mle``) and its
  log-likelihood against CLVTools' estimates, standard errors and log-likelihood; our
  log-likelihood at CLVTools' estimates; the MAP of the Bayesian model
  (``build_model(..., pooling="complete")``, default priors) beside them;
* dynamic covariates (High.Season, Gender, Channel on both): our log-likelihood at
  CLVTools' two reference points and at its fit on all data; our MLE against CLVTools'
  (and, because the dropout effect of High.Season lies on a ridge, the MLE of the other
  nine parameters with that one fixed at CLVTools' value);
* recovery on simulated customers: static effects (MLE Wald 94% coverage over seeds) and
  a seasonal purchase rate (holdout BIAS of the dynamic and the stationary model).

Run::

    .venv/bin/python benchmarks/bench_covariates.py [--smoke] [--no-full] [--no-bayes]

Writes ``benchmarks/results/covariates.{json,md}`` (``--smoke``: ``covariates_smoke``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, machine_markdown, md_table, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "clvtools_apparel"
sys.path.insert(0, str(ROOT / "tests"))

COLS = ("High.Season", "Gender", "Channel")


def _refs():
    import test_family_pareto_cov as t  # the reference numbers, kept in one place

    return t


def _apparel(cal_end="2006-12-31"):
    from bayesclv.data import rfm_summary

    tr = pd.read_csv(DATA / "apparelTrans.csv.gz")
    rfm = rfm_summary(
        tr,
        customer_col="Id",
        date_col="Date",
        amount_col="Price",
        calibration_end=cal_end,
        observation_end="2010-12-20",
    )
    return tr, rfm


def static_section(bayes: bool) -> dict:
    from bayesclv.classic import fit_mle
    from bayesclv.covariates import StaticCovariates, join_covariates
    from bayesclv.families.pareto_nbd_cov import PARETO_NBD_COV

    t = _refs()
    _, rfm = _apparel()
    cov = StaticCovariates.from_frame(
        pd.read_csv(DATA / "apparelStaticCov.csv.gz"), customer_col="Id"
    )
    rfm = join_covariates(rfm, cov)
    fam = PARETO_NBD_COV.resolve(rfm)
    rows = fam.model_rows(rfm)
    ll_at_ref = float(np.sum(fam.logp(*(t.CLV_STATIC[n] for n in fam.params), *rows.columns)))
    t0 = time.perf_counter()
    res = fit_mle("pareto_nbd_cov", rfm)
    secs = time.perf_counter() - t0
    out = {
        "clvtools": {"params": t.CLV_STATIC, "se": t.CLV_STATIC_SE, "loglik": t.CLV_STATIC_LL},
        "ours_loglik_at_clvtools_params": ll_at_ref,
        "mle": {
            "params": res.params,
            "se": res.se,
            "loglik": res.log_likelihood,
            "converged": res.converged,
            "seconds": secs,
        },
    }
    if bayes:
        from bayesclv.fit import fit
        from bayesclv.models import build_model

        t0 = time.perf_counter()
        idata = fit(build_model("pareto_nbd_cov", rfm, pooling="complete"), sampler="map")
        out["map"] = {
            "params": {n: float(idata.posterior[n].values.ravel()[0]) for n in fam.params},
            "seconds": time.perf_counter() - t0,
        }
    return out


def _dyn_th(vec):
    return _refs()._dyn_th(vec)


def dynamic_section(full: bool) -> dict:
    from bayesclv.classic import fit_mle
    from bayesclv.covariates import TimeVaryingCovariates, join_covariates
    from bayesclv.families.pareto_nbd_dyncov import PARETO_NBD_DYNCOV

    t = _refs()
    tab = TimeVaryingCovariates.from_frame(
        pd.read_csv(DATA / "apparelDynCov.csv.gz"), customer_col="Id", date_col="Cov.Date"
    )
    tr, rfm = _apparel()
    rfm = join_covariates(rfm, tab, transactions=tr, customer_col="Id", date_col="Date")
    fam = PARETO_NBD_DYNCOV.resolve(rfm)
    rows = fam.model_rows(rfm)

    def ll(th):
        return fam.logp(*(th[n] for n in fam.params), *rows.columns)

    out: dict = {"loglik_points": {}}
    for point, vec in t.CLV_DYN.items():
        t0 = time.perf_counter()
        vals = ll(_dyn_th(vec))
        secs = time.perf_counter() - t0
        ref = t.CLV_DYN_LL_IND[point]
        pos = t._pos(rfm, ref)
        out["loglik_points"][point] = {
            "clvtools": t.CLV_DYN_LL[point],
            "ours": float(vals.sum()),
            "max_abs_diff_recorded_customers": float(
                np.max(np.abs(vals[pos] - list(ref.values())))
            ),
            "seconds_per_evaluation": secs,
        }
    th = _dyn_th(t.CLV_DYN["mle"])
    pos = t._pos(rfm, t.CLV_DYN_PALIVE)
    h = 1450 / 7
    cov = fam.customer_data(rfm, pos, horizon=h)
    x = rfm.frequency[pos].astype(float)
    pa = fam.p_alive(th, x, rfm.recency[pos], rfm.T[pos], **cov)
    cet = pa * fam.expected_alive(th, x, rfm.T[pos], h, **cov)
    out["p_alive_max_abs_diff"] = float(np.max(np.abs(pa - list(t.CLV_DYN_PALIVE.values()))))
    out["cet_max_rel_diff"] = float(np.max(np.abs(cet / list(t.CLV_DYN_CET.values()) - 1)))

    t0 = time.perf_counter()
    res = fit_mle("pareto_nbd_dyncov", rfm)
    out["mle"] = {
        "params": res.params,
        "se": res.se,
        "loglik": res.log_likelihood,
        "converged": res.converged,
        "seconds": time.perf_counter() - t0,
    }
    out["clvtools"] = {"params": th, "loglik": t.CLV_DYN_LL["mle"]}
    # profile: the dropout effect of High.Season fixed at CLVTools' value
    view = fam.mle_view()
    names = view.params
    k_fix = names.index("coef_dropout_High.Season")
    sd = fam.scales.sd_dropout[0]
    fixed = th["gamma_dropout_High.Season"] * sd
    real = set(view.real_params)

    def natural(free):
        full = np.insert(free, k_fix, fixed)
        return [v if n in real else np.exp(v) for n, v in zip(names, full, strict=True)]

    def neg(free):
        with np.errstate(all="ignore"):
            v = -float(np.sum(view.logp(*natural(free), *rows.columns)))
        return v if np.isfinite(v) else 1e300

    start = np.array([np.log(res.params[n]) if n in ("r", "s") else 0.0 for n in names])
    start[1], start[3] = np.log(100.0), np.log(100.0)
    start = np.delete(start, k_fix)
    t0 = time.perf_counter()
    opt = optimize.minimize(
        lambda f: neg(f) / rfm.n_customers,
        start,
        method="L-BFGS-B",
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-9},
    )
    nat = natural(opt.x)
    alpha, beta, gam = view.scales.to_original(nat[1], nat[3], nat[4:])
    prof = {"r": nat[0], "alpha": float(alpha), "s": nat[2], "beta": float(beta)}
    prof.update({g: float(v) for g, v in zip(view.scales.gammas, gam, strict=True)})
    out["profile_fixed_dropout_high_season"] = {
        "params": prof,
        "loglik": -neg(opt.x),
        "seconds": time.perf_counter() - t0,
    }
    if full:
        tr2, rfm2 = _apparel("2010-12-20")
        rfm2 = join_covariates(rfm2, tab, transactions=tr2, customer_col="Id", date_col="Date")
        fam2 = PARETO_NBD_DYNCOV.resolve(rfm2)
        rows2 = fam2.model_rows(rfm2)
        c = t.CLV_DYN_FULL
        th2 = {k: c[k] for k in ("r", "alpha", "s", "beta")}
        th2.update({f"gamma_dropout_{n}": v for n, v in zip(COLS, c["life"], strict=True)})
        th2.update({f"gamma_purchase_{n}": v for n, v in zip(COLS, c["trans"], strict=True)})
        ll2 = float(np.sum(fam2.logp(*(th2[n] for n in fam2.params), *rows2.columns)))
        t0 = time.perf_counter()
        res2 = fit_mle("pareto_nbd_dyncov", rfm2)
        out["all_data"] = {
            "clvtools": {"params": th2, "loglik": t.CLV_DYN_FULL_LL},
            "ours_loglik_at_clvtools_params": ll2,
            "mle": {
                "params": res2.params,
                "se": res2.se,
                "loglik": res2.log_likelihood,
                "converged": res2.converged,
                "seconds": time.perf_counter() - t0,
            },
        }
    return out


def recovery_section(seeds: list[int], n_static: int, n_season: int) -> dict:
    from bayesclv.classic import fit_mle
    from bayesclv.covariates import TimeVaryingCovariates, calendar_covariates, join_covariates
    from bayesclv.data import rfm_summary
    from bayesclv.families.pareto_nbd import PARETO_NBD
    from bayesclv.families.pareto_nbd_dyncov import PARETO_NBD_DYNCOV, simulate_dyncov

    t = _refs()
    static = []
    for seed in seeds:
        rfm, truth = t._static_sim(n=n_static, seed=seed)
        res = fit_mle("pareto_nbd_cov", rfm)
        static.append(
            {
                "seed": seed,
                "covered": {
                    n: bool(abs(res.params[n] - v) < 1.881 * res.se[n]) for n, v in truth.items()
                },
                "estimates": res.params,
                "se": res.se,
            }
        )
    season = []
    cal = calendar_covariates(
        start="2019-12-29", end="2022-01-02", freq="W-SUN", high_season=[11, 12]
    )
    truth = {"r": 0.8, "alpha": 8.0, "s": 0.6, "beta": 40.0, "gamma_purchase_high_season": 1.0}
    for seed in seeds:
        tab = TimeVaryingCovariates.from_calendar(np.arange(n_season), cal)
        rng = np.random.default_rng(seed)
        first = pd.Timestamp("2020-01-01") + pd.to_timedelta(
            rng.integers(0, 182, n_season), unit="D"
        )
        log, _ = simulate_dyncov(
            r=0.8,
            alpha=56.0,
            s=0.6,
            beta=280.0,
            gamma_purchase={"high_season": 1.0},
            gamma_dropout={},
            calendar=tab,
            first_days=first,
            end_day="2021-12-31",
            random_seed=seed + 100,
        )
        log["amount"] = 1.0
        rfm = rfm_summary(log, calibration_end="2021-09-25", observation_end="2021-12-31")
        rfm_c = join_covariates(rfm, tab, purchase=["high_season"], dropout=[], transactions=log)
        x, h = rfm.frequency.astype(float), rfm.holdout_length
        actual = float(rfm.holdout_frequency.sum())
        st = fit_mle("pareto_nbd", rfm).params
        pred_s = float(
            np.sum(
                PARETO_NBD.p_alive(st, x, rfm.recency, rfm.T)
                * PARETO_NBD.expected_alive(st, x, rfm.T, h)
            )
        )
        t0 = time.perf_counter()
        res = fit_mle("pareto_nbd_dyncov", rfm_c)
        secs = time.perf_counter() - t0
        fam = PARETO_NBD_DYNCOV.resolve(rfm_c)
        cov = fam.customer_data(rfm_c, horizon=h)
        pred_d = float(
            np.sum(
                fam.p_alive(res.params, x, rfm.recency, rfm.T, **cov)
                * fam.expected_alive(res.params, x, rfm.T, h, **cov)
            )
        )
        season.append(
            {
                "seed": seed,
                "holdout_actual": actual,
                "pred_stationary": pred_s,
                "pred_dynamic": pred_d,
                "bias_stationary": pred_s / actual - 1,
                "bias_dynamic": pred_d / actual - 1,
                "dynamic_mle_seconds": secs,
                "covered": {
                    n: bool(abs(res.params[n] - v) < 1.881 * res.se[n]) for n, v in truth.items()
                },
                "estimates": res.params,
            }
        )
    return {"static": static, "seasonal": season, "n_static": n_static, "n_season": n_season}


def extra_section(seeds: list[int]) -> dict:
    """NUTS through ``build_model`` for the time-varying family (one small data set, with
    the MLE on the same data beside it), and the seasonal recovery at a purchase rate low
    enough that customers rarely buy twice on one day (the daily log merges such
    purchases, which biases the seasonal effect low at the main benchmark's rate)."""
    import arviz as az

    from bayesclv.classic import fit_mle
    from bayesclv.covariates import TimeVaryingCovariates, calendar_covariates, join_covariates
    from bayesclv.data import rfm_summary
    from bayesclv.families.pareto_nbd_dyncov import simulate_dyncov
    from bayesclv.fit import fit
    from bayesclv.models import build_model

    def simulate(n, alpha_w, start, end, cal_end, seed, spread):
        cal = calendar_covariates(start=start, end=end, freq="W-SUN", high_season=[11, 12])
        tab = TimeVaryingCovariates.from_calendar(np.arange(n), cal)
        rng = np.random.default_rng(seed)
        first = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, spread, n), unit="D")
        log, _ = simulate_dyncov(
            r=1.0,
            alpha=alpha_w * 7.0,
            s=0.8,
            beta=280.0,
            gamma_purchase={"high_season": 1.0},
            gamma_dropout={},
            calendar=tab,
            first_days=first,
            end_day=cal_end,
            random_seed=seed + 100,
        )
        merged = 1.0 - len(log.drop_duplicates()) / len(log)
        log["amount"] = 1.0
        rfm = rfm_summary(log, calibration_end=cal_end)
        rfm = join_covariates(rfm, tab, purchase=["high_season"], dropout=[], transactions=log)
        return rfm, merged

    truth = {"r": 1.0, "alpha": 5.0, "s": 0.8, "beta": 40.0, "gamma_purchase_high_season": 1.0}
    rfm, merged = simulate(300, 5.0, "2019-12-29", "2022-01-02", "2021-12-31", 8, 28)
    mle = fit_mle("pareto_nbd_dyncov", rfm)
    t0 = time.perf_counter()
    idata = fit(
        build_model("pareto_nbd_dyncov", rfm, pooling="complete"),
        draws=300,
        tune=300,
        chains=2,
        random_seed=4,
        progressbar=False,
        cores=1,
    )
    secs = time.perf_counter() - t0
    post = {}
    for name, value in truth.items():
        d = idata.posterior[name].values.reshape(-1)
        lo, hi = az.hdi(d, hdi_prob=0.94)
        post[name] = {
            "truth": value,
            "mean": float(d.mean()),
            "hdi_94": [float(lo), float(hi)],
            "covered": bool(lo <= value <= hi),
            "mle": mle.params[name],
            "mle_se": mle.se[name],
        }
    summ = az.summary(idata, var_names=list(truth))
    nuts = {
        "n_customers": rfm.n_customers,
        "weeks": 104,
        "share_merged_same_day": merged,
        "seconds": secs,
        "divergences": int(idata.sample_stats.diverging.sum()),
        "r_hat_max": float(summ["r_hat"].max()),
        "ess_bulk_min": float(summ["ess_bulk"].min()),
        "params": post,
    }
    low = []
    for seed in seeds:
        rfm, merged = simulate(3000, 40.0, "2019-12-29", "2022-01-02", "2021-09-25", seed, 182)
        res = fit_mle("pareto_nbd_dyncov", rfm)
        g = "gamma_purchase_high_season"
        low.append(
            {
                "seed": seed,
                "share_merged_same_day": merged,
                "estimate": res.params[g],
                "se": res.se[g],
                "covered": bool(abs(res.params[g] - 1.0) < 1.881 * res.se[g]),
            }
        )
    return {"nuts": nuts, "low_rate_seasonal": low}


def extra_markdown(info: dict, res: dict) -> str:
    n = res["nuts"]
    lines = [
        "# Covariates: NUTS for the time-varying family, low-rate seasonal recovery",
        "",
        machine_markdown(info),
        "",
        f"## NUTS through build_model ({n['n_customers']} customers, {n['weeks']} weeks, "
        f"complete pooling, 2 x 300 draws after 300 tuning)",
        "",
        f"{n['seconds']:.0f} s; {n['divergences']} divergences; max r_hat "
        f"{n['r_hat_max']:.3f}; min bulk ESS {n['ess_bulk_min']:.0f}; "
        f"{n['share_merged_same_day']:.1%} of simulated purchases merged by day.",
        "",
    ]
    rows = [
        [
            k,
            v["truth"],
            f"{v['mean']:.3g}",
            f"[{v['hdi_94'][0]:.3g}, {v['hdi_94'][1]:.3g}]",
            "yes" if v["covered"] else "NO",
            f"{v['mle']:.3g} +- {v['mle_se']:.2g}",
        ]
        for k, v in n["params"].items()
    ]
    lines.append(
        md_table(
            ["parameter", "truth", "posterior mean", "94% HDI", "covered", "MLE +- se (same data)"],
            rows,
        )
    )
    rows = [
        [
            x["seed"],
            f"{x['share_merged_same_day']:.2%}",
            f"{x['estimate']:.4f}",
            f"{x['se']:.4f}",
            "yes" if x["covered"] else "NO",
        ]
        for x in res["low_rate_seasonal"]
    ]
    lines += [
        "## Seasonal effect at a low purchase rate (3,000 customers, truth 1.0)",
        "",
        md_table(["seed", "purchases merged by day", "estimate", "se", "94% covers"], rows),
    ]
    return "\n".join(lines) + "\n"


def markdown(info: dict, res: dict) -> str:
    s = res["static"]
    lines = [
        "# Covariate Pareto/NBD vs CLVTools 0.12.1 (apparel) and recovery",
        "",
        machine_markdown(info),
        "",
        "## Static covariates (Gender, Channel), 104 weeks",
        "",
    ]
    rows = []
    for n, ref in s["clvtools"]["params"].items():
        rows.append(
            [
                n,
                f"{ref:.5g}",
                f"{s['mle']['params'][n]:.5g}",
                f"{s['clvtools']['se'][n]:.4g}",
                f"{s['mle']['se'][n]:.4g}",
                f"{s['map']['params'][n]:.5g}" if "map" in s else "-",
            ]
        )
    rows.append(
        [
            "log-likelihood",
            f"{s['clvtools']['loglik']:.6f}",
            f"{s['mle']['loglik']:.6f}",
            "",
            "",
            "",
        ]
    )
    lines.append(
        md_table(
            [
                "parameter",
                "CLVTools",
                "ours MLE",
                "CLVTools se",
                "ours se",
                "ours MAP (Bayes, complete pooling)",
            ],
            rows,
        )
    )
    lines.append(
        f"Our log-likelihood at CLVTools' estimates: "
        f"{s['ours_loglik_at_clvtools_params']:.7f} (CLVTools {s['clvtools']['loglik']:.7f}); "
        f"MLE in {s['mle']['seconds']:.1f} s.\n"
    )
    d = res["dynamic"]
    lines += ["## Dynamic covariates (High.Season, Gender, Channel), 104 weeks", ""]
    rows = [
        [
            p,
            f"{v['clvtools']:.10f}",
            f"{v['ours']:.10f}",
            f"{v['ours'] - v['clvtools']:.2e}",
            f"{v['max_abs_diff_recorded_customers']:.1e}",
            f"{v['seconds_per_evaluation']:.2f}",
        ]
        for p, v in d["loglik_points"].items()
    ]
    lines.append(
        md_table(
            [
                "CLVTools point",
                "CLVTools LL",
                "ours LL",
                "difference",
                "max per-customer diff (4 recorded)",
                "s per evaluation",
            ],
            rows,
        )
    )
    lines.append(
        f"P(alive) at CLVTools' fit, 5 customers: max abs diff {d['p_alive_max_abs_diff']:.1e}; "
        f"conditional expected transactions over CLVTools' 207-week holdout: max rel diff "
        f"{d['cet_max_rel_diff']:.1e}.\n"
    )
    rows = []
    for n, ref in d["clvtools"]["params"].items():
        rows.append(
            [
                n,
                f"{ref:.5g}",
                f"{d['mle']['params'][n]:.5g}",
                f"{d['mle']['se'][n]:.3g}",
                f"{d['profile_fixed_dropout_high_season']['params'][n]:.5g}",
            ]
        )
    rows.append(
        [
            "log-likelihood",
            f"{d['clvtools']['loglik']:.5f}",
            f"{d['mle']['loglik']:.5f}",
            "",
            f"{d['profile_fixed_dropout_high_season']['loglik']:.5f}",
        ]
    )
    lines.append(
        md_table(
            [
                "parameter",
                "CLVTools",
                "ours MLE",
                "ours se",
                "ours, gamma_dropout_High.Season fixed at CLVTools'",
            ],
            rows,
        )
    )
    lines.append(f"Our MLE took {d['mle']['seconds']:.0f} s (finite-difference gradients).\n")
    if "all_data" in d:
        a = d["all_data"]
        rows = [
            [n, f"{ref:.5g}", f"{a['mle']['params'][n]:.5g}", f"{a['mle']['se'][n]:.3g}"]
            for n, ref in a["clvtools"]["params"].items()
        ]
        rows.append(
            ["log-likelihood", f"{a['clvtools']['loglik']:.5f}", f"{a['mle']['loglik']:.5f}", ""]
        )
        lines += [
            "### All data (calibration to 2010-12-20, 311 weeks)",
            "",
            md_table(["parameter", "CLVTools", "ours MLE", "ours se"], rows),
            f"Our log-likelihood at CLVTools' estimates: "
            f"{a['ours_loglik_at_clvtools_params']:.7f} (CLVTools "
            f"{a['clvtools']['loglik']:.7f}); MLE in {a['mle']['seconds']:.0f} s.\n",
        ]
    r = res["recovery"]
    lines += [
        f"## Recovery (simulated; {r['n_static']} customers static, {r['n_season']} seasonal)",
        "",
    ]
    names = list(r["static"][0]["covered"])
    cover = {n: np.mean([x["covered"][n] for x in r["static"]]) for n in names}
    lines.append(
        "Static effects, MLE 94% Wald intervals covering the truth over seeds: "
        + ", ".join(f"{n} {v:.0%}" for n, v in cover.items())
        + ".\n"
    )
    rows = [
        [
            x["seed"],
            x["holdout_actual"],
            f"{x['pred_stationary']:.0f}",
            f"{x['bias_stationary']:+.1%}",
            f"{x['pred_dynamic']:.0f}",
            f"{x['bias_dynamic']:+.1%}",
            f"{x['dynamic_mle_seconds']:.0f}",
            ", ".join(n for n, c in x["covered"].items() if not c) or "all",
        ]
        for x in r["seasonal"]
    ]
    lines.append(
        md_table(
            [
                "seed",
                "holdout purchases",
                "stationary forecast",
                "BIAS",
                "dynamic forecast",
                "BIAS",
                "dynamic MLE s",
                "truth outside 94% (else all covered)",
            ],
            rows,
        )
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="small recovery, no all-data fit")
    ap.add_argument("--no-full", action="store_true", help="skip the all-data dynamic MLE")
    ap.add_argument("--no-bayes", action="store_true", help="skip the Bayesian MAP")
    ap.add_argument(
        "--extra",
        action="store_true",
        help="only NUTS for the time-varying family and the low-rate seasonal "
        "recovery (writes covariates_extra)",
    )
    args = ap.parse_args()
    info = machine_info(peers=False)
    if args.extra:
        results = extra_section([1, 2, 3])
        info["load_average_end"] = list(os.getloadavg())
        jpath, mpath = write_results(
            "covariates_extra", {"machine": info, "results": results}, extra_markdown(info, results)
        )
        print(mpath.read_text())
        return
    if not (DATA / "apparelTrans.csv.gz").exists():
        raise SystemExit(f"CLVTools' apparel data not found at {DATA}")
    seeds = [1] if args.smoke else [1, 2, 3]
    results = {
        "static": static_section(bayes=not (args.no_bayes or args.smoke)),
        "dynamic": dynamic_section(full=not (args.no_full or args.smoke)),
        "recovery": recovery_section(
            seeds, 800 if args.smoke else 1500, 1000 if args.smoke else 2000
        ),
    }
    info["load_average_end"] = list(os.getloadavg())
    stem = "covariates_smoke" if args.smoke else "covariates"
    payload = {"machine": info, "results": results}
    jpath, mpath = write_results(stem, payload, markdown(info, results))
    print(mpath.read_text())
    print(f"wrote {jpath} and {mpath}")


if __name__ == "__main__":
    main()
