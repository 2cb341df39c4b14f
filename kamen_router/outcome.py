"""The outcome taxonomy: what a plugin reports for a submit, a query or a
callback, and the only vocabulary the router acts on.

==============  ==============================================================
outcome         router action
==============  ==============================================================
Delivered       final success; carries the deliverables and the real cost
Pending         taken; poll with query on the plugin's schedule or wait for
                its callback
Rejected        certainly not taken: fail over now
Failed          taken and definitively failed or refunded: fail over now,
                with a new attempt
Invalid         the order itself is bad: it fails at once, no failover, the
                supplier's score is untouched
RateLimited     try the same attempt key later, or fail over
Unknown         may or may not have been taken: **never fail over**; query
                with the same attempt key until the answer is definitive
NotFound        (query only) the supplier has no such order; counts as failed
                only after the plugin's grace period
==============  ==============================================================
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import ClassVar

import attrs


class Kind(enum.StrEnum):
    DELIVERED = "delivered"
    PENDING = "pending"
    REJECTED = "rejected"
    FAILED = "failed"
    INVALID = "invalid"
    RATE_LIMITED = "rate_limited"
    UNKNOWN = "unknown"
    NOT_FOUND = "not_found"


class RejectReason(enum.StrEnum):
    OUT_OF_STOCK = "out_of_stock"
    PRODUCT_UNAVAILABLE = "product_unavailable"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    PRICE_ABOVE_CEILING = "price_above_ceiling"
    MAINTENANCE = "maintenance"
    AUTH = "auth"
    UNREACHABLE = "unreachable"
    #: this supplier cannot express this order (a field or product kind its
    #: protocol lacks); fails over without counting against anyone
    UNSUPPORTED = "unsupported"


class InvalidReason(enum.StrEnum):
    INVALID_ACCOUNT = "invalid_account"
    BLACKLISTED_ACCOUNT = "blacklisted_account"
    MISSING_FIELD = "missing_field"
    INVALID_QUANTITY = "invalid_quantity"


@attrs.frozen
class Card:
    number: str
    password: str = attrs.field(repr=False)
    expires: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"number": self.number, "password": self.password, "expires": self.expires}


@attrs.frozen
class Deliverables:
    cards: tuple[Card, ...] = ()
    receipt: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"cards": [c.to_json() for c in self.cards], "receipt": self.receipt}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Deliverables:
        cards = data.get("cards") or []
        assert isinstance(cards, list)
        receipt = data.get("receipt")
        return cls(
            cards=tuple(
                Card(
                    str(c["number"]),
                    str(c["password"]),
                    None if c.get("expires") is None else str(c["expires"]),
                )
                for c in cards
            ),
            receipt=None if receipt is None else str(receipt),
        )


@attrs.frozen
class Delivered:
    kind: ClassVar[Kind] = Kind.DELIVERED
    deliverables: Deliverables = Deliverables()
    #: what the supplier charged per unit, when it says
    unit_cost: Decimal | None = None
    supplier_ref: str | None = None

    @property
    def reason(self) -> str | None:
        return None


@attrs.frozen
class Pending:
    kind: ClassVar[Kind] = Kind.PENDING
    supplier_ref: str | None = None

    @property
    def reason(self) -> str | None:
        return None


@attrs.frozen
class Rejected:
    kind: ClassVar[Kind] = Kind.REJECTED
    reason: RejectReason
    detail: str = ""


@attrs.frozen
class Failed:
    kind: ClassVar[Kind] = Kind.FAILED
    reason: str = "failed"
    detail: str = ""


@attrs.frozen
class Invalid:
    kind: ClassVar[Kind] = Kind.INVALID
    reason: InvalidReason
    detail: str = ""


@attrs.frozen
class RateLimited:
    kind: ClassVar[Kind] = Kind.RATE_LIMITED
    retry_after: float | None = None
    detail: str = ""

    @property
    def reason(self) -> str | None:
        return None


@attrs.frozen
class Unknown:
    kind: ClassVar[Kind] = Kind.UNKNOWN
    detail: str = ""

    @property
    def reason(self) -> str | None:
        return self.detail or None


@attrs.frozen
class NotFound:
    kind: ClassVar[Kind] = Kind.NOT_FOUND
    detail: str = ""

    @property
    def reason(self) -> str | None:
        return None


Outcome = Delivered | Pending | Rejected | Failed | Invalid | RateLimited | Unknown | NotFound

#: outcomes after which another supplier may be tried: the supplier certainly
#: did not (Rejected), or certainly will not (Failed), deliver this attempt
ENDS_ATTEMPT_SAFELY = (Rejected, Failed)
