"""BG/NBD and MBG/NBD log-likelihoods.

References
----------
Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). "Counting your customers the easy
way: an alternative to the Pareto/NBD model". Marketing Science 24(2), 275-284.
Equation (6) gives the individual likelihood integrated over the Gamma and Beta
heterogeneity.

Batislam, E. P., Denizel, M. and Filiztekin, A. (2007). "Empirical validation and
comparison of models for customer base analysis". International Journal of Research
in Marketing 24(3), 201-209 (the modified BG/NBD, where a customer may drop out at
time 0, right after the first purchase).
"""

from __future__ import annotations

from bayesclv.likelihoods._ops import ops_for


def _segment_part(r, alpha, a, b):
    """Terms of the BG/NBD and MBG/NBD log-likelihoods that depend on parameters only."""
    m = ops_for(r, alpha, a, b)
    return r * m.log(alpha) - m.gammaln(r) - m.betaln(a, b)


def _frequency_part(r, a, b, x, *, modified=False):
    """Terms that depend on the parameters and ``x`` only, and the log of the Beta ratio
    (``a / (b+x-1)``, or ``a / (b+x)`` for MBG/NBD) that weighs the "dropped at t_x" term."""
    m = ops_for(r, a, b, x)
    if modified:
        return m.gammaln(r + x) + m.betaln(a, b + x + 1.0), m.log(a) - m.log(b + x)
    b_safe = m.where(x > 0, b + x - 1.0, 1.0)
    return m.gammaln(r + x) + m.betaln(a, b + x), m.log(a) - m.log(b_safe)


def _timing_part(r, alpha, x, t_x, T, log_ratio, *, modified=False):
    """Terms that need each customer's recency and age."""
    m = ops_for(r, alpha, x, t_x, T, log_ratio)
    log_alpha_T = m.log(alpha + T)
    dropped = _dropped_part(r, x, log_alpha_T, m.log(alpha + t_x), log_ratio, modified=modified)
    return dropped - (r + x) * log_alpha_T


def _dropped_part(r, x, log_alpha_T, log_alpha_tx, log_ratio, *, modified=False):
    """``log(1 + a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))``, 0 where ``x = 0`` (BG/NBD):
    the weight of "dropped out right after the last purchase", given ``log(alpha+T)``
    and ``log(alpha+t_x)`` (computed once per distinct age and recency when grouped)."""
    m = ops_for(r, x, log_alpha_T, log_alpha_tx, log_ratio)
    z = log_ratio + (r + x) * (log_alpha_T - log_alpha_tx)
    return m.softplus(z) if modified else m.where(x > 0, m.softplus(z), 0.0)


def bgnbd_logp(r, alpha, a, b, x, t_x, T):
    """Per-customer BG/NBD log-likelihood, FHL (2005) eq. (6).

    ``L = B(a, b+x)/B(a, b) * Gamma(r+x) alpha^r / Gamma(r)
          * [(alpha+T)^-(r+x) + 1{x>0} a/(b+x-1) (alpha+t_x)^-(r+x)]``.

    The bracket is evaluated as ``(alpha+T)^-(r+x) * (1 + exp(z))`` with ``softplus``
    so neither term under- or overflows for large ``x`` or ``T``; for ``x = 0`` the
    second term is masked (multiplied by 0) after being computed on safe values, which
    keeps gradients finite. The terms are grouped by what they depend on (parameters,
    ``x``, each customer) so that :func:`bayesclv.likelihoods.grouped_loglik` can compute
    each group once per segment or per distinct ``(segment, x)``.

    Parameters
    ----------
    r, alpha : shape and rate of the Gamma distribution of purchase rates (> 0).
    a, b : Beta distribution of the dropout probability after each purchase (> 0).
    x, t_x, T : frequency (repeat purchases), recency and age, in one time unit.
    """
    freq, log_ratio = _frequency_part(r, a, b, x)
    return _segment_part(r, alpha, a, b) + freq + _timing_part(r, alpha, x, t_x, T, log_ratio)


def mbgnbd_logp(r, alpha, a, b, x, t_x, T):
    """Per-customer MBG/NBD log-likelihood (Batislam et al. 2007, eq. 3).

    ``L = Gamma(r+x) alpha^r / Gamma(r) * [B(a, b+x+1)/B(a, b) (alpha+T)^-(r+x)
          + B(a+1, b+x)/B(a, b) (alpha+t_x)^-(r+x)]``; the ratio of the two Beta
    functions is ``a / (b + x)``, and the sum is evaluated with ``softplus``.
    """
    freq, log_ratio = _frequency_part(r, a, b, x, modified=True)
    return (
        _segment_part(r, alpha, a, b)
        + freq
        + _timing_part(r, alpha, x, t_x, T, log_ratio, modified=True)
    )
