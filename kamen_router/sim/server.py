"""The simulated upstream for the ``sim`` protocol.

``SimSupplier`` is the ``sim`` protocol's layer over a simulated supplier
account (``kamen_router.sim.core.SupplierAccount``, through
``kamen_router.sim.base.ProtocolSimulator``): it checks signatures, parses
``sim`` requests, asks the account, and renders its answers and callbacks in
``sim`` terms (``kamen_router.sim.protocol``). The account owns everything
else: products, balance, stock, the ledger, fates and faults, pending
completion and when callbacks go out. Its background work runs in
``SimSupplier.run``, which must be running in a nursery while it serves:
``serve_simulator`` does both.

An order is checked in this order, and the first failing check answers:

1. signature, merchant and timestamp (1001), then the request's shape (1000);
2. the rate limit, when one is set (1429);
3. the merchant order number: a known one answers 1007 with the existing
   order (before every business check: see ``kamen_router.sim.core``);
4. maintenance (1008), product (1002), account (1006), price ceiling (1005),
   stock (1003), balance (1004).

An accepted order's fate and faults are drawn by the account (see
``Simulate``). How the ``sim`` protocol shows each reply fault:

- ``timeout_rate``: the normal reply, held longer than the client waits;
- ``unknown_rate``: HTTP 500 with code 5000;
- ``reset_rate``: the connection is reset with no reply;
- ``error_after_accept_rate``: HTTP 502 or 503 with an HTML body;
- ``duplicate_reply_rate``: 1007 "duplicate order number" with the order,
  as if it had been submitted before.

``not_found_rate`` makes queries answer 2001 for ``not_found_s`` after
acceptance (the ledger and resubmissions still see the order). Callbacks
(``kamen_router.sim.protocol`` describes them) are the order as in replies,
signed like requests, acknowledged by HTTP 200 with the body ``ok``. Every
reply but the ledger's is delayed by a uniform draw from ``latency_ms``.

``GET /ledger`` (unsigned) lists what the simulator really accepted and
delivered, with its callback counts, so tests (in this process or another)
can check invariants such as "no order delivered by two suppliers" against
the suppliers themselves rather than the router's view.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import urlsplit

import attrs
import trio

from ..config import Simulate, SupplierConfig
from ..http import BadRequest, Request, Response
from ..money import dumps_json, format_money, parse_money
from .base import PATH_LEDGER, ProtocolSimulator, Reply, base_url, serve
from .core import (
    Clock,
    OrderIn,
    OutgoingCallback,
    Refusal,
    Refused,
    SimOrder,
    Status,
)
from .protocol import (
    CALLBACK_ACK,
    HEADER_MERCHANT,
    HEADER_SIGN,
    HEADER_TIMESTAMP,
    MAX_QUANTITY,
    MAX_SKEW_S,
    PATH_BALANCE,
    PATH_CATALOG,
    PATH_ORDER,
    PATH_QUERY,
    CardJson,
    Code,
    OrderJson,
    signed_headers,
    verify,
)

#: how each refusal is answered: HTTP status, code, message
_REFUSALS: Mapping[Refusal, tuple[int, Code, str]] = {
    Refusal.AUTH: (401, Code.BAD_SIGNATURE, "bad signature, merchant or timestamp"),
    Refusal.RATE_LIMITED: (429, Code.RATE_LIMITED, "too many requests"),
    Refusal.DUPLICATE: (200, Code.DUPLICATE_ORDER, "duplicate merchant order number"),
    Refusal.MAINTENANCE: (200, Code.MAINTENANCE, "down for maintenance"),
    Refusal.UNKNOWN_PRODUCT: (200, Code.PRODUCT_UNAVAILABLE, "unknown product or off the shelf"),
    Refusal.OFF_SHELF: (200, Code.PRODUCT_UNAVAILABLE, "unknown product or off the shelf"),
    Refusal.INVALID_ACCOUNT: (200, Code.INVALID_ACCOUNT, "invalid or blacklisted account"),
    Refusal.PRICE_ABOVE_CEILING: (200, Code.PRICE_ABOVE_CEILING, "the price is above max_unit_price"),
    Refusal.OUT_OF_STOCK: (200, Code.OUT_OF_STOCK, "out of stock"),
    Refusal.INSUFFICIENT_BALANCE: (200, Code.INSUFFICIENT_BALANCE, "insufficient balance"),
}

_SYSTEM_ERROR = {
    "code": int(Code.SYSTEM_ERROR),
    "message": "system error, result unconfirmed; query to confirm",
}


class _Malformed(Exception):
    """The request body does not have the protocol's shape (code 1000)."""


class SimSupplier(ProtocolSimulator):
    """One simulated supplier account speaking the ``sim`` protocol.

    ``SimSupplier(supplier, simulate)`` is the factory the daemon calls
    (``SimPlugin.simulator``); see ``ProtocolSimulator`` for the keyword
    arguments and ``self.account`` for steering it (products, balance,
    maintenance, rate limit). Without ``run``, pending orders still complete
    when looked at, but no callback is ever sent.
    """

    protocol: ClassVar[str] = "sim"

    def __init__(
        self,
        supplier: SupplierConfig,
        simulate: Simulate | None = None,
        *,
        clock: Clock = trio.current_time,
        wall_clock: Clock = time.time,
        rate_limit_per_s: float | None = None,
        timeout_hold_s: float | None = None,
    ) -> None:
        super().__init__(
            supplier,
            simulate,
            clock=clock,
            wall_clock=wall_clock,
            rate_limit_per_s=rate_limit_per_s,
            timeout_hold_s=timeout_hold_s,
        )
        self._api_key = self.credential("api_key")
        self._endpoints: dict[str, Callable[[Mapping[str, Any]], Response | Reply]] = {
            PATH_ORDER: self._order,
            PATH_QUERY: self._query,
            PATH_BALANCE: self._balance,
            PATH_CATALOG: self._catalog,
        }

    @property
    def stock(self) -> dict[str, int | None]:
        """Units left per product id (a snapshot; steer through ``account.products``)."""
        return {pid: p.stock for pid, p in self.account.products.items()}

    @property
    def prices(self) -> dict[str, Decimal]:
        """Price per product id (a snapshot)."""
        return {pid: p.price for pid, p in self.account.products.items()}

    # ------------------------------------------------------------------ HTTP

    def answer(self, request: Request) -> Response | Reply:
        endpoint = self._endpoints.get(request.path)
        if endpoint is None:
            if request.path == PATH_LEDGER:
                return _error(405, Code.BAD_REQUEST, "use GET /ledger")
            return _error(404, Code.BAD_REQUEST, "no such endpoint")
        if request.method != "POST":
            return _error(405, Code.BAD_REQUEST, f"use POST {request.path}")
        if not self._authentic(request):
            return self._refusal(Refused(Refusal.AUTH))
        try:
            body = request.json()
        except BadRequest as exc:
            return _error(exc.status, Code.BAD_REQUEST, exc.message)
        if not isinstance(body, dict):
            return _error(400, Code.BAD_REQUEST, "the body must be a JSON object")
        try:
            return endpoint(body)
        except _Malformed as exc:
            return _error(400, Code.BAD_REQUEST, str(exc))

    def _authentic(self, request: Request) -> bool:
        headers = request.headers
        merchant = headers.get(HEADER_MERCHANT.lower())
        timestamp = headers.get(HEADER_TIMESTAMP.lower(), "")
        signature = headers.get(HEADER_SIGN.lower())
        if merchant != self.supplier.name or signature is None:
            return False
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            return False
        if abs(self.wall_clock() - int(timestamp)) > MAX_SKEW_S:
            return False
        return verify(self._api_key.reveal(), timestamp, request.body, signature)

    # ------------------------------------------------------------- endpoints

    def _order(self, body: Mapping[str, Any]) -> Response | Reply:
        result = self.account.place(_parse_order(body))
        if isinstance(result, Refused):
            return self._refusal(result)
        order = result.order
        return self.reply_to(
            result,
            _ok(order=_order_json(order)),
            duplicate=self._refusal(Refused(Refusal.DUPLICATE, order=order)),
            system_error=Response.json(500, _SYSTEM_ERROR),
        )

    def _refusal(self, refused: Refused) -> Response:
        status, code, message = _REFUSALS[refused.reason]
        body: dict[str, Any] = {"code": int(code), "message": message}
        if refused.order is not None:
            body["order"] = _order_json(refused.order)
        if refused.retry_after is None:
            return Response.json(status, body)
        body["retry_after"] = round(refused.retry_after, 3)
        header = ("retry-after", str(max(1, round(refused.retry_after))))
        return attrs.evolve(Response.json(status, body), headers=(header,))

    def _query(self, body: Mapping[str, Any]) -> Response:
        merchant_order_no = body.get("merchant_order_no")
        if not isinstance(merchant_order_no, str) or not merchant_order_no:
            raise _Malformed("merchant_order_no must be a non-empty string")
        order = self.account.query(merchant_order_no)
        if order is None:
            return _error(200, Code.ORDER_NOT_FOUND, "order not found")
        return _ok(order=_order_json(order))

    def _balance(self, body: Mapping[str, Any]) -> Response:
        return _ok(balance=format_money(self.account.balance))

    def _catalog(self, body: Mapping[str, Any]) -> Response:
        products = [
            {
                "product_id": entry.product_id,
                "price": format_money(entry.price),
                "on_shelf": entry.on_shelf,
                "stock": entry.stock,
            }
            for entry in self.account.catalog()
        ]
        return _ok(products=products)

    # ------------------------------------------------------------- callbacks

    def render_callback(self, order: SimOrder, status: Status) -> OutgoingCallback:
        data = dumps_json(_order_json(order, status))
        headers = signed_headers(self.supplier.name, self._api_key.reveal(), data, self.wall_clock())
        return OutgoingCallback(data, headers)

    def callback_acknowledged(self, status: int, body: bytes) -> bool:
        return status == 200 and body.strip() == CALLBACK_ACK


# ---------------------------------------------------------------- rendering


def _ok(**extra: Any) -> Response:
    return Response.json(200, {"code": int(Code.OK), "message": "ok", **extra})


def _error(status: int, code: Code, message: str) -> Response:
    return Response.json(status, {"code": int(code), "message": message})


def _order_json(order: SimOrder, status: Status | None = None) -> OrderJson:
    status = status or order.status
    cards, receipt = order.goods(status)
    card_json: list[CardJson] = [
        {"number": c.number, "password": c.password, "expires": c.expires} for c in cards
    ]
    return {
        "order_no": order.order_no,
        "merchant_order_no": order.merchant_order_no,
        "product_id": order.product_id,
        "quantity": order.quantity,
        "status": status.value,
        "unit_price": format_money(order.unit_price),
        "cards": card_json,
        "receipt": receipt,
    }


# ------------------------------------------------------------------ parsing


def _optional_str(body: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise _Malformed(f"{key} must be a string of at most {limit} characters, or null")
    return value


def _required_str(body: Mapping[str, Any], key: str, limit: int) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise _Malformed(f"{key} must be a string of 1 to {limit} characters")
    return value


def _parse_order(body: Mapping[str, Any]) -> OrderIn:
    merchant_order_no = _required_str(body, "merchant_order_no", 64)
    product_id = _required_str(body, "product_id", 64)
    quantity = body.get("quantity")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= MAX_QUANTITY:
        raise _Malformed(f"quantity must be an integer from 1 to {MAX_QUANTITY}")
    account = _optional_str(body, "account", 128)
    fields = body.get("fields")
    if fields is not None and not (
        isinstance(fields, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())
    ):
        raise _Malformed("fields must map strings to strings")
    raw_ceiling = body.get("max_unit_price")
    ceiling = None if raw_ceiling is None else parse_money(raw_ceiling)
    if raw_ceiling is not None and ceiling is None:
        raise _Malformed("max_unit_price must be a non-negative amount, or null")
    notify_url = _optional_str(body, "notify_url", 2048) or None
    if notify_url is not None:
        parts = urlsplit(notify_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _Malformed("notify_url must be an http(s) URL, or null")
    return OrderIn(
        merchant_order_no=merchant_order_no,
        product_id=product_id,
        quantity=quantity,
        account=account or None,
        fields=dict(fields or {}),
        max_unit_price=ceiling,
        notify_url=notify_url,
    )


# ----------------------------------------------------------------- serving


async def serve_simulator(
    supplier: SupplierConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    handler: ProtocolSimulator | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a simulator for ``supplier`` on ``host:port`` until cancelled,
    with its background work (``run``) in the same nursery.

    ``task_status.started`` gets the base URL (``http://127.0.0.1:PORT``).
    ``handler`` is the simulator to serve, for callers that want to inspect
    or steer it; by default a ``SimSupplier`` is built from ``supplier``.
    """
    sim = handler if handler is not None else SimSupplier(supplier)
    await serve(sim, host=host, port=port, name=f"sim:{supplier.name}", task_status=task_status)


__all__ = ["SimSupplier", "base_url", "serve_simulator"]
