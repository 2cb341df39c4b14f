"""Orders and attempts: the values, their states and the rules that move
them. Pure: no I/O, no clock of its own (callers pass ``now``).

Order states::

    received -> routing -> submitted -> pending | unknown
                                     -> delivered | failed | attention

An order has at most one live attempt (submitting, pending or unknown). A new
attempt at another supplier may start only after the previous one ended
rejected or failed: this module refuses anything else, so the dispatcher
cannot double-deliver by mistake.
"""

from __future__ import annotations

import enum
import hashlib
import math
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

from .money import format_money
from .outcome import Deliverables, Kind, Outcome


class State(enum.StrEnum):
    RECEIVED = "received"
    ROUTING = "routing"
    SUBMITTED = "submitted"
    PENDING = "pending"
    UNKNOWN = "unknown"
    DELIVERED = "delivered"
    FAILED = "failed"
    ATTENTION = "attention"


#: states the daemon no longer drives (attention waits for a human)
SETTLED = frozenset({State.DELIVERED, State.FAILED, State.ATTENTION})
#: the states the order API calls final (HTTP 200)
FINAL = SETTLED


class AttemptState(enum.StrEnum):
    SUBMITTING = "submitting"  # journaled; the request may be on the wire
    PENDING = "pending"
    UNKNOWN = "unknown"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    FAILED = "failed"
    INVALID = "invalid"
    ABANDONED = "abandoned"  # handed to a human (attention)


LIVE_ATTEMPT = frozenset({AttemptState.SUBMITTING, AttemptState.PENDING, AttemptState.UNKNOWN})
#: ended attempts after which another supplier may be tried
SAFE_ENDED = frozenset({AttemptState.REJECTED, AttemptState.FAILED})


class TransitionError(Exception):
    """Raised when a change would break the order rules (a bug, never input)."""


@attrs.frozen
class OrderRequest:
    """What the storefront asked for; the idempotency identity of an order."""

    order_id: str
    sku: str
    quantity: int = 1
    account: str | None = attrs.field(default=None, repr=False)
    fields: Mapping[str, str] = attrs.Factory(dict)
    max_price: Decimal | None = None
    deadline_s: float = 600.0

    def identity(self) -> dict[str, Any]:
        """The body as compared for 409 conflicts (wait_s is not part of it)."""
        return {
            "order_id": self.order_id,
            "sku": self.sku,
            "quantity": self.quantity,
            "account": self.account,
            "fields": dict(sorted(self.fields.items())),
            "max_price": None if self.max_price is None else format_money(self.max_price),
            "deadline_s": self.deadline_s,
        }

    @classmethod
    def from_identity(cls, data: Mapping[str, Any]) -> OrderRequest:
        return cls(
            order_id=data["order_id"],
            sku=data["sku"],
            quantity=int(data["quantity"]),
            account=data.get("account"),
            fields=dict(data.get("fields") or {}),
            max_price=None if data.get("max_price") is None else Decimal(data["max_price"]),
            deadline_s=float(data["deadline_s"]),
        )


def attempt_key(order_id: str, seq: int) -> str:
    """The merchant order number sent to the supplier for attempt ``seq``.

    Deterministic (the same order and attempt always give the same key, so a
    crash between journaling and sending cannot produce a second number),
    32 characters of upper-case letters and digits: within every supplier
    protocol's limits (Juhe allows 8-32 alphanumerics).
    """
    # the first 26 characters of the base32 of its sha256: the digest's
    # first 130 bits, ten at a time (base32 in pure Python costs as much as
    # the rest of starting an attempt)
    n = int.from_bytes(hashlib.sha256(order_id.encode()).digest()[:17], "big") >> 6
    return f"KR{''.join([_B32_PAIRS[(n >> shift) & 1023] for shift in _SHIFTS])}{seq:04d}"


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
#: every two base32 characters, by the ten bits they stand for
_B32_PAIRS = [a + b for a in _B32 for b in _B32]
_SHIFTS = tuple(range(120, -1, -10))


@attrs.define
class Attempt:
    key: str
    seq: int
    supplier: str
    product_id: str
    unit_price: Decimal
    state: AttemptState
    started_at: float
    updated_at: float
    outcome: Kind | None = None
    reason: str | None = None
    detail: str | None = None
    latency_ms: float | None = None
    supplier_ref: str | None = None

    @property
    def live(self) -> bool:
        return self.state in LIVE_ATTEMPT

    def to_json(self) -> dict[str, Any]:
        return {
            "supplier": self.supplier,
            "attempt_key": self.key,
            "state": self.state.value,
            "outcome": None if self.outcome is None else self.outcome.value,
            "reason": self.reason,
            "unit_price": format_money(self.unit_price),
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
        }


_ATTEMPT_STATE_FOR = {
    Kind.DELIVERED: AttemptState.DELIVERED,
    Kind.PENDING: AttemptState.PENDING,
    Kind.REJECTED: AttemptState.REJECTED,
    Kind.FAILED: AttemptState.FAILED,
    Kind.INVALID: AttemptState.INVALID,
    Kind.UNKNOWN: AttemptState.UNKNOWN,
}


@attrs.define
class Order:
    request: OrderRequest
    state: State
    created_at: float
    updated_at: float
    deadline_at: float
    attempts: list[Attempt] = attrs.Factory(list)
    supplier: str | None = None
    unit_price: Decimal | None = None
    deliverables: Deliverables | None = None
    error_code: str | None = None
    error_message: str | None = None
    #: how a human settled an order from attention: {by, at, outcome, note}
    resolution: dict[str, Any] | None = None

    @classmethod
    def receive(cls, request: OrderRequest, now: float) -> Order:
        return cls(request, State.RECEIVED, now, now, now + request.deadline_s)

    @property
    def order_id(self) -> str:
        return self.request.order_id

    @property
    def settled(self) -> bool:
        return self.state in SETTLED

    @property
    def live_attempt(self) -> Attempt | None:
        for attempt in self.attempts:
            if attempt.live:
                return attempt
        return None

    def tried(self) -> set[str]:
        """Suppliers that have already ended an attempt at this order."""
        return {a.supplier for a in self.attempts}

    # ---------------------------------------------------------- transitions

    def _move(self, state: State, now: float) -> None:
        if self.settled:
            raise TransitionError(f"order {self.order_id} is {self.state}; cannot become {state}")
        self.state = state
        self.updated_at = now

    def start_routing(self, now: float) -> None:
        self._move(State.ROUTING, now)

    def start_attempt(self, supplier: str, product_id: str, unit_price: Decimal, now: float) -> Attempt:
        """Record a new attempt; refused while another attempt may still deliver."""
        for previous in self.attempts:
            if previous.state not in SAFE_ENDED:
                raise TransitionError(
                    f"order {self.order_id}: attempt {previous.key} is {previous.state};"
                    " no new attempt allowed"
                )
        if self.request.max_price is not None and unit_price > self.request.max_price:
            raise TransitionError(f"order {self.order_id}: {unit_price} is above the ceiling")
        seq = len(self.attempts) + 1
        attempt = Attempt(
            key=attempt_key(self.order_id, seq),
            seq=seq,
            supplier=supplier,
            product_id=product_id,
            unit_price=unit_price,
            state=AttemptState.SUBMITTING,
            started_at=now,
            updated_at=now,
        )
        self.attempts.append(attempt)
        self._move(State.SUBMITTED, now)
        return attempt

    def record(self, attempt: Attempt, outcome: Outcome, now: float, latency_ms: float | None = None) -> None:
        """Apply a plugin outcome to ``attempt`` and the order.

        NOT_FOUND and RATE_LIMITED leave the attempt as it is: neither says
        what happened to the order, so only the caller's clock-based rules
        may end it.
        """
        if attempt not in self.attempts or not attempt.live:
            raise TransitionError(f"order {self.order_id}: attempt {attempt.key} is not live")
        attempt.outcome = outcome.kind
        attempt.updated_at = now
        if latency_ms is not None:
            attempt.latency_ms = latency_ms
        reason = getattr(outcome, "reason", None)
        attempt.reason = None if reason is None else str(reason)
        attempt.detail = getattr(outcome, "detail", None) or None
        ref = getattr(outcome, "supplier_ref", None)
        if ref:
            attempt.supplier_ref = ref
        new_state = _ATTEMPT_STATE_FOR.get(outcome.kind)
        if new_state is None:  # NOT_FOUND, RATE_LIMITED: no change of state
            self.updated_at = now
            return
        attempt.state = new_state
        if outcome.kind is Kind.DELIVERED:
            self.supplier = attempt.supplier
            unit_cost = getattr(outcome, "unit_cost", None)
            self.unit_price = unit_cost if unit_cost is not None else attempt.unit_price
            deliverables: Deliverables = outcome.deliverables  # type: ignore[union-attr]
            if not deliverables.cards and not deliverables.receipt and attempt.supplier_ref:
                # a top-up confirmed without an operator serial: the supplier's
                # own order number is the receipt the shop can quote
                deliverables = Deliverables(receipt=attempt.supplier_ref)
            self.deliverables = deliverables
            self._move(State.DELIVERED, now)
        elif outcome.kind is Kind.PENDING:
            self._move(State.PENDING, now)
        elif outcome.kind is Kind.UNKNOWN:
            self._move(State.UNKNOWN, now)
        elif outcome.kind is Kind.INVALID:
            self.fail(
                attempt.reason or "invalid_order",
                f"{attempt.supplier} refused the order as invalid: {attempt.reason}",
                now,
            )
        else:  # REJECTED, FAILED: the dispatcher routes again
            self._move(State.ROUTING, now)

    def end_attempt(self, attempt: Attempt, state: AttemptState, reason: str, now: float) -> None:
        """End a live attempt by the router's own rule (NOT_FOUND past its
        grace, RATE_LIMITED given up)."""
        if not attempt.live:
            raise TransitionError(f"attempt {attempt.key} is not live")
        attempt.state = state
        attempt.reason = reason
        attempt.updated_at = now
        self._move(State.ROUTING, now)

    def fail(self, code: str, message: str, now: float) -> None:
        if self.live_attempt is not None:
            raise TransitionError(
                f"order {self.order_id}: cannot fail while attempt {self.live_attempt.key} is live"
            )
        self.error_code = code
        self.error_message = message
        self._move(State.FAILED, now)

    def escalate(self, code: str, message: str, now: float) -> None:
        """Hand a failed order to a human after all: a supplier reported a
        delivery the journal had counted as failed."""
        if self.state is not State.FAILED:
            raise TransitionError(f"order {self.order_id} is {self.state}; only failed orders escalate")
        self.error_code = code
        self.error_message = message
        self.state = State.ATTENTION
        self.updated_at = now

    def need_attention(self, code: str, message: str, now: float) -> None:
        for attempt in self.attempts:
            if attempt.live:
                attempt.state = AttemptState.ABANDONED
                attempt.updated_at = now
        self.error_code = code
        self.error_message = message
        self._move(State.ATTENTION, now)

    def resolve(
        self,
        *,
        by: str,
        now: float,
        deliverables: Deliverables | None = None,
        failed_reason: str | None = None,
        supplier: str | None = None,
        unit_price: Decimal | None = None,
    ) -> None:
        """A human settles an order in attention: delivered (with what the
        customer got) or failed (with why)."""
        if self.state is not State.ATTENTION:
            raise TransitionError(f"order {self.order_id} is {self.state}, not in attention")
        if (deliverables is None) == (failed_reason is None):
            raise TransitionError("resolve with either deliverables or a failure reason")
        self.resolution = {
            "by": by,
            "at": _iso(now),
            "outcome": "delivered" if deliverables is not None else "failed",
            "previous_error": self.error_code,
        }
        if deliverables is not None:
            self.deliverables = deliverables
            self.supplier = supplier or (self.attempts[-1].supplier if self.attempts else None)
            self.unit_price = (
                unit_price
                if unit_price is not None
                else (self.attempts[-1].unit_price if self.attempts else None)
            )
            self.error_code = self.error_message = None
            self.state = State.DELIVERED
        else:
            self.error_code = "resolved_failed"
            self.error_message = failed_reason
            self.state = State.FAILED
        self.updated_at = now

    # ------------------------------------------------------------- replies

    def to_json(self) -> dict[str, Any]:
        error = None
        if self.error_code is not None:
            error = {"code": self.error_code, "message": self.error_message}
        return {
            "order_id": self.order_id,
            "sku": self.request.sku,
            "quantity": self.request.quantity,
            "state": self.state.value,
            "supplier": self.supplier,
            "unit_price": None if self.unit_price is None else format_money(self.unit_price),
            "deliverables": None if self.deliverables is None else self.deliverables.to_json(),
            "attempts": [a.to_json() for a in self.attempts],
            "error": error,
            "resolution": self.resolution,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


def _iso(ts: float) -> str:
    """``2026-12-03T20:07:45.078Z``: UTC, milliseconds cut (not rounded) from
    the microseconds, as ``datetime.isoformat(timespec="milliseconds")``
    writes them. Every reply carries two; the date and time of day are
    kept for the second they were made for."""
    global _iso_second
    fraction, whole = math.modf(ts)
    micros = round(fraction * 1e6)  # as datetime.fromtimestamp rounds
    second = int(whole)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    elif micros < 0:
        second, micros = second - 1, micros + 1_000_000
    seen, text = _iso_second
    if second != seen:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _iso_second = (second, text)
    return f"{text}.{micros // 1000:03d}Z"


#: the second ``_iso`` formatted last, and its text (one tuple: threads may
#: format at once)
_iso_second: tuple[int, str] = (-1, "")
