"""The few math primitives the log-densities need, for NumPy and for PyTensor.

Each log-density is written once against this small namespace, so the same formula
serves PyMC models (PyTensor graphs, with gradients), the maximum-likelihood fits in
``bayesclv.classic`` and quick NumPy evaluation. The namespace is picked from the
arguments: any PyTensor variable selects PyTensor. ``stop_gradient`` is the identity
in value and has zero gradient (PyTensor's ``zero_grad``); it is for quantities that
only choose a discretisation, such as quadrature nodes.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import scipy.special as sps


def _np_softplus(x):
    return np.logaddexp(0.0, x)


def _np_logsumexp(x, axis):
    return sps.logsumexp(x, axis=axis)


def _np_stop_gradient(x):
    return x


NUMPY = SimpleNamespace(
    name="numpy",
    log=np.log,
    log1p=np.log1p,
    exp=np.exp,
    expm1=np.expm1,
    gammaln=sps.gammaln,
    betaln=sps.betaln,
    softplus=_np_softplus,
    logsumexp=_np_logsumexp,
    where=np.where,
    sum=np.sum,
    maximum=np.maximum,
    minimum=np.minimum,
    stop_gradient=_np_stop_gradient,
    expit=sps.expit,
    asarray=np.asarray,
    expand=lambda x: np.asarray(x)[..., None],
)


def _pt_logsumexp(x, axis):
    """Max-shifted log-sum-exp. ``pt.logsumexp`` is ``log(sum(exp(x)))`` and is stable only
    after PyTensor's default rewrites (not under ``fast_compile`` or constant folding);
    this form is stable in every mode. The shift carries no gradient (the value does not
    depend on it), so the gradient is the softmax, as it should be."""
    import pytensor.tensor as pt
    from pytensor.gradient import zero_grad

    shift = zero_grad(pt.max(x, axis=axis, keepdims=True))
    shift = pt.switch(pt.isinf(shift) | pt.isnan(shift), 0.0, shift)
    return pt.log(pt.sum(pt.exp(x - shift), axis=axis)) + pt.squeeze(shift, axis=axis)


def _tensor_namespace() -> SimpleNamespace:
    import pytensor.tensor as pt
    from pytensor.gradient import zero_grad
    from pytensor.tensor.special import betaln

    return SimpleNamespace(
        name="pytensor",
        log=pt.log,
        log1p=pt.log1p,
        exp=pt.exp,
        expm1=pt.expm1,
        gammaln=pt.gammaln,
        betaln=betaln,
        softplus=pt.softplus,
        logsumexp=_pt_logsumexp,
        where=pt.switch,
        sum=pt.sum,
        maximum=pt.maximum,
        minimum=pt.minimum,
        stop_gradient=zero_grad,
        expit=pt.sigmoid,
        asarray=pt.as_tensor_variable,
        expand=lambda x: pt.as_tensor_variable(x)[..., None],
    )


_TENSOR: SimpleNamespace | None = None


def ops_for(*args) -> SimpleNamespace:
    """PyTensor ops if any argument is a PyTensor variable, else NumPy ops."""
    global _TENSOR
    for a in args:
        if type(a).__module__.startswith("pytensor"):
            if _TENSOR is None:
                _TENSOR = _tensor_namespace()
            return _TENSOR
    return NUMPY
