"""PyMC model builders: ``build_<model>(rfm, priors, pooling) -> pm.Model``."""

from bayesclv.models._common import CENTERED_MIN_CUSTOMERS, ModelSpec, model_spec
from bayesclv.models.abe import abe_summary, build_abe_pareto_nbd
from bayesclv.models.builders import (
    build_bgnbd,
    build_gamma_gamma,
    build_mbgnbd,
    build_model,
    build_pareto_nbd,
)

__all__ = [
    "build_model",
    "build_bgnbd",
    "build_mbgnbd",
    "build_pareto_nbd",
    "build_gamma_gamma",
    "build_abe_pareto_nbd",
    "abe_summary",
    "model_spec",
    "ModelSpec",
    "CENTERED_MIN_CUSTOMERS",
]
