"""The ``kasushou`` protocol: 卡速售 API v2 (doc.kasushou.com/api/v2api).

Every call is a JSON ``POST`` to ``ENDPOINT + path`` with three headers:
``UserId`` (the merchant's API user id), ``Timestamp`` (13-digit unix
milliseconds) and ``Sign`` = lower-case hex ``sha1(Timestamp + body + apikey)``,
where ``body`` is the request object with its keys in ascending order,
encoded as PHP's ``json_encode(…, JSON_UNESCAPED_SLASHES|JSON_UNESCAPED_UNICODE)``
(compact, ``/`` and non-ASCII left as they are) and ``{}`` when empty. The
plugin signs exactly the bytes it sends.

==========================  ====================================================
path                        use
==========================  ====================================================
``/api/v1/order/buy``       submit: ``id`` (product, int), ``external_orderno``
                            (the attempt key), ``quantity``, ``safe_price``
                            (the storefront's ceiling per unit, when it set
                            one), ``attach`` (``recharge_account`` = the
                            account, plus the order's fields), ``url`` (the
                            callback URL)
``/api/v1/order/info``      query by ``external_orderno``; ``data`` is a list
``/api/v1/user/info``       balance (``data.balance``)
``/api/v1/goods/info``      catalog, one call per configured product
==========================  ====================================================

Replies are ``{code, msg, data}``. The documented codes are only 200
(success), 400 (failure, ``msg`` says why) and 500 (unknown error).

How replies map to outcomes
---------------------------

=======================================  ==================  ==================
reply                                    on submit           on query
=======================================  ==================  ==================
200 (order placed; the doc: the result   Pending(ordersn)    (see status)
comes by query or callback)
200, status 1 waiting / 2 processing     \\-                  Pending
200, status 3 success                    \\-                  Delivered
200, status 4 cancelled                  \\-                  Failed("cancelled")
200, status 5 refunded                   \\-                  Failed("refunded")
200, status -1 unpaid                    \\-                  Unknown
200, another status                      \\-                  Unknown
200, empty order list                    \\-                  NotFound
400 whose msg says 订单不存在              Unknown             NotFound
400 (any other msg)                      Unknown             Unknown
500, other code, HTTP 5xx, unparseable   Unknown             Unknown
a success describing another order,      Unknown             Unknown
a card success with the wrong number
of cards, a success with a partial
refund
=======================================  ==================  ==================

Delivered carries the cards (``card_no``, ``card_password``, ``end_time``)
for a card order; for a top-up the receipt is the supplier's order number
(``ordersn``): the protocol has no operator serial. The unit cost is
``total_price / quantity``. A product id that is not a number (the protocol's
``id`` is an integer) is Rejected(product_unavailable) before anything is
sent.

Callbacks (``POST`` to the ``url`` sent with the order). The body carries
``external_orderno, ordersn, status, has_back_money, total_price,
recharge_hints, time`` (13-digit ms) and ``sign`` =
``sha1(time + json_encode(ksort(fields), JSON_UNESCAPED_UNICODE) + apikey)``
over every field but ``sign``, ``card_list`` and ``express_list``. Note that
this canonical form escapes ``/`` as ``\\/`` (the doc's verifier passes flag
256 only), unlike requests. The receiver answers ``ok``; anything else is
retried after 5, 10, 15, 20 and 25 minutes. Mapping: status 4 → Failed
("cancelled"), 5 → Failed("refunded"), everything else → Pending. A success
(3) is Pending on purpose: the cards in a callback are not signed, so a
callback never delivers; the query that follows (the doc asks for polling
every 1–3 s) reads the deliverables over the plugin's own request.
``callback_reply`` answers ``ok`` to a callback the router took and
``fail`` (HTTP 200) to one it refused, which the supplier retries.

What rests on thin sources, and how the plugin maps it safely
--------------------------------------------------------------

- **No error codes.** The protocol's only failure code is 400 with free text.
  A 400 on submit may be "out of stock" or "insufficient balance", but it may
  as well be "external order number exists" (the doc calls
  ``external_orderno`` the dedupe key and does not say what a duplicate
  answers). So every 400 on submit is UNKNOWN, never REJECTED: the router
  queries, and an order the supplier never created fails over after the
  not-found grace (5 minutes). Slower for a real refusal, never a double
  top-up. No submit reply is ever REJECTED, INVALID or RATE_LIMITED.
- **Not found.** The doc does not say what ``order/info`` answers for an
  unknown number. An empty list is NOT_FOUND; so is a 400 whose ``msg``
  contains 订单不存在 ("order does not exist"), the answer open-source
  integrations of this protocol rely on. Every other 400 is UNKNOWN.
- **Unpaid (-1)** is not explained for API orders, which are paid from the
  balance. It is UNKNOWN: the order exists, nothing says it will be served,
  and nothing says it will not.
- **safe_price per unit.** The doc says the safe price "must not be below the
  selling price" without saying unit or total; the selling price it compares
  with is the unit price, so the plugin sends the per-unit ceiling. (If the
  supplier meant the total, it would refuse multi-unit orders it could take:
  safe. The reverse reading would loosen the cap.)
- **Callback body encoding.** The doc shows a PHP verifier over the parsed
  fields, not whether the body is JSON or a form. Both are accepted, and the
  canonical form is rebuilt from the fields as PHP would see them (form
  values are strings; JSON keeps its types).
- **Top-up receipts.** The protocol returns no operator serial, so a top-up's
  receipt is ``ordersn``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import attrs
import httpx
from kamen_router_plugins import _common

from kamen_router.config import Secret
from kamen_router.conformance import Profile, accept
from kamen_router.errors import ConfigError, KamenRouterError, Problem
from kamen_router.http import Request
from kamen_router.money import format_money, parse_money
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
from kamen_router.sim.kasushou import KasushouSimulator

PATH_BUY = "/api/v1/order/buy"
PATH_INFO = "/api/v1/order/info"
PATH_USER = "/api/v1/user/info"
PATH_GOODS = "/api/v1/goods/info"

HEADER_SIGN = "Sign"
HEADER_TIMESTAMP = "Timestamp"
HEADER_USER = "UserId"

CODE_OK = 200
CODE_FAILED = 400
CODE_UNKNOWN = 500

#: the attach key the doc names for the account to charge
ACCOUNT_KEY = "recharge_account"
#: a query's 400 message that means the order does not exist (see docstring)
NOT_FOUND_TEXT = "订单不存在"
#: callback fields left out of its signature
UNSIGNED_CALLBACK_FIELDS = ("sign", "card_list", "express_list")
CALLBACK_ACK = b"ok"
CALLBACK_NACK = b"fail"

#: order status -> what it means for the router (see the module docstring)
STATUS_WAITING, STATUS_PROCESSING, STATUS_SUCCESS = 1, 2, 3
STATUS_CANCELLED, STATUS_REFUNDED, STATUS_UNPAID = 4, 5, -1
PENDING_STATUSES = frozenset({STATUS_WAITING, STATUS_PROCESSING})
FAILED_STATUSES: Mapping[int, str] = {STATUS_CANCELLED: "cancelled", STATUS_REFUNDED: "refunded"}

GOODS_ON_SALE = 1

_MAX_DETAIL = 200


class KasushouReplyError(KamenRouterError):
    """Raised by ``balance`` and ``catalog`` when the supplier's answer
    cannot be used. (Submits and queries never raise it: they return an
    outcome.)"""


# ------------------------------------------------------------ signing (pure)


def php_json(value: object, *, escape_slashes: bool = False) -> str:
    """``value`` as PHP's ``json_encode`` writes it with
    ``JSON_UNESCAPED_UNICODE`` (and ``JSON_UNESCAPED_SLASHES`` unless
    ``escape_slashes``): compact, keys in the order given, floats in their
    shortest form, U+2028/U+2029 escaped as PHP does."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal | float):
        # PHP decodes a JSON fraction to a float and writes it back shortest
        return repr(float(value))
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        return text.replace("/", "\\/") if escape_slashes else text
    if isinstance(value, Mapping):
        items = (
            php_json(str(k), escape_slashes=escape_slashes) + ":" + php_json(v, escape_slashes=escape_slashes)
            for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(php_json(v, escape_slashes=escape_slashes) for v in value) + "]"
    raise TypeError(f"{type(value).__name__} cannot be encoded")


def _sorted(value: object) -> object:
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted(v) for v in value]
    return value


def request_body(payload: Mapping[str, Any]) -> bytes:
    """The exact request bytes for ``payload``: keys sorted, slashes and
    unicode unescaped, ``{}`` when empty."""
    return php_json(_sorted(payload)).encode("utf-8")


def sign(timestamp: str, body: bytes, api_key: str) -> str:
    """``Sign`` for ``body`` sent at ``timestamp`` (13-digit ms)."""
    return hashlib.sha1(timestamp.encode("ascii") + body + api_key.encode("utf-8")).hexdigest()


def signed_headers(user_id: str, api_key: str, body: bytes, now: float) -> dict[str, str]:
    """Every header a request needs, signed for ``body`` at unix time ``now``."""
    timestamp = str(int(now * 1000))
    return {
        "Content-Type": "application/json; charset=utf-8",
        HEADER_USER: user_id,
        HEADER_TIMESTAMP: timestamp,
        HEADER_SIGN: sign(timestamp, body, api_key),
    }


def verify_request(headers: Mapping[str, str], body: bytes, user_id: str, api_key: str) -> bool:
    """Whether a request (headers with lower-case names) is signed by this
    merchant; for a simulator checking what it receives."""
    timestamp = headers.get(HEADER_TIMESTAMP.lower(), "")
    signature = headers.get(HEADER_SIGN.lower(), "")
    if headers.get(HEADER_USER.lower()) != user_id or not (timestamp.isascii() and timestamp.isdigit()):
        return False
    return signature.isascii() and hmac.compare_digest(sign(timestamp, body, api_key), signature.lower())


def callback_canonical(fields: Mapping[str, Any]) -> bytes:
    """The bytes a callback's ``sign`` covers, between ``time`` and the key."""
    signed = {k: fields[k] for k in sorted(fields) if not _unsigned_field(k)}
    return php_json(signed, escape_slashes=True).encode("utf-8")


def callback_sign(fields: Mapping[str, Any], api_key: str) -> str:
    """``sign`` for a callback's fields (``time`` among them)."""
    return sign(str(fields.get("time", "")), callback_canonical(fields), api_key)


def verify_callback(fields: Mapping[str, Any], api_key: str) -> bool:
    """Whether a callback's fields carry a valid ``sign`` (constant time)."""
    received, stamp = fields.get("sign"), fields.get("time")
    if not isinstance(received, str) or not received.isascii():
        return False
    if not (isinstance(stamp, str | int) and str(stamp).isascii() and str(stamp).isdigit()):
        return False
    return hmac.compare_digest(callback_sign(fields, api_key), received.strip().lower())


def _unsigned_field(name: str) -> bool:
    # a form body spells the card list as card_list[0][card_no]=...
    return any(name == f or name.startswith(f + "[") for f in UNSIGNED_CALLBACK_FIELDS)


def callback_fields(body: bytes, content_type: str = "") -> dict[str, Any]:
    """A callback body as PHP would see it: a JSON object with its types, or
    a form whose values are strings. Raises ValueError when it is neither."""
    text = body.decode("utf-8")
    if "json" in content_type.lower() or text.lstrip().startswith("{"):
        data = json.loads(text, parse_float=Decimal)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)))


# ------------------------------------------------------- requests (pure)


def product_number(product_id: str) -> int | None:
    """The ``id`` the protocol wants (an integer), or None when the
    configured product id is not one."""
    return int(product_id) if product_id.isascii() and product_id.isdigit() else None


def buy_payload(request: SubmitRequest, goods_id: int, callback_url: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": goods_id,
        "external_orderno": request.attempt_key,
        "quantity": request.quantity,
    }
    attach = dict(request.fields)
    if request.account:
        attach[ACCOUNT_KEY] = request.account
    if attach:
        payload["attach"] = attach
    if request.max_price is not None:
        payload["safe_price"] = format_money(request.max_price)
    if callback_url:
        payload["url"] = callback_url
    return payload


def info_payload(attempt_key: str) -> dict[str, Any]:
    return {"external_orderno": attempt_key}


# --------------------------------------------------------- replies (pure)


class _BadShape(Exception):
    pass


@attrs.frozen
class OrderInfo:
    """One order as ``order/info`` (or a callback) describes it."""

    ordersn: str
    external_orderno: str
    status: int
    total_price: Decimal | None
    refunded: Decimal | None
    cards: tuple[Card, ...]


def decode(response: httpx.Response) -> dict[str, Any] | Unknown:
    """The reply's JSON object with an integer ``code``, or why it is UNKNOWN."""
    data: dict[str, Any] | Unknown = _common.decode_coded_json(response, CODE_OK)
    return data


message: Callable[[Mapping[str, Any]], str] = _common.message


_int: Callable[[object], int | None] = _common.as_int


def parse_order(raw: object) -> OrderInfo:
    if not isinstance(raw, dict):
        raise _BadShape("an order is not an object")
    status = _int(raw.get("status"))
    if status is None:
        raise _BadShape("order status is not an integer")
    ordersn, external = raw.get("ordersn"), raw.get("external_orderno", "")
    if not isinstance(ordersn, str) or not isinstance(external, str):
        raise _BadShape("ordersn or external_orderno is not a string")
    cards_raw = raw.get("card_list") or []
    if not isinstance(cards_raw, list):
        raise _BadShape("card_list is not a list")
    cards = []
    for card in cards_raw:
        if not isinstance(card, dict):
            raise _BadShape("a card is not an object")
        number, password = card.get("card_no") or "", card.get("card_password") or ""
        expires = card.get("end_time") or None
        if not isinstance(number, str) or not isinstance(password, str) or not (number or password):
            raise _BadShape("a card has neither number nor password")
        cards.append(Card(number, password, expires if isinstance(expires, str) else None))
    return OrderInfo(
        ordersn=ordersn,
        external_orderno=external,
        status=status,
        total_price=parse_money(raw.get("total_price")),
        refunded=parse_money(raw.get("has_back_money")),
        cards=tuple(cards),
    )


def order_outcome(request: SubmitRequest, order: OrderInfo, detail: str = "") -> Outcome:
    """What one order from ``order/info`` means for ``request``."""
    if order.external_orderno and order.external_orderno != request.attempt_key:
        return Unknown("the reply describes another order")
    ref = order.ordersn or None
    if order.status in PENDING_STATUSES:
        return Pending(supplier_ref=ref)
    if order.status in FAILED_STATUSES:
        return Failed(FAILED_STATUSES[order.status], detail)
    if order.status == STATUS_UNPAID:
        return Unknown("the supplier holds the order unpaid")
    if order.status != STATUS_SUCCESS:
        return Unknown(f"undocumented order status {order.status}")
    if order.refunded:
        return Unknown("success with a partial refund")
    if request.account:
        if not order.ordersn:
            return Unknown("a top-up reported without the supplier's order number")
        # some top-ups come with a voucher; it goes along with the receipt
        goods = Deliverables(cards=order.cards, receipt=order.ordersn)
    else:
        if len(order.cards) != request.quantity:
            return Unknown(f"{len(order.cards)} cards delivered for quantity {request.quantity}")
        goods = Deliverables(cards=order.cards)
    unit_cost = None
    if order.total_price is not None:
        unit_cost = order.total_price / request.quantity
    return Delivered(goods, unit_cost=unit_cost, supplier_ref=ref)


def submit_outcome(request: SubmitRequest, data: Mapping[str, Any]) -> Outcome:
    """What a decoded ``order/buy`` reply means (see the module docstring)."""
    code, msg = data["code"], message(data)
    if code != CODE_OK:
        return Unknown(f"code {code}" + (f": {msg}" if msg else ""))
    placed = data.get("data")
    if not isinstance(placed, dict):
        return Pending()
    external = placed.get("external_orderno")
    if isinstance(external, str) and external and external != request.attempt_key:
        return Unknown("the reply describes another order")
    ordersn = placed.get("ordersn")
    return Pending(supplier_ref=ordersn if isinstance(ordersn, str) and ordersn else None)


def query_outcome(request: SubmitRequest, data: Mapping[str, Any]) -> Outcome:
    """What a decoded ``order/info`` reply means (see the module docstring)."""
    code, msg = data["code"], message(data)
    if code == CODE_FAILED and NOT_FOUND_TEXT in msg:
        return NotFound(msg)
    if code != CODE_OK:
        return Unknown(f"query answered code {code}" + (f": {msg}" if msg else ""))
    listed = data.get("data")
    if not isinstance(listed, list):
        return Unknown("the reply has no order list")
    if not listed:
        return NotFound("empty order list")
    try:
        orders = [parse_order(raw) for raw in listed]
    except _BadShape as exc:
        return Unknown(f"bad reply shape: {exc}")
    mine = [o for o in orders if o.external_orderno == request.attempt_key]
    if not mine and len(orders) == 1:
        mine = orders  # order_outcome refuses it if it names another number
    if len(mine) != 1:
        return Unknown(f"{len(mine)} orders in the reply match the attempt")
    return order_outcome(request, mine[0], msg)


def callback_outcome(status: int, ordersn: str | None) -> Outcome:
    """A verified callback's status: only failures are final (see docstring)."""
    if status in FAILED_STATUSES:
        return Failed(FAILED_STATUSES[status], "by callback")
    return Pending(supplier_ref=ordersn)


# ------------------------------------------------------------------ plugin

_CODE_400_ONLY = (
    "kasushou answers every refusal with code 400 and free text, the same answer as "
    "'external order number exists', so the plugin queries (unknown) instead of failing over"
)


class KasushouPlugin:
    """卡速售 API v2, bound to one supplier."""

    name: ClassVar[str] = "kasushou"
    required_credentials: ClassVar[Collection[str]] = frozenset({"user_id", "api_key"})
    schedule: ClassVar[QuerySchedule] = QuerySchedule(
        # the doc: poll every 1-3 s; then back off towards the long-polling
        # pattern (minutes, then every 10 minutes)
        first_query_s=2.0,
        interval_s=3.0,
        backoff=1.5,
        max_interval_s=600.0,
        not_found_grace_s=300.0,
        # the doc calls external_orderno a dedupe key but never says what a
        # duplicate answers or whether a cancelled order still holds it
        resubmit_safe=False,
    )
    #: the simulated supplier for ``simulate:`` blocks (kamen_router.sim.kasushou)
    simulator: ClassVar[type[KasushouSimulator]] = KasushouSimulator
    #: where the conformance kit must accept the protocol's limits
    conformance: ClassVar[Profile] = Profile(
        leeway={
            **{
                check: accept(_CODE_400_ONLY, "unknown")
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
            "callback_delivered": accept(
                "the card list is outside a callback's signature, so a success callback is pending "
                "and the plugin's own query delivers",
                "pending",
            ),
        }
    )

    def __init__(self, context: SupplierContext) -> None:
        missing = [c for c in sorted(self.required_credentials) if c not in context.credentials]
        if missing:
            raise ConfigError(
                Problem(str(context.supplier.file), f"credentials.{c}", "is required by plugin 'kasushou'")
                for c in missing
            )
        self._context = context
        # Secrets both; revealed only where a request is signed
        self._user_id: Secret = context.credentials["user_id"]
        self._api_key: Secret = context.credentials["api_key"]
        self._base = context.endpoint.rstrip("/")

    def __repr__(self) -> str:
        return f"KasushouPlugin(supplier={self._context.name!r})"

    # --------------------------------------------------------------- contract

    async def submit(self, request: SubmitRequest) -> Outcome:
        goods_id = product_number(request.product_id)
        if goods_id is None:
            # refused before anything is sent
            return Rejected(RejectReason.PRODUCT_UNAVAILABLE, "the product id is not a number")
        payload = buy_payload(request, goods_id, request.callback_url or self._context.callback_url)
        data = decode(await self._post(PATH_BUY, payload))
        return data if isinstance(data, Unknown) else submit_outcome(request, data)

    async def query(self, request: SubmitRequest) -> Outcome:
        data = decode(await self._post(PATH_INFO, info_payload(request.attempt_key)))
        return data if isinstance(data, Unknown) else query_outcome(request, data)

    async def balance(self) -> Decimal:
        data = self._usable(decode(await self._post(PATH_USER, {})), "balance")
        info = data.get("data")
        value = parse_money(info.get("balance")) if isinstance(info, dict) else None
        if value is None:
            raise KasushouReplyError(f"balance of {self._context.name}: the reply has no valid balance")
        return value

    async def catalog(self) -> list[CatalogItem]:
        """Price, shelf state and stock of every configured product."""
        items = []
        for product_id in sorted({offer.product_id for offer in self._context.supplier.offers.values()}):
            goods_id = product_number(product_id)
            if goods_id is None:
                items.append(CatalogItem(product_id, available=False))
                continue
            data = decode(await self._post(PATH_GOODS, {"id": goods_id}))
            if isinstance(data, Unknown):
                raise KasushouReplyError(f"catalog of {self._context.name}: {data.detail}")
            if data["code"] == CODE_FAILED:
                # the supplier refuses to describe it: no such product for us
                items.append(CatalogItem(product_id, available=False))
                continue
            goods = data.get("data") if data["code"] == CODE_OK else None
            if not isinstance(goods, dict):
                raise KasushouReplyError(f"catalog of {self._context.name}: code {data['code']}")
            status, stock = _int(goods.get("status")), _int(goods.get("stock_num"))
            available = None if status is None else status == GOODS_ON_SALE and (stock is None or stock > 0)
            price = parse_money(goods.get("goods_price"))
            items.append(CatalogItem(product_id, price=price, available=available, stock=stock))
        return items

    def parse_callback(self, request: Request) -> Callback:
        """Verify and read one order callback; raises ``CallbackRejected``
        unless it is signed with this supplier's key."""
        try:
            fields = callback_fields(request.body, request.headers.get("content-type", ""))
        except (ValueError, UnicodeDecodeError):
            raise CallbackRejected("malformed", "neither JSON nor a form") from None
        if not verify_callback(fields, self._api_key.reveal()):
            raise CallbackRejected("bad_signature")
        # signed by the supplier from here on; only its shape may be wrong
        attempt_key, ordersn = fields.get("external_orderno"), fields.get("ordersn")
        status = _int(fields.get("status"))
        if not isinstance(attempt_key, str) or not attempt_key or status is None:
            raise CallbackRejected("malformed", "no external_orderno or status")
        ref = ordersn if isinstance(ordersn, str) and ordersn else None
        return Callback(
            attempt_key=attempt_key,
            outcome=callback_outcome(status, ref),
            supplier_ref=ref,
            sent_at=int(str(fields["time"])) / 1000,
        )

    def callback_reply(self, accepted: bool) -> CallbackReply:
        """``ok`` for a callback the router took; ``fail`` (also HTTP 200),
        which the supplier retries, for one it did not."""
        return CallbackReply(200, CALLBACK_ACK if accepted else CALLBACK_NACK)

    # -------------------------------------------------------------- transport

    def _usable(self, data: dict[str, Any] | Unknown, what: str) -> dict[str, Any]:
        if isinstance(data, Unknown):
            raise KasushouReplyError(f"{what} of {self._context.name}: {data.detail}")
        if data["code"] != CODE_OK:
            raise KasushouReplyError(f"{what} of {self._context.name}: code {data['code']}")
        return data

    async def _post(self, path: str, payload: Mapping[str, Any]) -> httpx.Response:
        body = request_body(payload)
        headers = signed_headers(self._user_id.reveal(), self._api_key.reveal(), body, _now())
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


PLUGIN = KasushouPlugin

__all__ = [
    "PLUGIN",
    "KasushouPlugin",
    "KasushouReplyError",
    "buy_payload",
    "callback_canonical",
    "callback_fields",
    "callback_sign",
    "query_outcome",
    "request_body",
    "sign",
    "signed_headers",
    "submit_outcome",
    "verify_callback",
    "verify_request",
]
