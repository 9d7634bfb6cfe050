"""PyMC model builders: ``build_<model>(rfm, priors, pooling) -> pm.Model``."""

from bayesclv.models._common import CENTERED_MIN_CUSTOMERS, ModelSpec, model_spec
from bayesclv.models.builders import (
    build_bgnbd,
    build_gamma_gamma,
    build_mbgnbd,
    build_pareto_nbd,
)

__all__ = [
    "build_bgnbd",
    "build_mbgnbd",
    "build_pareto_nbd",
    "build_gamma_gamma",
    "model_spec",
    "ModelSpec",
    "CENTERED_MIN_CUSTOMERS",
]
