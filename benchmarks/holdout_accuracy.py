"""Holdout accuracy on CDNOW: Bayesian poolings, MLE, classic formulas and peers in one table.

CDNOW ``--dataset sample`` (2,357 customers) or ``master`` (23,570), 39/39-week split
(calibration to 1997-09-30, holdout to 1998-06-30), acquisition month as segment.
Every method predicts each customer's holdout purchases and holdout spend from the
calibration data only:

* **Bayesian** BG/NBD (+ Pareto/NBD with ``--pareto``, default on the sample) with
  Gamma-Gamma, each with ``pooling`` "partial" (hierarchical), "complete" (pooled) and
  "none" (unpooled); NUTS (``--sampler nutpie|pymc``); the spend model has the same
  pooling as the purchase model. Point predictions, interval coverage and log predictive
  density from :func:`bayesclv.diagnostics.holdout_evaluation`.
* **MLE** (``bayesclv.classic.fit_*``, one pooled fit): the same evaluation with the
  estimate plugged in (one "draw"): intervals and density ignore parameter uncertainty.
* **Classic formulas** (``bayesclv.classic``; point forecasts only, no intervals or
  density). Each gives a value over some horizon; the mapping to a 39-week forecast of
  purchases (value 1 per purchase) and spend (value = mean repeat spend) is:

  - ``textbook_clv(value, rate, lifetime)`` with ``rate = x / T`` repeat purchases per
    week and ``lifetime = 39`` weeks: the customer keeps buying at the calibration rate
    through the whole holdout (the "run rate");
  - ``retention_clv(m, r, 0) * (1 - r**3)``: the retention formula without discounting,
    cut to the holdout's 3 quarters (13 weeks each), with ``m = 13 x / T`` (purchases)
    or ``13 x zbar / T`` (spend) per quarter and ``r`` the cohort's quarter-to-quarter
    retention measured in the calibration period (share of customers with an occasion
    in Apr-Jun 1997 who also have one in Jul-Sep 1997);
  - ``historical_clv(include_first_purchase=False)``: the calibration repeat spend (and
    ``x`` repeat purchases) is predicted again for the holdout ("the next 39 weeks look
    like the last ones"; ``T`` is 27 to 39 weeks, so this is below the run rate).

* **Peers** in ``benchmarks/.venv-peers`` through ``peers_worker.py`` (``lib
  "peer_holdout"``): lifetimes MLE ``BetaGeoFitter`` + ``GammaGammaFitter`` and
  pymc-marketing ``BetaGeoModel`` + ``GammaGammaModel`` (``--peer-method map|mcmc``),
  each in a child process timed with its peak tree RSS. Their point predictions are
  their own formulas; coverage and density are computed by bayesclv from their fitted
  parameters (a check that the formulas agree is reported).

Metrics: MAE, RMSE, MSLE, BIAS (= sum(pred) / sum(actual) - 1) of the per-customer
holdout purchases and spend, the predicted totals vs the actual ones, coverage of 50/80/95%
central posterior predictive intervals, summed holdout log predictive density of the
purchase counts, fit wall seconds and peak memory.

Writes ``benchmarks/results/holdout_accuracy_<dataset>[_smoke].{json,md,png}``.

Usage::

    python benchmarks/holdout_accuracy.py --dataset sample --sampler nutpie --chains 4
    python benchmarks/holdout_accuracy.py --dataset master --chains 2
    python benchmarks/holdout_accuracy.py --smoke   # MAP, no Pareto/NBD, lifetimes only: < 60 s
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    PEERS_PYTHON,
    RESULTS,
    _tree_rss,
    machine_info,
    machine_markdown,
    md_table,
    run_job,
)
from holdout_cdnow import published_params  # noqa: E402  (sets the Agg backend)

SPLIT = dict(calibration_end="1997-09-30", observation_end="1998-06-30")
QUARTER_WEEKS = 13.0
PROBS = (0.5, 0.8, 0.95)
PUBLISHED_SAMPLE = {"holdout_purchases": 1882, "holdout_spend": 70976.39}


def load_split(dataset: str):
    """CDNOW transactions and the 39/39-week RFM summary by acquisition month."""
    from bayesclv.data import rfm_summary
    from bayesclv.datasets import load_cdnow

    tx = load_cdnow(dataset)
    rfm = rfm_summary(tx, customer_col="customer_id", date_col="date", amount_col="amount",
                      segment_col="acquisition_month", time_unit="week", **SPLIT)  # fmt: skip
    return tx, rfm


def params_dataset(model: str, values: dict, segments) -> xr.Dataset:
    """Draws (or one point value) per parameter, the same for every segment.

    The ``(chain, draw, segment)`` layout of :mod:`bayesclv.predict`, for unsegmented
    estimates (MLE, the peers): each segment gets the same values.
    """
    n_seg = len(segments)
    data = {}
    for k, v in values.items():
        arr = np.atleast_1d(np.asarray(v, dtype=float))
        data[k] = (("chain", "draw", "segment"), np.repeat(arr[None, :, None], n_seg, axis=2))
    ds = xr.Dataset(data, coords={"segment": list(segments)})
    ds.attrs.update(model=model, time_unit="week")
    return ds


class PeakRSS:
    """Peak summed RSS of this process and its children while the block runs (MB)."""

    def __enter__(self):
        import psutil

        self._proc, self._done, self.peak_mb = psutil.Process(), threading.Event(), 0.0
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._done.is_set():
            self.peak_mb = max(self.peak_mb, _tree_rss(self._proc) / 2**20)
            self._done.wait(0.05)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def quarter_retention(tx: pd.DataFrame) -> dict:
    """Share of customers active in Apr-Jun 1997 who are active again in Jul-Sep 1997.

    Both quarters lie inside the calibration period and after every acquisition
    (Jan-Mar 1997), so no acquisition purchase counts as activity.
    """
    d = tx["date"]
    q2 = set(tx.loc[(d >= "1997-04-01") & (d <= "1997-06-30"), "customer_id"])
    q3 = set(tx.loc[(d >= "1997-07-01") & (d <= "1997-09-30"), "customer_id"])
    return {"active_q2": len(q2), "active_q2_and_q3": len(q2 & q3),
            "retention": len(q2 & q3) / len(q2)}  # fmt: skip


def classic_predictions(rfm, retention: float) -> dict:
    """Holdout purchases and spend from the classic formulas (module docstring)."""
    from bayesclv.classic import historical_clv, retention_clv, textbook_clv

    h = float(rfm.holdout_length)
    x, T, zbar = rfm.frequency.astype(float), rfm.T, rfm.monetary_value
    rate = np.where(T > 0, x / np.where(T > 0, T, 1.0), 0.0)
    k = h / QUARTER_WEEKS
    cut = 1.0 - retention**k
    hist = historical_clv(rfm, include_first_purchase=False).to_numpy()
    return {
        "classic/textbook run rate": {
            "purchases": textbook_clv(1.0, rate, h),
            "spend": textbook_clv(zbar, rate, h),
            "what": "textbook_clv(value, x/T per week, lifetime = 39 weeks)",
        },
        "classic/retention": {
            "purchases": retention_clv(QUARTER_WEEKS * rate, retention, 0.0) * cut,
            "spend": retention_clv(QUARTER_WEEKS * rate * zbar, retention, 0.0) * cut,
            "what": f"retention_clv(per-quarter value, r={retention:.3f}, d=0) x "
            f"(1 - r^{k:g}): {k:g} quarters",
        },
        "classic/historical": {
            "purchases": x,
            "spend": hist,
            "what": "historical_clv(include_first_purchase=False): calibration repeat "
            "purchases / spend repeated",
        },
    }


def point_row(rfm, purchases, spend) -> dict:
    from bayesclv.diagnostics import holdout_metrics

    return {"metrics": {"purchases": holdout_metrics(rfm.holdout_frequency, purchases),
                        "spend": holdout_metrics(rfm.holdout_spend, spend)}}  # fmt: skip


def eval_row(ev) -> dict:
    """Metrics, coverage and density of a HoldoutEvaluation."""
    cov = ev.coverage["coverage"]
    return {
        "metrics": ev.metrics.to_dict(orient="index"),
        "coverage": {
            q: {str(p): float(cov[(q, p)]) for p in PROBS} for q in ("purchases", "spend")
        },  # fmt: skip
        "lpd": ev.log_predictive_density,
    }


def segment_predictions(rfm, pred: np.ndarray) -> dict:
    names = np.asarray(rfm.segment_names)[rfm.segment]
    s = pd.Series(pred).groupby(names).sum()
    return {str(k): float(v) for k, v in s.items()}


# --------------------------------------------------------------------------- the run
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=("sample", "master"), default="sample")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--sampler", choices=("nutpie", "pymc"), default="nutpie")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument(
        "--sim-draws",
        type=int,
        default=500,
        help="posterior draws used for the interval simulation and the LPD",
    )
    ap.add_argument("--poolings", default="partial,complete,none")
    ap.add_argument(
        "--pareto",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also Pareto/NBD (default: on for the sample, off for the master)",
    )
    ap.add_argument("--pareto-poolings", default="partial,complete")
    ap.add_argument(
        "--pareto-draws",
        type=int,
        default=None,
        help="draws and tune steps per chain for Pareto/NBD (default: --draws / --tune); "
        "its quadrature likelihood costs ~10x BG/NBD's per gradient",
    )
    ap.add_argument(
        "--peers",
        default=None,
        help="comma list of lifetimes,pymc_marketing or 'none' (default both; --smoke: lifetimes)",
    )
    ap.add_argument(
        "--peer-method",
        choices=("map", "mcmc"),
        default=None,
        help="pymc-marketing fit (default: mcmc on the sample, map on the master)",
    )
    ap.add_argument("--peer-timeout", type=float, default=1800.0)
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="sample, MAP instead of NUTS, 100 simulation draws, no Pareto/NBD, "
        "lifetimes as the only peer (pymc-marketing's compile alone takes ~40 s)",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.dataset, args.sim_draws = "sample", 100
        args.peers = args.peers or "lifetimes"
        args.pareto = bool(args.pareto)  # Pareto/NBD MAP adds ~30 s: only when asked
    sampler = "map" if args.smoke else args.sampler
    pareto = args.dataset == "sample" if args.pareto is None else args.pareto
    peers = [p for p in (args.peers or "lifetimes,pymc_marketing").split(",")
             if p and p != "none"]  # fmt: skip
    peer_method = args.peer_method or ("mcmc" if args.dataset == "sample" else "map")
    poolings = args.poolings.split(",")
    tag = f"holdout_accuracy_{args.dataset}" + ("_smoke" if args.smoke else "")

    from bayesclv import classic
    from bayesclv.diagnostics import convergence_report, holdout_evaluation
    from bayesclv.fit import fit
    from bayesclv.models import build_bgnbd, build_gamma_gamma, build_pareto_nbd

    info = machine_info(peers=bool(peers))
    info["niceness"] = os.nice(0)  # run under `nice` on a shared machine: fit s is inflated
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.0f}s] {msg}", flush=True)

    tx, rfm = load_split(args.dataset)
    segs = rfm.segment_names
    log(f"{rfm}")
    rows: dict[str, dict] = {}
    seg_pred: dict[str, dict] = {}

    def evaluate(name, purchase, spend, extra):
        t0 = time.perf_counter()
        try:
            ev = holdout_evaluation(purchase, rfm, spend_params=spend, probs=PROBS,
                                    n_draws=args.sim_draws, random_seed=args.seed)  # fmt: skip
        except Exception as exc:  # one failing method must not lose the whole (long) run
            rows[name] = {**extra, "error": f"{type(exc).__name__}: {exc}"}
            log(f"{name}: {rows[name]['error']}")
            return None
        rows[name] = {**extra, **eval_row(ev), "eval_s": time.perf_counter() - t0}
        seg_pred[name] = segment_predictions(rfm, ev.predicted["predicted_purchases"].to_numpy())
        log(f"{name}: evaluated")
        return ev

    # ---------------------------------------------------------------- Bayesian fits
    builders = {"bgnbd": build_bgnbd, "pareto_nbd": build_pareto_nbd,
                "gamma_gamma": build_gamma_gamma}  # fmt: skip
    fits: dict[str, dict] = {}
    plan = [("gamma_gamma", p) for p in poolings] + [("bgnbd", p) for p in poolings]
    if pareto:
        plan += [("pareto_nbd", p) for p in args.pareto_poolings.split(",") if p in poolings]
    for i, (kind, pooling) in enumerate(plan):
        draws, tune = args.draws, args.tune
        if kind == "pareto_nbd" and args.pareto_draws:
            draws = tune = args.pareto_draws
        t0 = time.perf_counter()
        with PeakRSS() as mem, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idata = fit(builders[kind](rfm, pooling=pooling), sampler=sampler,
                        draws=draws, tune=tune, chains=args.chains,
                        random_seed=args.seed + i, progressbar=False)  # fmt: skip
        rep = convergence_report(idata)
        fits[f"{kind}/{pooling}"] = {"idata": idata, "fit_s": time.perf_counter() - t0,
                                     "peak_mb": mem.peak_mb, "report": rep}  # fmt: skip
        log(f"fit {kind}/{pooling}: {fits[f'{kind}/{pooling}']['fit_s']:.0f} s, "
            f"peak {mem.peak_mb:.0f} MB, {rep.verdict}")  # fmt: skip
    label = {"partial": "hierarchical", "complete": "pooled", "none": "unpooled"}
    for kind in ("bgnbd", "pareto_nbd"):
        for pooling in poolings:
            key = f"{kind}/{pooling}"
            if key not in fits:
                continue
            pf, sf = fits[key], fits[f"gamma_gamma/{pooling}"]
            name = f"bayes/{kind}+gg {label[pooling]} ({pooling})"
            evaluate(name, pf["idata"], sf["idata"], {
                "family": "Bayesian", "sampler": sampler,
                "draws_per_chain": int(pf["idata"].posterior.sizes["draw"]),
                "fit_s": pf["fit_s"] + sf["fit_s"], "fit_s_purchase": pf["fit_s"],
                "fit_s_spend": sf["fit_s"], "peak_mb": max(pf["peak_mb"], sf["peak_mb"]),
                "convergence": {"purchase": pf["report"].to_dict(),
                                "spend": sf["report"].to_dict()},
            })  # fmt: skip

    # ---------------------------------------------------------------- MLE
    mle_fns = {"bgnbd": classic.fit_bgnbd, "pareto_nbd": classic.fit_pareto_nbd}
    t0 = time.perf_counter()
    # The repeat buyers with a positive mean spend: the customers build_gamma_gamma and the
    # peers fit (CDNOW master has one repeat buyer whose repeat purchases are all $0;
    # classic.fit_gamma_gamma would include it, and log(0) stops the optimiser at its start).
    zero_spend = (rfm.frequency > 0) & (rfm.monetary_value <= 0)
    with PeakRSS() as mem:
        gg = classic.fit_gamma_gamma(rfm.subset(~zero_spend))
    gg_s, gg_mb = time.perf_counter() - t0, mem.peak_mb
    for kind in ("bgnbd", "pareto_nbd") if pareto else ("bgnbd",):
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            res = mle_fns[kind](rfm)
        s = time.perf_counter() - t0
        evaluate(f"mle/{kind}+gg (bayesclv.classic)", params_dataset(kind, res.params, segs),
                 params_dataset("gamma_gamma", gg.params, segs), {
                     "family": "MLE", "fit_s": s + gg_s, "peak_mb": max(mem.peak_mb, gg_mb),
                     "estimates": {**res.params, **gg.params},
                     "converged": bool(res.converged and gg.converged),
                     "gamma_gamma_excluded_zero_spend": int(zero_spend.sum()),
                 })  # fmt: skip
    if args.dataset == "sample":
        for kind in ("bgnbd", "pareto_nbd") if pareto else ("bgnbd",):
            evaluate(f"published/{kind}+gg (FHL 2005 MLE, metric check)",
                     published_params(kind, segs), published_params("gamma_gamma", segs),
                     {"family": "published"})  # fmt: skip

    # ---------------------------------------------------------------- classic formulas
    ret = quarter_retention(tx[tx["date"] <= pd.Timestamp(SPLIT["calibration_end"])])
    for name, c in classic_predictions(rfm, ret["retention"]).items():
        rows[name] = {
            "family": "classic",
            "what": c["what"],
            **point_row(rfm, c["purchases"], c["spend"]),
        }
        seg_pred[name] = segment_predictions(rfm, np.asarray(c["purchases"], dtype=float))
    log(f"classic formulas (quarter retention {ret['retention']:.3f})")

    # ---------------------------------------------------------------- peers
    peer_info = {}
    if peers:
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "rfm.csv"
            rfm.to_frame().reset_index()[
                ["customer_id", "frequency", "recency", "T", "monetary_value"]
            ].to_csv(csv, index=False)
            for peer in peers:
                job = {"lib": "peer_holdout", "peer": peer, "data": str(csv),
                       "horizon": float(rfm.holdout_length), "method": peer_method,
                       "draws": args.draws, "tune": args.tune, "chains": args.chains,
                       "target_accept": 0.9, "seed": args.seed,
                       # the same 2 parallel chains as ours (its default is 1 on 2 CPUs)
                       "cores": min(args.chains, 2)}  # fmt: skip
                log(f"peer {peer} ({peer_method if peer == 'pymc_marketing' else 'mle'}) ...")
                res = run_job(PEERS_PYTHON, job, timeout=args.peer_timeout)
                peer_info[peer] = {
                    k: v
                    for k, v in res.items()
                    if k not in ("pred_purchases", "pred_spend_per_purchase")
                }
                method = "MLE" if peer == "lifetimes" else peer_method.upper()
                name = f"peer/{peer} BG/NBD+GG ({method})"
                if "error" in res:
                    rows[name] = {"family": "peer", "error": res["error"]}
                    log(f"{name}: {res['error']}")
                    continue
                p = np.asarray(res["pred_purchases"])
                sp = p * np.asarray(res["pred_spend_per_purchase"])
                pr = {k: v for k, v in res["params"].items() if k in ("r", "alpha", "a", "b")}
                gr = {k: v for k, v in res["params"].items() if k in ("p", "q", "v")}
                ev = evaluate(name, params_dataset("bgnbd", pr, segs),
                              params_dataset("gamma_gamma", gr, segs), {
                                  "family": "peer", "fit_s": res["fit_s"],
                                  "wall_s": res["wall_s"], "peak_mb": res["peak_tree_rss_mb"],
                                  "estimates": {k: float(np.median(v))
                                                for k, v in res["params"].items()},
                              })  # fmt: skip
                # The peer's own predictions replace ours-from-its-parameters.
                rows[name].update(point_row(rfm, p, sp))
                if ev is None:  # point metrics from the peer; no intervals or density
                    rows[name]["interval_error"] = rows[name].pop("error")
                else:
                    ours_p = ev.predicted["predicted_purchases"].to_numpy()
                    rows[name]["formula_check_max_abs_diff_purchases"] = float(
                        np.max(np.abs(ours_p - p))
                    )
                seg_pred[name] = segment_predictions(rfm, p)

    info["load_average_end"] = list(os.getloadavg())
    payload = {
        "benchmark": "holdout_accuracy",
        **info,
        "settings": {"dataset": args.dataset, "sampler": sampler, "draws": args.draws,
                     "tune": args.tune, "chains": args.chains, "seed": args.seed,
                     "sim_draws": args.sim_draws, "poolings": poolings, "pareto": pareto,
                     "pareto_poolings": args.pareto_poolings, "pareto_draws": args.pareto_draws,
                     "peers": peers, "peer_method": peer_method, "smoke": args.smoke},
        "data": {"customers": rfm.n_customers, "segments": rfm.segment_sizes().to_dict(),
                 "holdout_weeks": float(rfm.holdout_length),
                 "holdout_purchases": int(rfm.holdout_frequency.sum()),
                 "holdout_spend": float(rfm.holdout_spend.sum()),
                 "holdout_purchases_by_segment": segment_predictions(
                     rfm, rfm.holdout_frequency.astype(float)),
                 "quarter_retention": ret},
        "rows": rows,
        "segment_predicted_purchases": seg_pred,
        "peers": peer_info,
        "total_seconds": time.perf_counter() - t_start,
    }  # fmt: skip
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{tag}.json").write_text(json.dumps(payload, indent=2, default=float))
    png = args.out_dir / f"{tag}.png"
    figure(payload, png)
    (args.out_dir / f"{tag}.md").write_text(markdown(payload, png.name))
    log(f"wrote {args.out_dir / tag}.json/.md/.png")
    return 0


# --------------------------------------------------------------------------- reporting
def _cov(row: dict, q: str) -> str:
    c = row.get("coverage")
    return "-" if not c else "/".join(f"{100 * c[q][str(p)]:.0f}" for p in PROBS)


def table_rows(payload: dict) -> tuple[list[str], list[list]]:
    header = ["method", "fit s", "peak MB", "purchases MAE", "RMSE", "MSLE", "BIAS",
              "predicted total", "spend MAE", "RMSE", "MSLE", "BIAS", "predicted $",
              "cover. purch. 50/80/95%", "cover. spend 50/80/95%", "LPD"]  # fmt: skip
    rows = []
    for name, r in payload["rows"].items():
        if "error" in r:
            rows.append([name, r["error"]] + ["-"] * (len(header) - 2))
            continue
        mp, ms = r["metrics"]["purchases"], r["metrics"]["spend"]
        rows.append([
            name, r.get("fit_s"), r.get("peak_mb"),
            mp["MAE"], mp["RMSE"], mp["MSLE"], f"{mp['BIAS']:+.1%}",
            f"{mp['predicted_total']:,.0f}",
            ms["MAE"], ms["RMSE"], ms["MSLE"], f"{ms['BIAS']:+.1%}",
            f"{ms['predicted_total']:,.0f}",
            _cov(r, "purchases"), _cov(r, "spend"),
            None if r.get("lpd") is None else f"{r['lpd']:.1f}",
        ])  # fmt: skip
    return header, rows


def markdown(p: dict, png: str) -> str:
    s, d = p["settings"], p["data"]
    nuts = (
        "MAP (smoke: no NUTS)"
        if s["sampler"] == "map"
        else f"NUTS ({s['sampler']}) {s['chains']} chains x {s['draws']} draws, tune {s['tune']}"
    )
    lines = [
        f"# Holdout accuracy on CDNOW ({s['dataset']}, 39/39-week split)", "",
        machine_markdown(p),
        f"- data: {d['customers']:,} customers {d['segments']} (acquisition month); "
        f"actual holdout: {d['holdout_purchases']:,} repeat purchases, "
        f"${d['holdout_spend']:,.2f} over {d['holdout_weeks']:g} weeks",
        f"- Bayesian fits: {nuts}"
        + (
            f" (Pareto/NBD: {s['pareto_draws']} draws, tune {s['pareto_draws']})"
            if s.get("pareto_draws") and s["sampler"] != "map"
            else ""
        )
        + f", seed {s['seed']}; {s['sim_draws']} posterior draws per "
        "interval simulation / LPD; peers: "
        + (", ".join(s["peers"]) or "none")
        + (f" (pymc-marketing {s['peer_method']}, 2 parallel chains)"
           if "pymc_marketing" in s["peers"] else ""),
        f"- total {p['total_seconds']:.0f} s"
        + (f" at niceness {p['niceness']}" if p.get("niceness") else ""), "",
        "## One table", "",
    ]  # fmt: skip
    header, rows = table_rows(p)
    lines.append(md_table(header, rows))
    for n, r in p["rows"].items():
        if r.get("interval_error"):
            lines.append(f"- {n}: no coverage / LPD ({r['interval_error']})")
        if r.get("converged") is False:
            lines.append(f"- {n}: the optimiser reported no convergence")
        if r.get("gamma_gamma_excluded_zero_spend"):
            lines.append(
                f"- {n}: Gamma-Gamma fitted without the "
                f"{r['gamma_gamma_excluded_zero_spend']} repeat buyer(s) whose mean "
                "repeat spend is $0 (as build_gamma_gamma and the peers do)"
            )
    lines.append("")
    lines += [
        "BIAS = sum(predicted) / sum(actual) - 1. Coverage: share of customers whose holdout "
        "value lies inside their central posterior predictive interval (counts are discrete "
        "and mostly 0, so closed intervals over-cover even when calibrated). LPD: summed log "
        "predictive density of the holdout purchase counts. `-`: the method gives no "
        "interval or density. MLE and lifetimes: intervals and LPD with the estimate plugged "
        "in (no parameter uncertainty). Peers: point metrics from the peer's own "
        "predictions; coverage and LPD computed by bayesclv from the peer's parameters. fit s: "
        "purchase + spend model, wall seconds, in this process for bayesclv (build + compile "
        "+ sampling) and inside the child process for peers (imports excluded); peak MB: "
        "summed RSS of the process tree during the fit (ours: includes this benchmark "
        "process with its data and earlier fits; peers: the whole child process).", "",
        "## Classic formulas: what they predict", "",
        f"Quarter-to-quarter retention in the calibration period: "
        f"{d['quarter_retention']['active_q2_and_q3']:,} of "
        f"{d['quarter_retention']['active_q2']:,} customers active in Apr-Jun 1997 were "
        f"active again in Jul-Sep 1997 (r = {d['quarter_retention']['retention']:.3f}).", "",
    ]  # fmt: skip
    for name, r in p["rows"].items():
        if r.get("family") == "classic":
            lines.append(f"- **{name}**: {r['what']}")
    conv = [(n, r) for n, r in p["rows"].items() if "convergence" in r]
    if conv:
        lines += ["", "## Convergence of the Bayesian fits", ""]
        crow = []
        for n, r in conv:
            for part in ("purchase", "spend"):
                c = r["convergence"][part]
                crow.append([n, part, r[f"fit_s_{part}"], c["verdict"], c["rhat_max"],
                             c["ess_bulk_min"], c["divergences"]])  # fmt: skip
        lines.append(md_table(["method", "model", "fit s", "verdict", "R-hat max",
                               "ESS bulk min", "divergences"], crow))  # fmt: skip
    peers = p.get("peers") or {}
    if peers:
        lines += ["", "## Peers (child processes)", ""]
        prow = [
            [
                k,
                v.get("wall_s"),
                v.get("fit_s"),
                v.get("predict_s"),
                v.get("peak_tree_rss_mb"),
                v.get("error", "ok"),
            ]
            for k, v in peers.items()
        ]
        lines.append(md_table(["peer", "process wall s (incl. imports)", "fit s",
                               "predict s", "peak tree RSS MB", "status"], prow))  # fmt: skip
        checks = {n: r["formula_check_max_abs_diff_purchases"] for n, r in p["rows"].items()
                  if "formula_check_max_abs_diff_purchases" in r}  # fmt: skip
        if checks:
            lines.append(
                "\nMax |bayesclv prediction from the peer's parameters - the peer's "
                "own prediction| of holdout purchases: "
                + "; ".join(f"{n}: {v:.2g}" for n, v in checks.items())
                + " (pymc-marketing: bayesclv uses a thinned subset of draws)."
            )
    seg = p["segment_predicted_purchases"]
    segs = list(d["holdout_purchases_by_segment"])
    lines += ["", "## Holdout purchases by acquisition month (predicted totals)", ""]
    srow = [["actual", *[d["holdout_purchases_by_segment"][k] for k in segs]]]
    srow += [[n, *[v.get(k) for k in segs]] for n, v in seg.items()]
    lines.append(md_table(["method", *segs], srow))
    lines += ["", f"![comparison]({png})", ""]
    return "\n".join(lines)


def figure(p: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    ok = {n: r for n, r in p["rows"].items() if "metrics" in r}
    names = list(ok)
    y = np.arange(len(names))
    color = {"Bayesian": "C0", "MLE": "C1", "published": "C7", "classic": "C3", "peer": "C2"}
    cols = [color.get(r.get("family"), "k") for r in ok.values()]
    fig, axes = plt.subplots(1, 4, figsize=(20, 0.42 * len(names) + 2), sharey=True,
                             layout="constrained")  # fmt: skip
    panels = [("purchases", "MAE", "holdout purchases: MAE"),
              ("spend", "MAE", "holdout spend: MAE ($)"),
              (None, "BIAS", "BIAS: purchases (bars), spend (dots)")]  # fmt: skip
    for ax, (q, m, title) in zip(axes[:3], panels, strict=True):
        if q is None:
            ax.barh(y, [100 * r["metrics"]["purchases"]["BIAS"] for r in ok.values()],
                    color=cols)  # fmt: skip
            ax.plot([100 * r["metrics"]["spend"]["BIAS"] for r in ok.values()], y, "ko", ms=4)
            ax.axvline(0, color="k", lw=0.8)
            ax.set_xlabel("%")
        else:
            ax.barh(y, [r["metrics"][q][m] for r in ok.values()], color=cols)
        ax.set_title(title)
    fit_s = [r.get("fit_s") or np.nan for r in ok.values()]
    axes[3].barh(y, fit_s, color=cols)
    axes[3].set_xscale("log")
    axes[3].set_title("fit wall seconds (log)")
    axes[0].set_yticks(y, names)
    axes[0].invert_yaxis()
    s = p["settings"]
    fig.suptitle(f"CDNOW {s['dataset']} ({p['data']['customers']:,} customers), "
                 f"39-week holdout: actual {p['data']['holdout_purchases']:,} purchases, "
                 f"${p['data']['holdout_spend']:,.0f}")  # fmt: skip
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
