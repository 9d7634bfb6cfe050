"""Coverage of the true segment parameters by partial-pooling posterior intervals.

Simulates ``--datasets`` data sets, each with 4 segments of very unequal size whose
BG/NBD parameters are drawn from a known population, fits the partially pooled BG/NBD
with NUTS, and counts how often the 94% (and 50%, 80%) equal-tailed intervals of each
segment's mean purchase rate ``r/alpha`` and mean dropout probability ``a/(a+b)`` contain
the truth. Target: 94% intervals cover 91-97%.

    .venv/bin/python benchmarks/recovery_coverage.py --datasets 50          # the full study
    .venv/bin/python benchmarks/recovery_coverage.py --smoke                # CI-sized

Writes benchmarks/results/recovery_coverage[_smoke].{json,md}.
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

RESULTS = Path(__file__).resolve().parent / "results"


def simulate(seed: int, sizes: dict[str, int]):
    from bayesclv.data import RFMData
    from bayesclv.simulate import BGNBDParams, GammaGammaParams, simulate_customers

    rng = np.random.default_rng(seed)
    # Population on the sampled (unconstrained) scales, then one draw per segment.
    truth = {}
    for name in sizes:
        log_rate = rng.normal(np.log(0.06), 0.3)
        log_r = rng.normal(np.log(0.3), 0.3)
        logit_drop = rng.normal(np.log(0.25 / 0.75), 0.3)
        log_kappa = rng.normal(np.log(3.0), 0.3)
        r = np.exp(log_r)
        kappa = np.exp(log_kappa)
        phi = 1 / (1 + np.exp(-logit_drop))
        truth[name] = BGNBDParams(
            r=r, alpha=r / np.exp(log_rate), a=phi * kappa, b=(1 - phi) * kappa
        )
    n = sum(sizes.values())
    T = rng.integers(26 * 7, 52 * 7, n) / 7.0
    sim = simulate_customers(
        truth, sizes, T=T, spend=GammaGammaParams(6.0, 4.0, 15.0), random_seed=rng
    )
    rfm = sim.to_rfm()
    rfm = RFMData(
        customer_id=rfm.customer_id,
        frequency=rfm.frequency,
        recency=np.floor(rfm.recency * 7.0) / 7.0,
        T=rfm.T,
        monetary_value=rfm.monetary_value,
        segment=rfm.segment,
        segment_names=rfm.segment_names,
        time_unit="week",
    )
    return rfm, truth


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", type=int, default=50)
    ap.add_argument("--sizes", default="50,500,5000,20000")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--sampler", default="nutpie")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.datasets, args.sizes, args.draws, args.tune, args.chains = (
            2,
            "30,300,1000,3000",
            200,
            300,
            2,
        )

    import arviz as az
    import pymc
    import pytensor

    from bayesclv.fit import fit, posterior_params
    from bayesclv.models import build_bgnbd

    sizes_list = [int(s) for s in args.sizes.split(",")]
    sizes = {f"seg{i}_{n}": n for i, n in enumerate(sizes_list)}
    probs = (0.5, 0.8, 0.94)
    hits = {p: {"rate": [], "dropout": []} for p in probs}
    per_size = {name: {p: [] for p in probs} for name in sizes}
    runs = []
    for d in range(args.datasets):
        rfm, truth = simulate(args.seed + d, sizes)
        t0 = time.perf_counter()
        idata = fit(
            build_bgnbd(rfm, pooling="partial"),
            sampler=args.sampler,
            draws=args.draws,
            tune=args.tune,
            chains=args.chains,
            random_seed=args.seed + d,
            progressbar=False,
        )
        wall = time.perf_counter() - t0
        params = posterior_params(idata)
        rate = params["r"] / params["alpha"]
        drop = params["a"] / (params["a"] + params["b"])
        div = int(idata.sample_stats["diverging"].sum())
        rhat = float(az.rhat(params).to_array().max())
        for name, tr in truth.items():
            for label, draws, true in (
                ("rate", rate.sel(segment=name).values.ravel(), tr.r / tr.alpha),
                ("dropout", drop.sel(segment=name).values.ravel(), tr.a / (tr.a + tr.b)),
            ):
                for p in probs:
                    lo, hi = np.quantile(draws, [(1 - p) / 2, (1 + p) / 2])
                    inside = bool(lo <= true <= hi)
                    hits[p][label].append(inside)
                    per_size[name][p].append(inside)
        runs.append({"dataset": d, "seconds": round(wall, 2), "divergences": div, "rhat_max": rhat})
        print(f"dataset {d}: {wall:.1f} s, divergences {div}, R-hat max {rhat:.3f}", flush=True)

    coverage = {str(p): {k: float(np.mean(v)) for k, v in hits[p].items()} for p in probs}
    coverage_all = {str(p): float(np.mean(hits[p]["rate"] + hits[p]["dropout"])) for p in probs}
    by_size = {
        name: {str(p): float(np.mean(v)) for p, v in d.items()} for name, d in per_size.items()
    }
    n_int = len(hits[0.94]["rate"]) + len(hits[0.94]["dropout"])
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "pymc": pymc.__version__,
        "pytensor": pytensor.__version__,
        "arviz": az.__version__,
        "numpy": np.__version__,
        "settings": vars(args),
        "coverage_by_quantity": coverage,
        "coverage_all": coverage_all,
        "coverage_by_segment": by_size,
        "n_intervals_94": n_int,
        "binomial_se_94": float(np.sqrt(0.94 * 0.06 / n_int)),
        "runs": runs,
        "median_seconds": float(np.median([r["seconds"] for r in runs])),
        "total_divergences": int(sum(r["divergences"] for r in runs)),
    }
    RESULTS.mkdir(exist_ok=True)
    stem = "recovery_coverage_smoke" if args.smoke else "recovery_coverage"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Recovery coverage ({result['date']})",
        "",
        f"Command: `{result['command']}`  ",
        f"CPUs: {result['cpu_count']}, load {result['load_average']}",
        f"Data sets: {args.datasets}, segment sizes {sizes_list}, {args.chains} chains x "
        f"{args.draws} draws ({args.tune} tune), sampler {args.sampler}",
        "",
        "| interval | rate r/alpha | dropout a/(a+b) | all |",
        "| --- | --- | --- | --- |",
    ]
    for p in probs:
        c = coverage[str(p)]
        lines.append(
            f"| {p:.0%} | {c['rate']:.3f} | {c['dropout']:.3f} | {coverage_all[str(p)]:.3f} |"
        )
    lines += [
        "",
        f"{n_int} intervals at 94% (binomial SE {result['binomial_se_94']:.3f}); "
        f"median fit {result['median_seconds']:.1f} s; divergences in all fits "
        f"{result['total_divergences']}.",
        "",
        "| segment | 50% | 80% | 94% |",
        "| --- | --- | --- | --- |",
    ]
    for name, d in by_size.items():
        lines.append(f"| {name} | " + " | ".join(f"{d[str(p)]:.3f}" for p in probs) + " |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
