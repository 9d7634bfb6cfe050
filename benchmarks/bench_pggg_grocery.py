"""Pareto/GGG (customer-level HB) on the grocery log vs the published P/GGG column.

    .venv/bin/python benchmarks/bench_pggg_grocery.py                    # 2 x 500 (+500)
    .venv/bin/python benchmarks/bench_pggg_grocery.py --chains 4 --draws 1000 --tune 1000

Data: ``../shared/data/grocery/grocery-elog.csv.gz`` with the split of its README
(calibration to 2006-12-31, holdout to 2007-12-31, weeks); skipped with a message when
absent. Forecast per customer: the posterior mean over draws of
``expected_holdout_purchases`` (P(alive) in closed form times one simulated future given
alive per draw, seed ``--seed``), as the paper's posterior means of simulated holdout
purchases. Published (Platzer & Reutterer 2016 / Reutterer, Platzer & Schröder 2021,
``results/emp-stats.csv``): MAE 1.389, RMSE 3.155, BIAS +0.127.
Writes benchmarks/results/pggg_grocery.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
PUBLISHED = {"MAE": 1.389, "RMSE": 3.155, "BIAS": 0.127}


def load_grocery():
    """The README's split, weekly, with ``litt``; ``None`` when the log is absent."""
    from bayesclv.data import rfm_summary

    path = SHARED / "grocery" / "grocery-elog.csv.gz"
    if not path.exists():
        return None
    log = pd.read_csv(path)
    log["amount"] = 1.0  # no amounts in this log: purchase models only
    return rfm_summary(log, customer_col="cust", date_col="date", time_unit="week",
                       calibration_end="2006-12-31", observation_end="2007-12-31")  # fmt: skip


def accuracy(forecast: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """MAE, RMSE per customer and BIAS = sum(forecast) / sum(actual) - 1 (the README's)."""
    err = forecast - actual
    return {
        "MAE": float(np.mean(np.abs(err))),
        "RMSE": float(np.sqrt(np.mean(err**2))),
        "BIAS": float(forecast.sum() / actual.sum() - 1.0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="pggg_grocery", help="results file stem")
    args = ap.parse_args()

    rfm = load_grocery()
    if rfm is None:
        print(f"skipped: {SHARED / 'grocery' / 'grocery-elog.csv.gz'} is absent")
        return
    import arviz as az
    import pymc

    from bayesclv.diagnostics import convergence_report
    from bayesclv.fit import fit
    from bayesclv.models.pggg import (
        build_pareto_ggg,
        expected_holdout_purchases,
        pggg_p_alive,
        pggg_summary,
        posterior_latents,
    )

    t0 = time.perf_counter()
    idata = fit(build_pareto_ggg(rfm), sampler="nutpie", draws=args.draws, tune=args.tune,
                chains=args.chains, random_seed=args.seed, progressbar=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    lam, k, mu = posterior_latents(idata)
    x, t_x, T = rfm.frequency.astype(float), rfm.recency, rfm.T
    t1 = time.perf_counter()
    per_draw = expected_holdout_purchases(
        lam, k, mu, x, t_x, T, rfm.holdout_length, random_seed=args.seed
    )
    predict_s = time.perf_counter() - t1
    forecast = per_draw.mean(axis=(0, 1))
    actual = np.asarray(rfm.holdout_frequency, dtype=float)
    ours = accuracy(forecast, actual)
    p_alive = pggg_p_alive(lam, k, mu, x, t_x, T).mean(axis=(0, 1))
    table = pggg_summary(idata)
    watched = ["mean_lambda", "mean_k", "mean_mu", "r", "t", "s"]
    report = convergence_report(idata, var_names=watched)
    k_median = float(np.median(idata.posterior["k"].values))
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "pymc": pymc.__version__,
        "arviz": az.__version__,
        "settings": vars(args),
        "n_customers": int(rfm.n_customers),
        "holdout_weeks": float(rfm.holdout_length),
        "fit_seconds": seconds,
        "predict_seconds": predict_s,
        "timings": json.loads(idata.attrs["timings"]),
        "divergences": int(idata.sample_stats["diverging"].sum()),
        "convergence": report.to_dict(),
        "accuracy": ours,
        "published_pggg": PUBLISHED,
        "sum_forecast": float(forecast.sum()),
        "sum_actual": float(actual.sum()),
        "mean_p_alive": float(p_alive.mean()),
        "median_customer_k": k_median,
        "population": table.to_dict(orient="records"),
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.out}.json").write_text(json.dumps(result, indent=2, default=str))
    md = [
        "# Pareto/GGG (customer-level HB) on grocery vs the published P/GGG column",
        "",
        f"- date {result['date']}, CPUs {result['cpu_count']}, load {result['load_average']}",
        f"- command: `{result['command']}`",
        f"- nutpie, {args.chains} chains x {args.draws} draws ({args.tune} tune), seed "
        f"{args.seed}: fit {seconds:.0f} s wall (compile "
        f"{result['timings'].get('compile_s', float('nan')):.0f} s), prediction "
        f"{predict_s:.1f} s; divergences {result['divergences']}, R-hat max "
        f"{report.rhat_max:.3f} ({report.rhat_worst}), verdict {report.verdict}",
        f"- {rfm.n_customers} customers, holdout {rfm.holdout_length:.2f} weeks; sum of "
        f"forecasts {forecast.sum():.1f} vs actual {actual.sum():.0f}; mean P(alive) "
        f"{p_alive.mean():.3f}; median customer k {k_median:.2f}",
        "",
        "| | ours | published P/GGG |",
        "| --- | --- | --- |",
    ]
    for name, fmt in (("MAE", ".3f"), ("RMSE", ".3f"), ("BIAS", "+.3f")):
        md.append(f"| {name} | {ours[name]:{fmt}} | {PUBLISHED[name]:{fmt}} |")
    md += ["", "| quantity | median | 94% interval |", "| --- | --- | --- |"]
    for row in table.itertuples():
        interval = f"[{row.lower_94:.4g}, {row.upper_94:.4g}]"
        md.append(f"| {row.quantity} | {row.median:.4g} | {interval} |")
    (out / f"{args.out}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
