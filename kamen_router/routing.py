"""Candidates and ranking for one order. Pure: plain values in, a ranking out.

This first policy ranks eligible offers by unit price (cheapest first, ties
by supplier name so decisions are reproducible) and says why every other
supplier was left out. Later policies keep the same shape: a ``Ranking`` of
``Candidate`` values, each with the terms that placed it, and ``Exclusion``
values with a reason.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from decimal import Decimal

import attrs

from .config import SupplierConfig
from .money import format_money


class Excluded(enum.StrEnum):
    DISABLED = "disabled"
    ABOVE_MAX_PRICE = "above_max_price"
    ALREADY_TRIED = "already_tried"
    REMOVED = "removed"


@attrs.frozen
class Candidate:
    supplier: str
    product_id: str
    unit_price: Decimal

    def to_json(self) -> dict[str, object]:
        return {
            "supplier": self.supplier,
            "product_id": self.product_id,
            "unit_price": format_money(self.unit_price),
        }


@attrs.frozen
class Exclusion:
    supplier: str
    reason: Excluded

    def to_json(self) -> dict[str, object]:
        return {"supplier": self.supplier, "reason": self.reason.value}


@attrs.frozen
class Ranking:
    sku: str
    candidates: tuple[Candidate, ...]
    excluded: tuple[Exclusion, ...]

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def to_json(self) -> dict[str, object]:
        return {
            "sku": self.sku,
            "candidates": [c.to_json() for c in self.candidates],
            "excluded": [e.to_json() for e in self.excluded],
        }


def rank(
    sku: str,
    suppliers: Mapping[str, SupplierConfig],
    *,
    max_price: Decimal | None = None,
    tried: Collection[str] = (),
) -> Ranking:
    """Rank the suppliers that can take an order for ``sku``."""
    candidates: list[Candidate] = []
    excluded: list[Exclusion] = []
    for supplier in suppliers.values():
        offer = supplier.offers.get(sku)
        if offer is None:
            continue
        reason: Excluded | None = None
        if not supplier.enabled:
            reason = Excluded.DISABLED
        elif supplier.name in tried:
            reason = Excluded.ALREADY_TRIED
        elif max_price is not None and offer.price > max_price:
            reason = Excluded.ABOVE_MAX_PRICE
        if reason is not None:
            excluded.append(Exclusion(supplier.name, reason))
        else:
            candidates.append(Candidate(supplier.name, offer.product_id, offer.price))
    candidates.sort(key=lambda c: (c.unit_price, c.supplier))
    excluded.sort(key=lambda e: e.supplier)
    return Ranking(sku, tuple(candidates), tuple(excluded))
