"""The ``juhe`` plugin: 聚合数据 (Juhe) phone top-up, ``/ofpay/mobile/*``.

The protocol, as the plugin speaks it (every value is ASCII):

==========================================  =====================================================
call                                        request (form fields)
==========================================  =====================================================
``POST /ofpay/mobile/onlineorder``          ``key, phoneno, cardnum, orderid, sign``;
                                            ``sign = md5(openid + key + phoneno + cardnum + orderid)``
``GET /ofpay/mobile/ordersta``              ``key, orderid``
``GET /ofpay/mobile/yue``                   ``key, timestamp, sign``; ``sign = md5(openid + key + timestamp)``
callback ``POST`` (form) to the daemon      ``sporder_id, orderid, sta, sign[, err_msg]``;
                                            ``sign = md5(key + sporder_id + orderid)``
==========================================  =====================================================

md5 is lower-case hex of the UTF-8 bytes. Replies are JSON ``{error_code,
reason, result}``; ``error_code`` 0 means the call was accepted, and
``result.game_state`` says where the top-up is: 0 in progress (a fresh
submit always says 0), 1 done, 9 failed.

Mapping to the router's products. ``orderid`` is the attempt key (32 of
``A-Z2-7`` and digits, within Juhe's 8-32 alphanumerics). ``cardnum`` is the
**face value** in yuan, so an offer's ``product_id`` is the face value
itself (``mobile-cmcc-100: {product_id: "100"}``). In the onlineorder
*reply*, ``cardnum`` is the quantity (always "1"; Juhe's published sample
annotates it 数量) and ``cardid`` Juhe's own product number, so the plugin
checks the reply's ``uorderid``, ``game_userid`` and a quantity of 1, not the
face value. A top-up is one unit: an order with another quantity
is INVALID(invalid_quantity), and one without an 11-digit mobile number is
INVALID(missing_field / invalid_account), both without sending anything.
The protocol has no price-cap field, so the ceiling rests on the router's
own check of the offer's price; what Juhe charged (``ordercash`` /
``uordercash``) comes back as the unit cost. Juhe has no catalog call
(``telquery`` prices one number at a time), so the plugin has no
``catalog``. The receipt of a delivered top-up is Juhe's own order number
(``sporder_id``): the protocol gives no operator serial. Juhe picks the
operator from the number: that a ``mobile-cmcc-*`` order carries a China
Mobile number is the storefront's check, not the protocol's.

==========================================  ======================  =====================
reply                                       on submit               on query
==========================================  ======================  =====================
0, game_state 0                             Pending                 Pending
0, game_state 1 (with ``sporder_id``)       Delivered               Delivered
0, game_state 9                             Failed                  Failed
0, other or no game_state; a result that    Unknown                 Unknown
names another orderid or number, or a
quantity other than 1; success without
``sporder_id``
10001-10005, 10007-10009, 10021             Rejected(auth)          Unknown
(key, OpenID, IP or API refused)
10011, 10012, 10013 (request limits)        RateLimited             RateLimited
10014 system error ("query the order")      Unknown                 Unknown
10020 API under maintenance                 Rejected(maintenance)   Unknown
any other error_code (the 2085xx business   Unknown                 Unknown
codes: duplicate orderid, bad sign,
balance, number not supported, ...)
HTTP 5xx or other non-2xx, not JSON, no     Unknown                 Unknown
error_code
connection never made                       SupplierUnreachable     SupplierUnreachable
read timeout, reset after sending           propagates (Unknown)    propagates (Unknown)
==========================================  ======================  =====================

==========================================  ==========================================
callback                                    outcome
==========================================  ==========================================
signed, sta 1                               Delivered (receipt ``sporder_id``)
signed, sta 9                               Pending: ``sta`` is outside the signature,
                                            so a failure is confirmed by query
signed, any other sta                       Pending
sign does not match                         CallbackRejected("bad_signature")
a field missing, repeated or misshapen      CallbackRejected("malformed")
==========================================  ==========================================

The reply to a callback is ``success`` (HTTP 200) when the router took it.
Juhe counts *any* text as received and retries (3 times, about 3 s apart)
only when nothing comes back, so a refused callback gets HTTP 500 with an
empty body. Juhe sends callbacks to one URL per account, set by its support
staff, not per order: give them ``PUBLIC_URL/callbacks/SUPPLIER``.

``simulate:`` runs ``kamen_router.sim.juhe.JuheSimulator``, written from the
same protocol description with its own signing code; the conformance kit
runs this plugin against it (``conformance`` below lists where Juhe cannot
say what a check asks, and why).

What rests on thin sources, and how the plugin maps it safely:

- Juhe's business error codes (2085xx) are not in the sources this plugin
  was written from (juhe.cn/docs/85 as copied in public integrations), and
  neither is the code ``ordersta`` answers for an orderid it does not know.
  So every non-zero ``error_code`` outside Juhe's platform-wide table is
  UNKNOWN, on submit and on query, and the plugin never reports NOT_FOUND:
  an order Juhe refused with a business code is followed by query until
  ``orders.reconcile_limit_s`` and then goes to ``attention`` for a human.
  Slow, never a double top-up.
- The platform-wide codes 10001-10021 come from Juhe's common error table
  (every Juhe API shares it), not from the top-up page. The gateway answers
  them before any order logic runs, which is why the key/IP refusals are
  REJECTED; 10014 is the one whose own text says "query the order", and it
  is UNKNOWN.
- The callback signature covers ``sporder_id`` and ``orderid`` but not
  ``sta``. Anyone who has seen one genuine callback could replay it with
  ``sta`` changed; turning a success into a failure would start a second
  top-up elsewhere. So only success is taken from a callback; a failure
  becomes PENDING and the query loop (the plugin asking Juhe's endpoint)
  decides. The other forgery, a failure shown as a success, starts no
  second top-up but would mark a refunded order delivered: serve the
  callback listener over HTTPS so callbacks cannot be altered in transit.
- Whether ``ordersta`` and ``yue`` accept POST is not shown by the sources;
  they are sent as GET, as every integration does, so the app key travels in
  the URL. No URL ever reaches an error message, and httpx's request log is
  kept at WARNING by the daemon.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import urllib.parse
from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import Any, ClassVar

from kamen_router_plugins import _common

from kamen_router.conformance import Profile, accept, skip
from kamen_router.errors import ConfigError, KamenRouterError, Problem
from kamen_router.http import Request
from kamen_router.money import loads_json, parse_money
from kamen_router.outcome import (
    Deliverables,
    Delivered,
    Failed,
    Invalid,
    InvalidReason,
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
from kamen_router.sim.juhe import JuheSimulator

PATH_ORDER = "/ofpay/mobile/onlineorder"
PATH_QUERY = "/ofpay/mobile/ordersta"
PATH_BALANCE = "/ofpay/mobile/yue"

CALLBACK_ACK = b"success"

#: platform-wide codes the gateway answers before an order exists
SYSTEM_REJECTED: Mapping[int, RejectReason] = {
    10001: RejectReason.AUTH,  # wrong request key
    10002: RejectReason.AUTH,  # key has no permission for this API
    10003: RejectReason.AUTH,  # key expired
    10004: RejectReason.AUTH,  # wrong OpenID
    10005: RejectReason.AUTH,  # application not approved
    10007: RejectReason.AUTH,  # unknown request source
    10008: RejectReason.AUTH,  # IP banned
    10009: RejectReason.AUTH,  # key banned
    10020: RejectReason.MAINTENANCE,  # API under maintenance
    10021: RejectReason.AUTH,  # API disabled for this key
}
SYSTEM_RATE_LIMITED = frozenset({10011, 10012, 10013})
#: "system error: for top-ups, query the order to avoid a loss"
SYSTEM_ERROR = 10014

GAME_STATE_PENDING, GAME_STATE_DONE, GAME_STATE_FAILED = 0, 1, 9

_ORDERID = re.compile(r"^[A-Za-z0-9]{8,32}$")
_MOBILE = re.compile(r"^1[0-9]{10}$")
_FACE_VALUE = re.compile(r"^[1-9][0-9]{0,3}$")
_REF = re.compile(r"^[!-~]{1,64}$")
_MAX_DETAIL = 200


class JuheReplyError(KamenRouterError):
    """Raised by ``JuhePlugin.balance`` when Juhe's answer cannot be used.
    (Submits and queries never raise it: they return an outcome.)"""


# ------------------------------------------------------------ pure pieces


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def order_sign(openid: str, appkey: str, phoneno: str, cardnum: str, orderid: str) -> str:
    """``md5(OpenID + key + phoneno + cardnum + orderid)``, lower-case hex."""
    return md5_hex(openid + appkey + phoneno + cardnum + orderid)


def balance_sign(openid: str, appkey: str, timestamp: str) -> str:
    """``md5(OpenID + key + timestamp)``, lower-case hex."""
    return md5_hex(openid + appkey + timestamp)


def callback_sign(appkey: str, sporder_id: str, orderid: str) -> str:
    """``md5(key + sporder_id + orderid)``, lower-case hex (``sta`` is not in it)."""
    return md5_hex(appkey + sporder_id + orderid)


def signs_match(expected: str, received: str) -> bool:
    received = received.strip().lower()
    # compare_digest refuses non-ASCII text; such a signature cannot be valid
    return received.isascii() and hmac.compare_digest(expected, received)


def order_params(*, appkey: str, openid: str, phoneno: str, cardnum: str, orderid: str) -> dict[str, str]:
    """The onlineorder form, signed over exactly the values it carries."""
    return {
        "key": appkey,
        "phoneno": phoneno,
        "cardnum": cardnum,
        "orderid": orderid,
        "sign": order_sign(openid, appkey, phoneno, cardnum, orderid),
    }


def balance_params(*, appkey: str, openid: str, timestamp: str) -> dict[str, str]:
    return {"key": appkey, "timestamp": timestamp, "sign": balance_sign(openid, appkey, timestamp)}


def face_value(product_id: str) -> str | None:
    """The ``cardnum`` an offer's product id stands for (its face value in
    yuan, 1 to 9999), or None when it is not one."""
    text = product_id.strip()
    return text if _FACE_VALUE.match(text) else None


def order_problem(request: SubmitRequest) -> Invalid | None:
    """Why Juhe cannot take this order at all, found before sending it."""
    if request.quantity != 1:
        return Invalid(InvalidReason.INVALID_QUANTITY, "a Juhe top-up is one unit of its face value")
    if not request.account:
        return Invalid(InvalidReason.MISSING_FIELD, "a phone top-up needs the phone number as account")
    if not _MOBILE.match(request.account):
        return Invalid(InvalidReason.INVALID_ACCOUNT, "not an 11-digit mainland mobile number")
    return None


def as_int(value: object) -> int | None:
    """An integer sent as a JSON number or as digits (Juhe does both)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,9}", value.strip()):
        return int(value.strip())
    return None


def decode_reply(status: int, content: bytes) -> dict[str, Any] | Unknown:
    """The reply's JSON object with an integer ``error_code``, or why it is UNKNOWN."""
    try:
        data = loads_json(content)
    except (ValueError, UnicodeDecodeError):
        data = None
    code = as_int(data.get("error_code")) if isinstance(data, dict) else None
    if not 200 <= status < 300:
        return Unknown(f"HTTP {status}" + ("" if code is None else f", error_code {code}"))
    if not isinstance(data, dict):
        return Unknown(f"unparseable reply (HTTP {status})")
    if code is None:
        return Unknown("reply without an error_code")
    return {**data, "error_code": code}


def reason_of(data: Mapping[str, Any]) -> str:
    reason = data.get("reason")
    return reason[:_MAX_DETAIL] if isinstance(reason, str) else ""


def _text(result: Mapping[str, Any], key: str) -> str | None:
    value = result.get(key)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | Decimal):
        return str(value)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _order_state(result: Mapping[str, Any], cash_key: str, detail: str) -> Outcome:
    """The outcome ``result.game_state`` describes (the order already matched)."""
    state = as_int(result.get("game_state"))
    sporder_id = _text(result, "sporder_id")
    ref = sporder_id if sporder_id and _REF.match(sporder_id) else None
    if state == GAME_STATE_PENDING:
        return Pending(supplier_ref=ref)
    if state == GAME_STATE_FAILED:
        return Failed("failed", detail)
    if state == GAME_STATE_DONE:
        if ref is None:
            return Unknown("top-up reported done without Juhe's order number")
        cost = parse_money(_text(result, cash_key))
        return Delivered(Deliverables(receipt=ref), unit_cost=cost, supplier_ref=ref)
    return Unknown(f"unknown game_state {result.get('game_state')!r}"[:_MAX_DETAIL])


def submit_outcome(request: SubmitRequest, data: Mapping[str, Any]) -> Outcome:
    """The outcome of an onlineorder reply (already decoded)."""
    code: int = data["error_code"]
    detail = reason_of(data)
    if code == 0:
        result = data.get("result")
        if not isinstance(result, dict):
            return Unknown("accepted without a result")
        # fields the reply names must be ours: another order's success is not ours
        for key, ours in (("uorderid", request.attempt_key), ("game_userid", request.account)):
            theirs = _text(result, key)
            if theirs is not None and theirs != ours:
                return Unknown(f"the reply describes another order ({key} differs)")
        # in the reply ``cardnum`` is the quantity (Juhe's sample: "1", 数量),
        # not the face value the request sent under the same name
        theirs = _text(result, "cardnum")
        if theirs is not None and parse_money(theirs) != 1:
            return Unknown("the reply describes another order (cardnum, the quantity, is not 1)")
        return _order_state(result, "ordercash", detail)
    if code in SYSTEM_RATE_LIMITED:
        return RateLimited(None, detail)
    if code in SYSTEM_REJECTED:
        return Rejected(SYSTEM_REJECTED[code], detail)
    if code == SYSTEM_ERROR:
        return Unknown("system error 10014, query to confirm")
    return Unknown(f"error_code {code}: {detail}"[:_MAX_DETAIL])


def query_outcome(data: Mapping[str, Any]) -> Outcome:
    """The outcome of an ordersta reply (already decoded). A refused query
    says nothing about the order, so only 0 and the limits mean anything."""
    code: int = data["error_code"]
    if code == 0:
        result = data.get("result")
        if not isinstance(result, dict):
            return Unknown("query accepted without a result")
        return _order_state(result, "uordercash", reason_of(data))
    if code in SYSTEM_RATE_LIMITED:
        return RateLimited(None, reason_of(data))
    return Unknown(f"query answered error_code {code}")


def callback_fields(body: bytes) -> dict[str, str]:
    """The callback's form fields. Raises CallbackRejected("malformed") for a
    body that is not a form, or that repeats a field (two parsers could
    disagree on which copy counts)."""
    try:
        text = body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise CallbackRejected("malformed", "not a form") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise CallbackRejected("malformed", "a field is repeated")
        fields[name] = value
    return fields


def callback_outcome(fields: Mapping[str, str], appkey: str) -> Callback:
    """Verify a callback's fields and read them. Raises CallbackRejected."""
    sporder_id, orderid = fields.get("sporder_id", ""), fields.get("orderid", "")
    sign, sta = fields.get("sign", ""), fields.get("sta", "")
    if not (sporder_id and orderid and sign):
        raise CallbackRejected("malformed", "sporder_id, orderid or sign missing")
    if not signs_match(callback_sign(appkey, sporder_id, orderid), sign):
        raise CallbackRejected("bad_signature")
    # signed from here on; only the shape can still be wrong
    if not _ORDERID.match(orderid) or not _REF.match(sporder_id):
        raise CallbackRejected("malformed", "orderid or sporder_id out of shape")
    outcome: Outcome
    if sta.strip() == "1":
        outcome = Delivered(Deliverables(receipt=sporder_id), supplier_ref=sporder_id)
    else:
        # sta is not signed: a failure (or anything else) is left to the query
        outcome = Pending(supplier_ref=sporder_id)
    return Callback(attempt_key=orderid, outcome=outcome, supplier_ref=sporder_id)


# ---------------------------------------------------------------- plugin


class JuhePlugin:
    """Juhe phone top-up, bound to one supplier."""

    name: ClassVar[str] = "juhe"
    required_credentials: ClassVar[Collection[str]] = frozenset({"appkey", "openid"})
    schedule: ClassVar[QuerySchedule] = QuerySchedule(
        # the long-polling lesson: about 1, 2, 3, 5 minutes, then every 10
        first_query_s=60.0,
        interval_s=60.0,
        backoff=1.5,
        max_interval_s=600.0,
        not_found_grace_s=300.0,
        resubmit_safe=False,
    )
    #: the in-process Juhe for ``simulate:`` (kamen_router/sim/juhe.py)
    simulator: ClassVar[type[JuheSimulator]] = JuheSimulator
    #: what the conformance kit must know about Juhe, and where the protocol
    #: cannot say what a check asks for (see the notes above)
    conformance: ClassVar[Profile] = Profile(
        cards=None,  # phone top-ups only
        leeway={
            **{
                check: accept(
                    "Juhe's top-up business codes (2085xx) are not in the public sources, so the "
                    "plugin reads every one as UNKNOWN: it follows the order by query, never fails over",
                    "unknown",
                )
                for check in (
                    "out_of_stock",
                    "insufficient_balance",
                    "product_unavailable",
                    "invalid_account",
                )
            },
            "price_above_ceiling": skip(
                "juhe has no price-cap field: the router's own max_price check against the offer's "
                "price is the only ceiling"
            ),
            **{
                check: accept(
                    "ordersta answers an orderid Juhe does not have with an undocumented business "
                    "code, so the plugin never reports NOT_FOUND (the order goes to attention instead)",
                    "unknown",
                )
                for check in ("query_unknown_key", "not_found_window")
            },
            "callback_failed": accept(
                "sta is outside the callback's signature, so a failure callback is only Pending "
                "and the query decides",
                "pending",
            ),
        },
    )

    def __init__(self, context: SupplierContext) -> None:
        problems = [
            Problem(str(context.supplier.file), f"credentials.{key}", "is required by plugin 'juhe'")
            for key in sorted(self.required_credentials)
            if key not in context.credentials
        ]
        for sku, offer in context.supplier.offers.items():
            if face_value(offer.product_id) is None:
                problems.append(
                    Problem(
                        str(context.supplier.file),
                        f"offers.{sku}.product_id",
                        'must be the face value in yuan (1 to 9999), such as "100"',
                    )
                )
        if problems:
            raise ConfigError(problems)
        self._context = context
        # Secrets, revealed only to sign and to send
        self._appkey = context.credentials["appkey"]
        self._openid = context.credentials["openid"]
        self._base = context.endpoint.rstrip("/")

    def __repr__(self) -> str:
        return f"JuhePlugin(supplier={self._context.name!r})"

    # --------------------------------------------------------------- contract

    async def submit(self, request: SubmitRequest) -> Outcome:
        cardnum = face_value(request.product_id)
        if cardnum is None:
            # offers are checked when the plugin starts; this is a product id from elsewhere
            return Rejected(RejectReason.PRODUCT_UNAVAILABLE, "the product id is not a face value")
        problem = order_problem(request)
        if problem is not None:
            return problem
        assert request.account is not None
        params = order_params(
            appkey=self._appkey.reveal(),
            openid=self._openid.reveal(),
            phoneno=request.account,
            cardnum=cardnum,
            orderid=request.attempt_key,
        )
        response = await send(
            self._context.http,
            "POST",
            self._base + PATH_ORDER,
            timeout_s=self._context.timeout_s,
            content=urllib.parse.urlencode(params).encode("ascii"),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        data = decode_reply(response.status_code, response.content)
        if isinstance(data, Unknown):
            return data
        return self._redact(submit_outcome(request, data))

    async def query(self, request: SubmitRequest) -> Outcome:
        response = await send(
            self._context.http,
            "GET",
            self._base + PATH_QUERY,
            timeout_s=self._context.timeout_s,
            params={"key": self._appkey.reveal(), "orderid": request.attempt_key},
        )
        data = decode_reply(response.status_code, response.content)
        if isinstance(data, Unknown):
            return data
        return self._redact(query_outcome(data))

    async def balance(self) -> Decimal:
        params = balance_params(
            appkey=self._appkey.reveal(), openid=self._openid.reveal(), timestamp=str(int(time.time()))
        )
        response = await send(
            self._context.http,
            "GET",
            self._base + PATH_BALANCE,
            timeout_s=self._context.timeout_s,
            params=params,
        )
        data = decode_reply(response.status_code, response.content)
        where = f"balance of {self._context.name}"
        if isinstance(data, Unknown):
            raise JuheReplyError(f"{where}: {data.detail}")
        if data["error_code"] != 0:
            raise JuheReplyError(f"{where}: error_code {data['error_code']}")
        result = data.get("result")
        money = parse_money(_text(result, "money")) if isinstance(result, dict) else None
        if money is None:
            raise JuheReplyError(f"{where}: the reply has no valid balance")
        return money

    def parse_callback(self, request: Request) -> Callback:
        """Verify and read one callback (``kamen_router.http.Request``).
        Raises ``CallbackRejected`` unless its sign matches the app key."""
        if request.method != "POST":
            raise CallbackRejected("malformed", "not a POST")
        return callback_outcome(callback_fields(request.body), self._appkey.reveal())

    def callback_reply(self, accepted: bool) -> CallbackReply:
        """``success`` for a callback the router took; an empty HTTP 500,
        which Juhe retries, for one it did not (any text would stop it)."""
        if accepted:
            return CallbackReply(200, CALLBACK_ACK)
        return CallbackReply(500, b"")

    # ---------------------------------------------------------------- helpers

    def _redact(self, outcome: Outcome) -> Outcome:
        """Keep credentials out of details copied from the supplier's text
        (details are journaled)."""
        redacted: Outcome = _common.redact(outcome, (self._appkey.reveal(), self._openid.reveal()))
        return redacted


PLUGIN = JuhePlugin
