"""Model families and the one table keyed by their names.

``FAMILIES[name]`` is the family object of a model (see :mod:`bayesclv.families.base` for
what a family holds). Fits and parameter draws carry the name in ``attrs["model"]``;
:func:`get_family` turns it back into the object, with an error that lists the choices.
This table is the only place in the package that maps a model name to code.
"""

from __future__ import annotations

from bayesclv.errors import ModelSpecificationError
from bayesclv.families.base import Family, PurchaseFamily, SpendFamily
from bayesclv.families.bgbb import BGBB
from bayesclv.families.bgnbd import BGNBD, MBGNBD
from bayesclv.families.cnbd import BGCNBD, MBGCNBD
from bayesclv.families.gamma_gamma import GAMMA_GAMMA
from bayesclv.families.pareto_nbd import PARETO_NBD
from bayesclv.families.pareto_nbd_cov import PARETO_NBD_COV
from bayesclv.families.pareto_nbd_dyncov import PARETO_NBD_DYNCOV
from bayesclv.families.sbg import BDW, SBG

__all__ = [
    "FAMILIES",
    "Family",
    "PurchaseFamily",
    "SpendFamily",
    "get_family",
    "family_of_truth",
    "purchase_families",
]

#: Every family, by the name stored in fits (``attrs["model"]``).
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        BGNBD,
        MBGNBD,
        BGCNBD,
        MBGCNBD,
        PARETO_NBD,
        GAMMA_GAMMA,
        BGBB,
        SBG,
        BDW,
        PARETO_NBD_COV,
        PARETO_NBD_DYNCOV,
    )
}


def get_family(name, kind: str | None = None) -> Family:
    """The family called ``name`` (a family object passes through), optionally checking
    that it is a ``"purchase"`` or ``"spend"`` family."""
    fam = name if isinstance(name, Family) else FAMILIES.get(name)
    if fam is None:
        raise ModelSpecificationError(
            f"unknown model {name!r}; the families are {sorted(FAMILIES)}."
        )
    if kind is not None and fam.kind != kind:
        choices = sorted(k for k, f in FAMILIES.items() if f.kind == kind)
        raise ModelSpecificationError(
            f"{fam.name!r} is a {fam.kind} model, but a {kind} model is needed here "
            f"(one of {choices})."
        )
    return fam


def purchase_families() -> list[str]:
    """Names of the purchase (frequency and dropout) families."""
    return [k for k, f in FAMILIES.items() if f.kind == "purchase"]


def family_of_truth(params) -> Family:
    """The family whose population-parameter class ``params`` is an instance of."""
    for fam in FAMILIES.values():
        if fam.truth_class is not None and isinstance(params, fam.truth_class):
            return fam
    classes = sorted(f.truth_class.__name__ for f in FAMILIES.values() if f.truth_class)
    raise ModelSpecificationError(
        f"{type(params).__name__} is not a family's population parameters; use one of "
        f"{classes}."
    )
