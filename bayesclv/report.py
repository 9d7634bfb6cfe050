"""The analyst's report of a fit: holdout check, plots, family comparison, one page.

:func:`build_report` writes into one folder:

* ``report.html``: one self-contained page (plots embedded) an analyst can send;
* ``report.png``: the same page as one image (drawn with matplotlib, so it needs no
  browser), for a slide or a chat;
* ``report.json``: the numbers (holdout metrics, calibration, log predictive density,
  the family comparison) as strict JSON; ``holdout.txt`` the holdout tables as text;
* the plots: ``p_alive_matrix.png``, ``clv_by_segment.png`` (the total CLV of each
  segment, with the interval's kind), ``segment_parameters.png``,
  ``family_comparison.png`` (automatic choice), and with a holdout
  ``conditional_expectations.png``, ``pit_histogram.png``, ``tracking_cumulative.png``.

The holdout check needs the transaction log to run past the calibration end: the
later purchases are then compared with the predictions (MAE, RMSE, BIAS of the
conditional expectations; randomized-PIT calibration; the log predictive density).
For an automatic choice the same check is made for each candidate family, so the
report shows whether the PSIS-LOO choice also predicts the holdout best.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesclv import workflow
from bayesclv.errors import DataValidationError, OutputError
from bayesclv.workflow import FittedFolder, ScoreOptions, describe_period

__all__ = ["build_report", "read_holdout", "check_report_folder", "Report", "REPORT_FILES"]

REPORT_FILES = (
    "report.html",
    "report.png",
    "report.json",
    "holdout.txt",
    "p_alive_matrix.png",
    "clv_by_segment.png",
    "segment_parameters.png",
    "family_comparison.png",
    "conditional_expectations.png",
    "pit_histogram.png",
    "tracking_cumulative.png",
)


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote and found."""

    folder: Path
    files: list[Path]
    lines: list[str]
    holdout: Any = None
    by_family: pd.DataFrame | None = None
    numbers: dict = field(default_factory=dict)


def check_report_folder(out: Path, *, overwrite: bool) -> None:
    """Before any work: ``out`` is (or can be made) a writable folder without an earlier
    report, unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; pass a folder for the report.")
    held = [n for n in REPORT_FILES if (out / n).exists()]
    if held and not overwrite:
        raise OutputError(
            f"{out} already holds a report ({', '.join(held[:4])}"
            f"{', ...' if len(held) > 4 else ''}); pass --force to replace it, or choose "
            f"another --out."
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".bayesclv.", suffix=".tmp", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(
            f"cannot write in {out} ({exc.strerror or exc}): read-only or no permission. "
            f"Choose another --out."
        ) from exc


def read_holdout(folder: FittedFolder, log_path, *, observation_end=None):
    """The log read as the fit read it, with the fit's calibration end: the calibration
    summary (with a holdout when the log runs past it) and the validated log.

    Raises :class:`~bayesclv.errors.DataValidationError` when the log's calibration
    period does not reproduce the fitted customers (another log, or other options)."""
    read = folder.read_options
    if read is None:
        raise DataValidationError(
            f"{folder.path} was not fitted from a log file (the demo's built-in data?), so "
            f"there are no reading options to read --log with; run 'bayesclv demo', which "
            f"writes its report, or fit from a file first."
        )
    read = replace(read, source=str(log_path), observation_end=observation_end)
    rfm, clean = workflow.read_log(read, calibration_end=folder.calibration_end,
                                   return_clean=True)
    fitted = folder.rfm
    a = fitted.to_frame()
    b = rfm.to_frame()
    a.index, b.index = a.index.astype(str), b.index.astype(str)
    missing = a.index.difference(b.index)
    extra = b.index.difference(a.index)
    common = a.index.intersection(b.index)
    cols = ["frequency", "recency", "T"]
    differ = common[~np.isclose(a.loc[common, cols].to_numpy(float),
                                b.loc[common, cols].to_numpy(float)).all(axis=1)]
    if len(missing) or len(extra) or len(differ):
        raise DataValidationError(
            f"--log {log_path} does not reproduce the fitted customers up to the calibration "
            f"end {folder.calibration_end}: {len(missing):,} fitted customers are not in it, "
            f"{len(extra):,} are new, {len(differ):,} have another history (e.g. "
            f"{list((missing.append(extra).append(differ))[:3])}). Pass the log the fit was "
            f"made from, extended past the calibration end."
        )
    return rfm, clean


def _png(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _family_holdout(folder: FittedFolder, rfm_h, n_draws: int, seed: int) -> pd.DataFrame:
    """The holdout check of each candidate family on its own (automatic choice)."""
    from bayesclv.diagnostics import holdout_evaluation
    from bayesclv.fit import posterior_params

    rows = []
    for name, idata in folder.purchase.items():
        ev = holdout_evaluation(posterior_params(idata), rfm_h, n_draws=n_draws,
                                random_seed=seed)
        m = ev.metrics.loc["purchases"]
        cov = ev.coverage.loc["purchases"]
        rows.append({
            "family": name,
            "weight": dict(zip(folder.comparison["stack"]["families"],
                               folder.comparison["stack"]["weights"],
                               strict=True)).get(name, 0.0),
            "holdout_lpd": ev.log_predictive_density,
            "MAE": m["MAE"], "RMSE": m["RMSE"], "BIAS": m["BIAS"],
            "pit_in_80pct_band": float(cov.loc[0.8, "pit_calibration"]),
        })
    return pd.DataFrame(rows).set_index("family")


def _main_family(folder: FittedFolder, model: str | None) -> str:
    if model is not None:
        return model
    if folder.auto:
        st = folder.comparison["stack"]
        return st["families"][int(np.argmax(st["weights"]))]
    return folder.families[0]


def build_report(folder: FittedFolder, out: Path, *, rfm_holdout=None, log=None,
                 options: ScoreOptions | None = None, overwrite: bool = False,
                 scored=None, n_draws: int = 300) -> Report:
    """Write the report of ``folder`` into ``out`` (see the module docstring).

    ``rfm_holdout`` is the calibration summary with a holdout (:func:`read_holdout`;
    without one the holdout check is left out, and the page says so); ``log`` the
    validated transaction log (for the tracking plot); ``scored`` the scores if they
    were computed already (the demo), else they are computed with ``options``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayesclv import plotting
    from bayesclv.diagnostics import holdout_evaluation, tracking
    from bayesclv.export import strict_json
    from bayesclv.fit import posterior_params
    from bayesclv.workflow import comparison_table

    out = Path(out)
    check_report_folder(out, overwrite=overwrite)
    options = options or ScoreOptions(method="expected")
    scored = scored or workflow.score(folder, options)
    opts = scored.options
    rfm = folder.rfm
    unit = rfm.time_unit
    pp = folder.purchase_params(opts.model)
    sp = folder.spend_params()
    main = _main_family(folder, opts.model)
    model_words = plotting.model_label(pp)
    if folder.auto and opts.model is None:
        how = ("leave-future-out forecast"
               if (folder.comparison or {}).get("criterion") == "leave-future-out"
               else "PSIS-LOO")
        model_words += (f" (chosen by {how} among "
                        f"{workflow.families_words(folder.families)})")
    has_holdout = (rfm_holdout is not None and rfm_holdout.has_holdout
                   and (rfm_holdout.holdout_length or 0) > 0)
    ev = by_family = None
    files: list[Path] = []
    if has_holdout:
        workflow.log(f"holdout check ({describe_period(rfm_holdout.holdout_length, unit)} "
                     f"after {folder.calibration_end})")
        ev = holdout_evaluation(pp, rfm_holdout, spend_params=sp, n_draws=n_draws,
                                random_seed=opts.random_seed)
        if folder.auto and opts.model is None and len(folder.purchase) > 1:
            by_family = _family_holdout(folder, rfm_holdout, n_draws, opts.random_seed)

    # ---------------------------------------------------------------- plots
    figs: dict[str, Path] = {}
    fig, ax = plt.subplots(figsize=(7, 4.8))
    largest = str(rfm.segment_sizes().idxmax())
    plotting.plot_probability_alive_matrix(pp, T=float(rfm.T.max()), segment=largest, ax=ax)
    figs["p_alive_matrix.png"] = _png(fig, out / "p_alive_matrix.png")

    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    is_money = scored.value == "CLV"
    what = "total CLV of the segment" if is_money else "total expected purchases of the segment"
    plotting.plot_clv_distribution(
        scored.totals["segment_total"], prob=opts.prob, label=what,
        currency=(opts.currency or "") if is_money else "", ax=ax,
        title=(f"{what[0].upper() + what[1:]}, next {describe_period(opts.horizon, unit)} "
               f"as of {folder.calibration_end}\ndot: median; bar: "
               f"{scored.segments['interval_meaning'].iloc[0]}"),
    )
    figs["clv_by_segment.png"] = _png(fig, out / "clv_by_segment.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    main_params = posterior_params(folder.purchase[main])
    param = list(main_params.data_vars)[0]
    pooling = folder.settings.get("pooling", "partial")
    plotting.plot_segment_shrinkage({pooling: main_params}, param,
                                    segment_sizes=dict(rfm.segment_sizes()), ax=ax)
    ax.set_title(f"{plotting.family_label(main)}: {ax.get_title()}", fontsize="medium")
    figs["segment_parameters.png"] = _png(fig, out / "segment_parameters.png")

    if folder.auto:
        table = comparison_table(folder.comparison)
        fig, ax = plt.subplots(figsize=(7.5, 0.7 * len(table) + 2.0))
        plotting.plot_family_comparison(table, ax=ax)
        figs["family_comparison.png"] = _png(fig, out / "family_comparison.png")
    if ev is not None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        plotting.plot_conditional_expectations(
            ev.conditional, label=f"{plotting.model_label(pp)} (posterior mean)", ax=ax,
            holdout=f"holdout ({describe_period(rfm_holdout.holdout_length, unit)})")
        figs["conditional_expectations.png"] = _png(fig, out / "conditional_expectations.png")
        fig, ax = plt.subplots(figsize=(7, 4.5))
        plotting.plot_pit_histogram(ev.predicted["pit_purchases"].to_numpy(),
                                    quantity="holdout purchases", ax=ax)
        figs["pit_histogram.png"] = _png(fig, out / "pit_histogram.png")
    if log is not None and rfm_holdout is not None and rfm_holdout.calibration_end is not None:
        track = tracking(main_params, rfm_holdout, log, n_draws=n_draws,
                         random_seed=opts.random_seed)
        fig, ax = plt.subplots(figsize=(8.5, 4.5))
        share = ""
        if folder.auto and opts.model is None:
            w = dict(zip(folder.comparison["stack"]["families"],
                         folder.comparison["stack"]["weights"], strict=True))[main]
            share = "" if w > 0.999 else f" (weight {w:.2f} in the stack)"
        plotting.plot_tracking(track, kind="cumulative", ax=ax,
                               title=f"{plotting.family_label(main)}{share} tracking: "
                               "cumulative repeat transactions")
        figs["tracking_cumulative.png"] = _png(fig, out / "tracking_cumulative.png")
    files += list(figs.values())

    # ---------------------------------------------------------------- numbers and text
    numbers: dict[str, Any] = {
        "fit_folder": str(folder.path),
        "as_of": folder.calibration_end,
        "model": model_words,
        "family_choice": None if folder.comparison is None else folder.comparison["summary"],
        "scores": {"value": scored.value, "horizon": opts.horizon, "time_unit": unit,
                   "interval": scored.metadata["interval"],
                   "segments": scored.segments.to_dict(orient="records")},
        "holdout": None if ev is None else ev.to_dict(),
        "holdout_by_family": None if by_family is None else by_family.reset_index().to_dict(
            orient="records"),
        "convergence_verdict": scored.metadata["convergence_verdict"],
    }
    headline = _headline(ev, rfm_holdout, unit) if ev is not None else [
        "no holdout check: the log given ends at the calibration end, or no --log was "
        "given (pass the log extended past the calibration end)."
    ]
    holdout_text = _holdout_text(ev, by_family) if ev is not None else headline[0] + "\n"
    (out / "holdout.txt").write_text(holdout_text)
    (out / "report.json").write_text(json.dumps(strict_json(numbers), indent=2,
                                                allow_nan=False, default=str))
    files += [out / "holdout.txt", out / "report.json"]
    lines = [
        f"report of {folder.path}: scores as of {folder.calibration_end}",
        f"purchase model: {scored.metadata['about']['Purchase model']}",
        *headline,
    ]
    page = _html(folder, scored, figs, ev, by_family, headline, model_words)
    (out / "report.html").write_text(page, encoding="utf-8")
    files.append(out / "report.html")
    files.append(_page_png(out / "report.png", folder, scored, figs, headline, model_words))
    lines.append(f"wrote {out / 'report.html'} and {out / 'report.png'} (+ {len(figs)} plots)")
    return Report(out, files, lines, ev, by_family, numbers)


def _headline(ev, rfm_h, unit) -> list[str]:
    m = ev.metrics.loc["purchases"]
    cov = ev.coverage.loc["purchases"]
    lines = [
        f"holdout: {describe_period(ev.holdout_length, unit)} after the calibration end, "
        f"{int(m['n']):,} customers",
        f"purchases: predicted {m['predicted_total']:,.0f} vs actual {m['actual_total']:,.0f} "
        f"(BIAS {m['BIAS']:+.1%}), MAE {m['MAE']:.3f}, RMSE {m['RMSE']:.3f} per customer",
        "calibration (randomized PIT, calibrated = the band's probability): "
        + ", ".join(f"{p:.0%} band holds {cov.loc[p, 'pit_calibration']:.1%}" for p in
                    cov.index),
        f"log predictive density of the holdout purchases: {ev.log_predictive_density:,.1f} "
        f"({ev.log_predictive_density / max(int(m['n']), 1):.3f} per customer)",
    ]
    if "spend" in ev.metrics.index:
        s = ev.metrics.loc["spend"]
        lines.append(f"spend: predicted {s['predicted_total']:,.0f} vs actual "
                     f"{s['actual_total']:,.0f} (BIAS {s['BIAS']:+.1%}), MAE {s['MAE']:.2f}")
    return lines


def _holdout_text(ev, by_family) -> str:
    text = (
        "holdout metrics (BIAS = sum(predicted) / sum(actual) - 1):\n"
        f"{ev.metrics.round(3).to_string()}\n\n"
        "calibration (pit_calibration: share of customers whose randomized PIT lies in the "
        "central band; calibrated = prob) and interval coverage:\n"
        f"{ev.coverage.round(3).to_string()}\n\n"
        f"log predictive density: {ev.log_predictive_density:.2f}\n"
    )
    if by_family is not None:
        text += f"\neach candidate family on its own:\n{by_family.round(4).to_string()}\n"
    return text


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _table(df: pd.DataFrame, floatfmt: str = "{:,.3f}") -> str:
    return df.to_html(border=0, classes="t", float_format=lambda v: floatfmt.format(v),
                      na_rep="", escape=True)


def _html(folder, scored, figs, ev, by_family, headline, model_words) -> str:
    m = scored.metadata
    about = m["about"]
    esc = html.escape
    facts = ["WARNING: no uncertainty", "As of", "Source file", "Customers", "Purchase model",
             "Spend model", "Pooling", "Horizon", "Discounting", "Margin", "Currency",
             "Interval", "Ranking", "P(alive)", "Convergence", "Sampler", "Seeds", "Created",
             "Software"]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(about.get(k, '')))}</td></tr>"
                   for k in facts if k in about)
    seg = scored.segments.copy()
    keep = [c for c in seg.columns if c not in ("interval_kind", "interval_prob",
                                                  "interval_meaning")]
    blocks = []
    order = ["family_comparison.png", "clv_by_segment.png", "p_alive_matrix.png",
             "segment_parameters.png", "conditional_expectations.png", "pit_histogram.png",
             "tracking_cumulative.png"]
    for name in order:
        if name in figs:
            blocks.append(f"<figure>{_img(figs[name])}</figure>")
    choice = ""
    if folder.comparison is not None:
        choice = (f"<h2>Which family</h2><pre>{esc(folder.comparison['summary'])}</pre>")
    hold = "<h2>Holdout check</h2><ul>" + "".join(f"<li>{esc(x)}</li>" for x in headline)
    hold += "</ul>"
    if ev is not None:
        hold += "<h3>Metrics</h3>" + _table(ev.metrics)
        hold += ("<h3>Calibration and coverage</h3><p>pit_calibration: share of customers "
                 "whose randomized PIT lies in the central band (calibrated: the band's "
                 "probability); coverage of closed intervals over-states calibration for "
                 "sparse counts.</p>" + _table(ev.coverage.reset_index()))
    if by_family is not None:
        hold += "<h3>Each candidate family on its own</h3>" + _table(by_family, "{:,.4f}")
    cur = f" ({m.get('currency')})" if m.get("currency") and scored.value == "CLV" else ""
    warn = ""
    if "WARNING: no uncertainty" in about:
        warn = (f'<p class="warn"><b>Warning:</b> '
                f'{esc(about["WARNING: no uncertainty"])}</p>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>bayesclv report: {esc(str(folder.path))}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px;
       color: #222; max-width: 1400px; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }} h2 {{ font-size: 17px; margin-top: 22px; }}
h3 {{ font-size: 14px; }} .sub {{ color: #555; margin-top: 0; }}
table.t, table.facts {{ border-collapse: collapse; font-size: 12.5px; }}
table.t td, table.t th, table.facts td, table.facts th {{ padding: 3px 8px;
       border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }}
table.facts th {{ width: 150px; color: #444; }}
.grid {{ display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }}
figure {{ margin: 0; }} img {{ width: 100%; border: 1px solid #eee; }}
.warn {{ background: #fff3cd; border: 1px solid #e0c36a; padding: 6px 10px; }}
pre {{ background: #f6f6f6; padding: 8px; font-size: 12px; white-space: pre-wrap; }}
</style></head><body>
<h1>Customer lifetime value report</h1>
<p class="sub">{esc(scored.value)} over the next {esc(about['Horizon'])}; scores as of
{esc(str(folder.calibration_end))}; purchase model: {esc(model_words)}.
Intervals: {esc(m['interval']['meaning'])}.</p>
{warn}<div class="grid"><div>
<h2>Settings</h2><table class="facts">{rows}</table>
{choice}
</div><div>
{hold}
<h2>Segments{esc(cur)}</h2><p>Totals are the total {esc(scored.value)} of the segment
(summed per posterior draw, then the interval): {esc(seg['interval_meaning'].iloc[0])}.</p>
{_table(seg[keep].set_index('segment'), '{:,.2f}')}
</div></div>
<h2>Plots</h2><div class="grid">{''.join(blocks)}</div>
<p class="sub">bayesclv {esc(m['bayesclv_version'])}, {esc(m['created'])} UTC. Fit folder
{esc(str(folder.path))}.</p>
</body></html>
"""


def _page_png(path: Path, folder, scored, figs, headline, model_words) -> Path:
    """The report as one image: the key facts as text, then the plots in a grid."""
    import textwrap

    import matplotlib.pyplot as plt

    m = scored.metadata
    about = m["about"]
    order = [n for n in ("family_comparison.png", "clv_by_segment.png",
                         "conditional_expectations.png", "pit_histogram.png",
                         "p_alive_matrix.png", "tracking_cumulative.png",
                         "segment_parameters.png") if n in figs][:6]
    def wrap(text, width=165):
        return "\n".join(textwrap.wrap(str(text), width)) or ""

    lines = [
        (f"Customer lifetime value report: {scored.value} over the next {about['Horizon']}",
         14, "bold"),
        (wrap(f"Scores as of {folder.calibration_end} (end of calibration). Purchase model: "
              f"{model_words}."), 10.5, "normal"),
        (wrap(f"Intervals: {m['interval']['meaning']}. Segment totals: "
              f"{scored.segments['interval_meaning'].iloc[0]}."), 10.5, "normal"),
    ]
    if "WARNING: no uncertainty" in about:
        lines.append((wrap("WARNING: " + about["WARNING: no uncertainty"]), 10.5, "bold"))
    if folder.comparison is not None:
        lines += [(ln, 9.5, "normal") for ln in folder.comparison["summary"].splitlines()]
    lines += [(wrap(h), 10, "normal") for h in headline]
    lines += [(wrap(f"Discounting: {about['Discounting']}. Margin: {about['Margin']}. "
                    f"Convergence: {about['Convergence'].split('. ')[0]}."), 9.5, "normal")]
    # the text block's height in inches: 1.45 x the font size per line
    text_in = sum((t.count("\n") + 1) * size * 1.45 / 72 for t, size, _ in lines) + 0.2
    images = [plt.imread(figs[name]) for name in order]
    n_rows = max(1, (len(order) + 1) // 2)
    cell_w = 13 * 0.96 / 2
    rows_in = [max(cell_w * im.shape[0] / im.shape[1] for im in images[2 * r:2 * r + 2])
               for r in range(n_rows)] if images else [3.9]
    fig = plt.figure(figsize=(13, text_in + sum(rows_in) * 1.04), dpi=100)
    gs = fig.add_gridspec(n_rows + 1, 2, height_ratios=[text_in, *rows_in],
                          hspace=0.04, wspace=0.03, left=0.02, right=0.98, top=0.99,
                          bottom=0.01)
    head = fig.add_subplot(gs[0, :])
    head.axis("off")
    y = 1.0
    for text, size, weight in lines:
        head.text(0.0, y, text, fontsize=size, weight=weight, va="top",
                  family="DejaVu Sans", transform=head.transAxes)
        y -= (text.count("\n") + 1) * size * 1.45 / 72 / text_in
    for i, im in enumerate(images):
        ax = fig.add_subplot(gs[1 + i // 2, i % 2])
        ax.imshow(im)
        ax.axis("off")
    fig.savefig(path)
    plt.close(fig)
    return path
