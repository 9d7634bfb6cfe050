"""Reproduce the published CDNOW estimates: BG/NBD, Pareto/NBD and Gamma-Gamma.

On the CDNOW sample (2,357 customers, 39-week calibration, weeks) this script fits each
model three ways and sets the results beside the published values:

- MLE: ``bayesclv.classic.fit_*``;
- MAP with weak priors (``bayesclv.priors.weak_priors``): each Normal prior keeps its
  centre and gets ``sigma=--weak-sigma`` (default 10) on its unconstrained scale, and the
  Pareto/NBD dropout shape gets HalfNormal(``--weak-sigma``) on its coefficient of
  variation ``1/sqrt(s)`` (``CVPrior``); ``fit(sampler="map")``;
- NUTS with the same weak priors: posterior median, 94 % equal-tailed interval (3 % and
  97 % quantiles over all draws), whether the published value lies inside, R-hat max,
  bulk ESS min and divergences.

The log-likelihood of each estimate is computed with ``bayesclv.likelihoods`` on all
customers (Gamma-Gamma: the repeat buyers with positive spend).

Published values: BG/NBD and Pareto/NBD from Fader, Hardie & Lee (2005), "Counting your
customers the easy way" and "A note on deriving the Pareto/NBD model"; Gamma-Gamma from
Fader & Hardie (2013), "The Gamma-Gamma model of monetary value".

Usage::

    .venv/bin/python benchmarks/cdnow_reproduction.py                  # 4 x (1000 + 1000)
    .venv/bin/python benchmarks/cdnow_reproduction.py --sampler nutpie
    .venv/bin/python benchmarks/cdnow_reproduction.py --smoke          # tiny, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, machine_markdown, md_table, write_results  # noqa: E402

PUBLISHED = {
    "bgnbd": {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426, "LL": -9582.4},
    "pareto_nbd": {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669, "LL": -9595.0},
    "gamma_gamma": {"p": 6.25, "q": 3.74, "v": 15.44},
}
SOURCES = {
    "bgnbd": "Fader, Hardie & Lee (2005), Counting your customers the easy way",
    "pareto_nbd": "Fader, Hardie & Lee (2005), A note on deriving the Pareto/NBD model",
    "gamma_gamma": "Fader & Hardie (2013), The Gamma-Gamma model of monetary value",
}


def loglik(model: str, params: dict, rfm) -> float:
    from bayesclv.likelihoods import bgnbd_logp, gamma_gamma_logp, pareto_nbd_logp

    x, t_x, T = rfm.frequency.astype(float), rfm.recency, rfm.T
    with np.errstate(all="ignore"):
        if model == "bgnbd":
            ll = bgnbd_logp(params["r"], params["alpha"], params["a"], params["b"], x, t_x, T)
        elif model == "pareto_nbd":
            ll = pareto_nbd_logp(params["r"], params["alpha"], params["s"], params["beta"],
                                 x, t_x, T)  # fmt: skip
        else:
            keep = (rfm.frequency > 0) & (rfm.monetary_value > 0)
            ll = gamma_gamma_logp(params["p"], params["q"], params["v"], x[keep],
                                  rfm.monetary_value[keep])  # fmt: skip
    return float(np.sum(ll))


def reproduce(model: str, rfm, args) -> dict:
    import arviz as az

    from bayesclv import classic
    from bayesclv.fit import fit
    from bayesclv.models import build_bgnbd, build_gamma_gamma, build_pareto_nbd
    from bayesclv.priors import BGNBDPriors, GammaGammaPriors, ParetoNBDPriors, weak_priors

    build, prior_cls, mle_fn = {
        "bgnbd": (build_bgnbd, BGNBDPriors, classic.fit_bgnbd),
        "pareto_nbd": (build_pareto_nbd, ParetoNBDPriors, classic.fit_pareto_nbd),
        "gamma_gamma": (build_gamma_gamma, GammaGammaPriors, classic.fit_gamma_gamma),
    }[model]
    names = [k for k in PUBLISHED[model] if k != "LL"]
    priors = weak_priors(prior_cls, args.weak_sigma)
    out: dict = {"model": model, "source": SOURCES[model], "published": PUBLISHED[model]}

    t = time.perf_counter()
    mle = mle_fn(rfm)
    out["mle"] = {"params": dict(mle.params), "converged": mle.converged,
                  "seconds": time.perf_counter() - t}  # fmt: skip

    t = time.perf_counter()
    idata_map = fit(build(rfm, priors, pooling="complete"), sampler="map",
                    random_seed=args.seed, progressbar=False)  # fmt: skip
    out["map"] = {
        "params": {k: float(idata_map.posterior[k].values.ravel()[0]) for k in names},
        "seconds": time.perf_counter() - t,
    }

    t = time.perf_counter()
    idata = fit(build(rfm, priors, pooling="complete"), sampler=args.sampler, draws=args.draws,
                tune=args.tune, chains=args.chains, target_accept=args.target_accept,
                random_seed=args.seed, progressbar=False)  # fmt: skip
    post = idata.posterior[names]
    rhat, ess = az.rhat(post), az.ess(post, method="bulk")
    nuts = {"seconds": time.perf_counter() - t, "params": {}, "lower": {}, "upper": {},
            "inside": {}}  # fmt: skip
    for k in names:
        draws = post[k].values.ravel()
        lo, med, hi = np.quantile(draws, [0.03, 0.5, 0.97])
        nuts["params"][k], nuts["lower"][k], nuts["upper"][k] = float(med), float(lo), float(hi)
        nuts["inside"][k] = bool(lo <= PUBLISHED[model][k] <= hi)
    nuts["rhat_max"] = float(max(float(rhat[k].max()) for k in names))
    nuts["ess_bulk_min"] = float(min(float(ess[k].min()) for k in names))
    nuts["divergences"] = int(idata.sample_stats["diverging"].sum())
    nuts["timings"] = json.loads(idata.attrs["timings"])
    out["nuts"] = nuts

    pub = {k: PUBLISHED[model][k] for k in names}
    out["log_likelihood"] = {
        "published_params": loglik(model, pub, rfm),
        "mle": loglik(model, out["mle"]["params"], rfm),
        "map": loglik(model, out["map"]["params"], rfm),
        "nuts_median": loglik(model, nuts["params"], rfm),
    }
    return out


def markdown(info: dict, args, results: list[dict]) -> str:
    md = ["# CDNOW reproduction: bayesclv vs published estimates\n\n", machine_markdown(info)]
    md.append(
        f"- data: CDNOW sample, 2,357 customers, 39-week calibration, weeks; priors: the "
        f"defaults' centres with sigma={args.weak_sigma} on each unconstrained parameter "
        f"(Pareto/NBD s: HalfNormal({args.weak_sigma}) on 1/sqrt(s)) (MAP and NUTS); "
        f"NUTS: sampler {args.sampler}, {args.chains} chains x "
        f"({args.tune} tune + {args.draws} draws), target_accept={args.target_accept}, "
        f"seed {args.seed}; interval: 94 % equal-tailed (3 %, 97 % quantiles)\n"
    )
    for res in results:
        m, n = res["model"], res["nuts"]
        names = [k for k in res["published"] if k != "LL"]
        md.append(f"\n## {m} ({res['source']})\n\n")
        rows = []
        for k in names:
            rows.append([k, *(f"{v:.4g}" for v in (res["published"][k], res["mle"]["params"][k],
                         res["map"]["params"][k], n["params"][k])),
                         f"[{n['lower'][k]:.4g}, {n['upper'][k]:.4g}]",
                         "yes" if n["inside"][k] else "NO"])  # fmt: skip
        ll = res["log_likelihood"]
        rows.append(["log-lik", *(f"{v:.1f}" for v in (
            res["published"].get("LL", ll["published_params"]), ll["mle"], ll["map"],
            ll["nuts_median"])), "-", "-"])  # fmt: skip
        md.append(md_table(["parameter", "published", "MLE", "MAP (weak)", "NUTS median",
                            "NUTS 94% ETI", "published inside"], rows))  # fmt: skip
        pub_ll = "published LL" if "LL" in res["published"] else "LL at the published values"
        md.append(
            f"\n{pub_ll}; log-lik of the published parameters computed here: "
            f"{ll['published_params']:.2f}. NUTS: R-hat max {n['rhat_max']:.4f}, bulk ESS "
            f"min {n['ess_bulk_min']:.0f}, divergences {n['divergences']}, "
            f"{n['seconds']:.1f} s; MLE converged: {res['mle']['converged']}.\n"
        )
    return "".join(md)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="bgnbd,pareto_nbd,gamma_gamma")
    ap.add_argument("--sampler", default="pymc", choices=("pymc", "nutpie"))
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--target-accept", type=float, default=0.9)
    ap.add_argument("--weak-sigma", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="tiny NUTS, for CI")
    ap.add_argument("--stem", default=None)
    args = ap.parse_args(argv)
    if args.smoke:
        args.draws, args.tune, args.chains = 50, 50, 2

    from bayesclv.data import RFMData
    from bayesclv.datasets import load_cdnow_summary

    info = machine_info(peers=False)
    rfm = RFMData.from_frame(load_cdnow_summary(), customer_id="customer_id")
    results = []
    for model in args.models.split(","):
        print(f"{model} ...", flush=True)
        results.append(reproduce(model.strip(), rfm, args))
        print(json.dumps(results[-1]["nuts"]["inside"]), flush=True)
    info["load_average_end"] = list(os.getloadavg())
    settings = vars(args)
    stem = args.stem or "cdnow_reproduction" + ("_smoke" if args.smoke else "")
    jpath, mpath = write_results(
        stem,
        {"machine": info, "settings": settings, "results": results},
        markdown(info, args, results),
    )
    print(mpath.read_text())
    print(f"wrote {jpath} and {mpath}")


if __name__ == "__main__":
    main()
