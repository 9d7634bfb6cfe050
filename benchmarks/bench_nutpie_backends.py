"""nutpie's numba backend vs its JAX backend: compile time vs sampling time.

CDNOW master (23,570 customers), partial pooling over the 3 acquisition months, BG/NBD
(or Gamma-Gamma), the builder's start, 4 chains x ``--draws`` (+ as many tuning), two
parallel chains, low-rank mass matrix, target_accept 0.9: what ``fit(sampler="nutpie")``
does, with the backend switched. Prints one line per backend.

    .venv/bin/python benchmarks/bench_nutpie_backends.py --model bgnbd
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        .venv/bin/python benchmarks/bench_nutpie_backends.py --backends jax

Needs the ``nutpie`` and ``jax`` extras.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    import arviz as az
    import nutpie

    from bayesclv.datasets import load_cdnow_rfm
    from bayesclv.fit import _jittered_starts
    from bayesclv.models import build_bgnbd, build_gamma_gamma, model_spec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("bgnbd", "gamma_gamma"), default="bgnbd")
    ap.add_argument("--backends", default="numba,jax")
    ap.add_argument("--draws", type=int, default=1000)
    args = ap.parse_args()
    rfm = load_cdnow_rfm("master")
    builder = build_bgnbd if args.model == "bgnbd" else build_gamma_gamma
    for backend in args.backends.split(","):
        model = builder(rfm, pooling="partial")
        starts = _jittered_starts(model, model_spec(model).extra["start"], 4, 1)
        kw = {} if backend == "numba" else {"backend": "jax", "gradient_backend": "jax"}
        t = time.perf_counter()
        compiled = nutpie.compile_pymc_model(
            model, initial_points=starts[0], jitter_rvs=set(), **kw
        )
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        idata = nutpie.sample(compiled, draws=args.draws, tune=args.draws, chains=4, cores=2,
                              seed=1, progress_bar=False, low_rank_modified_mass_matrix=True,
                              target_accept=0.9)  # fmt: skip
        sample_s = time.perf_counter() - t
        ss = idata.sample_stats
        paper = ("r", "alpha", "a", "b", "p", "q", "v")
        names = [v for v in idata.posterior.data_vars if v in paper]
        summary = az.summary(idata, var_names=names)
        print(
            f"{backend}: compile {compile_s:.1f} s, sampling {sample_s:.1f} s, "
            f"{float(ss.n_steps.mean()):.2f} steps/draw, {int(ss.diverging.sum())} divergences, "
            f"min bulk ESS {summary.ess_bulk.min():.0f}, max R-hat {summary.r_hat.max():.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
