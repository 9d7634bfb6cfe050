"""Hierarchical BG/NBD + Gamma-Gamma NUTS on simulated customers, on a GPU through JAX.

Runs on a machine where JAX sees a GPU (the project's lent device); the PyMC model is the
one `bayesclv.models.build_bgnbd` builds, compiled to JAX by PyTensor and sampled by
numpyro (`fit(..., sampler="numpyro")`). Recency and T are recorded in whole weeks,
as the issue's scale figures assume, so identical customers compress.

    python benchmarks/bench_gpu.py --n-customers 100000,1000000 --out DIR

Writes DIR/bench_gpu.json and DIR/bench_gpu.md (copied to benchmarks/results/).
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


def simulate(n: int, n_segments: int, seed: int):
    from bayesclv.data import RFMData
    from bayesclv.simulate import BGNBDParams, GammaGammaParams, simulate_customers

    rng = np.random.default_rng(seed)
    names = [f"s{j}" for j in range(n_segments)]
    shares = rng.dirichlet(np.full(n_segments, 2.0))
    sizes = dict(zip(names, np.maximum(1, np.round(shares * n)).astype(int), strict=True))
    params = {}
    for name in names:
        r = float(np.exp(rng.normal(np.log(0.3), 0.2)))
        rate = float(np.exp(rng.normal(np.log(0.06), 0.3)))
        phi = float(1 / (1 + np.exp(-rng.normal(np.log(0.25 / 0.75), 0.3))))
        kappa = float(np.exp(rng.normal(np.log(3.0), 0.2)))
        params[name] = BGNBDParams(r=r, alpha=r / rate, a=phi * kappa, b=(1 - phi) * kappa)
    total = int(sum(sizes.values()))
    T = rng.integers(26, 79, total).astype(float)
    sim = simulate_customers(params, sizes, T=T, spend=GammaGammaParams(6.0, 4.0, 15.0),
                             random_seed=rng)
    rfm = sim.to_rfm()
    return RFMData(
        customer_id=rfm.customer_id, frequency=rfm.frequency,
        recency=np.floor(rfm.recency), T=rfm.T, monetary_value=rfm.monetary_value,
        segment=rfm.segment, segment_names=rfm.segment_names, time_unit="week",
    ), params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-customers", default="100000,1000000")
    ap.add_argument("--segments", type=int, default=10)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--sampler", default="numpyro")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()

    import arviz as az
    import jax
    import pymc

    from bayesclv.diagnostics import convergence_report
    from bayesclv.fit import fit, posterior_params
    from bayesclv.models import build_bgnbd, build_gamma_gamma, model_spec

    rows = []
    for n in [int(v) for v in args.n_customers.split(",")]:
        rfm, truth = simulate(n, args.segments, args.seed)
        for name, builder in (("bgnbd", build_bgnbd), ("gamma_gamma", build_gamma_gamma)):
            t0 = time.perf_counter()
            model = builder(rfm, pooling="partial")
            idata = fit(model, sampler=args.sampler, draws=args.draws, tune=args.tune,
                        chains=args.chains, random_seed=args.seed, progressbar=False)
            seconds = time.perf_counter() - t0
            rep = convergence_report(idata)
            params = posterior_params(idata)
            row = {
                "n_customers": rfm.n_customers, "model": name,
                "distinct_rows": model_spec(model).n_rows, "seconds": round(seconds, 1),
                "timings": json.loads(idata.attrs["timings"]), "verdict": rep.verdict,
                "rhat_max": rep.to_dict().get("rhat_max"),
                "ess_bulk_min": rep.to_dict().get("ess_bulk_min"),
                "divergences": rep.to_dict().get("divergences"),
            }
            if name == "bgnbd":
                rate = (params["r"] / params["alpha"]).median(("chain", "draw")).values
                true = np.array([truth[s].r / truth[s].alpha for s in rfm.segment_names])
                row["max_rel_error_rate"] = float(np.max(np.abs(rate / true - 1)))
                lo = (params["r"] / params["alpha"]).quantile(0.03, ("chain", "draw")).values
                hi = (params["r"] / params["alpha"]).quantile(0.97, ("chain", "draw")).values
                row["rate_truth_inside_94"] = int(((lo <= true) & (true <= hi)).sum())
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": platform.platform(), "cpu_count": os.cpu_count(),
        "jax_backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "versions": {"python": platform.python_version(), "pymc": pymc.__version__,
                     "jax": jax.__version__, "arviz": az.__version__, "numpy": np.__version__},
        "settings": vars(args), "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gpu.json").write_text(json.dumps(result, indent=2, default=str))
    md = [f"# GPU NUTS benchmark ({result['date']})", "",
          f"- command: `{result['command']}`", f"- devices: {result['devices']}",
          f"- versions: {result['versions']}",
          f"- {args.chains} chains x {args.draws} draws ({args.tune} tune), sampler "
          f"{args.sampler}, partial pooling over {args.segments} segments", "",
          "| customers | model | distinct rows | seconds | verdict | R-hat max | ESS min | "
          "divergences | rate error max | truth in 94% |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        md.append(f"| {r['n_customers']:,} | {r['model']} | {r['distinct_rows']:,} | "
                  f"{r['seconds']} | {r['verdict']} | {r['rhat_max']} | {r['ess_bulk_min']} | "
                  f"{r['divergences']} | {r.get('max_rel_error_rate', '')} | "
                  f"{r.get('rate_truth_inside_94', '')} |")
    (out / "bench_gpu.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
