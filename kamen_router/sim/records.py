"""The values simulated supplier accounts deal in: orders as a protocol
layer parses them (``OrderIn``) and as the account keeps them
(``SimOrder``), what ``place`` answers (``Placed`` / ``Refused``), products,
the ledger's JSON shape (the same for every protocol), and the callback
rendering a protocol layer supplies (``CallbackRenderer``). Import them from
``kamen_router.sim.core``, which re-exports them."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol, TypedDict

import attrs
import trio

from ..money import format_money


class Status(enum.StrEnum):
    """An order's state at the supplier."""

    SUCCESS = "success"
    PROCESSING = "processing"
    FAILED = "failed"


class Refusal(enum.StrEnum):
    """Why ``place`` did not take an order."""

    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    #: the merchant order number is taken; ``Refused.order`` is that order
    DUPLICATE = "duplicate"
    MAINTENANCE = "maintenance"
    UNKNOWN_PRODUCT = "unknown_product"
    OFF_SHELF = "off_shelf"
    INVALID_ACCOUNT = "invalid_account"
    PRICE_ABOVE_CEILING = "price_above_ceiling"
    OUT_OF_STOCK = "out_of_stock"
    INSUFFICIENT_BALANCE = "insufficient_balance"


class Fault(enum.Enum):
    """What to do to an accepted order's reply (the order itself is taken
    and, for every fault, delivered)."""

    NONE = "none"
    #: answer normally, but only after ``Placed.hold_s``
    TIMEOUT = "timeout"
    #: answer the protocol's "system error, query to confirm"
    SYSTEM_ERROR = "system_error"
    #: drop the connection with no reply
    RESET = "reset"
    #: answer ``Placed.gateway_status`` (502 or 503) with an HTML page
    GATEWAY_ERROR = "gateway_error"
    #: answer the protocol's "duplicate order number", as for a resubmission
    DUPLICATE_REPLY = "duplicate_reply"


# ------------------------------------------------------------------ values


@attrs.frozen
class OrderIn:
    """One order as a protocol layer parsed it."""

    merchant_order_no: str
    product_id: str
    quantity: int
    #: the account to charge; a top-up when given, else a card order
    account: str | None = attrs.field(default=None, repr=False)
    fields: Mapping[str, str] = attrs.Factory(dict)
    #: the caller's ceiling per unit, when the protocol carries one
    max_unit_price: Decimal | None = None
    #: the caller's ceiling on the order total, when the protocol carries one
    max_total_price: Decimal | None = None
    #: where callbacks for this order go (None: no callbacks)
    notify_url: str | None = attrs.field(default=None, repr=False)
    #: anything else the layer wants back when it renders this order
    extra: Mapping[str, Any] = attrs.Factory(dict)


@attrs.frozen
class SimCard:
    number: str
    password: str = attrs.field(repr=False)
    expires: str | None = None


@attrs.frozen
class Plan:
    """The draws that combine with any fate, made when the order is accepted."""

    #: queries answer "not found" until this time on the account's clock
    not_found_until: float | None = None
    #: one delay per copy of the final callback
    callback_delays: tuple[float, ...] = (0.0,)
    #: a stale ``processing`` callback follows the final ones
    reorder: bool = False
    #: the first final callback is delivered before the submit reply
    before_reply: bool = False
    #: the status of a ``GATEWAY_ERROR`` reply
    gateway_status: int = 502


class LedgerEntry(TypedDict):
    """One order in ``GET /ledger`` (the same shape for every protocol)."""

    merchant_order_no: str
    order_no: str
    product_id: str
    quantity: int
    account_masked: str | None
    unit_price: str
    status: str
    accepted_at: float
    delivered_at: float | None
    submits: int
    callbacks_sent: int
    callbacks_acked: int


class LedgerReply(TypedDict):
    supplier: str
    orders: list[LedgerEntry]
    #: most requests (other than /ledger) it was answering at once since
    #: the previous /ledger request
    peak_requests: int


@attrs.define(eq=False)
class SimOrder:
    """An order the account took. Protocol layers read it to render replies
    and callbacks; only the account changes it."""

    order_no: str
    merchant_order_no: str
    product_id: str
    quantity: int
    account: str | None = attrs.field(repr=False)
    unit_price: Decimal
    status: Status
    accepted_at: float
    #: when a processing order completes, on the account's clock
    ready_at: float | None
    delivered_at: float | None
    # generated at acceptance, shown only once the order has succeeded
    cards: tuple[SimCard, ...] = attrs.field(repr=False)
    receipt: str | None
    notify_url: str | None = attrs.field(default=None, repr=False)
    fields: Mapping[str, str] = attrs.Factory(dict)
    extra: Mapping[str, Any] = attrs.Factory(dict)
    plan: Plan = attrs.Factory(Plan)
    submits: int = 1
    callbacks_sent: int = 0
    callbacks_acked: int = 0
    #: set once the submit reply is due (its latency has passed), so that
    #: callbacks do not overtake it unless the plan says so
    replied: trio.Event = attrs.Factory(trio.Event)

    @property
    def final(self) -> bool:
        return self.status is not Status.PROCESSING

    @property
    def total(self) -> Decimal:
        return self.unit_price * self.quantity

    def goods(self, status: Status | None = None) -> tuple[tuple[SimCard, ...], str | None]:
        """The cards and receipt as of ``status`` (default: the order's):
        nothing unless it is a success."""
        if (status or self.status) is not Status.SUCCESS:
            return (), None
        return self.cards, self.receipt

    def to_ledger(self) -> LedgerEntry:
        return {
            "merchant_order_no": self.merchant_order_no,
            "order_no": self.order_no,
            "product_id": self.product_id,
            "quantity": self.quantity,
            "account_masked": "***" + self.account[-4:] if self.account else None,
            "unit_price": format_money(self.unit_price),
            "status": self.status.value,
            "accepted_at": self.accepted_at,
            "delivered_at": self.delivered_at,
            "submits": self.submits,
            "callbacks_sent": self.callbacks_sent,
            "callbacks_acked": self.callbacks_acked,
        }


@attrs.frozen
class Placed:
    """``place`` took the order; answer it, spoiled as ``fault`` says."""

    order: SimOrder
    fault: Fault = Fault.NONE
    #: how long to hold a ``TIMEOUT`` reply back
    hold_s: float = 0.0


@attrs.frozen
class Refused:
    """``place`` did not take the order."""

    reason: Refusal
    #: the existing order, for ``DUPLICATE``
    order: SimOrder | None = None
    #: seconds until a token is free, for ``RATE_LIMITED``
    retry_after: float | None = None


PlaceResult = Placed | Refused


@attrs.define
class Product:
    price: Decimal
    #: units left (None: unlimited)
    stock: int | None = None
    on_shelf: bool = True


@attrs.frozen
class CatalogEntry:
    product_id: str
    price: Decimal
    on_shelf: bool
    stock: int | None


@attrs.frozen
class OutgoingCallback:
    """One rendered, signed callback request."""

    content: bytes
    headers: Mapping[str, str] = attrs.Factory(dict)
    #: where it goes (default: the order's ``notify_url``)
    url: str | None = attrs.field(default=None, repr=False)
    method: str = "POST"


class CallbackRenderer(Protocol):
    """The protocol side of callbacks."""

    def render_callback(self, order: SimOrder, status: Status) -> OutgoingCallback | None:
        """The callback telling ``order`` is in ``status``, signed now; None
        when the protocol sends no such callback. Called for every try."""
        ...

    def callback_acknowledged(self, status: int, body: bytes) -> bool:
        """Whether the receiver's answer acknowledges the callback."""
        ...
