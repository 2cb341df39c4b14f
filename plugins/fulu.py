"""The ``fulu`` plugin: 福禄开放平台 (Fulu open platform) API v2.

Protocol. One gateway, ``POST {endpoint}/api/getway`` with a JSON body::

    {"app_key", "method", "timestamp": "yyyy-MM-dd HH:mm:ss" (Beijing time),
     "version": "2.0", "format": "json", "charset": "utf-8", "sign_type": "md5",
     "app_auth_token": "", "biz_content": "<the method's parameters, a JSON string>",
     "sign"}

``sign`` is the sorted-characters MD5: serialise the object without ``sign``
to compact JSON, sort its characters, join them, append the app secret, MD5,
lower-case hex. Replies are ``{code, message, result, sign}`` where
``result`` is a JSON string and ``code`` 0 means the *call* succeeded.

Methods used: ``fulu.order.direct.add`` (an order with an account: top-ups),
``fulu.order.card.add`` (an order without one: cards), ``fulu.order.info.get``
(query by ``customer_order_no``), ``fulu.user.info.get`` (balance),
``fulu.goods.list.get`` (catalog). The merchant order number
``customer_order_no`` is the attempt key; ``customer_price`` carries the
storefront's ceiling per unit, so Fulu refuses an order it would sell
dearer. Card numbers and passwords come AES-256-ECB encrypted with the app
secret as key (PKCS#7, base64); the plugin decrypts them.

How replies map to outcomes (codes from Fulu's own table; the rule behind
every line: only a reply that proves Fulu did not take the order may end
the attempt, anything else is UNKNOWN and is followed by query):

===========================  ==========================  =====================
reply                        submit                      query
===========================  ==========================  =====================
0, untreated / processing    Pending                     Pending
0, success                   Pending (the cards and the  Delivered (cards
                             receipt come by query)      decrypted, or the
                                                         receipt)
0, failed                    Failed                      Failed
0, other or no state         Pending if no state, else   Unknown
                             Unknown
1000-1019 (parameters,       Rejected(auth)              Unknown
signature, timestamp, IP)
2002, 2003 merchant/app      Rejected(auth)              Unknown
3000, 3001, 3002, 3008       Rejected(product_           Unknown
product missing, off shelf,  unavailable)
wrong type
3003, 3004 product in        Rejected(product_           Unknown
maintenance                  unavailable)
3005 out of stock            Rejected(out_of_stock)      Unknown
4000, 4002 no order number   Invalid(missing_field)      Unknown
or account
4001 quantity not above 0    Invalid(invalid_quantity)   Unknown
4004 account blacklisted     Invalid(blacklisted_        Unknown
                             account)
4008 creation failed,        Unknown (query)             Unknown
4009 timeout, 5000 system
4010 order number exists     Unknown (already placed)    Unknown
4011 no such order           Unknown                     NotFound (failed
                                                         after 10 minutes)
4012 query error             Unknown                     Unknown (query again)
any other code, HTTP other   Unknown                     Unknown
than 2xx, garbage, a result
describing another order
===========================  ==========================  =====================

Callbacks (POST to the notify URL set for the app in Fulu's console; orders
carry none, so ``SubmitRequest.callback_url`` goes unused): ``order_id,
charge_finish_time, customer_order_no, order_status, recharge_description,
product_id, price, buy_num, operator_serial_number, sign``, signed like
requests. ``failed`` is Failed; ``success`` is Delivered (the receipt) for a
product this plugin knows to be a top-up (from a direct order it placed or
from the catalog), else Pending, because a success callback carries no
cards and the query that follows fetches them. The receiver answers
``success``; anything else makes Fulu send it again.

What rests on thin sources, and how the plugin maps that safely:

- Signing escapes. The two public SDKs serialise differently (the PHP SDK
  escapes ``/`` and non-ASCII inside ``biz_content``, the Go SDK escapes
  ``<>&``), and Fulu verifies its own re-serialisation of what it parsed. The
  plugin makes that question moot: ``biz_content`` is pure ASCII (non-ASCII
  as ``\\uXXXX``, ``<>&`` as ``\\u003c``...), so the outer object holds only
  characters every JSON serialiser writes the same way, and it signs exactly
  the text it sends. The official rule sorts UTF-16 code units
  (``Array.Sort``), the SDKs sort code points; they differ only outside the
  BMP, which a request never contains. A callback with such characters fails
  verification and is left to the query loop.
- Response signatures: how Fulu signs replies is not pinned down (the PHP
  SDK's check is a TODO, and the public examples do not verify), so replies
  are not verified; the transport is HTTPS.
- ``order_price`` and the callback's ``price`` are read as unit prices (the
  callback field is documented "交易单价"); ``customer_price`` is sent per
  unit. Fulu's code for "above customer_price" is undocumented and so maps
  to Unknown: the query then finds no order and the attempt fails after the
  grace period.
- Card field names: the Go SDK reads ``card_number/card_pwd/card_deadline``,
  an integration's sample shows ``CardNumber/CardPwd/CardDeadline``; both are
  read. A card that does not decrypt, or the wrong number of cards, is
  Unknown: a human looks before anyone pays twice.
- A top-up's receipt is ``operator_serial_number`` when it says something
  (samples show ``""`` and ``"--"``), else Fulu's own ``order_id``.
- The timestamp is Beijing time: Fulu refuses one more than 10 minutes off
  (1004), whatever the host's time zone.
- 4012 lasting 10 minutes may also count as failed by Fulu's table; the
  plugin keeps it Unknown (slower, never a double top-up).
- Callbacks arrive as JSON in the PHP SDK's sample and as form fields in a
  .NET integration; both are read. ``charge_finish_time`` is when the order
  finished, not when the callback was sent, so ``sent_at`` stays None.
- Order fields: ``game, region, server, type, role`` (or Fulu's own names,
  ``charge_game_name``...) go into a direct order; an order carrying another
  field is Rejected(product_unavailable) before anything is sent, rather
  than charging without it. Fields of a card order are ignored.

Query schedule: 10 s, then doubling (20, 40, ... s) up to every 10 minutes,
close to the "1, 2, 3, 5 minutes, then every 10" of careful integrations
with two early looks for the many orders Fulu completes in seconds. A
NotFound counts as failed after 10 minutes, Fulu's own rule; resubmitting
is never safe.

The pure pieces (``sign``, ``biz_content``, ``signed_request``,
``verify_signed``, ``sign_fields``, the AES helpers, ``parse_reply``,
``submit_outcome``, ``query_outcome``, ``parse_callback_fields``) take
plain values, so a simulator can check what it receives and sign what it
sends with the same rules.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from kamen_router.errors import ConfigError, KamenRouterError, Problem
from kamen_router.money import format_money, loads_json, parse_money
from kamen_router.outcome import (
    Card,
    Deliverables,
    Delivered,
    Failed,
    Invalid,
    InvalidReason,
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
from kamen_router.sim.fulu import FuluSimulator

GATEWAY_PATH = "/api/getway"
METHOD_DIRECT = "fulu.order.direct.add"
METHOD_CARD = "fulu.order.card.add"
METHOD_QUERY = "fulu.order.info.get"
METHOD_USER = "fulu.user.info.get"
METHOD_GOODS = "fulu.goods.list.get"
#: Fulu's clock: timestamps are Beijing time
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
#: the body a callback receiver answers to acknowledge it
CALLBACK_ACK = b"success"
#: what this plugin answers to a callback the router did not take
CALLBACK_NACK = b"fail"

#: submit codes that prove Fulu did not take the order
SUBMIT_REJECTED: Mapping[int, RejectReason] = {
    **{code: RejectReason.AUTH for code in range(1000, 1020)},
    2002: RejectReason.AUTH,
    2003: RejectReason.AUTH,
    3000: RejectReason.PRODUCT_UNAVAILABLE,
    3001: RejectReason.PRODUCT_UNAVAILABLE,
    3002: RejectReason.PRODUCT_UNAVAILABLE,
    # a product (not the platform) in maintenance: the offer, not Fulu, is out
    3003: RejectReason.PRODUCT_UNAVAILABLE,
    3004: RejectReason.PRODUCT_UNAVAILABLE,
    3005: RejectReason.OUT_OF_STOCK,
    3008: RejectReason.PRODUCT_UNAVAILABLE,
}
#: submit codes that say the order itself is bad
SUBMIT_INVALID: Mapping[int, InvalidReason] = {
    4000: InvalidReason.MISSING_FIELD,
    4001: InvalidReason.INVALID_QUANTITY,
    4002: InvalidReason.MISSING_FIELD,
    4004: InvalidReason.BLACKLISTED_ACCOUNT,
}
#: submit codes Fulu documents as "the order may exist: query it"
SUBMIT_UNKNOWN: Mapping[int, str] = {
    4008: "order creation failed, query to confirm",
    4009: "order creation timed out, query to confirm",
    4010: "duplicate order number: the order exists",
    5000: "system error, query to confirm",
}
CODE_NOT_FOUND = 4011
CODE_QUERY_ERROR = 4012

STATE_SUCCESS = "success"
STATE_PROCESSING = "processing"
STATE_FAILED = "failed"
STATE_UNTREATED = "untreated"
_OPEN_STATES = frozenset({STATE_PROCESSING, STATE_UNTREATED})

#: order fields: the storefront's names and Fulu's own, both to Fulu's
FIELD_NAMES: Mapping[str, str] = {
    "game": "charge_game_name",
    "region": "charge_game_region",
    "server": "charge_game_srv",
    "type": "charge_type",
    "role": "charge_game_role",
    **{
        name: name
        for name in (
            "charge_game_name",
            "charge_game_region",
            "charge_game_srv",
            "charge_type",
            "charge_game_role",
            "charge_ip",
            "contact_qq",
            "contact_tel",
            "remaining_number",
        )
    },
}

_MAX_DETAIL = 200
_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


class FuluReplyError(KamenRouterError):
    """Raised by ``FuluPlugin.balance`` and ``catalog`` when Fulu's answer
    cannot be used. (Submits and queries never raise it: they return an
    outcome.)"""


# ------------------------------------------------------------------ signing


class _Number(str):
    """A JSON number kept as its source text, so a re-serialisation writes
    exactly what the signer wrote ("50.0000" stays "50.0000")."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # two values for one key: which one was signed is anyone's guess
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_exact(data: bytes | str) -> Any:
    """Parse JSON keeping numbers as their text (``_Number``) and refusing
    duplicate keys: the form signatures are checked against."""
    return json.loads(
        data,
        parse_float=_Number,
        parse_int=_Number,
        parse_constant=_reject_constant,
        object_pairs_hook=_no_duplicates,
    )


def _string(value: str, ascii_only: bool) -> str:
    text = json.dumps(value, ensure_ascii=ascii_only)
    if ascii_only:
        for char, escaped in _HTML_ESCAPES.items():
            text = text.replace(char, escaped)
    return text


def dumps_exact(value: object, *, ascii_only: bool = False) -> str:
    """Compact JSON with nothing escaped but what JSON requires (``/`` and
    non-ASCII as they are, like PHP's ``JSON_UNESCAPED_SLASHES |
    JSON_UNESCAPED_UNICODE``); with ``ascii_only``, non-ASCII as ``\\uXXXX``
    and ``<>&`` as ``\\u003c``... Numbers: ``_Number`` and ``int`` as their
    text, ``Decimal`` as money (``99.20``)."""
    if isinstance(value, _Number):
        return str(value)
    if isinstance(value, str):
        return _string(value, ascii_only)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return format_money(value)
    if isinstance(value, Mapping):
        return (
            "{"
            + ",".join(
                _string(str(k), ascii_only) + ":" + dumps_exact(v, ascii_only=ascii_only)
                for k, v in value.items()
            )
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps_exact(v, ascii_only=ascii_only) for v in value) + "]"
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def sign(text: str, secret: str) -> str:
    """Fulu's signature of ``text``: its characters sorted and joined, the
    secret appended, MD5, lower-case hex."""
    return hashlib.md5(("".join(sorted(text)) + secret).encode("utf-8")).hexdigest()


def sign_fields(fields: Mapping[str, object], secret: str) -> str:
    """The signature of a JSON object (a request, reply or callback without
    ``sign``), as serialised by ``dumps_exact``."""
    return sign(dumps_exact(fields), secret)


def biz_content(params: Mapping[str, object]) -> str:
    """A method's parameters as the ``biz_content`` string: compact, pure
    ASCII JSON (see the module docstring for why)."""
    return dumps_exact(params, ascii_only=True)


def timestamp(now: float) -> str:
    """Unix seconds as Fulu's timestamp, Beijing time."""
    return datetime.fromtimestamp(now, BEIJING).strftime(TIMESTAMP_FORMAT)


def signed_request(app_key: str, secret: str, method: str, stamp: str, params: Mapping[str, object]) -> bytes:
    """The exact body of one gateway call: the public parameters, the
    ``biz_content`` string, and ``sign`` over the text before it."""
    unsigned = dumps_exact(
        {
            "app_key": app_key,
            "method": method,
            "timestamp": stamp,
            "version": "2.0",
            "format": "json",
            "charset": "utf-8",
            "sign_type": "md5",
            "app_auth_token": "",
            "biz_content": biz_content(params),
        }
    )
    signature = sign(unsigned, secret)
    # the signed text followed by the sign member: the body is what was signed
    return (unsigned[:-1] + ',"sign":"' + signature + '"}').encode("utf-8")


def verify_signed(data: Mapping[str, object], secret: str) -> bool:
    """Whether ``data`` (parsed with ``loads_exact``) carries a valid
    ``sign`` over everything else. In constant time."""
    signature = data.get("sign")
    if not isinstance(signature, str):
        return False
    rest = {k: v for k, v in data.items() if k != "sign"}
    return hmac.compare_digest(sign_fields(rest, secret).encode(), signature.lower().encode())


# ---------------------------------------------------------------- cards (AES)


def _aes_key(secret: str) -> bytes:
    # like openssl's aes-256-ecb in the PHP SDK: NUL-padded or cut to 32 bytes
    return secret.encode("utf-8")[:32].ljust(32, b"\0")


def decrypt_card(value: str, secret: str) -> str:
    """A card number or password as Fulu sends it: base64 of AES-256-ECB
    with PKCS#7 padding, keyed with the app secret. Raises ValueError."""
    text = value.strip()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    if not raw or len(raw) % 16:
        raise ValueError("not a whole number of AES blocks")
    decryptor = Cipher(algorithms.AES(_aes_key(secret)), modes.ECB()).decryptor()
    padded = decryptor.update(raw) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    plain = unpadder.update(padded) + unpadder.finalize()  # raises ValueError on bad padding
    return plain.decode("utf-8").strip()


def encrypt_card(value: str, secret: str) -> str:
    """The inverse of ``decrypt_card``, for simulators and tests."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(value.encode("utf-8")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(_aes_key(secret)), modes.ECB()).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


# ------------------------------------------------------------------ replies


class _BadResult:
    """``result`` was a string but not JSON."""


BAD_RESULT = _BadResult()
Reply = tuple[int, str, Any]


def parse_reply(status: int, content: bytes) -> Reply | Unknown:
    """``(code, message, result)`` of a gateway reply, ``result`` parsed
    from its JSON string (``BAD_RESULT`` when it is not JSON); or why the
    reply is UNKNOWN."""
    if not 200 <= status < 300:
        return Unknown(f"HTTP {status}")
    try:
        data = loads_json(content)
    except (ValueError, UnicodeDecodeError):
        return Unknown(f"unparseable reply (HTTP {status})")
    if not isinstance(data, dict):
        return Unknown("reply is not a JSON object")
    code = data.get("code")
    if isinstance(code, str) and code.isascii() and code.isdigit():
        code = int(code)
    if not isinstance(code, int) or isinstance(code, bool):
        return Unknown("reply without a code")
    message = data.get("message")
    message = message[:_MAX_DETAIL] if isinstance(message, str) else ""
    result: Any = data.get("result")
    if isinstance(result, str) and result:
        try:
            result = loads_json(result)
        except ValueError:
            result = BAD_RESULT
    return code, message, result


def _text(value: object) -> str | None:
    """A string, or an integer read as its digits (Fulu writes ids both ways)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _count(value: object) -> int | None:
    text = _text(value)
    return int(text) if text is not None and text.isascii() and text.isdigit() else None


def _mismatch(request: SubmitRequest, order: Mapping[str, Any]) -> str | None:
    """Why ``order`` does not describe ``request``'s attempt, or None."""
    if _text(order.get("customer_order_no")) != request.attempt_key:
        return "the reply describes another order"
    if "product_id" in order and _text(order["product_id"]) != request.product_id:
        return "the reply names another product"
    if "buy_num" in order and _count(order["buy_num"]) != request.quantity:
        return "the reply names another quantity"
    return None


def _ref(order: Mapping[str, Any]) -> str | None:
    ref = _text(order.get("order_id"))
    return ref[:64] if ref else None


def receipt(order: Mapping[str, Any]) -> str | None:
    """A top-up's receipt: the operator's serial when it says something,
    else Fulu's order id."""
    serial = order.get("operator_serial_number")
    if isinstance(serial, str) and serial.strip(" -"):
        return serial.strip()[:128]
    return _ref(order)


def submit_outcome(request: SubmitRequest, reply: Reply) -> Outcome:
    """The outcome of a ``fulu.order.direct.add`` / ``card.add`` reply."""
    code, message, result = reply
    if code == 0:
        if not isinstance(result, dict):
            return Unknown("code 0 without an order")
        why = _mismatch(request, result)
        if why:
            return Unknown(why)
        state = result.get("order_state")
        if state is None or state in _OPEN_STATES or state == STATE_SUCCESS:
            # code 0 means "order placed"; cards and receipts come by query
            return Pending(supplier_ref=_ref(result))
        if state == STATE_FAILED:
            return Failed("failed", message)
        return Unknown(f"unknown order state {str(state)[:32]!r}")
    if code in SUBMIT_REJECTED:
        return Rejected(SUBMIT_REJECTED[code], f"{code} {message}")
    if code in SUBMIT_INVALID:
        return Invalid(SUBMIT_INVALID[code], f"{code} {message}")
    if code in SUBMIT_UNKNOWN:
        return Unknown(f"{code} {SUBMIT_UNKNOWN[code]}")
    return Unknown(f"unexpected code {code}")


def _cards(raw: object, secret: str) -> tuple[Card, ...] | str:
    """The decrypted cards of a query result, or why they cannot be read."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        return "cards is not a list"
    cards = []
    for item in raw:
        if not isinstance(item, dict):
            return "a card is not an object"
        number = item.get("card_number", item.get("CardNumber"))
        password = item.get("card_pwd", item.get("CardPwd"))
        expires = item.get("card_deadline", item.get("CardDeadline"))
        if not isinstance(number, str) or not isinstance(password, str):
            return "a card lacks a number or a password"
        try:
            cards.append(
                Card(
                    decrypt_card(number, secret),
                    decrypt_card(password, secret),
                    expires if isinstance(expires, str) and expires else None,
                )
            )
        except (ValueError, UnicodeDecodeError):
            return "a card does not decrypt with the app secret"
    return tuple(cards)


def query_outcome(request: SubmitRequest, reply: Reply, secret: str) -> Outcome:
    """The outcome of a ``fulu.order.info.get`` reply; ``secret`` decrypts
    the cards."""
    code, message, result = reply
    if code == CODE_NOT_FOUND:
        return NotFound(f"{code} {message}")
    if code != 0:
        # a refused query says nothing about the order (4012: query again)
        return Unknown(f"query answered {code}")
    if not isinstance(result, dict):
        return Unknown("code 0 without an order")
    why = _mismatch(request, result)
    if why:
        return Unknown(why)
    state = result.get("order_state")
    if state in _OPEN_STATES:
        return Pending(supplier_ref=_ref(result))
    if state == STATE_FAILED:
        return Failed("failed", message)
    if state != STATE_SUCCESS:
        return Unknown(f"unknown order state {str(state)[:32]!r}")
    unit_cost = parse_money(result.get("order_price"))
    if request.account:
        goods = Deliverables(receipt=receipt(result))
        if not goods.receipt:
            return Unknown("top-up reported successful without a receipt")
    else:
        cards = _cards(result.get("cards"), secret)
        if isinstance(cards, str):
            return Unknown(cards)
        if len(cards) != request.quantity:
            return Unknown(f"{len(cards)} cards delivered for quantity {request.quantity}")
        goods = Deliverables(cards=cards)
    return Delivered(goods, unit_cost=unit_cost, supplier_ref=_ref(result))


# ---------------------------------------------------------------- callbacks


def callback_fields(body: bytes) -> dict[str, Any]:
    """A callback's fields, from a JSON body (numbers kept as their text)
    or a form body. Raises ``CallbackRejected("malformed")``."""
    text = body.strip()
    try:
        if text.startswith(b"{"):
            data = loads_exact(text)
        else:
            data = _no_duplicates(
                parse_qsl(text.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
            )
    except (ValueError, UnicodeDecodeError):
        raise CallbackRejected("malformed", "neither a JSON object nor form fields") from None
    if not isinstance(data, dict) or not data:
        raise CallbackRejected("malformed", "no fields")
    return data


def parse_callback_fields(data: Mapping[str, Any], secret: str, direct_products: Collection[str]) -> Callback:
    """Verify and read one callback's fields. ``direct_products`` are the
    product ids known to be top-ups: only their success is Delivered."""
    if not verify_signed(data, secret):
        raise CallbackRejected("bad_signature")

    def field(name: str) -> str:
        value = _text(data.get(name))
        if not value:
            raise CallbackRejected("malformed", f"no {name}")
        return value

    attempt_key = field("customer_order_no")[:64]
    status = field("order_status")
    ref = _ref(data)
    description = data.get("recharge_description")
    description = description[:_MAX_DETAIL] if isinstance(description, str) else ""
    outcome: Outcome
    if status == STATE_FAILED:
        outcome = Failed("failed", description or "failed by callback")
    elif status == STATE_SUCCESS:
        product = _text(data.get("product_id"))
        goods = Deliverables(receipt=receipt(data))
        if product in direct_products and goods.receipt:
            outcome = Delivered(goods, unit_cost=parse_money(_text(data.get("price"))), supplier_ref=ref)
        else:
            # a card order's success: its cards come only by query
            outcome = Pending(supplier_ref=ref)
    else:
        raise CallbackRejected("malformed", "order_status is neither success nor failed")
    return Callback(
        attempt_key=attempt_key,
        outcome=outcome,
        unit_price=parse_money(_text(data.get("price"))),
        quantity=_count(data.get("buy_num")),
        supplier_ref=ref,
    )


# ------------------------------------------------------------------- plugin


class FuluPlugin:
    """The Fulu API v2, bound to one supplier."""

    name: ClassVar[str] = "fulu"
    required_credentials: ClassVar[Collection[str]] = frozenset({"app_key", "app_secret"})
    #: the in-process Fulu for ``simulate:`` (written from the protocol
    #: documents, not from this plugin; its conformance profile is there)
    simulator: ClassVar[type[FuluSimulator]] = FuluSimulator
    schedule: ClassVar[QuerySchedule] = QuerySchedule(
        first_query_s=10.0,
        interval_s=20.0,
        backoff=2.0,
        max_interval_s=600.0,
        # Fulu: "if the query says 4011 and still says it 10 minutes later,
        # the order may be failed"
        not_found_grace_s=600.0,
        resubmit_safe=False,
    )

    def __init__(self, context: SupplierContext, *, clock: Callable[[], float] = time.time) -> None:
        missing = [c for c in sorted(self.required_credentials) if c not in context.credentials]
        if missing:
            raise ConfigError(
                Problem(str(context.supplier.file), f"credentials.{c}", "is required by plugin 'fulu'")
                for c in missing
            )
        self._context = context
        self._app_key = context.credentials["app_key"]
        self._secret = context.credentials["app_secret"]  # a Secret: revealed only to sign and decrypt
        self._url = context.endpoint.rstrip("/") + GATEWAY_PATH
        self._clock = clock
        # product kinds seen (direct orders placed, the catalog's types): a
        # success callback is final only for a known top-up product
        self._direct: set[str] = set()
        self._card: set[str] = set()

    def __repr__(self) -> str:
        return f"FuluPlugin(supplier={self._context.name!r})"

    # --------------------------------------------------------------- contract

    async def submit(self, request: SubmitRequest) -> Outcome:
        if not (request.product_id.isascii() and request.product_id.isdigit()):
            return Rejected(RejectReason.PRODUCT_UNAVAILABLE, "a fulu product id is a number")
        params: dict[str, object] = {
            "customer_order_no": request.attempt_key,
            "product_id": int(request.product_id),
            "buy_num": request.quantity,
        }
        if request.account:
            method = METHOD_DIRECT
            params["charge_account"] = request.account
            for name, value in sorted(request.fields.items()):
                target = FIELD_NAMES.get(name)
                if target is None:
                    return Rejected(
                        RejectReason.PRODUCT_UNAVAILABLE, f"order field {name[:32]!r} has no fulu parameter"
                    )
                params[target] = value
        else:
            method = METHOD_CARD
        if request.max_price is not None:
            params["customer_price"] = request.max_price
        reply = await self._call(method, params)
        if isinstance(reply, Unknown):
            return reply
        outcome = submit_outcome(request, reply)
        if reply[0] == 0:
            (self._direct if method == METHOD_DIRECT else self._card).add(request.product_id)
        return outcome

    async def query(self, request: SubmitRequest) -> Outcome:
        reply = await self._call(METHOD_QUERY, {"customer_order_no": request.attempt_key})
        if isinstance(reply, Unknown):
            return reply
        return query_outcome(request, reply, self._secret.reveal())

    async def balance(self) -> Decimal:
        result = await self._result(METHOD_USER, {}, "balance")
        value = parse_money(result.get("balance")) if isinstance(result, dict) else None
        if value is None:
            raise FuluReplyError(f"balance of {self._context.name}: the reply has no valid balance")
        return value

    async def catalog(self) -> list[CatalogItem]:
        """Every product of the account: purchase price, shelf and stock state."""
        result = await self._result(METHOD_GOODS, {}, "catalog")
        if not isinstance(result, list):
            raise FuluReplyError(f"catalog of {self._context.name}: the reply has no product list")
        items = []
        for product in result:
            pid = _text(product.get("product_id")) if isinstance(product, dict) else None
            if not pid:
                continue
            kind = product.get("product_type")
            if kind == "直充":
                self._direct.add(pid)
            elif kind == "卡密":
                self._card.add(pid)
            items.append(
                CatalogItem(
                    product_id=pid,
                    price=parse_money(product.get("purchase_price")),
                    available=_available(product.get("sales_status"), product.get("stock_status")),
                )
            )
        return items

    def parse_callback(self, request: Any) -> Callback:
        """Verify and read one callback (a ``kamen_router.http.Request``).
        Raises ``CallbackRejected`` unless it is signed with the app secret."""
        return parse_callback_fields(
            callback_fields(request.body), self._secret.reveal(), self._direct - self._card
        )

    def callback_reply(self, accepted: bool) -> CallbackReply:
        """``success`` for a callback the router took; ``fail`` (HTTP 200),
        which Fulu sends again later, for one it did not."""
        return CallbackReply(200, CALLBACK_ACK if accepted else CALLBACK_NACK)

    # -------------------------------------------------------------- transport

    async def _call(self, method: str, params: Mapping[str, object]) -> Reply | Unknown:
        body = signed_request(
            self._app_key.reveal(), self._secret.reveal(), method, timestamp(self._clock()), params
        )
        response: httpx.Response = await send(
            self._context.http,
            "POST",
            self._url,
            timeout_s=self._context.timeout_s,
            content=body,
            headers={"content-type": "application/json;charset=utf-8"},
        )
        return parse_reply(response.status_code, response.content)

    async def _result(self, method: str, params: Mapping[str, object], what: str) -> Any:
        reply = await self._call(method, params)
        if isinstance(reply, Unknown):
            raise FuluReplyError(f"{what} of {self._context.name}: {reply.detail}")
        code, _, result = reply
        if code != 0:
            raise FuluReplyError(f"{what} of {self._context.name}: code {code}")
        return result


def _available(sales: object, stock: object) -> bool | None:
    """On shelf and in stock, from the catalog's words (None: it does not say)."""
    if sales in ("下架", "维护中", "库存维护") or stock == "断货":
        return False
    if sales == "上架" and stock in ("充足", "警报"):
        return True
    return None


PLUGIN = FuluPlugin

__all__ = [
    "BEIJING",
    "CALLBACK_ACK",
    "CALLBACK_NACK",
    "PLUGIN",
    "FuluPlugin",
    "FuluReplyError",
    "biz_content",
    "callback_fields",
    "decrypt_card",
    "dumps_exact",
    "encrypt_card",
    "loads_exact",
    "parse_callback_fields",
    "parse_reply",
    "query_outcome",
    "receipt",
    "sign",
    "sign_fields",
    "signed_request",
    "submit_outcome",
    "timestamp",
    "verify_signed",
]
