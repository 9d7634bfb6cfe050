"""Pure log-densities of the buy-till-you-die models.

Each function returns the per-customer log-likelihood (an array with the broadcast
shape of its inputs) and works on NumPy arrays or PyTensor variables alike.
"""

from bayesclv.likelihoods.bgnbd import bgnbd_logp, mbgnbd_logp
from bayesclv.likelihoods.gamma_gamma import gamma_gamma_logp
from bayesclv.likelihoods.pareto_nbd import pareto_nbd_individual_logp, pareto_nbd_logp

__all__ = [
    "bgnbd_logp",
    "mbgnbd_logp",
    "pareto_nbd_logp",
    "pareto_nbd_individual_logp",
    "gamma_gamma_logp",
]
