"""Abe (2009) hierarchical Bayes Pareto/NBD on the CDNOW sample vs BTYDplus's figures.

    .venv/bin/python benchmarks/abe_cdnow.py                  # fit's defaults: 4 x 5000 (+1000)
    .venv/bin/python benchmarks/abe_cdnow.py --draws 1000 --seed 2 --out abe_cdnow_1000
    .venv/bin/python benchmarks/abe_cdnow.py --parameterization noncentered  # the old coordinates

Writes benchmarks/results/abe_cdnow.{json,md}. BTYDplus's reproduction (weeks): median
log-lambda mean -3.54, log-mu mean -3.59, var(log lambda) 1.34, cov 0.13, var(log mu) 2.62.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

BTYDPLUS = {
    "log_lambda_mean": -3.54,
    "log_mu_mean": -3.59,
    "var_log_lambda": 1.34,
    "cov_log": 0.13,
    "var_log_mu": 2.62,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--draws", type=int, default=None, help="default: fit's (the builder's)")
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--sampler", default="nutpie")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--parameterization", default="auto", choices=("auto", "noncentered"))
    ap.add_argument("--out", default="abe_cdnow", help="results file stem")
    args = ap.parse_args()

    import arviz as az
    import pymc

    from bayesclv.data import RFMData
    from bayesclv.datasets import load_cdnow_summary
    from bayesclv.diagnostics import convergence_report
    from bayesclv.fit import fit
    from bayesclv.models import abe_summary, build_abe_pareto_nbd

    rfm = RFMData.from_frame(load_cdnow_summary(), customer_id="customer_id")
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    model = build_abe_pareto_nbd(rfm, parameterization=args.parameterization)
    idata = fit(
        model,
        sampler=args.sampler,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        random_seed=args.seed,
        progressbar=False,
    )
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - cpu0
    args.draws = int(idata.attrs["draws"])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ess_bulk = float(az.ess(idata, var_names=["var_log_mu"], method="bulk")["var_log_mu"])
    ess_tail = float(az.ess(idata, var_names=["var_log_mu"], method="tail")["var_log_mu"])
    steps = (
        float(idata.sample_stats["n_steps"].mean())
        if "n_steps" in idata.sample_stats
        else float("nan")
    )
    table = abe_summary(idata)
    table["btydplus"] = table["quantity"].map(BTYDPLUS)
    table["btydplus_inside_94"] = (table["lower_94"] <= table["btydplus"]) & (
        table["btydplus"] <= table["upper_94"]
    )
    report = convergence_report(idata, var_names=list(BTYDPLUS))
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "pymc": pymc.__version__,
        "settings": vars(args),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_rss_mb": peak_mb,
        "leapfrog_steps_per_draw": steps,
        "var_log_mu_ess": {"bulk": ess_bulk, "tail": ess_tail},
        "var_log_mu_ess_per_second": {"bulk": ess_bulk / seconds, "tail": ess_tail / seconds},
        "convergence": report.to_dict(),
        "table": table.to_dict(orient="records"),
    }
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.out}.json").write_text(json.dumps(result, indent=2, default=str))
    md = [
        "# Abe (2009) HB Pareto/NBD on the CDNOW sample",
        "",
        f"- date {result['date']}, CPUs {result['cpu_count']}, load {result['load_average']}",
        f"- command: `{result['command']}`",
        f"- {args.sampler}, parameterization {args.parameterization!r}, {args.chains} chains "
        f"x {args.draws} draws ({args.tune} tune): {seconds:.0f} s wall "
        f"({cpu_seconds:.0f} s CPU), peak RSS {peak_mb:.0f} MB; convergence: {report.verdict}",
        f"- var_log_mu: bulk ESS {ess_bulk:.0f}, tail ESS {ess_tail:.0f} "
        f"({ess_bulk / seconds:.2f} and {ess_tail / seconds:.2f} per wall second); "
        f"{steps:.1f} leapfrog steps per draw; R-hat max {report.rhat_max:.3f} "
        f"({report.rhat_worst}), divergences {report.divergences}",
        "",
        "| quantity | median | 94% interval | BTYDplus | inside |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in table.itertuples():
        md.append(
            f"| {row.quantity} | {row.median:.3f} | [{row.lower_94:.3f}, {row.upper_94:.3f}] "
            f"| {row.btydplus} | {'yes' if row.btydplus_inside_94 else 'no'} |"
        )
    (out / f"{args.out}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
