"""Summed log-likelihood of many customers, each term computed once where it can be.

A model's log-likelihood is a sum over customers, but most of each customer's terms do
not depend on the customer: some depend only on the segment's parameters (e.g.
``log Gamma(r)``), some on the parameters and the frequency ``x`` (e.g.
``log Gamma(r + x)``, ``log B(a, b + x)``). :func:`grouped_loglik` evaluates each group of
terms once per segment, once per distinct ``(segment, x)``, and only the rest per
distinct customer row, then weights each by how many customers share it. For BG/NBD the
logarithms of ``alpha + T`` and ``alpha + t_x`` are computed once per distinct
``(segment, T)`` and ``(segment, t_x)`` (ages and recencies take few distinct values), and
the ``-(r + x) log(alpha + T)`` term is summed per ``(segment, T)`` with weights
``sum(w)`` and ``sum(w x)``, so each customer row costs one ``softplus``; for
Gamma-Gamma the term linear in ``p`` is summed per segment from two data sums, leaving
one ``log(v + x zbar)`` per customer row. The terms are
the very functions the per-customer log-densities are made of (one implementation per
formula); the per-customer functions remain the reference, and tests check that the two
sums agree.

Measured on the CDNOW master (23,570 customers, 8,685 distinct rows, 3 segments),
BG/NBD log-likelihood and gradient: see ``benchmarks/bench_fit_speed.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bayesclv.likelihoods import bgnbd as _bg
from bayesclv.likelihoods import gamma_gamma as _gg
from bayesclv.likelihoods._ops import ops_for
from bayesclv.likelihoods.pareto_nbd import pareto_nbd_logp

__all__ = ["Groups", "make_groups", "grouped_loglik"]


def _no_index():
    return np.zeros(0, dtype=np.int64)


def _no_value():
    return np.zeros(0)


@dataclass(frozen=True)
class Groups:
    """Distinct customer rows and how they group by segment and by ``(segment, x)``."""

    n_segments: int
    seg: np.ndarray  # (rows,) segment index of each distinct row
    data: tuple[np.ndarray, ...]  # (x, t_x, T) or (x, zbar), per distinct row
    weight: np.ndarray  # (rows,) customers sharing each row
    fx: np.ndarray  # (rows,) index of the row's (segment, x) pair
    fx_seg: np.ndarray  # (pairs,) segment of each distinct (segment, x)
    fx_x: np.ndarray  # (pairs,) x of each distinct (segment, x)
    fx_weight: np.ndarray  # (pairs,) customers per pair
    seg_weight: np.ndarray  # (n_segments,) customers per segment
    # BG/NBD only (data (x, t_x, T)); empty otherwise. Distinct (segment, T) and
    # (segment, t_x), each row's index into them, and per (segment, T) the customers
    # and their repeat purchases.
    age_idx: np.ndarray = field(default_factory=_no_index)
    age_seg: np.ndarray = field(default_factory=_no_index)
    age_T: np.ndarray = field(default_factory=_no_value)
    age_weight: np.ndarray = field(default_factory=_no_value)
    age_weight_x: np.ndarray = field(default_factory=_no_value)
    rec_idx: np.ndarray = field(default_factory=_no_index)
    rec_seg: np.ndarray = field(default_factory=_no_index)
    rec_t: np.ndarray = field(default_factory=_no_value)
    # Gamma-Gamma only (data (x, zbar)): per segment, sum(w x log(x zbar)) and
    # sum(w log(x zbar)), the data in the term that is linear in p.
    spend_x_log: np.ndarray = field(default_factory=_no_value)
    spend_log: np.ndarray = field(default_factory=_no_value)


def make_groups(seg: np.ndarray, data, weight: np.ndarray, n_segments: int) -> Groups:
    """Group distinct rows (already compressed, with ``weight`` customers each)."""
    seg = np.asarray(seg, dtype=np.int64)
    x = np.asarray(data[0], dtype=np.float64)
    pairs, fx = np.unique(np.column_stack([seg, x]), axis=0, return_inverse=True)
    fx = fx.ravel()
    weight = np.asarray(weight, dtype=np.float64)
    kind_data = {}  # the fields only one model kind uses
    if len(data) == 3:
        t_x, T = (np.asarray(d, dtype=np.float64) for d in data[1:])
        ages, age_idx = np.unique(np.column_stack([seg, T]), axis=0, return_inverse=True)
        recs, rec_idx = np.unique(np.column_stack([seg, t_x]), axis=0, return_inverse=True)
        age_idx, rec_idx = age_idx.ravel(), rec_idx.ravel()
        kind_data = dict(
            age_idx=age_idx,
            age_seg=ages[:, 0].astype(np.int64),
            age_T=ages[:, 1],
            age_weight=np.bincount(age_idx, weights=weight, minlength=len(ages)),
            age_weight_x=np.bincount(age_idx, weights=weight * x, minlength=len(ages)),
            rec_idx=rec_idx,
            rec_seg=recs[:, 0].astype(np.int64),
            rec_t=recs[:, 1],
        )
    if len(data) == 2:
        log_xz = np.log(x * np.asarray(data[1], dtype=np.float64))
        kind_data = dict(
            spend_x_log=np.bincount(seg, weights=weight * x * log_xz, minlength=n_segments),
            spend_log=np.bincount(seg, weights=weight * log_xz, minlength=n_segments),
        )
    return Groups(
        n_segments=n_segments,
        seg=seg,
        data=tuple(np.asarray(d, dtype=np.float64) for d in data),
        weight=weight,
        fx=fx,
        fx_seg=pairs[:, 0].astype(np.int64),
        fx_x=pairs[:, 1],
        fx_weight=np.bincount(fx, weights=weight, minlength=len(pairs)),
        seg_weight=np.bincount(seg, weights=weight, minlength=n_segments),
        **kind_data,
    )


def grouped_loglik(kind: str, params: dict, g: Groups):
    """Total log-likelihood of all customers (a scalar), for NumPy or PyTensor params.

    ``params`` maps each natural parameter name to an array of shape ``(n_segments,)``.
    """
    m = ops_for(*params.values())
    P = params
    at_pair = {k: v[g.fx_seg] for k, v in P.items()}
    at_row = {k: v[g.seg] for k, v in P.items()}
    if kind in ("bgnbd", "mbgnbd"):
        modified = kind == "mbgnbd"
        x, t_x, T = g.data
        seg_part = _bg._segment_part(P["r"], P["alpha"], P["a"], P["b"])
        freq, log_ratio = _bg._frequency_part(
            at_pair["r"], at_pair["a"], at_pair["b"], g.fx_x, modified=modified
        )
        log_age = m.log(P["alpha"][g.age_seg] + g.age_T)  # log(alpha + T), per (segment, T)
        log_rec = m.log(P["alpha"][g.rec_seg] + g.rec_t)  # log(alpha + t_x), per (segment, t_x)
        dropped = _bg._dropped_part(
            at_row["r"],
            x,
            log_age[g.age_idx],
            log_rec[g.rec_idx],
            log_ratio[g.fx],
            modified=modified,
        )
        # -(r + x) log(alpha + T), summed over the customers of each (segment, T)
        age_part = -(P["r"][g.age_seg] * g.age_weight + g.age_weight_x) * log_age
        return (
            m.sum(g.seg_weight * seg_part)
            + m.sum(g.fx_weight * freq)
            + m.sum(age_part)
            + m.sum(g.weight * dropped)
        )
    if kind == "gamma_gamma":
        x, zbar = g.data
        seg_part = _gg._segment_part(P["q"], P["v"])
        freq = _gg._frequency_part(at_pair["p"], at_pair["q"], g.fx_x)
        # (p x - 1) log(x zbar), summed per segment from its two data sums
        linear = P["p"] * g.spend_x_log - g.spend_log
        scale = _gg._spend_scale_part(at_row["p"], at_row["q"], at_row["v"], x, zbar)
        return (
            m.sum(g.seg_weight * seg_part)
            + m.sum(g.fx_weight * freq)
            + m.sum(linear)
            + m.sum(g.weight * scale)
        )
    if kind == "pareto_nbd":
        x, t_x, T = g.data
        ll = pareto_nbd_logp(at_row["r"], at_row["alpha"], at_row["s"], at_row["beta"], x, t_x, T)
        return m.sum(g.weight * ll)
    raise ValueError(f"unknown model kind {kind!r}")
