"""Compiled log densities cached on disk: a model is compiled once per machine.

``fit(model, sampler="nutpie")`` compiles the model's log density and gradient with
numba. Done by ``nutpie.compile_pymc_model`` that takes 12-70 s in every process
(BG/NBD to Pareto/NBD on the CDNOW sample, 2 shared cores), for three reasons, each
removed here:

1. *The data are in the code.* A builder's arrays (distinct customer rows, weights,
   group indices, each segment's data summary) enter the graph as constants, so the
   compiled code, and PyTensor's cache key, change with the data. Here every array
   constant of the log density and of the traced variables is lifted into a shared
   variable before compiling (:func:`lift_constants`); nutpie passes shared variables
   to the compiled function as arguments, so the code depends on the graph's structure
   only: the family, the pooling and the parameter layout (number of segments).
2. *digamma is not cacheable.* The gradient of every ``gammaln`` is PyTensor's ``psi``,
   which the numba backend calls through a pointer into SciPy's Cython module, and numba
   cannot cache code holding a run-time address. It is replaced by :data:`cached_psi`,
   the same Cephes algorithm as SciPy's written in numba (within 3e-16 of
   ``scipy.special.psi`` for ``x > 0``; see :func:`digamma`).
3. *nutpie's outer function is compiled afresh.* The C entry points nutpie calls
   (log density + gradient, and the "expand" function that computes the traced
   variables) freeze the data into their code, and linking a cached numba function into
   a new one re-optimises all of it. Here the two entry points are generated from a
   layout that depends only on the graph (:func:`_entry_source`), compiled by numba with
   ``cache=True`` and found again through a numba cache locator keyed by the graph.

On a second fit of a model with the same structure (other data included) nothing is
compiled: the graph is hashed before any PyTensor rewrite (:func:`graph_key`, a few
tenths of a second), the two entry points are loaded from disk, and only the data are
handed over. ``fit`` records the outcome in ``attrs["timings"]["compile_cache"]``
(``"hit"``, ``"miss"``, ``"off"`` or ``"unavailable: <why>"``).

The cache lives in ``$BAYESCLV_CACHE_DIR`` (default ``$XDG_CACHE_HOME/bayesclv`` or
``~/.cache/bayesclv``); ``BAYESCLV_CACHE_DIR=off`` (or ``0``, ``none``, empty) disables
it. Entries are keyed by the versions of Python, NumPy, PyTensor, numba, llvmlite and
nutpie as well, and numba checks the CPU; deleting the directory is always safe.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["CACHE_ENV", "cache_dir", "cache_key", "compile_nutpie_numba", "digamma", "graph_key"]

CACHE_ENV = "BAYESCLV_CACHE_DIR"
#: Bumped whenever the entry-point templates or the metadata change.
FORMAT = 1
_OFF = {"", "0", "off", "none", "false", "no"}
_LOCK = threading.Lock()


def cache_dir() -> Path | None:
    """The cache directory, or ``None`` where ``$BAYESCLV_CACHE_DIR`` disables it."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        if env.strip().lower() in _OFF:
            return None
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bayesclv"


# --------------------------------------------------------------------------- digamma
_PSI_A = (8.33333333333333333333e-2, -2.10927960927960927961e-2, 7.57575757575757575758e-3,
          -4.16666666666666666667e-3, 3.96825396825396825397e-3, -8.33333333333333333333e-3,
          8.33333333333333333333e-2)  # fmt: skip
_PSI_P = (-0.0020713321167745952, -0.045251321448739056, -0.28919126444774784,
          -0.65031853770896507, -0.32555031186804491, 0.25479851061131551)  # fmt: skip
_PSI_Q = (-0.55789841321675513e-6, 0.0021284987017821144, 0.054151797245674225,
          0.43593529692665969, 1.4606242909763515, 2.0767117023730469, 1.0)  # fmt: skip
_EULER = 0.5772156649015328606065120900824024


def digamma(x: float) -> float:
    """The digamma function, Cephes' ``psi`` (as in ``scipy.special.psi``) in plain Python.

    Reflection for ``x < 0``, harmonic numbers at integers up to 10, recurrence into
    ``[1, 2]`` and Boost's rational approximation about the positive root there
    (``digamma_imp_1_2``), the asymptotic series above 10. Compiled by numba for the
    gradients of ``gammaln`` (see :data:`cached_psi`). Measured against
    ``scipy.special.psi`` on 400,000 points in ``(1e-300, 1e20)``: relative error
    <= 2.7e-16 (95% bit-identical); for ``x < 0`` within 1.3e-12 relative (SciPy adds a
    series about the negative root; our likelihoods never take ``x < 0``).
    """
    y = 0.0
    if math.isnan(x) or x == math.inf:
        return x
    if x == -math.inf:
        return math.nan
    if x == 0.0:
        return math.copysign(math.inf, -x)
    if x < 0.0:
        if x == math.floor(x):
            return math.nan
        y = -math.pi / math.tan(math.pi * (x - math.trunc(x)))  # psi(1-x) - psi(x)
        x = 1.0 - x
    if x <= 10.0 and x == math.floor(x):
        for i in range(1, int(x)):
            y += 1.0 / i
        return y - _EULER
    if x < 1.0:
        y -= 1.0 / x
        x += 1.0
    elif x < 10.0:
        while x > 2.0:
            x -= 1.0
            y += 1.0 / x
    if 1.0 <= x <= 2.0:
        g = x - 1569415565.0 / 1073741824.0
        g -= (381566830.0 / 1073741824.0) / 1073741824.0
        g -= 0.9016312093258695918615325266959189453125e-19
        t = x - 1.0
        p = _PSI_P[0]
        for c in _PSI_P[1:]:
            p = p * t + c
        q = _PSI_Q[0]
        for c in _PSI_Q[1:]:
            q = q * t + c
        return y + g * 0.99558162689208984 + g * (p / q)
    s = 0.0
    if x < 1.0e17:
        z = 1.0 / (x * x)
        s = _PSI_A[0]
        for c in _PSI_A[1:]:
            s = s * z + c
        s = z * s
    return y + math.log(x) - 0.5 / x - s


def _make_cached_psi():
    from pytensor.scalar.basic import upgrade_to_float
    from pytensor.scalar.math import Psi

    class CachedPsi(Psi):
        """PyTensor's ``psi`` with a numba implementation numba can cache (no pointer
        into SciPy); same value, same gradient (``tri_gamma``), same C code."""

    return CachedPsi, CachedPsi(upgrade_to_float, name="cached_psi")


CachedPsi, cached_psi = _make_cached_psi()
_REGISTERED = False


def _register_numba() -> None:
    """Register the numba implementation of :data:`cached_psi` (once)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import numba
    from pytensor.link.numba.dispatch.basic import register_funcify_and_cache_key

    jitted = numba.njit(digamma)

    @register_funcify_and_cache_key(CachedPsi)
    def _funcify_cached_psi(op, node, **kwargs):
        dtypes = ",".join(str(v.type.dtype) for v in (*node.inputs, *node.outputs))
        key = f"bayesclv.compile_cache.CachedPsi:{FORMAT}:{dtypes}"
        return jitted, hashlib.sha256(key.encode()).hexdigest()

    _REGISTERED = True


def replace_psi(outputs):
    """``outputs`` with every elementwise ``psi`` computed by :data:`cached_psi` (root
    inputs are kept, not cloned)."""
    from pytensor.graph.replace import clone_replace
    from pytensor.graph.traversal import toposort
    from pytensor.scalar.math import Psi
    from pytensor.tensor.elemwise import Elemwise

    repl = {
        node.outputs[0]: Elemwise(cached_psi)(*node.inputs)
        for node in toposort(outputs)
        if isinstance(node.op, Elemwise) and type(node.op.scalar_op) is Psi
    }
    return list(clone_replace(list(outputs), replace=repl)) if repl else list(outputs)


# --------------------------------------------------------------------------- lifting
def lift_constants(outputs):
    """Replace every array constant (``ndim >= 1``) in the graphs of ``outputs`` by a shared
    variable holding the same value; scalars stay constants (they are part of the model's
    structure: prior parameters, node counts).

    Returns ``(new_outputs, shared)``, ``shared`` in order of first appearance. Equal
    arrays share one variable. Static shapes are kept only where they are 1 (which
    broadcasting needs), so the graph no longer depends on the data's values or sizes.
    """
    import pytensor
    from pytensor.graph.replace import clone_replace
    from pytensor.graph.traversal import ancestors
    from pytensor.tensor.variable import TensorConstant

    by_value: dict[tuple, object] = {}
    replace: dict = {}
    shared = []
    for var in ancestors(outputs):
        if not isinstance(var, TensorConstant) or var.type.ndim == 0 or var in replace:
            continue
        data = np.ascontiguousarray(var.data)
        vkey = (str(data.dtype), data.shape, hashlib.sha256(data.tobytes()).hexdigest(),
                var.type.shape)  # fmt: skip
        if vkey not in by_value:
            shape = tuple(1 if s == 1 else None for s in var.type.shape)
            sv = pytensor.shared(data.copy(), name=f"bclv_data_{len(shared)}", shape=shape)
            by_value[vkey] = sv
            shared.append(sv)
        replace[var] = by_value[vkey]
    if not replace:
        return list(outputs), shared
    # rebuild_strict=False: nodes are rebuilt with the new, shape-free types (a strict
    # clone would pin each shared variable back to the constant's shape)
    return list(clone_replace(list(outputs), replace=replace, rebuild_strict=False)), shared


# --------------------------------------------------------------------------- keys
class Uncacheable(Exception):
    """A graph element has no deterministic description (the model is compiled uncached)."""


def _value_key(v):
    from pytensor.graph.basic import Variable
    from pytensor.graph.op import Op
    from pytensor.graph.type import Type

    if v is None or isinstance(v, bool | int | float | str | bytes):
        return repr(v)
    if isinstance(v, np.generic):
        return f"{v.dtype}:{v!r}"
    if isinstance(v, np.ndarray):
        data = np.ascontiguousarray(v)
        return f"nd:{data.dtype}:{data.shape}:{hashlib.sha256(data.tobytes()).hexdigest()}"
    if isinstance(v, np.dtype):
        return f"dtype:{v}"
    if isinstance(v, tuple | list):
        return "(" + ",".join(_value_key(x) for x in v) + ")"
    if isinstance(v, frozenset | set):
        return "{" + ",".join(sorted(_value_key(x) for x in v)) + "}"
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{_value_key(k)}:{_value_key(x)}" for k, x in
                              sorted(v.items(), key=lambda kv: repr(kv[0]))) + "}"  # fmt: skip
    if isinstance(v, slice):
        return f"slice({_value_key(v.start)},{_value_key(v.stop)},{_value_key(v.step)})"
    if isinstance(v, Op):
        return _op_key(v)
    if isinstance(v, Type):
        return _type_key(v)
    if isinstance(v, Variable):
        raise Uncacheable(f"a variable inside an op's properties ({v})")
    if isinstance(v, type) or callable(v):
        name = getattr(v, "__qualname__", None)
        module = getattr(v, "__module__", None)
        if name and module and "<locals>" not in name and "<lambda>" not in name:
            return f"fn:{module}.{name}"
    raise Uncacheable(f"no deterministic key for {type(v).__name__} {v!r:.80}")


def _type_key(t) -> str:
    props = getattr(t, "__props__", None)
    cls = f"{type(t).__module__}.{type(t).__qualname__}"
    if props is None:
        raise Uncacheable(f"type {cls} has no __props__")
    return cls + "[" + ",".join(_value_key(getattr(t, p)) for p in props) + "]"


def _op_key(op) -> str:
    from pytensor.scalar.basic import ScalarOp

    cls = f"{type(op).__module__}.{type(op).__qualname__}"
    if "<locals>" in cls:
        raise Uncacheable(f"op {cls} is defined inside a function")
    props = getattr(op, "__props__", None)
    if props is not None:
        return cls + "{" + ",".join(_value_key(getattr(op, p)) for p in props) + "}"
    if isinstance(op, ScalarOp):
        # Scalar ops have no __props__ (equality is their type, output_types_preference
        # and, for some, a flag): every instance attribute goes into the key.
        attrs = sorted(vars(op).items())
        return cls + "{" + ",".join(f"{k}={_value_key(v)}" for k, v in attrs) + "}"
    raise Uncacheable(f"op {cls} has no __props__")


def graph_key(outputs, roots) -> str:
    """A hash of the computation ``outputs`` make of ``roots``: every node's op (its class
    and properties), how nodes connect, every constant's type and value, every root's
    position and type. Two graphs with the same key compute the same function of their
    roots. Raises :class:`Uncacheable` where an op or constant cannot be described
    deterministically (then the model is compiled without the cache)."""
    from pytensor.graph.basic import Constant
    from pytensor.graph.traversal import toposort

    ids: dict = {}
    for i, r in enumerate(roots):
        ids[r] = f"r{i}:{_type_key(r.type)}"
    lines = []

    def ref(v) -> str:
        if v in ids:
            return ids[v]
        if isinstance(v, Constant):
            ids[v] = f"c:{_type_key(v.type)}:{_value_key(np.asarray(v.data))}"
            return ids[v]
        raise Uncacheable(f"free input {v} of type {v.type} is not a declared root")

    for n, node in enumerate(toposort(outputs)):
        ins = ",".join(ref(v) for v in node.inputs)
        outs = ",".join(_type_key(v.type) for v in node.outputs)
        lines.append(f"{_op_key(node.op)}({ins})->({outs})")
        for j, out in enumerate(node.outputs):
            ids[out] = f"n{n}.{j}"
    lines.append("out:" + ",".join(ref(v) for v in outputs))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _environment_key() -> str:
    import importlib.metadata as md

    import pytensor

    versions = [sys.version.split()[0]]
    for pkg in ("numpy", "pytensor", "numba", "llvmlite", "nutpie", "pymc"):
        try:
            versions.append(f"{pkg}={md.version(pkg)}")
        except md.PackageNotFoundError:
            versions.append(f"{pkg}=-")
    flags = [f"fastmath={pytensor.config.numba__fastmath}", f"floatX={pytensor.config.floatX}"]
    return f"format={FORMAT};" + ";".join(versions + flags)


# --------------------------------------------------------------------------- entry points
def _voidptr_intrinsic():
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def bclv_voidptr(typingctx, src):
        """An integer address as a ``void*`` (to view shared data with ``numba.carray``)."""
        sig = types.voidptr(src)

        def codegen(cgctx, builder, sig, args):
            return builder.inttoptr(args[0], cgutils.voidptr_t)

        return sig, codegen

    return bclv_voidptr


_VOIDPTR = None


def _entry_source(layout: dict) -> str:
    """Source of the two C entry points nutpie calls, from the layout alone.

    ``user_data`` is an int64 array: for each shared array its address and its shape.
    ``layout["arrays"]`` lists each array's ``(ndim, dtype)``; ``logp_args`` and
    ``expand_args`` which arrays each compiled PyTensor function takes, in order.
    """
    offsets, pos = [], 0
    for ndim, _dtype in layout["arrays"]:
        offsets.append(pos)
        pos += 1 + ndim
    n_ud = max(pos, 1)

    def unpack(args):
        lines = []
        for i in sorted(set(args)):
            ndim, dtype = layout["arrays"][i]
            o = offsets[i]
            shape = "".join(f"ud[{o + 1 + k}], " for k in range(ndim))
            lines.append(f"    a{i} = numba.carray(_voidptr(ud[{o}]), ({shape}), np.{dtype})")
        return "\n".join(lines) or "    pass"

    def call(args):
        return "".join(f", a{i}" for i in args)

    n_dim, n_exp = layout["n_dim"], layout["n_expanded"]
    # The unpacking lives in helpers without try/except: numba's liveness analysis of a
    # try block grows badly with its statements (minutes for 18 arrays).
    return f'''
@numba.njit
def bclv_logp_body(x, ud_):
    ud = numba.carray(ud_, ({n_ud},), np.int64)
{unpack(layout["logp_args"])}
    return logp_inner(x{call(layout["logp_args"])})


@numba.njit
def bclv_expand_body(x, ud_):
    ud = numba.carray(ud_, ({n_ud},), np.int64)
{unpack(layout["expand_args"])}
    return expand_inner(x{call(layout["expand_args"])})


def bclv_logp(dim, x_, out_, logp_, ud_):
    if dim != {n_dim}:
        return -1
    try:
        x = numba.carray(x_, ({n_dim},))
        out = numba.carray(out_, ({n_dim},))
        logp = numba.carray(logp_, ())
        logp_val, grad = bclv_logp_body(x, ud_)
        logp[()] = logp_val
        out[...] = grad
        if not np.all(np.isfinite(out)):
            return 3
        if not np.isfinite(logp_val):
            return 4
    except Exception:  # noqa: BLE001
        return 1
    return 0


def bclv_expand(dim, expanded, x_, out_, ud_):
    if dim != {n_dim}:
        return -1
    if expanded != {n_exp}:
        return -1
    try:
        x = numba.carray(x_, ({n_dim},))
        out = numba.carray(out_, ({n_exp},))
        (values,) = bclv_expand_body(x, ud_)
        out[...] = values
    except Exception:  # noqa: BLE001
        return -2
    return 0
'''




def _user_data(arrays: list[np.ndarray]) -> np.ndarray:
    parts = []
    for a in arrays:
        parts.append(a.ctypes.data)
        parts.extend(a.shape)
    return np.ascontiguousarray(np.array(parts or [0], dtype=np.int64))


_LOCATED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCATOR_INSTALLED = False


def _install_locator() -> None:
    """A numba cache locator that puts our entry points in the bayesclv cache directory,
    disambiguated by the graph key (numba adds the signature, CPU and bytecode)."""
    global _LOCATOR_INSTALLED
    if _LOCATOR_INSTALLED:
        return
    import pytensor.link.numba.cache  # noqa: F401  (its locator first, ours before it)
    from numba.core.caching import CacheImpl, _CacheLocator

    class BayesclvLocator(_CacheLocator):
        def __init__(self, py_func, path, key):
            self._py_func, self._path, self._key = py_func, path, key

        def ensure_cache_path(self):
            os.makedirs(self._path, exist_ok=True)

        def get_cache_path(self):
            return str(self._path)

        def get_source_stamp(self):
            return FORMAT

        def get_disambiguator(self):
            return self._key

        @classmethod
        def from_function(cls, py_func, py_file):
            entry = _LOCATED.get(py_func)
            if entry is not None:
                return cls(py_func, *entry)
            return None

    CacheImpl._locator_classes.insert(0, BayesclvLocator)
    _LOCATOR_INSTALLED = True


def _entry_points(layout: dict, key: str, numba_dir: Path, logp_inner, expand_inner):
    """Compile (or, with ``None`` inner functions, only load) the two entry points.

    Returns ``(logp_cfunc, expand_cfunc, hits)``; raises where a load was asked for and
    the disk holds no entry (numba then fails to type the missing inner function).
    """
    global _VOIDPTR
    import numba

    if _VOIDPTR is None:
        _VOIDPTR = _voidptr_intrinsic()
    _install_locator()
    src = _entry_source(layout)
    env = {"numba": numba, "np": np, "_voidptr": _VOIDPTR, "__name__": __name__,
           "logp_inner": logp_inner, "expand_inner": expand_inner}  # fmt: skip
    # __name__ is this (importable) module: numba pickles it with the cached entry points
    exec(compile(src, f"<bayesclv_entry_{key[:12]}>", "exec"), env)  # noqa: S102
    disambiguator = hashlib.sha256((key + src).encode()).hexdigest()
    sig_logp = numba.types.int64(
        numba.types.uint64,
        numba.types.CPointer(numba.types.double),
        numba.types.CPointer(numba.types.double),
        numba.types.CPointer(numba.types.double),
        numba.types.voidptr,
    )
    sig_expand = numba.types.int64(
        numba.types.uint64,
        numba.types.uint64,
        numba.types.CPointer(numba.types.double),
        numba.types.CPointer(numba.types.double),
        numba.types.voidptr,
    )
    out = []
    for name, sig in (("bclv_logp", sig_logp), ("bclv_expand", sig_expand)):
        fn = env[name]
        _LOCATED[fn] = (numba_dir, f"{disambiguator[:40]}")
        out.append(numba.cfunc(sig, cache=True)(fn))
    hits = sum(int(getattr(f, "cache_hits", 0)) for f in out)
    return out[0], out[1], hits


# --------------------------------------------------------------------------- compile
def _model_graphs(model, var_names):
    """The log density and the traced variables of ``model`` as functions of its value
    variables (nutpie's ``_make_functions``, before compiling), and the layout names."""
    logp = model.logp()
    value_vars = [model.rvs_to_values[rv] for rv in model.free_RVs]
    joined_names = [v.name for v in value_vars]
    remaining = [v for v in model.unobserved_value_vars if v.name not in joined_names]
    if var_names is not None:
        keep = set(var_names)
        remaining = [v for v in remaining if v.name in keep]
    return logp, value_vars, remaining


def compile_nutpie_numba(model, *, initial_points=None, var_names=None, jitter_rvs=None):
    """``nutpie.compile_pymc_model(model, backend="numba")``, cached across processes.

    Returns ``(compiled, info)``: a nutpie ``CompiledPyMCModel`` for ``nutpie.sample`` and
    ``{"compile_cache": "hit" | "miss" | "off" | "unavailable: ...", ...}`` with the
    seconds spent keying, loading or compiling. Where the cache is off or the graph
    cannot be keyed, nutpie's own compiler is used.
    """
    import time

    import nutpie

    t0 = time.perf_counter()
    root = cache_dir()
    if root is None:
        return _plain(nutpie, model, initial_points, var_names, jitter_rvs), {
            "compile_cache": "off"
        }
    try:
        import nutpie.compile_pymc as ncp

        needed = ("CompiledPyMCModel", "_prepare_dims_and_coords", "_compute_shapes",
                  "_rv_dict_to_flat_array_wrapper", "_wrap_with_lock")  # fmt: skip
        missing = [n for n in needed if not hasattr(ncp, n)]
        if missing:
            raise Uncacheable(f"nutpie {nutpie.__version__} lacks {missing}")
        key, lifted, shared, value_vars, remaining = _keyed(model, var_names)
    except Uncacheable as exc:
        return _plain(nutpie, model, initial_points, var_names, jitter_rvs), {
            "compile_cache": f"unavailable: {exc}"
        }
    t_key = time.perf_counter() - t0
    version_dir = root / f"numba-v{FORMAT}"
    meta_path = version_dir / f"{key}.json"
    info = {"compile_cache_key_s": t_key}
    _register_numba()
    with _LOCK:
        if meta_path.exists():
            t1 = time.perf_counter()
            try:
                meta = json.loads(meta_path.read_text())
                logp_cf, expand_cf, hits = _entry_points(
                    meta["layout"], key, version_dir, None, None
                )
                if hits == 2:
                    compiled = _assemble(ncp, model, meta, logp_cf, expand_cf, shared,
                                         initial_points, jitter_rvs)  # fmt: skip
                    info.update(compile_cache="hit", compile_cache_load_s=time.perf_counter() - t1)
                    return compiled, info
            except Exception:  # noqa: BLE001  (a stale or partial entry: compile afresh)
                pass
        t1 = time.perf_counter()
        meta, logp_fn, expand_fn = _compile_inner(model, lifted, value_vars, remaining, shared)
        logp_cf, expand_cf, _ = _entry_points(
            meta["layout"], key, version_dir, logp_fn.vm.jit_fn, expand_fn.vm.jit_fn
        )
        compiled = _assemble(ncp, model, meta, logp_cf, expand_cf, shared, initial_points,
                             jitter_rvs)  # fmt: skip
        saved = all(getattr(cf, "_cache", None) is not None and
                    Path(cf._cache._cache_file._index_path).exists()
                    for cf in (logp_cf, expand_cf))  # fmt: skip
        if saved:  # numba wrote both entry points: record the layout that finds them
            tmp = meta_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(meta))
            os.replace(tmp, meta_path)
    info.update(compile_cache="miss" if saved else "miss (numba did not save it)",
                compile_cache_compile_s=time.perf_counter() - t1)  # fmt: skip
    return compiled, info


def _keyed(model, var_names):
    logp, value_vars, remaining = _model_graphs(model, var_names)
    lifted, shared = lift_constants([logp, *remaining])
    shared = shared + _free_shared(lifted, shared)
    key = hashlib.sha256(
        (
            _environment_key()
            + f";check_bounds={bool(model.check_bounds)}"
            + f";names={[v.name for v in value_vars]}"
            + f";remaining={[v.name for v in remaining]}"
            # the layout (e.g. the number of segments) enters the entry points, and a
            # dim's length can be lifted data: the shapes are part of the key
            + f";shapes={_layout_shapes(model, value_vars, remaining)}"
            + ";"
            + graph_key(lifted, [*value_vars, *shared])
        ).encode()
    ).hexdigest()
    return key, lifted, shared, value_vars, remaining


def cache_key(model, var_names=None) -> str:
    """The key of ``model``'s entry in the cache (nothing compiled): equal for models of
    the same structure whatever their data; raises :class:`Uncacheable` where none."""
    return _keyed(model, var_names)[0]


def _layout_shapes(model, value_vars, remaining) -> list:
    from nutpie.compile_pymc import _compute_shapes

    shapes = _compute_shapes(model)
    return [(v.name, tuple(int(d) for d in shapes[v.name])) for v in [*value_vars, *remaining]]


def _free_shared(outputs, known) -> list:
    """Shared variables already in the graph (e.g. ``pm.Data``), not lifted by us."""
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.traversal import ancestors

    seen = set(known)
    out = []
    for v in ancestors(outputs):
        if isinstance(v, SharedVariable) and v not in seen:
            seen.add(v)
            out.append(v)
    return out


def _plain(nutpie, model, initial_points, var_names, jitter_rvs):
    kwargs = {}
    if var_names is not None:
        kwargs["var_names"] = var_names
    if initial_points is not None:
        kwargs["initial_points"] = initial_points
    if jitter_rvs is not None:
        kwargs["jitter_rvs"] = jitter_rvs
    return nutpie.compile_pymc_model(model, **kwargs)


def _compile_inner(model, lifted, value_vars, remaining, shared):
    """What nutpie's ``_make_functions`` does, on the lifted graphs: rewrite the log
    density, take its gradient, read the parameters from one flat vector, compile both
    functions with PyTensor's numba backend (``psi`` replaced by :data:`cached_psi`)."""
    from math import prod

    import pytensor
    import pytensor.tensor as pt
    from nutpie.compile_pymc import _compute_shapes
    from pymc.pytensorf import compile as compile_pymc

    shapes = _compute_shapes(model)
    logp, remaining_l = lifted[0], lifted[1:]
    rewrites = ["canonicalize", "stabilize"]
    if not model.check_bounds:
        rewrites.append("local_remove_check_parameter")
    logp = pytensor.graph.rewrite_graph(logp, include=rewrites)
    grads = pytensor.gradient.grad(logp, value_vars)
    grad = pt.concatenate([pt.as_tensor(g).ravel() for g in grads])

    names, slices, shp = [], [], []
    count = 0
    for v in value_vars:
        shape = tuple(int(s) for s in shapes[v.name])
        n = prod(shape)
        names.append(v.name)
        slices.append((count, count + n))
        shp.append(shape)
        count += n
    n_dim = count
    joined = pt.TensorType("float64", shape=(n_dim,))(name="_unconstrained_point")
    replacements = {
        v: joined[a:b].reshape(shape).astype(v.dtype)
        for v, (a, b), shape in zip(value_vars, slices, shp, strict=True)
    }
    logp, grad = pytensor.clone_replace([logp, grad], replacements)
    logp, grad = replace_psi([logp, grad])
    with model:
        logp_fn = compile_pymc((joined,), (logp, grad), mode="NUMBA")

    for v in remaining_l:
        shape = tuple(int(s) for s in shapes[v.name])
        names.append(v.name)
        slices.append((count, count + prod(shape)))
        shp.append(shape)
        count += prod(shape)
    flat = pt.concatenate([joined, *[pt.as_tensor(v).ravel() for v in remaining_l]])
    (flat,) = pytensor.clone_replace([flat], replacements)
    (flat,) = replace_psi([flat])
    with model:
        expand_fn = compile_pymc((joined,), [flat], mode="NUMBA")

    index = {sv: i for i, sv in enumerate(shared)}
    layout = {
        "n_dim": n_dim,
        "n_expanded": count,
        "arrays": [(int(sv.type.ndim), str(sv.type.dtype)) for sv in shared],
        "logp_args": [index[sv] for sv in logp_fn.get_shared()],
        "expand_args": [index[sv] for sv in expand_fn.get_shared()],
    }
    meta = {"layout": layout, "names": names, "slices": slices, "shapes": shp}
    return meta, logp_fn, expand_fn


def _assemble(ncp, model, meta, logp_cf, expand_cf, shared, initial_points, jitter_rvs):
    """A nutpie ``CompiledPyMCModel`` around our entry points and this model's data."""
    from pymc.initial_point import make_initial_point_fn

    arrays = []
    for sv in shared:
        a = np.array(sv.get_value(borrow=True), order="C", copy=True)
        a.flags.writeable = False
        arrays.append(a)
    user_data = _user_data(arrays)
    names = meta["names"]
    slices = [slice(a, b) for a, b in meta["slices"]]
    shapes = [tuple(s) for s in meta["shapes"]]
    shape_info = (names, slices, shapes)
    n_free = len(model.free_RVs)
    if jitter_rvs is None:
        jitter_rvs = set(model.free_RVs)
    point_fn = make_initial_point_fn(
        model=model,
        overrides=initial_points,
        default_strategy="support_point",
        jitter_rvs=jitter_rvs,
        return_transformed=True,
    )
    point_fn = ncp._rv_dict_to_flat_array_wrapper(
        ncp._wrap_with_lock(point_fn), names=names[:n_free], shapes=shapes[:n_free]
    )
    dims, coords = ncp._prepare_dims_and_coords(model, shape_info)
    return ncp.CompiledPyMCModel(
        _n_dim=meta["layout"]["n_dim"],
        dims=dims,
        _coords=coords,
        _shapes={n: s for n, s in zip(names, shapes, strict=True)},
        compiled_logp_func=logp_cf,
        compiled_expand_func=expand_cf,
        initial_point_func=point_fn,
        # our own user_data layout (addresses and shapes): nutpie's with_data() does not
        # apply; refit with the new data instead (it costs a cache hit)
        shared_data={f"bclv_data_{i}": a for i, a in enumerate(arrays)},
        user_data=user_data,
        n_expanded=meta["layout"]["n_expanded"],
        shape_info=shape_info,
        logp_func=None,
        expand_func=None,
    )
