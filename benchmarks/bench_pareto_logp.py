"""Pareto/NBD log-likelihood: cost per gradient and accuracy, previous quadrature vs current.

* Speed: a PyTensor function returning ``sum(w * logp)`` and its gradient in
  ``(r, alpha, s, beta)`` over the distinct customer rows (``w`` = customers per row),
  the quantity NUTS evaluates once per leapfrog step. Median over repeats, single thread,
  at the CDNOW maximum-likelihood point. Data: CDNOW (2,357 customers, 1,016 distinct
  rows) and 100,000 simulated Pareto/NBD customers. Also the compiled ``dlogp`` of
  ``build_pareto_nbd(cdnow, pooling="complete")`` (the package's own model).
* Accuracy: worst and median relative error of the log-likelihood
  (``|got - ref| / max(1, |ref|)``) against the oracles of
  ``tests/test_likelihood_oracles.py`` (``scipy.integrate.quad`` of the defining
  integral; the 2F1 closed form on the moderate grid), for several node counts.

"previous" is the quadrature this package used before (power-law change of variables
matched at ``t_x``, Gauss-Legendre on ``omega``), kept here verbatim for comparison.

Run: ``.venv/bin/python benchmarks/bench_pareto_logp.py`` (about 2 minutes on 2 cores);
writes ``benchmarks/results/bench_pareto_logp.{md,json}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import bayesclv.likelihoods.pareto_nbd as pnbd  # noqa: E402
from _common import RESULTS, machine_info  # noqa: E402

from bayesclv.ops import ops_for  # noqa: E402

CDNOW_MLE = (0.553, 10.578, 0.606, 11.669)


# --------------------------------------------------------------------------- previous
def previous_logp(r, alpha, s, beta, x, t_x, T, n_nodes=8, n_anchor_steps=2):
    """The package's Pareto/NBD quadrature before this benchmark (verbatim, n nodes)."""
    xi, w = np.polynomial.legendre.leggauss(n_nodes)
    u_nodes, log_w = (xi + 1.0) / 2.0, np.log(w / 2.0)
    m = ops_for(r, alpha, s, beta, x, t_x, T)
    rx = r + x
    log_const = m.gammaln(rx) - m.gammaln(r) + r * m.log(alpha) + s * m.log(beta)
    log_alive = -rx * m.log(alpha + T) - s * m.log(beta + T)
    k1 = rx + s
    k = k1 + 1.0
    gap = T - t_x
    has_gap = gap > 0
    gap_safe = m.where(has_gap, gap, 1.0)

    def slope(tau):
        return rx / (alpha + tau) + (s + 1.0) / (beta + tau)

    mc = k / slope(t_x)
    for _ in range(n_anchor_steps):
        step = m.where(mc < gap_safe, mc, gap_safe)
        mc = k / slope(t_x + step) - step
    log_mc = m.log(mc)
    log_omega_T = -k1 * m.log1p(gap_safe / mc)
    log_span = m.log(-m.expm1(log_omega_T))
    omega_T = m.exp(log_omega_T)
    e = m.expand
    log_omega = m.log(e(omega_T) + e(1.0 - omega_T) * u_nodes)
    shift = -log_omega / e(k1)
    tau = e(t_x) + e(mc) * m.expm1(shift)
    log_R = (
        -e(rx) * m.log(e(alpha) + tau)
        - e(s + 1.0) * m.log(e(beta) + tau)
        + e(k) * (e(log_mc) + shift)
    )
    log_quad = m.logsumexp(log_R + log_w, axis=-1)
    log_dropout = m.log(s) - k1 * log_mc - m.log(k1) + log_span + log_quad
    return log_const + log_alive + m.where(has_gap, m.softplus(log_dropout - log_alive), 0.0)


def current_logp(n_nodes):
    """The package's function with ``n_nodes`` nodes (module constants swapped in)."""

    def f(*args):
        saved = pnbd._U, pnbd._LOG_W
        xi, w = np.polynomial.legendre.leggauss(n_nodes)
        pnbd._U, pnbd._LOG_W = (xi + 1.0) / 2.0, np.log(w / 2.0)
        try:
            return pnbd.pareto_nbd_logp(*args)
        finally:
            pnbd._U, pnbd._LOG_W = saved

    return f


# --------------------------------------------------------------------------- data
def cdnow_rows():
    from bayesclv.data import RFMData
    from bayesclv.datasets import load_cdnow_summary
    from bayesclv.models._common import compress_rows

    rfm = RFMData.from_frame(load_cdnow_summary(), customer_id="customer_id")
    return compress_rows([rfm.frequency, rfm.recency, rfm.T]), rfm


def simulated_rows(n, seed=1):
    from bayesclv.models._common import compress_rows
    from bayesclv.simulate import ParetoNBDParams, simulate_rfm

    rfm = simulate_rfm(ParetoNBDParams(*CDNOW_MLE), n, T=(27.0, 39.0), random_seed=seed)
    return compress_rows([rfm.frequency, rfm.recency, rfm.T])


# --------------------------------------------------------------------------- speed
def grad_function(logp, rows, weights):
    import pytensor
    import pytensor.tensor as pt

    theta = [pt.dscalar(n) for n in ("r", "alpha", "s", "beta")]
    x, t_x, T = (pt.constant(np.asarray(c, dtype=np.float64)) for c in rows)
    total = pt.sum(pt.constant(weights) * logp(*theta, x, t_x, T))
    return pytensor.function(theta, [total, *pytensor.grad(total, theta)])


def median_times(fns, args, repeats, inner):
    """Median seconds per call of each function; calls interleaved so load hits all alike."""
    for fn in fns:
        fn(*args)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn(*args)
            ts.append((time.perf_counter() - t0) / inner)
    return [float(np.median(ts)) for ts in times]


def speed(datasets, repeats):
    impls = {
        "previous, 16 nodes": lambda *a: previous_logp(*a, n_nodes=16),
        "previous, 8 nodes": lambda *a: previous_logp(*a, n_nodes=8),
        f"current, {pnbd.N_NODES} nodes": pnbd.pareto_nbd_logp,
    }
    out = []
    for dname, (rows, weights) in datasets.items():
        inner = max(1, int(20_000 / len(weights)))
        fns = [grad_function(logp, rows, weights) for logp in impls.values()]
        times = median_times(fns, CDNOW_MLE, repeats, inner)
        for iname, fn, sec in zip(impls, fns, times, strict=True):
            value = float(fn(*CDNOW_MLE)[0])
            out.append(
                {
                    "data": dname,
                    "rows": len(weights),
                    "impl": iname,
                    "ms": 1e3 * sec,
                    "loglik": value,
                }
            )
            print(out[-1], flush=True)
    return out


def model_dlogp_ms(rfm, repeats):
    from bayesclv.models import build_pareto_nbd

    model = build_pareto_nbd(rfm, pooling="complete")
    g = model.compile_dlogp(jacobian=True)
    ip = model.initial_point()
    return 1e3 * median_times([g], (ip,), repeats, 50)[0]


# --------------------------------------------------------------------------- accuracy
def accuracy_grids():
    from test_likelihood_oracles import data_grid, oracle_pareto_hyp2f1, oracle_pareto_quad

    def rows(levels, data):
        x, t_x, T = data
        return np.array([(*th, x[i], t_x[i], T[i]) for th in levels for i in range(len(x))])

    x, t_x, T = data_grid(xs=(0, 1, 3, 10, 40), Ts=(1.0, 10.0, 39.0, 200.0))
    keep = (T - t_x) > 1e-3 * T
    shapes, scales = (0.2, 1.0, 5.0, 20.0), (5.0, 10.0, 20.0)
    grids = {
        "moderate (vs 2F1): r,s 0.2..20, alpha,beta 5..20, x<=40, T<=200": (
            rows(
                itertools.product(shapes, scales, shapes, scales),
                (x[keep], t_x[keep], T[keep]),
            ),
            oracle_pareto_hyp2f1,
        ),
        "realistic (vs quad): r,s 0.1..2, alpha,beta 1..50, x<=1000, T<=500": (
            rows(
                itertools.product((0.1, 0.5, 2.0), (1.0, 10.0, 50.0), repeat=2),
                data_grid(xs=(0, 1, 3, 10, 100, 1000), Ts=(0.5, 39.0, 500.0)),
            ),
            oracle_pareto_quad,
        ),
        "similar scales (vs quad): r,s 1e-3..1e3, alpha 5..10, beta 10, x<=1e4, T<=5000": (
            rows(
                itertools.product(
                    (1e-3, 0.5, 5.0, 1e3), (5.0, 10.0), (1e-3, 0.5, 5.0, 1e3), (10.0,)
                ),
                data_grid(Ts=(0.01, 50.0, 5000.0)),
            ),
            oracle_pareto_quad,
        ),
        "extreme (vs quad): all parameters 1e-3, 1, 1e3, x<=1e4, T<=5000": (
            rows(
                itertools.product((1e-3, 1.0, 1e3), repeat=4),
                data_grid(xs=(0, 10, 10_000), Ts=(0.01, 5000.0)),
            ),
            oracle_pareto_quad,
        ),
    }
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (g, oracle) in grids.items():
            out[name] = (g, np.array([oracle(*row) for row in g]))
    return out


def accuracy(grids, node_counts):
    impls = {}
    for n in node_counts:
        impls[f"previous, {n} nodes"] = lambda *a, n=n: previous_logp(*a, n_nodes=n)
    for n in node_counts:
        impls[f"current, {n} nodes"] = current_logp(n)
    out = []
    for gname, (g, ref) in grids.items():
        for iname, logp in impls.items():
            with np.errstate(all="ignore"):
                got = logp(*g.T)
            err = np.abs(got - ref) / np.maximum(1.0, np.abs(ref))
            err = np.where(np.isfinite(err), err, np.inf)
            i = int(np.argmax(err))
            out.append(
                {
                    "grid": gname,
                    "impl": iname,
                    "n": len(ref),
                    "worst": float(err.max()),
                    "median": float(np.median(err)),
                    "n_above_1e-8": int((err > 1e-8).sum()),
                    "worst_at": g[i].tolist(),
                }
            )
    return out


# --------------------------------------------------------------------------- report
def write(info, speed_rows, model_ms, acc_rows, name):
    RESULTS.mkdir(exist_ok=True)
    payload = {**info, "speed": speed_rows, "model_dlogp_ms": model_ms, "accuracy": acc_rows}
    payload["load_average_end"] = list(os.getloadavg())
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    v = info["versions_ours"]
    lines = [
        "# Pareto/NBD log-likelihood: cost per gradient and accuracy",
        f"- date: {info['date']}; CPUs: {info['cpu_count']}; platform: {info['platform']}",
        f"- load average at start: {info['load_average_start']}; at end: "
        f"{payload['load_average_end']} (machine shared with other jobs)",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- git commit {info['git_commit'][:10]} (+ uncommitted: "
        f"{', '.join(info['bayesclv_uncommitted']) or 'none'})",
        f"- command: `{info['command']}`",
        "",
        "## Cost of log-likelihood + gradient (one evaluation, median of repeats, 1 thread)",
        "",
        "| data | distinct rows | implementation | ms per logp+grad | sum log-lik |",
        "|---|---|---|---|---|",
    ]
    for r in speed_rows:
        lines.append(
            f"| {r['data']} | {r['rows']:,} | {r['impl']} | {r['ms']:.3f} | {r['loglik']:.6f} |"
        )
    lines += [
        "",
        f"`build_pareto_nbd(cdnow, pooling='complete').compile_dlogp(jacobian=True)` at the "
        f"initial point (current implementation): {model_ms:.3f} ms per call.",
        "",
        "## Accuracy of the log-likelihood",
        "",
        "Relative error `|got - ref| / max(1, |ref|)`; `n>1e-8`: rows above 1e-8.",
        "",
        "| grid | rows | implementation | worst | median | n>1e-8 "
        "| worst at (r, alpha, s, beta, x, t_x, T) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in acc_rows:
        at = ", ".join(f"{z:.4g}" for z in r["worst_at"])
        lines.append(
            f"| {r['grid']} | {r['n']} | {r['impl']} | {r['worst']:.1e} | {r['median']:.1e} "
            f"| {r['n_above_1e-8']} | {at} |"
        )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--simulated", type=int, default=100_000)
    ap.add_argument("--nodes", type=int, nargs="+", default=[4, 6, 8, 12, 16])
    ap.add_argument("--name", default="bench_pareto_logp")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    info = machine_info(peers=False)
    (cd_rows, cd_w), rfm = cdnow_rows()
    datasets = {"CDNOW": (cd_rows, cd_w)}
    if args.simulated:
        datasets[f"simulated {args.simulated:,} customers"] = simulated_rows(args.simulated)
    speed_rows = speed(datasets, args.repeats)
    model_ms = model_dlogp_ms(rfm, args.repeats)
    acc_rows = accuracy(accuracy_grids(), args.nodes)
    write(info, speed_rows, model_ms, acc_rows, args.name)


if __name__ == "__main__":
    main()
