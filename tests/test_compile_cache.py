"""The on-disk cache of compiled log densities (bayesclv.compile_cache, issue 18).

What must hold: the cached entry point computes the model's own log density and gradient
(PyMC's, to rounding), a second model of the same structure with other data is a cache
hit and computes *its* density, and the numba digamma equals SciPy's. The timings are in
benchmarks/bench_fit_speed.py, not here.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import scipy.special as sc

pytest.importorskip("nutpie")

from bayesclv.compile_cache import (  # noqa: E402
    cache_dir,
    cache_key,
    compile_nutpie_numba,
    digamma,
)
from bayesclv.models import build_model  # noqa: E402
from bayesclv.simulate import BGNBDParams, simulate_rfm  # noqa: E402


def test_numba_digamma_equals_scipy():
    x = np.concatenate([np.geomspace(1e-8, 1e8, 400), np.linspace(0.01, 30, 400)])
    ours = np.array([digamma(float(v)) for v in x])
    np.testing.assert_allclose(ours, sc.psi(x), rtol=5e-15, atol=1e-15)


def _rfm(seed, n):
    return simulate_rfm(
        {"a": BGNBDParams(0.5, 5.0, 0.8, 2.5), "b": BGNBDParams(0.8, 8.0, 0.5, 3.0)},
        {"a": n, "b": n + 7},
        T=(20.0, 40.0),
        random_seed=seed,
    )


def _check_entry_point(model, compiled, rng):
    """nutpie's C entry point against PyMC's log density and gradient at random points."""
    names, slices, _ = compiled.shape_info
    n_dim = compiled._n_dim
    logp = model.compile_logp(jacobian=True)
    dlogp = model.compile_dlogp(jacobian=True)
    ip = model.initial_point()
    fn = compiled.compiled_logp_func.ctypes
    dp = ctypes.POINTER(ctypes.c_double)
    ud = compiled.user_data
    for _ in range(3):
        point = {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in ip.items()}
        x = np.zeros(n_dim)
        for name, sl in zip(names, slices, strict=False):
            if name in point and sl.stop <= n_dim:
                x[sl] = np.ravel(point[name])
        grad = np.zeros(n_dim)
        out = np.zeros(1)
        rc = fn(n_dim, x.ctypes.data_as(dp), grad.ctypes.data_as(dp), out.ctypes.data_as(dp),
                ud.ctypes.data_as(ctypes.c_void_p))  # fmt: skip
        assert rc == 0
        ref_point = {name: x[sl].reshape(np.shape(ip[name]))
                     for name, sl in zip(names, slices, strict=False) if name in ip}  # fmt: skip
        assert out[0] == pytest.approx(float(logp(ref_point)), rel=1e-10, abs=1e-8)
        ref_grad = np.concatenate([np.ravel(g) for g in np.atleast_1d(dlogp(ref_point))])
        # dlogp orders its output like model.value_vars, the entry point like its names
        order = [v.name for v in model.value_vars]
        ref = {n: ref_grad[s] for n, s in zip(order, _cuts(model, ip, order), strict=True)}
        ours = np.concatenate([grad[sl] for n, sl in zip(names, slices, strict=False)
                               if n in ref])  # fmt: skip
        theirs = np.concatenate([ref[n] for n in names if n in ref])
        # (rewrites differ: stabilised log1p etc.; 1e-7 is far below what NUTS notices)
        np.testing.assert_allclose(ours, theirs, rtol=1e-7, atol=1e-9)


def _cuts(model, ip, order):
    out, pos = [], 0
    for n in order:
        size = int(np.size(ip[n]))
        out.append(slice(pos, pos + size))
        pos += size
    return out


def test_cached_entry_point_is_the_models_density_and_other_data_hit(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYESCLV_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(0)
    m1 = build_model("bgnbd", _rfm(1, 150), pooling="partial")
    c1, info1 = compile_nutpie_numba(m1)
    assert info1["compile_cache"] == "miss", info1
    _check_entry_point(m1, c1, rng)
    # other customers, same structure (family, pooling, 2 segments): nothing compiled
    m2 = build_model("bgnbd", _rfm(2, 230), pooling="partial")
    c2, info2 = compile_nutpie_numba(m2)
    assert info2["compile_cache"] == "hit", info2
    _check_entry_point(m2, c2, rng)
    # a different structure is a different entry (keys only: nothing compiled)
    m3 = build_model("bgnbd", _rfm(3, 100), pooling="complete")
    assert cache_key(m3) != cache_key(m1) and cache_key(m2) == cache_key(m1)


def test_cache_off(monkeypatch):
    for off in ("off", "0", "none", ""):
        monkeypatch.setenv("BAYESCLV_CACHE_DIR", off)
        assert cache_dir() is None


def test_another_number_of_segments_is_another_entry():
    """pooling='none' with 2 and with 3 segments: the graphs are alike once the data are
    lifted, the layouts are not (reusing the 2-segment entry made nutpie fail)."""
    two = build_model("bgnbd", _rfm(5, 120), pooling="none")
    three_rfm = simulate_rfm(
        {k: BGNBDParams(0.5, 5.0, 0.8, 2.5) for k in "abc"}, {k: 90 for k in "abc"},
        T=(20.0, 40.0), random_seed=6,
    )
    three = build_model("bgnbd", three_rfm, pooling="none")
    two_again = build_model("bgnbd", _rfm(7, 150), pooling="none")
    assert cache_key(two) != cache_key(three)
    assert cache_key(two) == cache_key(two_again)
