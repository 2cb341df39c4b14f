"""The ``kamen`` plugin: 卡门网 (api.kamennet.com) order interface.

Protocol. Form-encoded POSTs answered in XML:

``POST {endpoint}/API/Order/Charge.aspx``
    ``CustomerId, CustomerOrderNo, ProductId, BuyNum, ChargeAccount``, then
    the optional ``ChargePassword, ChargeGame, ChargeRegion, ChargeServer,
    ChargeType, NotifyUrl, BuyerIp, RoleName, RemainingNumber, ContactType,
    ContactQQ``, then ``Sign``. A success reply carries ``OrderNo`` (Kamen's
    order number) and ``CustomerOrderNo``; a refusal ``ErrorCode`` and
    ``ErrorMsg``.
``POST {endpoint}/API/Order/Query.aspx``
    ``CustomerId, CustomerOrderNo, Sign`` -> ``OrderStatus`` (未处理, 处理中,
    可疑, 成功, 失败), ``Description``, ``OrderNo``; or ``ErrorCode``.

``Sign`` is the upper-case hex MD5 of the ``key=value`` pairs in that fixed
order, values URL-encoded as sent (.NET ``HttpUtility.UrlEncode``: letters,
digits and ``-_.!*()`` kept, space as ``+``, every other UTF-8 byte as
lower-case ``%xx``), empty ones left out, with no separators, followed by
the key: ``CustomerId=801479CustomerOrderNo=...ProductId=...`` + key. The
plugin signs exactly the encoded values it sends. The merchant order number
``CustomerOrderNo`` is the attempt key; ``NotifyUrl`` is the daemon's
callback URL.

How replies map to outcomes (the rule behind every line: only a reply that
proves Kamen did not take the order may end the attempt):

===========================  =========================  =====================
reply                        submit                     query
===========================  =========================  =====================
OrderNo, no ErrorCode        Pending                    -
OrderStatus 未处理 / 处理中  -                          Pending
OrderStatus 成功             -                          Delivered (receipt:
                                                        OrderNo)
OrderStatus 失败             -                          Failed; Unknown when
                                                        the description says
                                                        the site balance ran
                                                        short
OrderStatus 可疑 or other    -                          Unknown
1001 missing parameter       Invalid(missing_field)     Unknown
1002 malformed parameter     Invalid(invalid_account)   Unknown
1003 signature, 1005 no      Rejected(auth)             Unknown
such customer, 1008 site
blacklisted, 2400 no such
site
1016 IP not whitelisted      Rejected(auth)             -
1016 (query) no such order   -                          NotFound (failed
                                                        after 5 minutes)
1006 no such product, 1007   Rejected(product_          Unknown
banned hours, 1009 product   unavailable)
blacklisted, 1010 wrong
type, 1019 no regional
rights, 1021 product in
maintenance
1011 out of stock            Rejected(out_of_stock)     Unknown
1012 account balance,        Rejected(insufficient_     Unknown
1013 site balance            balance)
1024 server maintenance      Rejected(maintenance)      Unknown
2000 consumption protection  Rejected(auth)             Unknown
1020 once per x minutes      RateLimited(x minutes)     Unknown
1014 creation failed         Unknown (query)            Unknown
1015 order number exists     Unknown (already placed)   Unknown
1022 stock lookup failed     Unknown (query)            Unknown
other code, HTTP other than  Unknown                    Unknown
2xx, garbage, a reply about
another order
===========================  =========================  =====================

Callbacks: ``ChargeTime, CustomerOrderNo, OrderNo, ReMark, Status``
(``True``/``False``), ``Sign`` = lower-case hex MD5 of
``chargetime=T&customerorderno=C&orderno=O&remark=R&status=S`` + key over
the decoded values, ``/`` in the time written as ``-``. ``True`` is
Delivered (receipt: OrderNo), ``False`` Failed (or Pending when the remark
says the balance ran short, as the query maps it). The receiver answers
``True``.

What rests on thin sources, and how the plugin maps that safely:

- One open-source integration (a .NET client) is the source for the code
  table, the callback and its answer; a Java client confirms the signing
  rule (``CustomerID=801479`` + its key gives its published
  ``FCD4CEE2...``). Codes it lists beyond PROTOCOLS.md (1001-1010, 1019,
  1022, 1024, 2400) are mapped by their words; 1022 "failed to read stock"
  does not say whether the order was created, so it is Unknown.
- 1001/1002: the plugin always sends every required parameter in a valid
  form (it checks the account and product id before sending), so what can
  be missing or malformed is the order's own data.
- 2000 "consumption protection" is a limit on the merchant account, not on
  the order: Rejected(auth), which ejects Kamen for a cool-down rather than
  marking it drained (Kamen publishes no balance call, so a drained mark
  would never clear; see balance below).
- 1020's wait is read from the message ("x分钟"); without a number it is
  left to the router.
- The submit reply's ``Status`` is undocumented: any success reply is
  Pending and the query decides.
- The .NET client treats 失败 with "站点余额不足" (site balance short) as
  suspicious, not failed; so does this plugin (Unknown: a human decides).
- No price-cap field is documented, so the ceiling is enforced by the router
  alone; replies carry no price, so ``unit_cost`` is None.
- No card delivery is documented: an order without an account is
  Rejected(product_unavailable) before anything is sent. Order fields
  ``game, region, server, type, role`` (or Kamen's own names) are sent; an
  order with another field is Rejected(product_unavailable), unsent.
- No balance call is documented: ``balance`` returns None. No catalog: the
  goods interface exists but the meaning of its stock and sale flags is not
  documented, and the router takes every offer a catalog omits off the
  shelf, so a misread catalog would silently stop all orders.
- Callbacks: field names are read case-insensitively, from the form body
  or the query string, UTF-8 or GB18030 (Kamen's .NET stack writes
  GB2312). The replay window cannot apply: ``ChargeTime`` is when the order
  was charged, not when the callback was sent.

Query schedule as for Fulu (10 s, doubling up to every 10 minutes); a
NotFound counts as failed after 5 minutes; resubmitting is never safe.

The pure pieces (``url_encode``, ``sign``, ``signed_form``,
``charge_pairs``, ``parse_xml``, ``submit_outcome``, ``query_outcome``,
``callback_sign``, ``parse_callback_fields``) take plain values, so a
simulator can check what it receives and sign what it sends.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import xml.etree.ElementTree as ET
from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import httpx

from kamen_router.errors import ConfigError, Problem
from kamen_router.outcome import (
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
from kamen_router.plugin import (
    Callback,
    CallbackRejected,
    CallbackReply,
    QuerySchedule,
    SubmitRequest,
    SupplierContext,
    send,
)
from kamen_router.sim.kamen import KamenSimulator

CHARGE_PATH = "/API/Order/Charge.aspx"
QUERY_PATH = "/API/Order/Query.aspx"
#: Charge.aspx parameters, in the order they are signed and sent
CHARGE_PARAMS = (
    "CustomerId",
    "CustomerOrderNo",
    "ProductId",
    "BuyNum",
    "ChargeAccount",
    "ChargePassword",
    "ChargeGame",
    "ChargeRegion",
    "ChargeServer",
    "ChargeType",
    "NotifyUrl",
    "BuyerIp",
    "RoleName",
    "RemainingNumber",
    "ContactType",
    "ContactQQ",
)
#: order fields: the storefront's names and Kamen's own, both to Kamen's
FIELD_NAMES: Mapping[str, str] = {
    "game": "ChargeGame",
    "region": "ChargeRegion",
    "server": "ChargeServer",
    "type": "ChargeType",
    "role": "RoleName",
    **{
        name: name
        for name in (
            "ChargeGame",
            "ChargeRegion",
            "ChargeServer",
            "ChargeType",
            "RoleName",
            "RemainingNumber",
            "ContactType",
            "ContactQQ",
            "BuyerIp",
        )
    },
}
CALLBACK_ACK = b"True"
CALLBACK_NACK = b"False"

STATUS_UNTREATED = "未处理"
STATUS_PROCESSING = "处理中"
STATUS_SUSPICIOUS = "可疑"
STATUS_SUCCESS = "成功"
STATUS_FAILED = "失败"
#: in a failure's description: the .NET client keeps such an order open
BALANCE_SHORT = "余额不足"

#: submit codes that prove Kamen did not take the order
SUBMIT_REJECTED: Mapping[int, RejectReason] = {
    1003: RejectReason.AUTH,
    1005: RejectReason.AUTH,
    1008: RejectReason.AUTH,
    1016: RejectReason.AUTH,  # on submit: the IP is not whitelisted
    2000: RejectReason.AUTH,
    2400: RejectReason.AUTH,
    1006: RejectReason.PRODUCT_UNAVAILABLE,
    1007: RejectReason.PRODUCT_UNAVAILABLE,
    1009: RejectReason.PRODUCT_UNAVAILABLE,
    1010: RejectReason.PRODUCT_UNAVAILABLE,
    1019: RejectReason.PRODUCT_UNAVAILABLE,
    1021: RejectReason.PRODUCT_UNAVAILABLE,
    1011: RejectReason.OUT_OF_STOCK,
    1012: RejectReason.INSUFFICIENT_BALANCE,
    1013: RejectReason.INSUFFICIENT_BALANCE,
    1024: RejectReason.MAINTENANCE,
}
SUBMIT_INVALID: Mapping[int, InvalidReason] = {
    1001: InvalidReason.MISSING_FIELD,
    1002: InvalidReason.INVALID_ACCOUNT,
}
#: submit codes after which the order may exist: query it
SUBMIT_UNKNOWN: Mapping[int, str] = {
    1014: "order creation failed, query to confirm",
    1015: "duplicate order number: the order exists",
    1022: "stock lookup failed, query to confirm",
}
CODE_RATE_LIMITED = 1020
CODE_NOT_FOUND = 1016  # on query

_MAX_DETAIL = 200
_MAX_REPLY = 1 << 20
_URL_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!*()")
_MINUTES = re.compile(r"(\d{1,4})\s*分钟")
_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9_.-]+)["']""")


# ------------------------------------------------------------------ signing


def url_encode(value: str) -> str:
    """.NET's ``HttpUtility.UrlEncode(value, Encoding.UTF8)``."""
    out = []
    for byte in value.encode("utf-8"):
        if byte in _URL_SAFE:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02x}")
    return "".join(out)


def _encoded(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, url_encode(value)) for name, value in pairs if value]


def sign(pairs: Sequence[tuple[str, str]], key: str) -> str:
    """Kamen's signature: ``name=value`` of every non-empty pair in order,
    values URL-encoded, concatenated, the key appended, MD5, upper-case hex."""
    text = "".join(f"{name}={value}" for name, value in _encoded(pairs)) + key
    return hashlib.md5(text.strip().encode("utf-8")).hexdigest().upper()


def signed_form(pairs: Sequence[tuple[str, str]], key: str) -> bytes:
    """The exact form body: the encoded pairs, then ``Sign`` over them."""
    encoded = _encoded(pairs)
    body = "&".join(f"{name}={value}" for name, value in encoded)
    return f"{body}&Sign={sign(pairs, key)}".encode("ascii")


def verify_form(body: bytes, order: Sequence[str], key: str) -> dict[str, str] | None:
    """For a simulator: the decoded fields of a signed form whose ``Sign``
    checks out for the parameter ``order``, else None."""
    try:
        fields = dict(parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True))
    except (ValueError, UnicodeDecodeError):
        return None
    unknown = set(fields) - set(order) - {"Sign"}
    expected = sign([(name, fields.get(name, "")) for name in order], key)
    if unknown or not hmac.compare_digest(expected, fields.get("Sign", "").upper()):
        return None
    return fields


def charge_pairs(
    customer_id: str, request: SubmitRequest, notify_url: str | None
) -> list[tuple[str, str]] | str:
    """The Charge.aspx parameters of an attempt in their fixed order, or why
    the attempt cannot be expressed in Kamen's terms."""
    if not request.account:
        return "kamen delivers top-ups only: the order has no account"
    if not (request.product_id.isascii() and request.product_id.isdigit()):
        return "a kamen product id is a number"
    values = {
        "CustomerId": customer_id,
        "CustomerOrderNo": request.attempt_key,
        "ProductId": request.product_id,
        "BuyNum": str(request.quantity),
        "ChargeAccount": request.account,
        "NotifyUrl": notify_url or "",
    }
    for name, value in request.fields.items():
        target = FIELD_NAMES.get(name)
        if target is None:
            return f"order field {name[:32]!r} has no kamen parameter"
        values[target] = value
    return [(name, values.get(name, "")) for name in CHARGE_PARAMS]


def query_pairs(customer_id: str, attempt_key: str) -> list[tuple[str, str]]:
    return [("CustomerId", customer_id), ("CustomerOrderNo", attempt_key)]


# ------------------------------------------------------------------ replies


def parse_xml(content: bytes) -> dict[str, str] | None:
    """The text of every element of a reply, by tag (the first of each),
    whatever the root; None when it is not XML. The declared encoding is
    honoured (expat knows no GB2312)."""
    if len(content) > _MAX_REPLY:
        return None
    content = content.removeprefix(b"\xef\xbb\xbf")
    match = _ENCODING.match(content)
    try:
        text = content.decode(match.group(1).decode() if match else "utf-8")
        # the declaration goes: the text is already decoded
        root = ET.fromstring(re.sub(r"^\s*<\?xml[^>]*\?>", "", text))
    except (ET.ParseError, LookupError, UnicodeDecodeError):
        return None
    fields: dict[str, str] = {}
    for element in root.iter():
        if isinstance(element.tag, str):
            fields.setdefault(element.tag, (element.text or "").strip())
    return fields


def decode_reply(response: httpx.Response) -> dict[str, str] | Unknown:
    if not response.is_success:
        return Unknown(f"HTTP {response.status_code}")
    fields = parse_xml(response.content)
    if fields is None:
        return Unknown(f"unparseable reply (HTTP {response.status_code})")
    return fields


def _error_code(fields: Mapping[str, str]) -> int | str | None:
    """The reply's ErrorCode: an int, the raw text when it is not one, or None."""
    raw = fields.get("ErrorCode")
    if raw is None or raw == "":
        return None
    return int(raw) if raw.isascii() and raw.isdigit() else raw[:16]


def _message(fields: Mapping[str, str], name: str = "ErrorMsg") -> str:
    return fields.get(name, "")[:_MAX_DETAIL]


def _mismatch(request: SubmitRequest, fields: Mapping[str, str]) -> str | None:
    if fields.get("CustomerOrderNo", request.attempt_key) != request.attempt_key:
        return "the reply describes another order"
    if fields.get("ProductId", request.product_id) != request.product_id:
        return "the reply names another product"
    return None


def retry_after(message: str) -> float | None:
    """1020's wait, from "该商品x分钟内只能购买一次"."""
    match = _MINUTES.search(message)
    return float(int(match.group(1)) * 60) if match else None


def submit_outcome(request: SubmitRequest, fields: Mapping[str, str]) -> Outcome:
    """The outcome of a Charge.aspx reply."""
    code = _error_code(fields)
    message = _message(fields)
    if code is None:
        why = _mismatch(request, fields)
        if why:
            return Unknown(why)
        order_no = fields.get("OrderNo")
        if not order_no:
            return Unknown("reply with neither an error nor an order number")
        return Pending(supplier_ref=order_no[:64])
    if isinstance(code, str):
        return Unknown(f"unexpected error code {code!r}")
    if code in SUBMIT_REJECTED:
        return Rejected(SUBMIT_REJECTED[code], f"{code} {message}")
    if code in SUBMIT_INVALID:
        return Invalid(SUBMIT_INVALID[code], f"{code} {message}")
    if code == CODE_RATE_LIMITED:
        return RateLimited(retry_after(message), f"{code} {message}")
    if code in SUBMIT_UNKNOWN:
        return Unknown(f"{code} {SUBMIT_UNKNOWN[code]}")
    return Unknown(f"unexpected code {code}")


def query_outcome(request: SubmitRequest, fields: Mapping[str, str]) -> Outcome:
    """The outcome of a Query.aspx reply."""
    code = _error_code(fields)
    if code == CODE_NOT_FOUND:
        return NotFound(f"{code} {_message(fields)}")
    if code is not None:
        # a refused query says nothing about the order
        return Unknown(f"query answered {code}")
    why = _mismatch(request, fields)
    if why:
        return Unknown(why)
    status = fields.get("OrderStatus")
    order_no = fields.get("OrderNo") or None
    description = _message(fields, "Description")
    if status in (STATUS_UNTREATED, STATUS_PROCESSING):
        return Pending(supplier_ref=order_no)
    if status == STATUS_SUCCESS:
        if not order_no:
            return Unknown("top-up reported successful without an order number")
        return Delivered(Deliverables(receipt=order_no[:128]), supplier_ref=order_no[:64])
    if status == STATUS_FAILED:
        if BALANCE_SHORT in description:
            return Unknown("failed for a short balance: kamen may still charge it")
        return Failed("failed", description)
    if status == STATUS_SUSPICIOUS:
        return Unknown("kamen holds the order as suspicious")
    return Unknown(f"unknown order status {(status or '')[:16]!r}")


# ---------------------------------------------------------------- callbacks

#: the signed callback fields, in signing order (matched case-insensitively)
CALLBACK_FIELDS = ("chargetime", "customerorderno", "orderno", "remark", "status")


def callback_sign(fields: Mapping[str, str], key: str) -> str:
    """A callback's signature: lower-case hex MD5 of
    ``chargetime=...&customerorderno=...&orderno=...&remark=...&status=...``
    plus the key, over decoded values, UTF-8, ``/`` in the time as ``-``.
    ``fields`` are keyed by lower-case name."""
    values = {name: fields.get(name, "") for name in CALLBACK_FIELDS}
    values["chargetime"] = values["chargetime"].replace("/", "-")
    text = "&".join(f"{name}={values[name]}" for name in CALLBACK_FIELDS) + key
    return hashlib.md5(text.strip().encode("utf-8")).hexdigest()


def callback_fields(body: bytes, query: Mapping[str, list[str]]) -> dict[str, str]:
    """A callback's fields by lower-case name: the form body, else the
    query string. Raises ``CallbackRejected("malformed")``."""
    pairs: list[tuple[str, str]] = []
    text = body.strip()
    if text:
        for encoding in ("utf-8", "gb18030"):
            try:
                pairs = parse_qsl(
                    text.decode(encoding),
                    keep_blank_values=True,
                    strict_parsing=True,
                    encoding=encoding,
                    errors="strict",
                )
                break
            except UnicodeDecodeError:
                continue
            except ValueError:
                raise CallbackRejected("malformed", "not form fields") from None
        else:
            raise CallbackRejected("malformed", "neither UTF-8 nor GB18030")
    else:
        pairs = [(name, values[-1]) for name, values in query.items() if values]
    fields: dict[str, str] = {}
    for name, value in pairs:
        low = name.lower()
        if low in fields:
            raise CallbackRejected("malformed", f"{low} given twice")
        fields[low] = value
    return fields


def parse_callback_fields(fields: Mapping[str, str], key: str) -> Callback:
    """Verify and read one callback's fields (keyed by lower-case name)."""
    if not hmac.compare_digest(callback_sign(fields, key), fields.get("sign", "").lower()):
        raise CallbackRejected("bad_signature")
    attempt_key = fields.get("customerorderno", "")[:64]
    order_no = fields.get("orderno", "")[:64] or None
    if not attempt_key:
        raise CallbackRejected("malformed", "no CustomerOrderNo")
    status = fields.get("status", "")
    remark = fields.get("remark", "")[:_MAX_DETAIL]
    outcome: Outcome
    if status == "True":
        if not order_no:
            raise CallbackRejected("malformed", "success without an OrderNo")
        outcome = Delivered(Deliverables(receipt=order_no), supplier_ref=order_no)
    elif status == "False":
        # as on query: a short balance is not a final failure
        outcome = Pending(order_no) if BALANCE_SHORT in remark else Failed("failed", remark)
    else:
        raise CallbackRejected("malformed", "Status is neither True nor False")
    return Callback(attempt_key=attempt_key, outcome=outcome, supplier_ref=order_no)


# ------------------------------------------------------------------- plugin


class KamenPlugin:
    """The Kamen order interface, bound to one supplier."""

    name: ClassVar[str] = "kamen"
    required_credentials: ClassVar[Collection[str]] = frozenset({"customer_id", "key"})
    #: the in-process Kamen for ``simulate:`` (written from the protocol
    #: documents, not from this plugin; its conformance profile is there)
    simulator: ClassVar[type[KamenSimulator]] = KamenSimulator
    schedule: ClassVar[QuerySchedule] = QuerySchedule(
        first_query_s=10.0,
        interval_s=20.0,
        backoff=2.0,
        max_interval_s=600.0,
        not_found_grace_s=300.0,
        resubmit_safe=False,
    )

    def __init__(self, context: SupplierContext) -> None:
        missing = [c for c in sorted(self.required_credentials) if c not in context.credentials]
        if missing:
            raise ConfigError(
                Problem(str(context.supplier.file), f"credentials.{c}", "is required by plugin 'kamen'")
                for c in missing
            )
        self._context = context
        self._customer_id = context.credentials["customer_id"]
        self._key = context.credentials["key"]  # a Secret: revealed only to sign
        self._base = context.endpoint.rstrip("/")

    def __repr__(self) -> str:
        return f"KamenPlugin(supplier={self._context.name!r})"

    async def submit(self, request: SubmitRequest) -> Outcome:
        pairs = charge_pairs(self._customer_id.reveal(), request, request.callback_url)
        if isinstance(pairs, str):
            # nothing was sent: the supplier certainly did not take it
            return Rejected(RejectReason.PRODUCT_UNAVAILABLE, pairs)
        fields = await self._post(CHARGE_PATH, pairs)
        return fields if isinstance(fields, Unknown) else submit_outcome(request, fields)

    async def query(self, request: SubmitRequest) -> Outcome:
        fields = await self._post(QUERY_PATH, query_pairs(self._customer_id.reveal(), request.attempt_key))
        return fields if isinstance(fields, Unknown) else query_outcome(request, fields)

    async def balance(self) -> Decimal | None:
        """Kamen publishes no balance call."""
        return None

    def parse_callback(self, request: Any) -> Callback:
        """Verify and read one callback (a ``kamen_router.http.Request``).
        Raises ``CallbackRejected`` unless it is signed with the key."""
        return parse_callback_fields(callback_fields(request.body, request.query), self._key.reveal())

    def callback_reply(self, accepted: bool) -> CallbackReply:
        """``True`` for a callback the router took, ``False`` for one it did not."""
        return CallbackReply(200, CALLBACK_ACK if accepted else CALLBACK_NACK)

    async def _post(self, path: str, pairs: Sequence[tuple[str, str]]) -> dict[str, str] | Unknown:
        response = await send(
            self._context.http,
            "POST",
            self._base + path,
            timeout_s=self._context.timeout_s,
            content=signed_form(pairs, self._key.reveal()),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        return decode_reply(response)


PLUGIN = KamenPlugin

__all__ = [
    "CALLBACK_ACK",
    "CALLBACK_NACK",
    "CHARGE_PARAMS",
    "PLUGIN",
    "KamenPlugin",
    "callback_fields",
    "callback_sign",
    "charge_pairs",
    "decode_reply",
    "parse_callback_fields",
    "parse_xml",
    "query_outcome",
    "query_pairs",
    "retry_after",
    "sign",
    "signed_form",
    "submit_outcome",
    "url_encode",
    "verify_form",
]
