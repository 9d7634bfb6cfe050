"""How well complete-pooling Pareto/NBD NUTS mixes on the CDNOW sample, over several seeds.

For each prior on the dropout shape ``s`` (``--priors``):

- ``cv``: the default, ``CVPrior(2)`` (HalfNormal on the coefficient of variation
  ``1/sqrt(s)``);
- ``normal``: the previous default, ``NormalPrior(0, 2.5)`` on ``log s``;

the model is built and compiled once (nutpie, ``--backend``), then sampled with each seed
(4 chains x 1000 draws, 1000 tune, target_accept 0.9, low-rank mass matrix, chains started
at the NumPy posterior mode: ``fit``'s defaults with ``sampler="nutpie"``). Per seed:
sampling seconds, min bulk and tail ESS and max R-hat over ``r, alpha, s, beta``,
divergences, leapfrog steps per draw, and the 97% and 99.9% quantiles of ``s`` (how far
the tail toward equal dropout rates reaches).

    .venv/bin/python benchmarks/bench_pareto_mixing.py                 # 6 seeds, both priors
    .venv/bin/python benchmarks/bench_pareto_mixing.py --seeds 1,2 --priors cv

Writes benchmarks/results/pareto_mixing.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, machine_markdown, md_table, write_results  # noqa: E402

PARAMS = ("r", "alpha", "s", "beta")


def run_prior(name: str, seeds: list[int], backend: str) -> list[dict]:
    import arviz as az
    import numpy as np
    import nutpie

    from bayesclv.datasets import load_cdnow_rfm
    from bayesclv.fit import _jittered_starts
    from bayesclv.models import build_pareto_nbd
    from bayesclv.models._common import model_spec
    from bayesclv.priors import NormalPrior, ParetoNBDPriors

    priors = ParetoNBDPriors() if name == "cv" else ParetoNBDPriors(log_s=NormalPrior(0.0, 2.5))
    model = build_pareto_nbd(load_cdnow_rfm("sample"), priors, pooling="complete")
    start = _jittered_starts(model, model_spec(model).extra["start"], 4, 1)[0]
    kw = {"backend": "jax", "gradient_backend": "jax"} if backend == "jax" else {}
    t0 = time.perf_counter()
    compiled = nutpie.compile_pymc_model(model, initial_points=start, jitter_rvs=set(), **kw)
    compile_s = time.perf_counter() - t0
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        idata = nutpie.sample(compiled, draws=1000, tune=1000, chains=4, cores=2, seed=seed,
                              target_accept=0.9, progress_bar=False, save_warmup=False,
                              low_rank_modified_mass_matrix=True)  # fmt: skip
        sec = time.perf_counter() - t0
        summ = az.summary(idata, var_names=list(PARAMS), round_to="none")
        st = idata.sample_stats
        s_draws = idata.posterior["s"].values.ravel()
        rows.append({
            "prior": name, "seed": seed, "compile_s": compile_s, "sample_s": sec,
            "ess_bulk_min": float(summ["ess_bulk"].min()),
            "ess_tail_min": float(summ["ess_tail"].min()),
            "rhat_max": float(summ["r_hat"].max()),
            "divergences": int(st["diverging"].sum()),
            "steps_per_draw": float(st["n_steps"].mean()),
            "s_q97": float(np.quantile(s_draws, 0.97)),
            "s_q999": float(np.quantile(s_draws, 0.999)),
            "s_median": float(np.median(s_draws)),
        })  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", default="1,2,3,4,5,6")
    ap.add_argument("--priors", default="cv,normal")
    ap.add_argument("--backend", default="numba", choices=("numba", "jax"))
    args = ap.parse_args()
    info = machine_info(peers=False)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [r for p in args.priors.split(",") for r in run_prior(p, seeds, args.backend)]
    info["load_average_end"] = list(os.getloadavg())
    md = [
        "# Pareto/NBD NUTS mixing on the CDNOW sample, by prior on the dropout shape\n\n",
        machine_markdown(info),
        f"- nutpie ({args.backend}), 4 chains x 1000 draws (1000 tune), target_accept 0.9, "
        f"low-rank mass matrix, complete pooling, other priors the defaults\n\n",
    ]
    md.append(md_table(
        ["prior on s", "seed", "sample s", "ESS bulk min", "ESS tail min", "R-hat max",
         "divergences", "steps/draw", "s median", "s 97%", "s 99.9%"],
        [[r["prior"], r["seed"], f"{r['sample_s']:.1f}", f"{r['ess_bulk_min']:.0f}",
          f"{r['ess_tail_min']:.0f}", f"{r['rhat_max']:.4f}", r["divergences"],
          f"{r['steps_per_draw']:.2f}", f"{r['s_median']:.3f}", f"{r['s_q97']:.2f}",
          f"{r['s_q999']:.1f}"] for r in rows],
    ))  # fmt: skip
    for p in dict.fromkeys(r["prior"] for r in rows):
        sub = [r for r in rows if r["prior"] == p]
        below = sum(r["ess_tail_min"] < 400 or r["ess_bulk_min"] < 400 for r in sub)
        md.append(
            f"\n- {p}: compile {sub[0]['compile_s']:.1f} s; worst seed ESS bulk "
            f"{min(r['ess_bulk_min'] for r in sub):.0f}, tail "
            f"{min(r['ess_tail_min'] for r in sub):.0f}; R-hat max "
            f"{max(r['rhat_max'] for r in sub):.4f}; divergences "
            f"{sum(r['divergences'] for r in sub)}; seeds with an ESS below 400: "
            f"{below} of {len(sub)}\n"
        )
    write_results("pareto_mixing", {"machine": info, "rows": rows}, "".join(md))


if __name__ == "__main__":
    main()
