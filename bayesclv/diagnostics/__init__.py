"""Convergence report, posterior predictive checks, holdout evaluation, model comparison.

Everything here works on posterior draws (``bayesclv.fit.posterior_params``: dims
``(chain, draw, segment)``) and on the data, never on a ``pm.Model``. The closed forms
(P(alive), expected purchases given alive, conditional mean spend) are those of
:mod:`bayesclv.predict`; the log-densities those of :mod:`bayesclv.likelihoods`; the
unconditional simulator that of :mod:`bayesclv.simulate`. What is written here is only
what those modules do not have: simulation of the holdout *conditional on each
customer's history*, and the probability of a holdout count given the individual
latent rates (used for the holdout log predictive density).

Memory: arrays are at most ``(n_draws, chunk of customers)``; draws used for
simulation are a seeded subsample of at most ``n_draws`` posterior draws.

References
----------
Fader, Hardie & Lee (2005), "Counting your customers the easy way", Marketing Science
24(2) (tracking plots, conditional expectations by calibration frequency, CDNOW
39/39-week split). Platzer & Reutterer (2016) and the BTYDplus R package (BIAS =
sum(predicted) / sum(actual) - 1). Vehtari, Gelman & Gabry (2017) (PSIS-LOO).
Vehtari et al. (2021), "Rank-normalization, folding, and localization: an improved
R-hat" (R-hat < 1.01 and bulk/tail ESS > 400 as thresholds; ``arviz`` implements them).
Betancourt (2016), "Diagnosing suboptimal cotangent disintegrations in Hamiltonian
Monte Carlo" (E-BFMI < 0.3).
"""

from bayesclv.diagnostics.comparison import (
    compare_models,
    pointwise_log_likelihood,
    with_log_likelihood,
)
from bayesclv.diagnostics.convergence import (
    NOT_ASSESSED,
    ConvergenceReport,
    ConvergenceWarning,
    convergence_report,
    warn_if_bad,
)
from bayesclv.diagnostics.holdout import (
    HoldoutEvaluation,
    conditional_expectations,
    holdout_evaluation,
    holdout_log_predictive_density,
    holdout_metrics,
    randomized_pit,
)
from bayesclv.diagnostics.ppc import (
    FrequencyCheck,
    posterior_predictive,
    posterior_predictive_frequency,
)
from bayesclv.diagnostics.tracking import tracking

__all__ = [
    "ConvergenceReport",
    "ConvergenceWarning",
    "convergence_report",
    "warn_if_bad",
    "FrequencyCheck",
    "posterior_predictive_frequency",
    "posterior_predictive",
    "holdout_metrics",
    "randomized_pit",
    "NOT_ASSESSED",
    "HoldoutEvaluation",
    "holdout_evaluation",
    "holdout_log_predictive_density",
    "conditional_expectations",
    "tracking",
    "pointwise_log_likelihood",
    "with_log_likelihood",
    "compare_models",
]
