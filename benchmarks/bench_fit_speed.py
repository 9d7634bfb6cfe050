"""Benchmark: fitting time, peak memory and sampler quality, bayesclv vs its peers.

Every fit runs in a fresh child process (``benchmarks/peers_worker.py``): ours with our
venv's interpreter, pymc-marketing 0.19.2 and lifetimes 0.11.3 with the peers venv's
(``bash benchmarks/peers_setup.sh`` makes it). Within a repeat the systems run one after
the other (ours, peer, ours, ...), so drift on this shared machine hits both; the script
reports medians over repeats, the first repeat separately (the coldest PyTensor compile
cache, ``~/.pytensor``), and ours/peer ratios of the medians.

Groups (``--which``, comma-separated):

- ``bgnbd``: CDNOW sample (2,357 customers), ours ``build_bgnbd`` complete pooling with
  PyMC NUTS and with nutpie vs pymc-marketing ``BetaGeoModel`` (its default sampler,
  PyMC NUTS).
- ``gamma_gamma``: same data, the repeat buyers; ours ``build_gamma_gamma`` vs
  ``GammaGammaModel``.
- ``pareto_nbd``: ours ``build_pareto_nbd`` (``--pareto-samplers``) for ``--pareto-repeats``
  repeats, and pymc-marketing ``ParetoNBDModel`` NUTS once, killed after
  ``--pareto-peer-timeout`` seconds.
- ``mle``: lifetimes ``BetaGeoFitter``, ``ParetoNBDFitter``, ``GammaGammaFitter`` vs
  ``bayesclv.classic``; each process fits ``--mle-repeats`` times, median reported.
- ``hierarchical``: CDNOW master, 39-week calibration (23,570 customers, 3 acquisition
  months), ours BG/NBD + Gamma-Gamma with ``pooling="partial"`` (``--hier-samplers``);
  the total is build + compile + sampling of both models.

NUTS settings are equal for all systems: ``--chains`` chains x (``--tune`` + ``--draws``),
``--target-accept`` (default 0.9), ours runs 2 chains in parallel (``bayesclv.fit``'s
default, PyMC and nutpie); pymc-marketing keeps its own default unless ``--peer-cores`` is
given: PyMC's ``min(4, cpu_count() // 2)``, which is 1 on a 2-CPU machine, so its chains
run one after another in one process. Times: ``total`` = model build + compile +
sampling as measured inside the child; ``compile`` where the tool reports it (nutpie);
``process`` wall = the child's whole life including imports. Peak memory: summed RSS of
the child's process tree, sampled every 50 ms (PyMC runs chains in child processes).

Usage::

    bash benchmarks/peers_setup.sh                                   # once
    .venv/bin/python benchmarks/bench_fit_speed.py --which bgnbd,gamma_gamma,mle
    .venv/bin/python benchmarks/bench_fit_speed.py --which pareto_nbd
    .venv/bin/python benchmarks/bench_fit_speed.py --which hierarchical
    .venv/bin/python benchmarks/bench_fit_speed.py --smoke          # seconds, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    OURS_PYTHON,
    PEERS_PYTHON,
    machine_info,
    machine_markdown,
    md_table,
    run_job,
    write_results,
)

CACHE_DIR = Path(tempfile.gettempdir()) / f"bayesclv-bench-cache-{os.getpid()}"
GROUPS = ("bgnbd", "gamma_gamma", "pareto_nbd", "mle", "hierarchical", "partial")
TARGETS = {
    "bgnbd": "ours nutpie, warm compile cache: total <= 0.15 x pymc-marketing BetaGeoModel "
             "(issue 18); other samplers and the cold cache: <= 0.5 x",
    "pareto_nbd": "ours NUTS >= 20x faster than pymc-marketing ParetoNBDModel, peak < 1 GB",
    "hierarchical": "CDNOW master partial pooling, BG/NBD + Gamma-Gamma total < 60 s",
    "partial": "Pareto/NBD partial pooling, warm cache: CDNOW sample <= 60 s, DMEF donations "
               "<= 150 s, each <= 2 x BG/NBD on the same data (issue 18)",
}
PARTIAL_LIMITS = {"cdnow_sample_seg": 60.0, "dmef_seg": 150.0}


def write_segmented(tmp: Path, paths: dict[str, str]) -> None:
    """The two data sets of the ``partial`` group, with their segment column: the CDNOW
    sample by acquisition month (3 segments, 39-week calibration) and, where
    ``../shared/data/donations_dmef`` exists, the DMEF donations log by first-gift month
    (6 segments, calibration to 2005-07-01), both as in ``bench_real_data.py``."""
    import pandas as pd
    from bench_real_data import load

    for key, name in (("cdnow_sample_seg", "cdnow"), ("dmef_seg", "donations")):
        got = load(name)
        if got is None:
            print(f"{name}: data not found, skipped", flush=True)
            continue
        rfm = got[0]
        pd.DataFrame(
            {
                "customer_id": rfm.customer_id,
                "frequency": rfm.frequency,
                "recency": rfm.recency,
                "T": rfm.T,
                "monetary_value": rfm.monetary_value,
                "segment": [rfm.segment_names[i] for i in rfm.segment],
            }
        ).to_csv(tmp / f"{key}.csv", index=False, float_format="%.17g")
        paths[key] = str(tmp / f"{key}.csv")


def write_data(tmp: Path, need_master: bool) -> dict[str, str]:
    import pandas as pd

    from bayesclv.datasets import load_cdnow_rfm, load_cdnow_summary

    paths = {}
    sample = load_cdnow_summary()[["customer_id", "frequency", "recency", "T", "monetary_value"]]
    paths["cdnow_sample"] = str(tmp / "cdnow_sample.csv")
    sample.to_csv(paths["cdnow_sample"], index=False)
    if need_master:
        # The published split; one master customer's repeat purchases are all $0: kept
        # here, and left out (and counted) by the Gamma-Gamma builder and MLE.
        rfm = load_cdnow_rfm("master", zero_amounts="keep")
        paths["master_zero_amounts"] = "keep"
        master = pd.DataFrame(
            {
                "customer_id": rfm.customer_id,
                "frequency": rfm.frequency,
                "recency": rfm.recency,
                "T": rfm.T,
                "monetary_value": rfm.monetary_value,
                "segment": [rfm.segment_names[i] for i in rfm.segment],
            }
        )
        paths["cdnow_master"] = str(tmp / "cdnow_master_39w.csv")
        # repr-exact floats so the worker sees the same numbers.
        master.to_csv(paths["cdnow_master"], index=False, float_format="%.17g")
    return paths


def plan(args, data: dict[str, str], which: list[str]) -> list[tuple[str, dict, float]]:
    """(label, job, timeout) per system; one repeat runs them in this order."""
    nuts = dict(
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        target_accept=args.target_accept,
        seed=args.seed,
    )
    sample = data["cdnow_sample"]
    ours_samplers = args.samplers.split(",")
    systems: list[tuple[str, dict, float]] = []

    def add(label: str, **job) -> None:
        systems.append((label, job, args.timeout))

    for model in ("bgnbd", "gamma_gamma"):
        if model not in which:
            continue
        for i, s in enumerate(ours_samplers):
            if s == "nutpie":  # the compile cache emptied first, then warm (issue 18)
                add(f"{model}/ours-nutpie-cold", lib="ours", model=model, method=s,
                    data=sample, cache="cold", **nuts)  # fmt: skip
                add(f"{model}/ours-nutpie", lib="ours", model=model, method=s, data=sample,
                    cache="warm", **nuts)  # fmt: skip
            else:
                add(f"{model}/ours-{s}", lib="ours", model=model, method=s, data=sample, **nuts)
            if i == 0 and not args.no_peers:
                add(
                    f"{model}/pymc-marketing",
                    lib="pymc_marketing",
                    model=model,
                    method="mcmc",
                    cores=args.peer_cores,
                    data=sample,
                    **nuts,
                )
    if "mle" in which:
        for model in ("bgnbd", "pareto_nbd", "gamma_gamma"):
            mle = dict(model=model, method="mle", data=sample, mle_repeats=args.mle_repeats)
            add(f"mle-{model}/ours-classic", lib="ours", **mle)
            if not args.no_peers:
                add(f"mle-{model}/lifetimes", lib="lifetimes", **mle)
    if "partial" in which:
        for key in ("cdnow_sample_seg", "dmef_seg"):
            if key not in data:
                continue
            for model in ("bgnbd", "pareto_nbd"):
                for cache in ("cold", "warm"):
                    add(f"partial-{key}-{model}/ours-nutpie" + ("-cold" if cache == "cold"
                                                                 else ""),
                        lib="ours", model=model, method="nutpie", pooling="partial",
                        data=data[key], cache=cache, **nuts)  # fmt: skip
    if "hierarchical" in which:
        for s in args.hier_samplers.split(","):
            for model in ("bgnbd", "gamma_gamma"):
                add(
                    f"hierarchical-{model}/ours-{s}",
                    lib="ours",
                    model=model,
                    method=s,
                    pooling="partial",
                    data=data["cdnow_master"],
                    **nuts,
                )
    return systems


def pareto_plan(args, data) -> tuple[list, tuple | None]:
    nuts = dict(
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        target_accept=args.target_accept,
        seed=args.seed,
    )
    sample = data["cdnow_sample"]
    ours = [
        (
            f"pareto_nbd/ours-{s}",
            dict(lib="ours", model="pareto_nbd", method=s, data=sample, **nuts),
            args.timeout,
        )
        for s in args.pareto_samplers.split(",")
    ]
    peer = None
    if not args.no_peers:
        job = dict(lib="pymc_marketing", model="pareto_nbd", method="mcmc", data=sample, **nuts)
        peer = ("pareto_nbd/pymc-marketing", {**job, "cores": args.peer_cores},
                args.pareto_peer_timeout)  # fmt: skip
    return ours, peer


def _python(job: dict) -> Path:
    return OURS_PYTHON if job["lib"] == "ours" else PEERS_PYTHON


def _run(label: str, job: dict, timeout: float, rep: int) -> dict:
    print(f"[rep {rep}] {label} ...", flush=True)
    env = None
    if job.get("cache"):
        # one compile-cache directory for the run: "cold" empties it first (a fresh
        # machine), "warm" finds what the cold run of the same job left there
        import shutil

        if job["cache"] == "cold":
            shutil.rmtree(CACHE_DIR, ignore_errors=True)
        env = {"BAYESCLV_CACHE_DIR": str(CACHE_DIR)}
    res = run_job(_python(job), job, timeout, env=env)
    res.update(label=label, repeat=rep, job=job)
    if "error" in res:
        print(f"    ERROR: {res['error']}\n{res.get('stderr_tail', '')[-1500:]}", flush=True)
    else:
        total = res.get("build_s", 0.0) + res["fit_s"]
        res["total_s"] = total
        print(
            f"    total {total:.2f} s (compile {res.get('compile_s')}), process "
            f"{res['wall_s']:.1f} s, peak tree RSS {res['peak_tree_rss_mb']:.0f} MB, "
            f"rhat {res.get('rhat_max')}, ess {res.get('ess_bulk_min')}, "
            f"div {res.get('divergences')}",
            flush=True,
        )
    return res


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per label: medians over the successful repeats, first repeat, quality figures."""
    out: dict[str, dict] = {}
    for label in dict.fromkeys(r["label"] for r in runs):
        rs = [r for r in runs if r["label"] == label]
        ok = [r for r in rs if "error" not in r]
        s: dict = {"label": label, "n_ok": len(ok), "n_runs": len(rs)}
        if not ok:
            s["error"] = rs[0]["error"]
            s["timed_out"] = rs[0]["timed_out"]
            s["wall_s_at_kill"] = rs[0]["wall_s"]
            s["peak_tree_rss_mb"] = max(r["peak_tree_rss_mb"] for r in rs)
            out[label] = s
            continue

        def med(key, ok=ok):
            vals = [r[key] for r in ok if r.get(key) is not None]
            return statistics.median(vals) if vals else None

        for key in ("total_s", "fit_s", "build_s", "compile_s", "wall_s",
                    "peak_tree_rss_mb", "rss_self_mb", "rss_child_max_mb"):  # fmt: skip
            s[key] = med(key)
        s["total_s_first"] = ok[0]["total_s"]
        s["cores"] = ok[0].get("cores")
        s["total_s_all"] = [r["total_s"] for r in ok]
        s["peak_tree_rss_mb_max"] = max(r["peak_tree_rss_mb"] for r in ok)
        for key in ("rhat_max", "divergences", "grad_evals"):
            vals = [r[key] for r in ok if r.get(key) is not None]
            s[key + ("_worst" if key != "grad_evals" else "_median")] = (
                (max(vals) if key != "grad_evals" else statistics.median(vals)) if vals else None
            )
        ess = [r["ess_bulk_min"] for r in ok if r.get("ess_bulk_min") is not None]
        s["ess_bulk_min_worst"] = min(ess) if ess else None
        if s.get("grad_evals_median"):
            # Sampling only, summed over chains, over the CPU-seconds available to 2 cores.
            samp = s["fit_s"] - (s["compile_s"] or 0.0)
            s["ms_per_grad_2cores"] = (
                1e3 * samp * min(2, ok[0]["job"]["chains"]) / s["grad_evals_median"]
            )
        last = ok[-1]
        s["estimates"] = last.get("estimates") or last.get("medians")
        s["log_likelihood"] = last.get("log_likelihood")
        out[label] = s
    return out


def mle_loglik(summary: dict[str, dict]) -> None:
    """Log-likelihood of every MLE estimate on the CDNOW sample, by bayesclv's likelihoods.

    One formula for ours and lifetimes' estimates (lifetimes reports a scaled objective).
    """
    from cdnow_reproduction import loglik

    from bayesclv.data import RFMData
    from bayesclv.datasets import load_cdnow_summary

    rfm = RFMData.from_frame(load_cdnow_summary(), customer_id="customer_id")
    for label, s in summary.items():
        if label.startswith("mle-") and s.get("estimates"):
            model = label.split("/")[0][len("mle-") :]
            s["log_likelihood"] = loglik(model, s["estimates"], rfm)


def render(path: Path) -> None:
    """Recompute derived figures of a results JSON and rewrite its JSON and Markdown."""
    payload = json.loads(path.read_text())
    st = payload["settings"]
    args = argparse.Namespace(**st, which_list=[w for w in st["which"].split(",") if w])
    for key, default in (("peer_cores", None), ("samplers", "pymc,nutpie")):
        if not hasattr(args, key):
            setattr(args, key, default)
    summary = summarise(payload["runs"])
    mle_loglik(summary)
    rat = ratios(summary)
    tgt = targets(summary, rat)
    payload.update(summary=summary, ratios=rat, targets=tgt)
    payload.setdefault("rendered", []).append(
        " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    )
    write_results(path.stem, payload, markdown(payload["machine"], args, summary, rat, tgt))
    print((path.parent / f"{path.stem}.md").read_text())


def ratios(summary: dict[str, dict]) -> list[dict]:
    rows = []
    groups = dict.fromkeys(label.split("/")[0] for label in summary)
    for g in groups:
        peers = [lab for lab in summary if lab.startswith(g + "/") and "/ours" not in lab]
        ours = [lab for lab in summary if lab.startswith(g + "/ours")]
        for p in peers:
            ps = summary[p]
            for o in ours:
                os_ = summary[o]
                if "error" in os_:
                    continue
                key = "fit_s" if g.startswith("mle") else "total_s"
                row = {"group": g, "ours": o, "peer": p, "metric": key}
                if "error" in ps and not ps.get("timed_out"):
                    continue
                if "error" in ps:
                    # Peer killed: its time is at least the limit; ratio is an upper bound.
                    row["peer_s"] = ps["wall_s_at_kill"]
                    row["ours_over_peer"] = os_[key] / ps["wall_s_at_kill"]
                    row["bound"] = "upper (peer did not finish)"
                else:
                    row["peer_s"] = ps[key]
                    row["ours_over_peer"] = os_[key] / ps[key]
                    row["bound"] = ""
                row["ours_s"] = os_[key]
                row["peer_over_ours"] = 1.0 / row["ours_over_peer"]
                rows.append(row)
    return rows


def targets(summary: dict[str, dict], rat: list[dict]) -> list[dict]:
    out = []
    for r in rat:
        if r["group"] == "bgnbd":
            out.append({"target": TARGETS["bgnbd"], "system": r["ours"],
                        "value": f"ours/peer = {r['ours_over_peer']:.2f}",
                        "met": r["ours_over_peer"]
                        <= (0.15 if r["ours"].endswith("ours-nutpie") else 0.5)})  # fmt: skip
        if r["group"] == "pareto_nbd":
            peak = summary[r["ours"]]["peak_tree_rss_mb_max"]
            speed = r["peer_over_ours"]
            met = speed >= 20 and peak < 1024
            note = " (peer killed: speed-up is a lower bound)" if r["bound"] else ""
            out.append({"target": TARGETS["pareto_nbd"], "system": r["ours"],
                        "value": f"peer/ours = {speed:.1f}x{note}, ours peak {peak:.0f} MB",
                        "met": met})  # fmt: skip
    samplers = {lab.split("/ours-")[1] for lab in summary if lab.startswith("hierarchical-")}
    for s in sorted(samplers):
        parts = [summary.get(f"hierarchical-{m}/ours-{s}") for m in ("bgnbd", "gamma_gamma")]
        if any(p is None for p in parts):
            continue
        failed = [p for p in parts if "error" in p]
        if failed:
            out.append({"target": TARGETS["hierarchical"], "system": f"ours-{s}",
                        "value": "; ".join(f"{p['label']}: {p['error']}" for p in failed),
                        "met": False})  # fmt: skip
            continue
        tot = sum(p["total_s"] for p in parts)
        first = sum(p["total_s_first"] for p in parts)
        out.append({"target": TARGETS["hierarchical"], "system": f"ours-{s}",
                    "value": f"{tot:.1f} s median (first repeat {first:.1f} s)",
                    "met": tot < 60})  # fmt: skip
    for key, limit in PARTIAL_LIMITS.items():
        par = summary.get(f"partial-{key}-pareto_nbd/ours-nutpie")
        bg = summary.get(f"partial-{key}-bgnbd/ours-nutpie")
        if par is None or bg is None:
            continue
        if "error" in par or "error" in bg:
            out.append({"target": TARGETS["partial"], "system": key,
                        "value": par.get("error") or bg.get("error"), "met": False})
            continue
        ratio = par["total_s"] / bg["total_s"]
        out.append({"target": TARGETS["partial"], "system": f"{key} pareto_nbd partial",
                    "value": f"{par['total_s']:.1f} s (limit {limit:.0f} s), "
                             f"{ratio:.2f} x BG/NBD ({bg['total_s']:.1f} s); R-hat "
                             f"{par['rhat_max_worst']:.3f}, divergences "
                             f"{par['divergences_worst']}",
                    "met": par["total_s"] <= limit and ratio <= 2.0})  # fmt: skip
    return out


def markdown(info: dict, args, summary: dict, rat: list[dict], tgt: list[dict]) -> str:
    md = [f"# Fit speed: {', '.join(args.which_list)}\n", machine_markdown(info)]
    for k, v in info.get("data_notes", {}).items():
        md.append(f"- data note: CDNOW master rfm_summary {k}={v}\n")
    md.append(
        f"- NUTS: {args.chains} chains x ({args.tune} tune + {args.draws} draws), "
        f"target_accept={args.target_accept}, seed {args.seed}; parallel chains per system in the "
        "table (ours: 2; pymc-marketing: --peer-cores, default its own); "
        f"repeats: {args.repeats} (Pareto/NBD ours: {args.pareto_repeats}, peer once, "
        f"limit {args.pareto_peer_timeout:.0f} s); MLE: median of {args.mle_repeats} fits "
        "per process\n"
    )
    md.append("\n## Times, memory, quality (medians over repeats)\n\n")
    rows = []
    for s in summary.values():
        if "error" in s:
            rows.append([s["label"], s["n_ok"], f"FAILED: {s['error']}", None, None,
                         None, s["peak_tree_rss_mb"], None, None, None, None, None])  # fmt: skip
            continue
        rows.append([
            s["label"], s["n_ok"], s["total_s"], s["total_s_first"], s["compile_s"],
            s["wall_s"], s["peak_tree_rss_mb"], s["rhat_max_worst"], s["ess_bulk_min_worst"],
            s["divergences_worst"], s.get("ms_per_grad_2cores"), s.get("cores"),
        ])  # fmt: skip
    md.append(md_table(
        ["system", "runs", "total s (median)", "total s (1st run)", "compile s",
         "process s", "peak RSS MB", "R-hat max", "ESS bulk min", "divergences",
         "ms/grad (2 cores)", "parallel chains"], rows))  # fmt: skip
    md.append(
        "\ntotal = model build + compile + sampling (or the MLE fit alone for `mle-*`); "
        "process = the child's whole life incl. imports; peak RSS = the child's process "
        "tree; R-hat/ESS over the paper parameters, worst repeat; ms/grad = sampling "
        "seconds x 2 cores / gradient evaluations (all chains); "
        "halve it for a system with 1 parallel chain.\n"
    )
    if rat:
        md.append("\n## Ratios (medians)\n\n")
        md.append(md_table(
            ["ours", "peer", "metric", "ours s", "peer s", "ours/peer", "peer/ours", "note"],
            [[r["ours"], r["peer"], r["metric"], r["ours_s"], r["peer_s"],
              r["ours_over_peer"], r["peer_over_ours"], r["bound"]] for r in rat]))  # fmt: skip
    if tgt:
        md.append("\n## Targets\n\n")
        md.append(md_table(["target", "system", "measured", "met"],
                           [[t["target"], t["system"], t["value"],
                             "yes" if t["met"] else "NO"] for t in tgt]))  # fmt: skip
    md.append("\n## Estimates (posterior medians or MLE; last repeat)\n\n")
    est_rows = []
    for s in summary.values():
        est = s.get("estimates")
        if est:
            txt = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={[round(x, 4) for x in v]}"
                for k, v in est.items()
            )
            ll = s.get("log_likelihood")
            est_rows.append([s["label"], txt, ll])
    md.append(md_table(["system", "estimates", "log-lik"], est_rows))
    return "".join(md)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--which", default="bgnbd,gamma_gamma,mle",
                    help=f"comma-separated groups from {GROUPS}")  # fmt: skip
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--target-accept", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samplers", default="pymc,nutpie", help="ours, for bgnbd/gamma_gamma")
    ap.add_argument("--peer-cores", type=int, default=None,
                    help="cores for pymc-marketing's pm.sample; default: its own default "
                    "(PyMC's min(4, cpu_count() // 2): 1 on 2 CPUs)")  # fmt: skip
    ap.add_argument("--pareto-repeats", type=int, default=1)
    ap.add_argument("--pareto-samplers", default="nutpie-jax,nutpie")
    ap.add_argument("--pareto-peer-timeout", type=float, default=480.0)
    ap.add_argument("--hier-samplers", default="nutpie,pymc")
    ap.add_argument("--mle-repeats", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=600.0, help="per child process, s")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-peers", action="store_true", help="ours only")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    ap.add_argument("--stem", default=None, help="results file name (default from --which)")
    ap.add_argument("--render", type=Path, default=None,
                    help="recompute derived figures of a results JSON, rewrite it")  # fmt: skip
    args = ap.parse_args(argv)
    if args.render is not None:
        render(args.render)
        return
    if args.smoke:
        args.draws, args.tune, args.chains, args.repeats = 30, 30, 2, 1
        args.mle_repeats, args.pareto_repeats = 1, 1
        # PyMC's sampler compiles faster than nutpie's numba backend; peers are not a CI
        # dependency. A smoke run checks the plumbing, not the speed.
        args.samplers = args.pareto_samplers = args.hier_samplers = "pymc"
        args.pareto_peer_timeout = 60.0
        args.no_peers = args.no_peers or not PEERS_PYTHON.exists()
    args.which_list = [w.strip() for w in args.which.split(",") if w.strip()]
    bad = set(args.which_list) - set(GROUPS)
    if bad:
        ap.error(f"unknown --which {sorted(bad)}; choose from {GROUPS}")

    info = machine_info(peers=not args.no_peers)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp), "hierarchical" in args.which_list)
        if "partial" in args.which_list:
            write_segmented(Path(tmp), data)
        systems = plan(args, data, args.which_list)
        for rep in range(args.repeats if systems else 0):
            for label, job, timeout in systems:
                runs.append(_run(label, job, timeout, rep))
        if "pareto_nbd" in args.which_list:
            ours, peer = pareto_plan(args, data)
            # Alternate: ours, peer (once, time-limited), ours again if more repeats.
            for rep in range(args.pareto_repeats):
                for label, job, timeout in ours:
                    runs.append(_run(label, job, timeout, rep))
                if rep == 0 and peer is not None:
                    runs.append(_run(*peer, rep))
    info["load_average_end"] = list(os.getloadavg())

    summary = summarise(runs)
    mle_loglik(summary)
    rat = ratios(summary)
    tgt = targets(summary, rat)
    settings = {k: v for k, v in vars(args).items() if k != "which_list"}
    info["data_notes"] = {k: v for k, v in data.items() if k.endswith("zero_amounts")}
    payload = {"machine": info, "settings": settings, "summary": summary, "ratios": rat,
               "targets": tgt, "runs": runs}  # fmt: skip
    stem = args.stem or "fit_speed_" + "_".join(args.which_list) + ("_smoke" if args.smoke else "")
    jpath, mpath = write_results(stem, payload, markdown(info, args, summary, rat, tgt))
    print(mpath.read_text())
    print(f"wrote {jpath} and {mpath}")


if __name__ == "__main__":
    main()
