"""The client plugin for ``sim``, the reference supplier protocol.

The protocol (``kamen_router.sim.protocol``) is signed JSON over HTTP:
``POST /order`` places an order under the attempt key (the merchant order
number), ``POST /query`` reads it back, ``POST /balance`` reads the prepaid
balance. Every request carries ``X-Merchant``, ``X-Timestamp`` and ``X-Sign``
(HMAC-SHA256 of ``timestamp + "\\n" + body`` with the ``api_key``
credential). The plugin always sends ``max_unit_price`` (the storefront's
ceiling) so the supplier enforces the ceiling too.

How replies map to outcomes. The rule behind every line: only a reply that
proves the supplier did not take the order may end the attempt; anything
surprising is UNKNOWN, which makes the router query instead of failing over.

==========================  =====================  ===========================
reply                       on submit              on query
==========================  =====================  ===========================
0, status success           Delivered              Delivered
0, status processing        Pending                Pending
0, status failed            Failed("failed")       Failed("failed")
1001 bad signature          Rejected(auth)         Unknown
1002 unknown product        Rejected(product_      Unknown
                            unavailable)
1003 out of stock           Rejected(out_of_stock) Unknown
1004 insufficient balance   Rejected(insufficient  Unknown
                            _balance)
1005 price above ceiling    Rejected(price_above   Unknown
                            _ceiling)
1006 invalid account        Invalid(invalid_       Unknown
                            account)
1007 duplicate order no.    Unknown (the supplier  Unknown
                            already has it)
1008 maintenance            Rejected(maintenance)  Unknown
1429 rate limited           RateLimited            RateLimited
2001 not found              Unknown                NotFound
5000 system error           Unknown                Unknown
other code, HTTP 5xx,       Unknown                Unknown
unparseable or misshapen
reply
==========================  =====================  ===========================

A query's "rejection" says nothing about the order it asks after (a failed
signature check on a query does not mean the order was never placed), so on
a query every code but 0, 1429 and 2001 is UNKNOWN. A success reply is also
UNKNOWN when it does not fit the request: another merchant order number,
product or quantity, a top-up without a receipt, or a card order with the
wrong number of cards; a human should look at such an order before anyone
pays twice for it.

Transport: every request goes through ``kamen_router.plugin.send`` with the
supplier's ``limits.timeout_s``. It raises ``SupplierUnreachable`` when
nothing was sent; every other transport error (a read timeout, a reset after
sending) propagates, and the router takes it as UNKNOWN.

Callbacks. The plugin sends the daemon's callback URL as ``notify_url``, and
the supplier POSTs the order there when it reaches a final state.
``parse_callback`` checks that ``X-Merchant`` is this supplier's name and
that ``X-Sign`` signs ``X-Timestamp`` and the exact body with the
``api_key`` (in constant time) before it reads a byte of the body; anything
else raises ``CallbackRejected("bad_signature")``, and a signed body that
does not have the protocol's shape raises ``CallbackRejected("malformed")``.
Status ``success`` is Delivered (deliverables, unit cost, the supplier's
order number), ``failed`` is Failed, ``processing`` is Pending; a success
whose goods do not fit its own quantity is Unknown. ``sent_at`` is the
signed ``X-Timestamp``, so the router can refuse replays. It does not check
that the attempt exists or matches the order: the router does.
``callback_reply`` answers ``ok`` (HTTP 200) to a callback the router took,
and ``fail`` (also HTTP 200) to one it did not: the supplier retries every
answer but ``ok``, so ``fail`` asks for the callback again later.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import Any, ClassVar

import attrs
import httpx

from ..errors import ConfigError, KamenRouterError, Problem
from ..http import Request
from ..money import dumps_json, format_money, loads_json, parse_money
from ..outcome import (
    Card,
    Deliverables,
    Delivered,
    Failed,
    Invalid,
    InvalidReason,
    NotFound,
    Outcome,
    Pending,
    RateLimited,
    Rejected,
    RejectReason,
    Unknown,
)
from ..plugin import (
    Callback,
    CallbackRejected,
    CallbackReply,
    CatalogItem,
    QuerySchedule,
    SubmitRequest,
    SupplierContext,
    send,
)
from .protocol import (
    CALLBACK_ACK,
    CALLBACK_NACK,
    HEADER_MERCHANT,
    HEADER_SIGN,
    HEADER_TIMESTAMP,
    PATH_BALANCE,
    PATH_CATALOG,
    PATH_ORDER,
    PATH_QUERY,
    Code,
    OrderRequest,
    Status,
    signed_headers,
    verify,
)
from .server import SimSupplier

#: submit codes that prove the order was not taken
_REJECTED: Mapping[int, RejectReason] = {
    Code.BAD_SIGNATURE: RejectReason.AUTH,
    Code.PRODUCT_UNAVAILABLE: RejectReason.PRODUCT_UNAVAILABLE,
    Code.OUT_OF_STOCK: RejectReason.OUT_OF_STOCK,
    Code.INSUFFICIENT_BALANCE: RejectReason.INSUFFICIENT_BALANCE,
    Code.PRICE_ABOVE_CEILING: RejectReason.PRICE_ABOVE_CEILING,
    Code.MAINTENANCE: RejectReason.MAINTENANCE,
}

#: the longest supplier message copied into an outcome's detail
_MAX_DETAIL = 200


class SimReplyError(KamenRouterError):
    """Raised by ``SimPlugin.balance`` when the supplier's answer cannot be
    used. (Submits and queries never raise it: they return an outcome.)"""


class _BadShape(Exception):
    pass


@attrs.frozen
class _OrderOut:
    order_no: str
    merchant_order_no: str
    product_id: str
    quantity: int
    status: Status
    unit_price: Decimal
    deliverables: Deliverables


class SimPlugin:
    """The ``sim`` protocol, bound to one supplier."""

    name: ClassVar[str] = "sim"
    required_credentials: ClassVar[Collection[str]] = frozenset({"api_key"})
    schedule: ClassVar[QuerySchedule] = QuerySchedule(
        first_query_s=0.5,
        interval_s=1.0,
        backoff=1.5,
        max_interval_s=30,
        not_found_grace_s=60,
        # a NOT_FOUND may be an order still on its way in; placing it again
        # could take it twice
        resubmit_safe=False,
    )
    #: The simulator factory. For a supplier with a ``simulate`` block the
    #: daemon calls ``SimPlugin.simulator(supplier, supplier.simulate)``, which
    #: returns an HTTP handler (``async (Request) -> Response``) with an async
    #: ``run(task_status=...)`` for its background work (pending completion,
    #: callbacks); it starts ``run`` in a nursery, serves the handler with
    #: ``kamen_router.http.HttpServer`` on ``simulate.listen`` and gives the
    #: plugin the listener's ``http://host:port`` as its endpoint.
    #: ``kamen_router.sim.server.serve_simulator`` does all of that in one call.
    simulator: ClassVar[type[SimSupplier]] = SimSupplier

    def __init__(self, context: SupplierContext) -> None:
        key = context.credentials.get("api_key")
        if key is None:
            raise ConfigError(
                [
                    Problem(
                        str(context.supplier.file),
                        "credentials.api_key",
                        "is required by plugin 'sim'",
                    )
                ]
            )
        self._context = context
        self._api_key = key  # a Secret: revealed only to sign
        self._base = context.endpoint.rstrip("/")

    def __repr__(self) -> str:
        # the endpoint stays out: it may come from the environment and hold a token
        return f"SimPlugin(supplier={self._context.name!r})"

    # --------------------------------------------------------------- contract

    async def submit(self, request: SubmitRequest) -> Outcome:
        payload: OrderRequest = {
            "merchant_order_no": request.attempt_key,
            "product_id": request.product_id,
            "quantity": request.quantity,
            "account": request.account or None,
            "fields": dict(request.fields),
            "max_unit_price": None if request.max_price is None else format_money(request.max_price),
            "notify_url": request.callback_url or self._context.callback_url,
        }
        response = await self._post(PATH_ORDER, payload)
        data = _decode(response)
        if isinstance(data, Unknown):
            return data
        code, message = data["code"], _detail(data)
        if code == Code.OK:
            return _order_outcome(request, data, message)
        if code == Code.DUPLICATE_ORDER:
            # the supplier already holds this attempt: never a failure
            return Unknown("duplicate order number")
        if code == Code.RATE_LIMITED:
            return RateLimited(_retry_after(data, response), message)
        if code in _REJECTED:
            return Rejected(_REJECTED[code], message)
        if code == Code.INVALID_ACCOUNT:
            return Invalid(InvalidReason.INVALID_ACCOUNT, message)
        if code == Code.SYSTEM_ERROR:
            return Unknown("system error, query to confirm")
        return Unknown(f"unexpected code {code}")

    async def query(self, request: SubmitRequest) -> Outcome:
        response = await self._post(PATH_QUERY, {"merchant_order_no": request.attempt_key})
        data = _decode(response)
        if isinstance(data, Unknown):
            return data
        code, message = data["code"], _detail(data)
        if code == Code.OK:
            return _order_outcome(request, data, message)
        if code == Code.ORDER_NOT_FOUND:
            return NotFound(message)
        if code == Code.RATE_LIMITED:
            return RateLimited(_retry_after(data, response), message)
        return Unknown(f"query answered code {code}")

    async def balance(self) -> Decimal:
        response = await self._post(PATH_BALANCE, {})
        data = _decode(response)
        if isinstance(data, Unknown):
            raise SimReplyError(f"balance of {self._context.name}: {data.detail}")
        if data["code"] != Code.OK:
            raise SimReplyError(f"balance of {self._context.name}: code {data['code']}")
        value = parse_money(data.get("balance"))
        if value is None:
            raise SimReplyError(f"balance of {self._context.name}: the reply has no valid balance")
        return value

    async def catalog(self) -> list[CatalogItem]:
        """Every product of this account with its price, shelf state and stock."""
        response = await self._post(PATH_CATALOG, {})
        data = _decode(response)
        if isinstance(data, Unknown):
            raise SimReplyError(f"catalog of {self._context.name}: {data.detail}")
        if data["code"] != Code.OK or not isinstance(data.get("products"), list):
            raise SimReplyError(f"catalog of {self._context.name}: code {data['code']}")
        items = []
        for product in data["products"]:
            if not isinstance(product, dict) or not isinstance(product.get("product_id"), str):
                continue
            stock = product.get("stock")
            stock = stock if isinstance(stock, int) and not isinstance(stock, bool) else None
            on_shelf = product.get("on_shelf")
            available = None if not isinstance(on_shelf, bool) else on_shelf and (stock is None or stock > 0)
            items.append(
                CatalogItem(
                    product_id=product["product_id"],
                    price=parse_money(product.get("price")),
                    available=available,
                    stock=stock,
                )
            )
        return items

    def parse_callback(self, request: Request) -> Callback:
        """Verify and read one callback (``kamen_router.http.Request``).
        Raises ``CallbackRejected`` unless it is signed by this supplier."""
        headers = request.headers
        timestamp = headers.get(HEADER_TIMESTAMP.lower(), "")
        signature = headers.get(HEADER_SIGN.lower(), "")
        if (
            headers.get(HEADER_MERCHANT.lower()) != self._context.name
            or not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12)
            or not verify(self._api_key.reveal(), timestamp, request.body, signature)
        ):
            raise CallbackRejected("bad_signature")
        # signed by the supplier from here on; only its shape may be wrong
        if request.method != "POST":
            raise CallbackRejected("malformed", "not a POST")
        try:
            data = loads_json(request.body)
        except (ValueError, UnicodeDecodeError):
            raise CallbackRejected("malformed", "not JSON") from None
        try:
            order = _parse_order(data)
        except _BadShape as exc:
            raise CallbackRejected("malformed", str(exc)) from None
        outcome: Outcome
        if order.status is Status.PROCESSING:
            outcome = Pending(supplier_ref=order.order_no)
        elif order.status is Status.FAILED:
            outcome = Failed("failed", "failed by callback")
        else:
            outcome = _delivered(order)
        return Callback(
            attempt_key=order.merchant_order_no,
            outcome=outcome,
            unit_price=order.unit_price,
            quantity=order.quantity,
            supplier_ref=order.order_no,
            sent_at=float(int(timestamp)),
        )

    def callback_reply(self, accepted: bool) -> CallbackReply:
        """``ok`` for a callback the router took; ``fail`` (also HTTP 200),
        which the supplier retries later, for one it did not."""
        return CallbackReply(200, CALLBACK_ACK if accepted else CALLBACK_NACK)

    # -------------------------------------------------------------- transport

    async def _post(self, path: str, payload: Mapping[str, Any]) -> httpx.Response:
        body = dumps_json(payload)
        headers = signed_headers(self._context.name, self._api_key.reveal(), body, time.time())
        return await send(
            self._context.http,
            "POST",
            self._base + path,
            timeout_s=self._context.timeout_s,
            content=body,
            headers=headers,
        )


# ---------------------------------------------------------------- replies


def _decode(response: httpx.Response) -> dict[str, Any] | Unknown:
    """The reply's JSON object with an integer ``code``, or why it is UNKNOWN."""
    status = response.status_code
    try:
        data = loads_json(response.content)
    except (ValueError, UnicodeDecodeError):
        data = None
    code = data.get("code") if isinstance(data, dict) else None
    has_code = isinstance(code, int) and not isinstance(code, bool)
    if status >= 500:
        return Unknown(f"HTTP {status}" + (f", code {code}" if has_code else ""))
    if data is None:
        return Unknown(f"unparseable reply (HTTP {status})")
    if not has_code:
        return Unknown(f"reply without a code (HTTP {status})")
    assert isinstance(data, dict)
    if code == Code.OK and not response.is_success:
        return Unknown(f"code 0 with HTTP {status}")
    return data


def _detail(data: Mapping[str, Any]) -> str:
    message = data.get("message")
    return message[:_MAX_DETAIL] if isinstance(message, str) else ""


def _retry_after(data: Mapping[str, Any], response: httpx.Response) -> float | None:
    for raw in (data.get("retry_after"), response.headers.get("retry-after")):
        value = (
            parse_money(str(raw))
            if isinstance(raw, int | Decimal | str) and not isinstance(raw, bool)
            else None
        )
        if value is not None:
            return float(value)
    return None


def _order_outcome(request: SubmitRequest, data: Mapping[str, Any], message: str) -> Outcome:
    try:
        order = _parse_order(data.get("order"))
    except _BadShape as exc:
        return Unknown(f"bad reply shape: {exc}")
    if (order.merchant_order_no, order.product_id, order.quantity) != (
        request.attempt_key,
        request.product_id,
        request.quantity,
    ):
        return Unknown("the reply describes another order")
    if order.status is Status.PROCESSING:
        return Pending(supplier_ref=order.order_no)
    if order.status is Status.FAILED:
        return Failed("failed", message)
    goods = order.deliverables
    if request.account:
        if not goods.receipt:
            return Unknown("top-up reported successful without a receipt")
    elif len(goods.cards) != request.quantity:
        return Unknown(f"{len(goods.cards)} cards delivered for quantity {request.quantity}")
    return Delivered(goods, unit_cost=order.unit_price, supplier_ref=order.order_no)


def _delivered(order: _OrderOut) -> Outcome:
    """A callback's success, when its goods fit its own quantity. (Whether
    they fit the order is the router's check: it knows what was ordered.)"""
    goods = order.deliverables
    if goods.cards and len(goods.cards) != order.quantity:
        return Unknown(f"{len(goods.cards)} cards delivered for quantity {order.quantity}")
    if not goods.cards and not goods.receipt:
        return Unknown("success reported with neither cards nor a receipt")
    return Delivered(goods, unit_cost=order.unit_price, supplier_ref=order.order_no)


def _parse_order(raw: object) -> _OrderOut:
    if not isinstance(raw, dict):
        raise _BadShape("no order object")
    order: dict[str, Any] = raw

    def text(key: str) -> str:
        value = order.get(key)
        if not isinstance(value, str) or not value:
            raise _BadShape(f"order.{key} is not a string")
        return value

    quantity = raw.get("quantity")
    if not isinstance(quantity, int) or isinstance(quantity, bool):
        raise _BadShape("order.quantity is not an integer")
    try:
        status = Status(str(order.get("status")))
    except ValueError:
        raise _BadShape("order.status is not one of success, processing, failed") from None
    unit_price = parse_money(raw.get("unit_price"))
    if unit_price is None:
        raise _BadShape("order.unit_price is not an amount")
    cards_raw = raw.get("cards") or []
    if not isinstance(cards_raw, list):
        raise _BadShape("order.cards is not a list")
    cards: list[Card] = []
    for card in cards_raw:
        number = card.get("number") if isinstance(card, dict) else None
        password = card.get("password") if isinstance(card, dict) else None
        expires = card.get("expires") if isinstance(card, dict) else None
        if (
            not isinstance(number, str)
            or not isinstance(password, str)
            or not isinstance(expires, str | None)
        ):
            raise _BadShape("a card lacks a number or a password")
        cards.append(Card(number, password, expires))
    receipt = raw.get("receipt")
    if not isinstance(receipt, str | None):
        raise _BadShape("order.receipt is not a string")
    return _OrderOut(
        order_no=text("order_no"),
        merchant_order_no=text("merchant_order_no"),
        product_id=text("product_id"),
        quantity=quantity,
        status=status,
        unit_price=unit_price,
        deliverables=Deliverables(tuple(cards), receipt or None),
    )


__all__ = ["SimPlugin", "SimReplyError"]
