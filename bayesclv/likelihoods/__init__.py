"""Pure log-densities of the buy-till-you-die models (each lives in its family module).

Each function returns the per-customer log-likelihood (an array with the broadcast
shape of its inputs) and works on NumPy arrays or PyTensor variables alike.
"""

from bayesclv.families.bgnbd import bgnbd_logp, mbgnbd_logp
from bayesclv.families.gamma_gamma import gamma_gamma_logp
from bayesclv.families.pareto_nbd import pareto_nbd_individual_logp, pareto_nbd_logp

__all__ = [
    "bgnbd_logp",
    "mbgnbd_logp",
    "pareto_nbd_logp",
    "pareto_nbd_individual_logp",
    "gamma_gamma_logp",
]
