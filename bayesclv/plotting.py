"""Plots: each takes data (draws, tables) and an optional ``ax``, and returns the ``ax``.

Nothing here takes a ``pm.Model``. Matrices over frequency x recency are computed on the
grid only (posterior mean of the per-draw closed forms of :mod:`bayesclv.predict`,
chunked over draws), never customers x draws x grid; a
:class:`~bayesclv.stacking.PurchaseStack` is averaged over its own draws (each family on
the draw positions the stack gives it), so its matrix is the mixture's posterior mean.

Labels say what is drawn: a segment total is "total CLV of the segment", never "CLV";
an interval says whether it is a credible interval of expected CLV or a predictive
interval of realised CLV (``interval=``); a title claims a comparison (e.g. across
pooling levels) only when the plot shows one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr

from bayesclv.families import FAMILIES
from bayesclv.predict import DrawParams, log_p_alive, phi_alive
from bayesclv.stacking import PurchaseStack
from bayesclv.summary import interval_arrays

__all__ = [
    "probability_alive_matrix",
    "expected_purchases_matrix",
    "plot_probability_alive_matrix",
    "plot_expected_purchases_matrix",
    "plot_clv_distribution",
    "plot_segment_shrinkage",
    "plot_tracking",
    "plot_pit_histogram",
    "plot_family_comparison",
    "family_label",
    "model_label",
    "plot_frequency_check",
    "plot_conditional_expectations",
    "plot_trace",
    "plot_rank",
]

def family_label(model: str) -> str:
    """A family's name for people (``"bgnbd"`` -> ``"BG/NBD"``)."""
    fam = FAMILIES.get(model)
    return fam.label if fam is not None else model


_label = family_label


def _time_unit(params) -> str:
    like = params.like if isinstance(params, PurchaseStack) else params
    return like.attrs.get("time_unit") or "week"


#: Largest number of (draw x grid cell) values evaluated at once.
_CHUNK = 2_000_000


def _ax(ax, figsize=(7, 4.5)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _segment(dp: DrawParams, segment: str | None) -> tuple[int, str]:
    if segment is None:
        if len(dp.segments) > 1:
            raise ValueError(
                f"these draws have segments {list(dp.segments)}; pass segment= to choose one."
            )
        segment = dp.segments[0]
    return int(dp.positions([str(segment)])[0]), str(segment)


def _parts(params) -> list[tuple[DrawParams, float]]:
    """``(draws, share of the draws)`` of each family: one for plain draws, one per
    family with draws for a stack."""
    if isinstance(params, PurchaseStack):
        n = params.n_draws
        return [(DrawParams(sub, "purchase"), len(pos) / n) for _, pos, sub in
                params.components()]
    return [(DrawParams(params, "purchase"), 1.0)]


def model_label(params) -> str:
    """Who made the draws, for titles: ``"BG/NBD"``, or ``"stack of BG/NBD 0.71 +
    Pareto/NBD 0.29"`` for a purchase stack."""
    if isinstance(params, PurchaseStack):
        parts = sorted(params.weights.items(), key=lambda kv: -kv[1])
        if sum(w > 0 for _, w in parts) == 1:
            return _label(parts[0][0])
        return "stack of " + " + ".join(f"{_label(k)} {w:.2f}" for k, w in parts if w > 0)
    return _label(params.attrs.get("model", ""))


def _grid_mean(params, T, max_frequency, n_recency, segment, fn):
    parts = _parts(params)
    col, name = _segment(parts[0][0], segment)
    x = np.arange(int(max_frequency) + 1, dtype=float)[:, None]
    t_x = np.linspace(0.0, float(T), int(n_recency))[None, :]
    cells = x.size * t_x.size
    step = max(1, _CHUNK // cells)
    mean = np.zeros((x.size, t_x.size))
    for dp, share in parts:
        col, _ = _segment(dp, name)
        total = np.zeros((x.size, t_x.size))
        for start in range(0, dp.n_draws, step):
            th = {n: v[start:start + step, col][:, None, None] for n, v in dp.values.items()}
            total += fn(dp.model, th, x, t_x, float(T)).sum(axis=0)
        mean += share * total / dp.n_draws
    mean[0, 1:] = np.nan  # recency is 0 when frequency is 0: those cells cannot occur
    return mean, x.ravel(), t_x.ravel(), parts[0][0].model, name


def probability_alive_matrix(params: xr.Dataset, T: float, *, max_frequency: int = 30,
                             n_recency: int = 40, segment: str | None = None) -> pd.DataFrame:
    """Posterior mean P(alive) for a customer of age ``T``: rows frequency, columns recency."""
    mean, x, t_x, _, _ = _grid_mean(
        params, T, max_frequency, n_recency, segment,
        lambda m, th, x, t_x, T: np.exp(log_p_alive(m, th, x, t_x, T)),
    )
    return pd.DataFrame(mean, index=pd.Index(x.astype(int), name="frequency"),
                        columns=pd.Index(t_x, name="recency"))


def expected_purchases_matrix(params: xr.Dataset, T: float, horizon: float, *,
                              max_frequency: int = 30, n_recency: int = 40,
                              segment: str | None = None) -> pd.DataFrame:
    """Posterior mean expected purchases in ``(T, T + horizon]`` over frequency x recency."""
    mean, x, t_x, _, _ = _grid_mean(
        params, T, max_frequency, n_recency, segment,
        lambda m, th, x, t_x, T: np.exp(log_p_alive(m, th, x, t_x, T))
        * phi_alive(m, th, x, T, horizon, t_x=t_x),
    )
    return pd.DataFrame(mean, index=pd.Index(x.astype(int), name="frequency"),
                        columns=pd.Index(t_x, name="recency"))


def _matrix_plot(mat: pd.DataFrame, ax, title, cbar_label, time_unit, vmin=None, vmax=None,
                 cmap="viridis"):
    ax = _ax(ax, (6.5, 5))
    x = mat.index.to_numpy()
    t = mat.columns.to_numpy(dtype=float)
    dt = (t[1] - t[0]) if t.size > 1 else 1.0
    mesh = ax.pcolormesh(
        np.append(t - dt / 2, t[-1] + dt / 2), np.append(x - 0.5, x[-1] + 0.5),
        np.ma.masked_invalid(mat.to_numpy()), cmap=cmap, vmin=vmin, vmax=vmax, shading="flat",
    )
    ax.figure.colorbar(mesh, ax=ax, label=cbar_label)
    ax.set_xlabel(f"recency: time of last purchase ({time_unit}s after the first)")
    ax.set_ylabel("frequency: repeat purchases")
    ax.set_title(title)
    return ax


def plot_probability_alive_matrix(params: xr.Dataset, T: float, *, segment: str | None = None,
                                  max_frequency: int = 30, n_recency: int = 40, ax=None):
    """Heat map of the posterior mean P(alive) over frequency x recency at age ``T``."""
    mat = probability_alive_matrix(params, T, max_frequency=max_frequency,
                                   n_recency=n_recency, segment=segment)
    dp = _parts(params)[0][0]
    _, name = _segment(dp, segment)
    unit = _time_unit(params)
    title = (f"{model_label(params)}: P(alive), segment {name}, "
             f"T = {T:.4g} {unit}s")
    return _matrix_plot(mat, ax, title, "posterior mean P(alive)", unit, 0.0, 1.0)


def plot_expected_purchases_matrix(params: xr.Dataset, T: float, horizon: float, *,
                                   segment: str | None = None, max_frequency: int = 30,
                                   n_recency: int = 40, ax=None):
    """Heat map of posterior mean expected purchases in the next ``horizon``."""
    mat = expected_purchases_matrix(params, T, horizon, max_frequency=max_frequency,
                                    n_recency=n_recency, segment=segment)
    dp = _parts(params)[0][0]
    _, name = _segment(dp, segment)
    unit = _time_unit(params)
    title = (f"{model_label(params)}: expected purchases in the next "
             f"{horizon:.4g} {unit}s\nsegment {name}, T = {T:.4g} {unit}s")
    return _matrix_plot(mat, ax, title, "posterior mean expected purchases", unit,
                        cmap="magma")


def _draws_by_segment(draws) -> dict[str, np.ndarray]:
    if isinstance(draws, xr.DataArray):
        if "segment" not in draws.dims:
            raise ValueError(f"draws have dims {draws.dims}; expected a 'segment' dim.")
        other = [d for d in draws.dims if d != "segment"]
        flat = draws.transpose("segment", *other).values.reshape(draws.sizes["segment"], -1)
        return {str(s): flat[i] for i, s in enumerate(draws["segment"].values)}
    return {str(k): np.asarray(v, dtype=float).ravel() for k, v in draws.items()}


def plot_clv_distribution(draws: xr.DataArray | Mapping[str, np.ndarray], *, prob: float = 0.94,
                          label: str = "CLV", currency: str = "", interval: str = "interval",
                          title: str | None = None, ax=None):
    """Violin per segment of posterior draws (e.g. segment CLV totals or a mean CLV).

    ``draws``: a DataArray with a ``segment`` dim (other dims are flattened as draws) or
    a mapping ``{segment: 1-D draws}``. The median and the central ``prob`` interval
    are marked. ``label`` says what the draws are (for segment totals: "total CLV of
    the segment", not "CLV"); ``interval`` what kind of interval the bar is (e.g.
    "credible interval of expected CLV" or "predictive interval of realised CLV").
    """
    ax = _ax(ax)
    by_seg = _draws_by_segment(draws)
    names = list(by_seg)
    data = [by_seg[n] for n in names]
    pos = np.arange(1, len(names) + 1)
    parts = ax.violinplot(data, positions=pos, showextrema=False, widths=0.8)
    for body in parts["bodies"]:
        body.set_alpha(0.45)
    for p, d in zip(pos, data, strict=True):
        iv = interval_arrays(d[None, :], prob)
        ax.vlines(p, iv["lower"][0], iv["upper"][0], color="k", lw=2)
        ax.plot(p, iv["median"][0], "o", color="white", mec="k", zorder=3)
    ax.set_xticks(pos, names)
    ax.set_xlabel("segment")
    unit = f" ({currency})" if currency else ""
    ax.set_ylabel(f"{label}{unit}")
    ax.set_title(title or f"Posterior distribution of the {label} "
                 f"(dot: median, bar: {prob:.0%} {interval})")
    return ax


def plot_segment_shrinkage(estimates: Mapping[str, xr.Dataset], param: str, *,
                           segment_sizes: Mapping[str, int] | None = None, prob: float = 0.94,
                           log_scale: bool | None = None, ax=None):
    """Segment estimates of one parameter under several pooling levels, with intervals.

    ``estimates``: ``{label: params}`` e.g. ``{"none": ..., "partial": ..., "complete":
    ...}`` (draws with dims ``(chain, draw, segment)``). A label named ``"complete"`` is
    drawn as a horizontal band (the population estimate); the others as points with
    intervals per segment, offset side by side so shrinkage toward the band shows.
    ``log_scale=None`` switches to a log axis when the intervals span more than a factor
    of 20 (unpooled estimates of small segments can be very wide).
    """
    ax = _ax(ax)
    lows, highs = [], []
    labels = [k for k in estimates if k != "complete"]
    segments = None
    for k, ds in estimates.items():
        segs = [str(s) for s in ds["segment"].values]
        if k != "complete":
            segments = segs if segments is None else segments
    if segments is None:
        segments = [str(s) for s in next(iter(estimates.values()))["segment"].values]
    x = np.arange(len(segments))
    width = 0.6 / max(len(labels), 1)
    markers = "osD^v"
    for i, k in enumerate(labels):
        da = estimates[k][param].sel(segment=segments)
        flat = da.transpose("segment", ...).values.reshape(len(segments), -1)
        iv = interval_arrays(flat, prob)
        lows.append(iv["lower"].min())
        highs.append(iv["upper"].max())
        off = (i - (len(labels) - 1) / 2) * width
        ax.errorbar(x + off, iv["median"], yerr=[iv["median"] - iv["lower"],
                                                  iv["upper"] - iv["median"]],
                    fmt=markers[i % len(markers)], capsize=3, label=f"pooling: {k}")
    if "complete" in estimates:
        flat = estimates["complete"][param].values.ravel()
        iv = interval_arrays(flat[None, :], prob)
        ax.axhspan(iv["lower"][0], iv["upper"][0], color="grey", alpha=0.25,
                   label=f"pooling: complete ({prob:.0%} interval)")
        ax.axhline(iv["median"][0], color="grey", lw=1)
    if log_scale is None:
        log_scale = bool(lows) and min(lows) > 0 and max(highs) / min(lows) > 20
    if log_scale:
        ax.set_yscale("log")
    ticks = segments
    if segment_sizes is not None:
        ticks = [f"{s}\nn = {int(segment_sizes[s]):,}" for s in segments]
    ax.set_xticks(x, ticks)
    ax.set_xlabel("segment (customers)")
    ax.set_ylabel(param)
    if len(estimates) > 1:
        ax.set_title(f"Shrinkage of '{param}' across pooling levels "
                     f"(median, {prob:.0%} credible interval)")
    else:  # one level fitted: no comparison to claim
        (level,) = estimates
        ax.set_title(f"Segment estimates of '{param}', {level} pooling "
                     f"(median, {prob:.0%} credible interval)")
    ax.legend(fontsize="small")
    return ax


def plot_tracking(table: pd.DataFrame, *, kind: str = "cumulative", title: str | None = None,
                  ax=None):
    """Actual vs expected repeat transactions per period (from ``diagnostics.tracking``)."""
    if kind not in ("cumulative", "incremental"):
        raise ValueError(f"kind must be 'cumulative' or 'incremental', got {kind!r}.")
    ax = _ax(ax, (8, 4.5))
    pre = "cum_" if kind == "cumulative" else ""
    t = table["period"].to_numpy()
    ax.fill_between(t, table[f"{pre}lower"], table[f"{pre}upper"], color="C1", alpha=0.3,
                    label=f"model: {table.attrs.get('prob', 0.9):.0%} credible interval of "
                    "the expected count", step=None)
    ax.plot(t, table[f"{pre}expected"], color="C1", ls="--", label="model (posterior mean)")
    ax.plot(t, table[f"{pre}actual"], color="k", label="actual")
    cal = table.attrs.get("calibration_end")
    if cal is not None:
        ax.axvline(cal, color="grey", ls=":", lw=1.5)
        ax.annotate("end of calibration", (cal, 0.98), xycoords=("data", "axes fraction"),
                    ha="right", va="top", rotation=90, fontsize="small", color="grey")
    unit = table.attrs.get("time_unit", "period")
    pdays = table.attrs.get("period_days")
    per = unit if pdays is None else f"{unit} ({pdays:g} days)"
    ax.set_xlabel(f"{unit}s since {table.attrs.get('start', 'the first acquisition')}")
    ax.set_ylabel("cumulative repeat transactions" if pre else f"repeat transactions per {per}")
    model = _label(table.attrs.get("model", "")) if table.attrs.get("model") else ""
    ax.set_title(title or f"{model} tracking: {kind} repeat transactions".strip())
    ax.legend(loc="upper left" if pre else "upper right")
    ax.set_xlim(t.min() - 0.5, t.max() + 0.5)
    return ax


def plot_pit_histogram(pit: np.ndarray, *, quantity: str = "holdout purchases",
                       bins: int = 10, prob: float = 0.94, ax=None):
    """Histogram of randomized PIT values (``HoldoutEvaluation.predicted["pit_purchases"]``).

    Calibrated predictions give a flat histogram: the line is the uniform count and the
    band its central ``prob`` binomial range for this many customers. A U shape means
    intervals that are too narrow (over-confident), a hump too wide, a slope bias.
    """
    from scipy.stats import binom

    u = np.asarray(pit, dtype=float)
    u = u[np.isfinite(u)]
    ax = _ax(ax)
    n = u.size
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    ax.hist(u, bins=edges, color="C0", alpha=0.6, edgecolor="white", label="customers",
            zorder=2)
    lo, hi = binom.ppf([(1 - prob) / 2, (1 + prob) / 2], n, 1.0 / bins)
    ax.axhspan(lo, hi, color="0.6", alpha=0.35, zorder=3, lw=0,
               label=f"{prob:.0%} range of each bar if calibrated")
    ax.axhline(n / bins, color="k", lw=1, ls="--", label="uniform (calibrated)", zorder=4)
    ax.set_xlim(0, 1)
    ax.set_xlabel("randomized PIT of each customer's holdout value")
    ax.set_ylabel("customers")
    ax.set_title(f"Calibration of {quantity}: randomized PIT (flat = calibrated)")
    ax.legend(fontsize="small", loc="upper center")
    return ax


def plot_family_comparison(table: pd.DataFrame, *, ax=None):
    """Each family's ELPD difference to the best (PSIS-LOO, or the validation log
    predictive density of a leave-future-out choice: ``table.attrs["criterion"]``), with
    the standard error of the difference, and the stacking weights
    (``FamilyComparison.table``). The SE of a difference, not of each ELPD, says whether
    the families can be told apart."""
    lfo = table.attrs.get("criterion") == "leave-future-out"
    what = "validation-window log predictive density" if lfo else "ELPD (PSIS-LOO)"
    ax = _ax(ax, (7, 0.6 * len(table) + 1.8))
    names = [str(k) for k in table.index]
    y = np.arange(len(names))[::-1]
    diff = -table["elpd_diff"].to_numpy(float)
    dse = table["dse"].to_numpy(float)
    ax.errorbar(diff, y, xerr=dse, fmt="o", color="k", capsize=4,
                label="ELPD difference to the best +- its SE")
    ax.axvline(0.0, color="grey", ls=":", lw=1)
    for yi, d, e in zip(y, diff, dse, strict=True):
        text = "best" if d == 0 else f"{d:.1f} +- {e:.1f}"
        ax.annotate(text, (d, yi), xytext=(0, 7), textcoords="offset points", ha="center",
                    fontsize="small")
    ax.set_yticks(y, [f"{_label(n)}\nweight {w:.2f}" for n, w in
                      zip(names, table["weight"], strict=True)])
    ax.set_xlabel(f"{what} minus the best family's, in nats (0 = best)")
    ax.set_title("Family comparison" + (" by leave-future-out forecast" if lfo else
                                        " over customers") + ": difference to the best")
    lo = float(np.min(diff - dse)) if len(diff) else -1.0
    ax.set_xlim(min(lo * 1.15, -1.0), max(1.0, 0.1 * abs(lo)))
    ax.legend(fontsize="small", loc="lower left")
    ax.margins(y=0.35)
    return ax


def plot_frequency_check(check, *, group: str = "all", prob: float = 0.9, ax=None):
    """Observed vs posterior predictive customers by calibration repeat purchases."""
    ax = _ax(ax)
    tab = check.table(prob)
    tab = tab[tab["group"] == group]
    if tab.empty:
        raise ValueError(f"group {group!r} not in {list(check.groups)}.")
    x = np.arange(len(tab))
    ax.bar(x - 0.2, tab["observed"], width=0.4, color="0.35", label="observed")
    ax.bar(x + 0.2, tab["mean"], width=0.4, color="C0", alpha=0.7,
           label="posterior predictive mean")
    ax.errorbar(x + 0.2, tab["mean"], yerr=[tab["mean"] - tab["lower"],
                                            tab["upper"] - tab["mean"]],
                fmt="none", ecolor="k", capsize=3, label=f"{prob:.0%} predictive interval")
    ax.set_xticks(x, tab["bin"])
    ax.set_xlabel("repeat purchases in calibration")
    ax.set_ylabel("customers")
    pv = check.p_values().get(group, np.nan)
    ax.set_title(f"{_label(check.model)} posterior predictive check, "
                 f"{'all customers' if group == 'all' else 'segment ' + group} "
                 f"(p = {pv:.2f})")
    ax.legend()
    return ax


def plot_conditional_expectations(table: pd.DataFrame, *, label: str = "model", ax=None,
                                  holdout: str = "holdout"):
    """Mean holdout purchases by calibration frequency: actual vs predicted (with interval)."""
    ax = _ax(ax)
    x = np.arange(len(table))
    ax.plot(x, table["actual"], "ko-", label="actual")
    ax.plot(x, table["predicted"], "s--", color="C1", label=label)
    ax.fill_between(x, table["lower"], table["upper"], color="C1", alpha=0.25,
                    label="credible interval of the expected mean")
    ax.set_xticks(x, [f"{f}\n({n})" for f, n in zip(table["frequency"], table["customers"],
                                                     strict=True)])
    ax.set_xlabel("repeat purchases in calibration (customers)")
    ax.set_ylabel(f"mean purchases in the {holdout}")
    ax.set_title("Conditional expectations: actual vs predicted")
    ax.legend()
    return ax


def plot_trace(idata, var_names: Sequence[str] | None = None, *, axes=None):
    """Trace plot through ``arviz.plot_trace``; returns the axes array."""
    import arviz as az

    return az.plot_trace(idata, var_names=var_names, axes=axes, compact=True)


def plot_rank(idata, var_names: Sequence[str] | None = None, *, ax=None):
    """Rank plot through ``arviz.plot_rank`` (uniform ranks per chain = good mixing)."""
    import arviz as az

    return az.plot_rank(idata, var_names=var_names, ax=ax)
