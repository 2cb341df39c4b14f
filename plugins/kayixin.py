"""The ``kayixin`` protocol: 卡易信 merchant-customer API 3.0.

Every call is a JSON ``POST`` to ``ENDPOINT + path`` with four headers:
``X-APP-ID`` (the merchant's app id), ``X-Version: 3.0``, ``X-Timestamp``
(10-digit unix seconds) and ``X-Signature`` =
``md5_lower(appId + secret + version + timestamp + body)`` over the exact
body bytes sent (compact UTF-8 JSON; the plugin writes keys in sorted order
and amounts as JSON numbers, never through a float).

============================  ==================================================
path                          use
============================  ==================================================
``/api/v3/order/create``      submit: ``goodsId`` (string), ``count``,
                              ``outerNumber`` (the attempt key), ``safePrice``
                              (a cap on the order TOTAL: the storefront's
                              ceiling x quantity, when it set one), ``attach``
                              (``[{name, value}]``: the account as
                              ``充值账号``, then the order's fields by name),
                              ``notifyUrl``
``/api/v3/order/getDetail``   query by ``outerNumber`` (``orderNumber`` empty)
``/api/v3/user/getAccount``   balance (``data.balance``)
``/api/v3/goods/getDetail``   catalog, one call per configured product
                              (``goodsId`` as a number)
============================  ==================================================

Replies are ``{code, msg, data}``; ``code 1000`` means the call succeeded
(not that the order did). No other code is documented.

How replies map to outcomes
---------------------------

=========================================  ================  ==================
reply                                      on submit         on query
=========================================  ================  ==================
1000 (order created)                       Pending           (see status)
1000, status 1 / 7 waiting                 \\-                Pending
1000, status 2 / 8 processing              \\-                Pending
1000, status 9 refund in progress          \\-                Pending
1000, status 3 success                     \\-                Delivered
1000, status 4 cancelled                   \\-                Failed("cancelled")
1000, status 5 refunded                    \\-                Failed("refunded")
1000, status 0 unpaid                      \\-                Unknown
1000, another status / no order data       \\-                Unknown
other code whose msg says 订单不存在         Unknown           NotFound
any other code                             Unknown           Unknown
HTTP 5xx, unparseable or misshapen reply   Unknown           Unknown
a success describing another order or      Unknown           Unknown
count, a card success with the wrong
number of cards, a success with a refund
=========================================  ================  ==================

Delivered carries the cards (``cardNo``, ``cardPwd``) for a card order; for
a top-up the receipt is the supplier's ``orderNumber`` (the protocol has no
operator serial; ``result`` is free text). The unit cost is ``money / count``.
A product id that is not a number is Rejected(product_unavailable) before
anything is sent.

Callbacks (``POST`` to ``notifyUrl``): the plugin accepts a callback only
when ``X-APP-ID`` is this merchant's and ``X-Signature`` signs ``X-Timestamp``
and the exact body the way requests are signed (compared in constant time).
The body's ``outerNumber`` names the attempt; ``sent_at`` is the signed
timestamp. Every verified callback is Pending (see below): it tells the
router the attempt exists and lets it query at once if the attempt was in
doubt. ``callback_reply`` answers ``ok`` to a callback the router took and
``fail`` (HTTP 200) to one it refused.

What rests on thin sources, and how the plugin maps it safely
--------------------------------------------------------------

- **Error codes.** Only ``code 1000`` is documented. Every other code on
  submit is UNKNOWN (it might be "outer number exists", or a failure after
  the order was created), so the router queries and an order the supplier
  never created fails over only after the not-found grace (5 minutes). No
  submit reply is ever REJECTED, INVALID or RATE_LIMITED.
- **Not found.** What ``getDetail`` answers for an unknown number is not
  documented. A non-1000 reply whose ``msg`` contains 订单不存在 ("order does
  not exist") is NOT_FOUND, as open-source integrations read it; broader
  matches (any 不存在) are refused on purpose, since 用户不存在 ("user does not
  exist", an auth problem) would then fail an order over that may have been
  taken. A 1000 reply without order data is UNKNOWN.
- **Unpaid (0)** is not explained for API orders: UNKNOWN, never a failure.
  **Refund in progress (9)** is not a success and not yet a refund: PENDING
  until the order reaches 5.
- **The callback format** is not in the sources PROTOCOLS.md names (one
  integration there says it cannot verify callbacks at all); the header
  signature and the ``outerNumber``/``orderNumber``/``status`` body come from
  another open-source integration. So a callback is trusted only as far as
  "this attempt exists": success and failure alike are PENDING, and the
  plugin's own query, whose format is documented, decides. The ``ok`` answer
  comes from the same integration.
- **Balance** (``/api/v3/user/getAccount``) is not in PROTOCOLS.md either; it
  comes from an open-source integration. It only feeds routing, and an
  unusable answer raises (logged, retried at the next refresh).
- **goodsId** is a string on ``order/create`` and a number on
  ``goods/getDetail``, as the named source's examples show; the sources
  disagree, and neither choice can place an order the plugin did not mean.
- **The account's attach name** is the template title of the product
  (usually 充值账号, which the plugin uses). The supplier file has no place
  for per-product plugin options yet; an order whose product names it
  otherwise must carry it in ``fields`` under the product's title.
- **safePrice** is a JSON number and caps the order total (named source).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from typing import Any, ClassVar

import attrs
import httpx
from kamen_router_plugins import _common

from kamen_router.config import Secret
from kamen_router.conformance import Profile, accept
from kamen_router.errors import ConfigError, KamenRouterError, Problem
from kamen_router.http import Request
from kamen_router.money import format_money, loads_json, parse_money
from kamen_router.outcome import (
    Card,
    Deliverables,
    Delivered,
    Failed,
    NotFound,
    Outcome,
    Pending,
    Rejected,
    RejectReason,
    Unknown,
)
from kamen_router.plugin import (
    Callback,
    CallbackRejected,
    CallbackReply,
    CatalogItem,
    QuerySchedule,
    SubmitRequest,
    SupplierContext,
    send,
)
from kamen_router.sim.kayixin import KayixinSimulator

PATH_CREATE = "/api/v3/order/create"
PATH_DETAIL = "/api/v3/order/getDetail"
PATH_ACCOUNT = "/api/v3/user/getAccount"
PATH_GOODS = "/api/v3/goods/getDetail"

VERSION = "3.0"
HEADER_APP_ID = "X-APP-ID"
HEADER_VERSION = "X-Version"
HEADER_TIMESTAMP = "X-Timestamp"
HEADER_SIGNATURE = "X-Signature"

CODE_OK = 1000
#: the attach name the plugin gives the account (the usual template title)
ACCOUNT_ATTACH_NAME = "充值账号"
#: a query's message that means the order does not exist (see docstring)
NOT_FOUND_TEXT = "订单不存在"
CALLBACK_ACK = b"ok"
CALLBACK_NACK = b"fail"

STATUS_UNPAID, STATUS_SUCCESS = 0, 3
#: waiting (1, 7), processing (2, 8), refund in progress (9)
PENDING_STATUSES = frozenset({1, 7, 2, 8, 9})
FAILED_STATUSES: Mapping[int, str] = {4: "cancelled", 5: "refunded"}

GOODS_ON_SALE = 1
SINGLE_SKU = 0

_MAX_DETAIL = 200


class KayixinReplyError(KamenRouterError):
    """Raised by ``balance`` and ``catalog`` when the supplier's answer
    cannot be used. (Submits and queries never raise it: they return an
    outcome.)"""


# ------------------------------------------------------------ signing (pure)


def encode(value: object) -> str:
    """Compact JSON with sorted keys, unicode unescaped, Decimals as exact
    JSON numbers (``198.40``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("not a finite amount")
        return format_money(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{" + ",".join(encode(str(k)) + ":" + encode(value[k]) for k in sorted(value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(encode(v) for v in value) + "]"
    raise TypeError(f"{type(value).__name__} cannot be encoded")


def request_body(payload: Mapping[str, Any]) -> bytes:
    return encode(payload).encode("utf-8")


def sign(app_id: str, secret: str, version: str, timestamp: str, body: bytes) -> str:
    """``X-Signature`` for ``body``: md5 of app id, secret, version,
    timestamp and the body, concatenated, lower-case hex."""
    head = (app_id + secret + version + timestamp).encode("utf-8")
    return hashlib.md5(head + body).hexdigest()


def signed_headers(app_id: str, secret: str, body: bytes, now: float) -> dict[str, str]:
    """Every header a request (or a callback) needs, for ``body`` at ``now``."""
    timestamp = str(int(now))
    return {
        "Content-Type": "application/json; charset=utf-8",
        HEADER_APP_ID: app_id,
        HEADER_VERSION: VERSION,
        HEADER_TIMESTAMP: timestamp,
        HEADER_SIGNATURE: sign(app_id, secret, VERSION, timestamp, body),
    }


def verify(headers: Mapping[str, str], body: bytes, app_id: str, secret: str) -> bool:
    """Whether a request or callback (headers with lower-case names) is
    signed by ``app_id`` with ``secret``, in constant time."""
    timestamp = headers.get(HEADER_TIMESTAMP.lower(), "")
    signature = headers.get(HEADER_SIGNATURE.lower(), "").strip().lower()
    version = headers.get(HEADER_VERSION.lower(), VERSION)
    if headers.get(HEADER_APP_ID.lower()) != app_id:
        return False
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if not (signature.isascii() and version.isascii()):
        return False
    return hmac.compare_digest(sign(app_id, secret, version, timestamp, body), signature)


# ------------------------------------------------------- requests (pure)


def product_number(product_id: str) -> int | None:
    return int(product_id) if product_id.isascii() and product_id.isdigit() else None


def attach_items(account: str | None, fields: Mapping[str, str]) -> list[dict[str, str]]:
    """``attach``: the account under its template title, then the order's
    fields by name (a field named like the account's title gives way)."""
    items = [{"name": ACCOUNT_ATTACH_NAME, "value": account}] if account else []
    taken = {item["name"] for item in items}
    items += [{"name": k, "value": fields[k]} for k in sorted(fields) if k not in taken]
    return items


def create_payload(request: SubmitRequest, callback_url: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "goodsId": request.product_id,
        "count": request.quantity,
        "outerNumber": request.attempt_key,
        "notifyUrl": callback_url or "",
    }
    attach = attach_items(request.account, request.fields)
    if attach:
        payload["attach"] = attach
    if request.max_price is not None:
        payload["safePrice"] = request.max_price * request.quantity
    return payload


def detail_payload(attempt_key: str) -> dict[str, Any]:
    return {"orderNumber": "", "outerNumber": attempt_key}


# --------------------------------------------------------- replies (pure)


class _BadShape(Exception):
    pass


@attrs.frozen
class OrderDetail:
    """One order as ``order/getDetail`` describes it."""

    order_number: str
    outer_number: str
    status: int
    count: int | None
    money: Decimal | None
    refunded: Decimal | None
    cards: tuple[Card, ...]


_int: Callable[[object], int | None] = _common.as_int


def _text(value: object) -> str:
    """A number or string field as text (order numbers come as either)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def decode(response: httpx.Response) -> dict[str, Any] | Unknown:
    """The reply's JSON object with an integer ``code``, or why it is UNKNOWN."""
    data: dict[str, Any] | Unknown = _common.decode_coded_json(response, CODE_OK)
    return data


message: Callable[[Mapping[str, Any]], str] = _common.message


def parse_detail(raw: object) -> OrderDetail:
    if not isinstance(raw, dict):
        raise _BadShape("no order object")
    status = _int(raw.get("status"))
    if status is None:
        raise _BadShape("order status is not an integer")
    cards_raw = raw.get("cards") or []
    if not isinstance(cards_raw, list):
        raise _BadShape("cards is not a list")
    cards = []
    for card in cards_raw:
        if not isinstance(card, dict):
            raise _BadShape("a card is not an object")
        number, password = card.get("cardNo") or "", card.get("cardPwd") or ""
        if not isinstance(number, str) or not isinstance(password, str) or not (number or password):
            raise _BadShape("a card has neither number nor password")
        cards.append(Card(number, password))
    return OrderDetail(
        order_number=_text(raw.get("orderNumber")),
        outer_number=_text(raw.get("outerNumber")),
        status=status,
        count=_int(raw.get("count")),
        money=parse_money(raw.get("money")),
        refunded=parse_money(raw.get("retMoney")),
        cards=tuple(cards),
    )


def order_outcome(request: SubmitRequest, order: OrderDetail, detail: str = "") -> Outcome:
    """What one order from ``getDetail`` means for ``request``."""
    if order.outer_number and order.outer_number != request.attempt_key:
        return Unknown("the reply describes another order")
    ref = order.order_number or None
    if order.status in PENDING_STATUSES:
        return Pending(supplier_ref=ref)
    if order.status in FAILED_STATUSES:
        return Failed(FAILED_STATUSES[order.status], detail)
    if order.status == STATUS_UNPAID:
        return Unknown("the supplier holds the order unpaid")
    if order.status != STATUS_SUCCESS:
        return Unknown(f"undocumented order status {order.status}")
    if order.count is not None and order.count != request.quantity:
        return Unknown(f"success for count {order.count}, ordered {request.quantity}")
    if order.refunded:
        return Unknown("success with a refund")
    if request.account:
        if not order.order_number:
            return Unknown("a top-up reported without the supplier's order number")
        goods = Deliverables(cards=order.cards, receipt=order.order_number)
    else:
        if len(order.cards) != request.quantity:
            return Unknown(f"{len(order.cards)} cards delivered for quantity {request.quantity}")
        goods = Deliverables(cards=order.cards)
    unit_cost = None if order.money is None else order.money / request.quantity
    return Delivered(goods, unit_cost=unit_cost, supplier_ref=ref)


def submit_outcome(request: SubmitRequest, data: Mapping[str, Any]) -> Outcome:
    """What a decoded ``order/create`` reply means (see the module docstring)."""
    code, msg = data["code"], message(data)
    if code != CODE_OK:
        return Unknown(f"code {code}" + (f": {msg}" if msg else ""))
    created = data.get("data")
    if not isinstance(created, dict):
        return Pending()
    outer = _text(created.get("outerNumber"))
    if outer and outer != request.attempt_key:
        return Unknown("the reply describes another order")
    return Pending(supplier_ref=_text(created.get("orderNumber")) or None)


def query_outcome(request: SubmitRequest, data: Mapping[str, Any]) -> Outcome:
    """What a decoded ``order/getDetail`` reply means (see the module docstring)."""
    code, msg = data["code"], message(data)
    if code != CODE_OK:
        if NOT_FOUND_TEXT in msg:
            return NotFound(msg)
        return Unknown(f"query answered code {code}" + (f": {msg}" if msg else ""))
    if data.get("data") is None:
        return Unknown("code 1000 without an order")
    try:
        order = parse_detail(data.get("data"))
    except _BadShape as exc:
        return Unknown(f"bad reply shape: {exc}")
    return order_outcome(request, order, msg)


def callback_outcome(order_number: str | None) -> Outcome:
    """A verified callback only proves the attempt exists (see docstring)."""
    return Pending(supplier_ref=order_number)


# ------------------------------------------------------------------ plugin

_ONLY_CODE_1000 = (
    "kayixin documents no code but 1000, and any other may mean 'outer number exists', "
    "so the plugin queries (unknown) instead of failing over"
)
_CALLBACK_UNDOCUMENTED = (
    "kayixin's callback format is not in the documented sources: a verified callback only "
    "proves the attempt exists (pending), and the plugin's own query decides"
)


class KayixinPlugin:
    """卡易信 API 3.0, bound to one supplier."""

    name: ClassVar[str] = "kayixin"
    required_credentials: ClassVar[Collection[str]] = frozenset({"app_id", "app_secret"})
    schedule: ClassVar[QuerySchedule] = QuerySchedule(
        # the protocol says nothing of polling: seconds first, then the
        # long-polling pattern (minutes, then every 10 minutes)
        first_query_s=3.0,
        interval_s=5.0,
        backoff=1.5,
        max_interval_s=600.0,
        not_found_grace_s=300.0,
        resubmit_safe=False,
    )
    #: the simulated supplier for ``simulate:`` blocks (kamen_router.sim.kayixin)
    simulator: ClassVar[type[KayixinSimulator]] = KayixinSimulator
    #: where the conformance kit must accept the protocol's limits
    conformance: ClassVar[Profile] = Profile(
        leeway={
            **{
                check: accept(_ONLY_CODE_1000, "unknown")
                for check in (
                    "out_of_stock",
                    "insufficient_balance",
                    "product_unavailable",
                    "price_above_ceiling",
                    "invalid_account",
                    "maintenance",
                    "rate_limited",
                    "wrong_credentials",
                )
            },
            **{
                check: accept(_CALLBACK_UNDOCUMENTED, "pending")
                for check in ("callback_delivered", "callback_failed")
            },
        }
    )

    def __init__(self, context: SupplierContext) -> None:
        missing = [c for c in sorted(self.required_credentials) if c not in context.credentials]
        if missing:
            raise ConfigError(
                Problem(str(context.supplier.file), f"credentials.{c}", "is required by plugin 'kayixin'")
                for c in missing
            )
        self._context = context
        # Secrets both; revealed only where a request is signed or checked
        self._app_id: Secret = context.credentials["app_id"]
        self._secret: Secret = context.credentials["app_secret"]
        self._base = context.endpoint.rstrip("/")

    def __repr__(self) -> str:
        return f"KayixinPlugin(supplier={self._context.name!r})"

    # --------------------------------------------------------------- contract

    async def submit(self, request: SubmitRequest) -> Outcome:
        if product_number(request.product_id) is None:
            return Rejected(RejectReason.PRODUCT_UNAVAILABLE, "the product id is not a number")
        payload = create_payload(request, request.callback_url or self._context.callback_url)
        data = decode(await self._post(PATH_CREATE, payload))
        return data if isinstance(data, Unknown) else submit_outcome(request, data)

    async def query(self, request: SubmitRequest) -> Outcome:
        data = decode(await self._post(PATH_DETAIL, detail_payload(request.attempt_key)))
        return data if isinstance(data, Unknown) else query_outcome(request, data)

    async def balance(self) -> Decimal:
        data = decode(await self._post(PATH_ACCOUNT, {}))
        if isinstance(data, Unknown):
            raise KayixinReplyError(f"balance of {self._context.name}: {data.detail}")
        if data["code"] != CODE_OK:
            raise KayixinReplyError(f"balance of {self._context.name}: code {data['code']}")
        account = data.get("data")
        value = parse_money(account.get("balance")) if isinstance(account, dict) else None
        if value is None:
            raise KayixinReplyError(f"balance of {self._context.name}: the reply has no valid balance")
        return value

    async def catalog(self) -> list[CatalogItem]:
        """Price, shelf state and stock of every configured product."""
        items = []
        for product_id in sorted({offer.product_id for offer in self._context.supplier.offers.values()}):
            goods_id = product_number(product_id)
            if goods_id is None:
                items.append(CatalogItem(product_id, available=False))
                continue
            data = decode(await self._post(PATH_GOODS, {"goodsId": goods_id}))
            if isinstance(data, Unknown):
                raise KayixinReplyError(f"catalog of {self._context.name}: {data.detail}")
            goods = data.get("data")
            if data["code"] != CODE_OK or not isinstance(goods, dict):
                # the supplier refuses to describe it (off shelf, removed, ...)
                items.append(CatalogItem(product_id, available=False))
                continue
            status, stock, sku_type = (_int(goods.get(k)) for k in ("status", "stockCount", "skuType"))
            available = None
            if status is not None:
                # a multi-spec product needs a spec the plugin does not send
                available = (
                    status == GOODS_ON_SALE
                    and (stock is None or stock > 0)
                    and (sku_type is None or sku_type == SINGLE_SKU)
                )
            price = parse_money(goods.get("salesPrice"))
            items.append(CatalogItem(product_id, price=price, available=available, stock=stock))
        return items

    def parse_callback(self, request: Request) -> Callback:
        """Verify and read one order callback; raises ``CallbackRejected``
        unless it is signed with this merchant's app id and secret."""
        if not verify(request.headers, request.body, self._app_id.reveal(), self._secret.reveal()):
            raise CallbackRejected("bad_signature")
        # signed by the supplier from here on; only its shape may be wrong
        try:
            data = loads_json(request.body)
        except (ValueError, UnicodeDecodeError):
            raise CallbackRejected("malformed", "not JSON") from None
        if not isinstance(data, dict):
            raise CallbackRejected("malformed", "not a JSON object")
        attempt_key = _text(data.get("outerNumber"))
        if not attempt_key or _int(data.get("status")) is None:
            raise CallbackRejected("malformed", "no outerNumber or status")
        ref = _text(data.get("orderNumber")) or None
        return Callback(
            attempt_key=attempt_key,
            outcome=callback_outcome(ref),
            supplier_ref=ref,
            sent_at=float(int(request.headers[HEADER_TIMESTAMP.lower()])),
        )

    def callback_reply(self, accepted: bool) -> CallbackReply:
        """``ok`` for a callback the router took; ``fail`` (also HTTP 200)
        for one it did not."""
        return CallbackReply(200, CALLBACK_ACK if accepted else CALLBACK_NACK)

    # -------------------------------------------------------------- transport

    async def _post(self, path: str, payload: Mapping[str, Any]) -> httpx.Response:
        body = request_body(payload)
        headers = signed_headers(self._app_id.reveal(), self._secret.reveal(), body, _now())
        return await send(
            self._context.http,
            "POST",
            self._base + path,
            timeout_s=self._context.timeout_s,
            content=body,
            headers=headers,
        )


def _now() -> float:
    return time.time()


PLUGIN = KayixinPlugin

__all__ = [
    "PLUGIN",
    "KayixinPlugin",
    "KayixinReplyError",
    "create_payload",
    "detail_payload",
    "query_outcome",
    "request_body",
    "sign",
    "signed_headers",
    "submit_outcome",
    "verify",
]
