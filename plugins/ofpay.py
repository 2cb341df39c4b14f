"""The ``ofpay`` plugin: 欧飞 (Ofpay) direct top-up, API version 6.0.

The protocol, as the plugin speaks it:

===============================  ===============================================================
call                             request -> reply
===============================  ===============================================================
``POST /onlineorder.do`` (form)  ``userid, userpws, cardid, cardnum, sporder_id, sporder_time,
                                 game_userid[, game_area, game_srv], md5_str, ret_url,
                                 version=6.0`` -> GB2312 XML ``<orderinfo>``: ``retcode,
                                 err_msg, orderid, cardid, cardnum, ordercash, sporder_id,
                                 game_userid, game_state``
``GET /api/query.do``            ``userid, spbillid`` -> plain text ``1``, ``0``, ``9`` or ``-1``
``POST /newqueryuserinfo.do``    ``userid, userpws, version`` -> XML ``<userinfo>``: ``retcode,
                                 ret_leftcredit``
callback ``POST`` to ``ret_url``  ``ret_code, sporder_id, ordersuccesstime, err_msg, sign``
===============================  ===============================================================

``userpws`` is the lower-case hex MD5 of the account password. ``md5_str =
UPPER(md5(userid + userpws + cardid + cardnum + sporder_id + sporder_time +
game_userid + game_area + game_srv + KeyStr))``, the last two empty for a
phone; KeyStr is agreed with Ofpay and defaults to ``OFCARD`` (credential
``keystr``). A callback is genuine when ``sign = UPPER(md5(userid +
ret_code + sporder_id + KeyStr))``. Strings are hashed, and the form sent,
as GBK, the encoding Ofpay reads; every signed value is checked to encode.

Mapping to the router's products. ``sporder_id`` is the attempt key. An
offer's ``product_id`` is ``CARDID:CARDNUM``: for a phone top-up, the
product (``140101`` fast, ``170101`` slow) and the face value in yuan
(``mobile-cmcc-100: {product_id: "140101:100"}``); for a fixed-value direct
top-up, its cardid and ``1``. Each order is one unit (another quantity is
INVALID(invalid_quantity), sent nowhere), and the account (``game_userid``)
must be an 11-digit mobile number for 140101/170101 and printable ASCII
otherwise. ``game_area`` and ``game_srv`` come from the order's fields when
present. The protocol has no price-cap field, so the ceiling rests on the
router's own check; ``ordercash`` (what Ofpay charged) comes back as the
unit cost. Ofpay publishes prices per product but not per face value and
number, so the plugin has no ``catalog``. Ofpay picks the operator from
the number: that a ``mobile-cmcc-*`` order carries a China Mobile number is
the storefront's check, not the protocol's. The receipt of a top-up delivered
in the submit reply is Ofpay's ``orderid``; the query and the callback do
not carry it (the attempt keeps it as ``supplier_ref`` from the submit).

``sporder_time`` (``yyyyMMddHHmmss``, Beijing time) is signed, so it must be
the same on every retry of an attempt. ``SubmitRequest`` has no time of its
own: the plugin uses ``request.started_at`` when the core provides one, and
otherwise the time of the attempt's first submit in this process,
remembered per attempt key. The router submits an attempt again only after
RATE_LIMITED or "nothing was sent", always in the same process (after a
restart it queries), so both give one time per attempt.

===============================  ==========================  =======================
reply                            on submit                   on query
===============================  ==========================  =======================
retcode 1, game_state 0          Pending (ref ``orderid``)   --
retcode 1, game_state 1          Delivered                   --
retcode 1, game_state 9          Failed                      --
retcode 1, other game_state, or  Unknown                     --
a reply naming another order
retcode 9999, 105, 334, 1043     Unknown (query to confirm)  --
retcode 1004 product unavailable Rejected(product_           --
                                 unavailable)
retcode 1018 bad account         Invalid(invalid_account)    --
any other retcode                Unknown                     --
text ``1`` / ``0`` / ``9``       --                          Delivered / Pending /
                                                             Failed
text ``-1`` (no such order)      --                          NotFound
any other text                   --                          Unknown
HTTP non-2xx, unparseable XML,   Unknown                     Unknown
a DTD or entity, no retcode
connection never made            SupplierUnreachable         SupplierUnreachable
read timeout, reset after send   propagates (Unknown)        propagates (Unknown)
===============================  ==========================  =======================

==========================================  ===============================
callback                                    outcome
==========================================  ===============================
signed, ret_code 1                          Delivered
signed, ret_code 9                          Failed
signed, ret_code 0 or anything else         Pending
``userid`` present and not ours             CallbackRejected("unknown_merchant")
sign does not match                         CallbackRejected("bad_signature")
a field missing, repeated or misshapen      CallbackRejected("malformed")
==========================================  ===============================

The reply to a callback is ``OK`` (HTTP 200) when the router took it, and an
empty HTTP 500 when it did not.

XML safety: replies are parsed with the standard library's expat through
``xml.etree.ElementTree.TreeBuilder``, after decoding the bytes as GB18030
(the superset of the GB2312 that Ofpay declares and of the GBK it actually
sends). A document type declaration, an entity declaration or an external
entity stops the parse (no entity expansion, no "billion laughs", no
external fetch), as does a reply over 64 KiB; each is UNKNOWN.

``simulate:`` runs ``kamen_router.sim.ofpay.OfpaySimulator``, written from the
same protocol description with its own signing code; the conformance kit
runs this plugin against it (``conformance`` below lists where Ofpay cannot
say what a check asks, and why).

What rests on thin sources, and how the plugin maps it safely:

- Only retcodes 1, 9999, 105, 334, 1043, 1004 and 1018 are documented in the
  sources (public integrations of onlineorder.do). Ofpay has more (texts such
  as "MD5串验证错误", "金额不足", "缺少必需参数" appear without their numbers):
  all of them are UNKNOWN. Since ``query.do`` does answer ``-1`` for an order
  it does not have, such an attempt ends as NOT_FOUND after the 5-minute
  grace and the order fails over: slower, never twice.
- Ofpay's own note on ``-1`` is to check the order on its platform before
  refunding. The plugin keeps the 5-minute grace that working integrations
  use (a longer one is a one-line change to ``schedule``) and never marks a
  NOT_FOUND safe to resubmit.
- What Ofpay expects as the callback's answer is not in the sources, nor
  whether it retries; ``reissue.do`` exists to ask for a callback again, and
  the query loop runs regardless. The callback's ``ordersuccesstime`` and
  ``err_msg`` are outside the signature: the time is not used as
  ``sent_at`` and the message only as a detail.
- That ``onlineorder.do`` and ``newqueryuserinfo.do`` accept a POSTed form
  is shown by one integration (the others use GET); POST keeps the password
  hash out of URLs.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import re
import time
import urllib.parse
import xml.etree.ElementTree as ET
import xml.parsers.expat
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar

from kamen_router_plugins import _common

from kamen_router.conformance import Profile, accept, skip
from kamen_router.errors import ConfigError, KamenRouterError, Problem
from kamen_router.http import Request
from kamen_router.money import parse_money
from kamen_router.outcome import (
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
    QuerySchedule,
    SubmitRequest,
    SupplierContext,
    send,
)
from kamen_router.sim.ofpay import OfpaySimulator

PATH_ORDER = "/onlineorder.do"
PATH_QUERY = "/api/query.do"
PATH_BALANCE = "/newqueryuserinfo.do"
VERSION = "6.0"
DEFAULT_KEYSTR = "OFCARD"
CALLBACK_ACK = b"OK"
BEIJING = timezone(timedelta(hours=8))
PHONE_CARDIDS = frozenset({"140101", "170101"})
ENCODING = "gbk"

RETCODE_ACCEPTED = "1"
#: "unknown error", "request failed", "order creation timed out", "payment
#: timed out": the order may exist, query it
RETCODE_UNKNOWN = frozenset({"9999", "105", "334", "1043"})
RETCODE_REJECTED: Mapping[str, RejectReason] = {"1004": RejectReason.PRODUCT_UNAVAILABLE}
RETCODE_INVALID: Mapping[str, InvalidReason] = {"1018": InvalidReason.INVALID_ACCOUNT}
GAME_STATE_PENDING, GAME_STATE_DONE, GAME_STATE_FAILED = "0", "1", "9"
QUERY_STATES = {"1": "delivered", "0": "pending", "9": "failed", "-1": "not_found"}

MAX_XML_BYTES = 64 * 1024
_CARDID = re.compile(r"^[0-9]{4,10}$")
_CARDNUM = re.compile(r"^(0|[1-9][0-9]{0,5})(\.[0-9]{1,2})?$")
_MOBILE = re.compile(r"^1[0-9]{10}$")
_ACCOUNT = re.compile(r"^[!-~]{1,64}$")
_SPORDER_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
_SIGN = re.compile(r"^[0-9A-Fa-f]{32}$")
_MAX_DETAIL = 200
_REMEMBERED_TIMES = 10_000


class OfpayReplyError(KamenRouterError):
    """Raised by ``OfpayPlugin.balance`` when Ofpay's answer cannot be used.
    (Submits and queries never raise it: they return an outcome.)"""


class XmlRejected(ValueError):
    """Raised by ``parse_xml`` for a reply that is not plain, small,
    well-formed XML (a DTD or an entity is refused outright)."""


# ------------------------------------------------------------ pure pieces


def md5_upper(text: str) -> str:
    return hashlib.md5(text.encode(ENCODING)).hexdigest().upper()


def password_hash(password: str) -> str:
    """``userpws``: the lower-case hex MD5 of the password."""
    return hashlib.md5(password.encode(ENCODING)).hexdigest()


def order_sign(
    *,
    userid: str,
    userpws: str,
    cardid: str,
    cardnum: str,
    sporder_id: str,
    sporder_time: str,
    game_userid: str,
    keystr: str,
    game_area: str = "",
    game_srv: str = "",
) -> str:
    body = userid + userpws + cardid + cardnum + sporder_id + sporder_time + game_userid
    return md5_upper(body + game_area + game_srv + keystr)


def callback_sign(userid: str, ret_code: str, sporder_id: str, keystr: str) -> str:
    return md5_upper(userid + ret_code + sporder_id + keystr)


def signs_match(expected: str, received: str) -> bool:
    received = received.strip().upper()
    return bool(_SIGN.match(received)) and hmac.compare_digest(expected, received)


def format_sporder_time(unix_s: float) -> str:
    """``yyyyMMddHHmmss`` in Beijing time (Ofpay's clock)."""
    return datetime.fromtimestamp(unix_s, BEIJING).strftime("%Y%m%d%H%M%S")


def parse_product(product_id: str) -> tuple[str, str] | None:
    """``(cardid, cardnum)`` from an offer's ``CARDID:CARDNUM``, or None."""
    cardid, sep, cardnum = product_id.strip().partition(":")
    if sep and _CARDID.match(cardid) and _CARDNUM.match(cardnum) and Decimal(cardnum) > 0:
        return cardid, cardnum
    return None


def order_problem(request: SubmitRequest, cardid: str) -> Invalid | None:
    """Why Ofpay cannot take this order at all, found before sending it."""
    if request.quantity != 1:
        return Invalid(InvalidReason.INVALID_QUANTITY, "an Ofpay top-up is one unit of its product")
    account = request.account
    if not account:
        return Invalid(InvalidReason.MISSING_FIELD, "a direct top-up needs the account to charge")
    if cardid in PHONE_CARDIDS and not _MOBILE.match(account):
        return Invalid(InvalidReason.INVALID_ACCOUNT, "not an 11-digit mainland mobile number")
    if not _ACCOUNT.match(account):
        return Invalid(InvalidReason.INVALID_ACCOUNT, "the account must be printable ASCII")
    for name in ("game_area", "game_srv"):
        value = request.fields.get(name, "")
        try:
            value.encode(ENCODING)
        except UnicodeEncodeError:
            return Invalid(InvalidReason.MISSING_FIELD, f"{name} is not GBK text")
    return None


def order_params(
    *,
    userid: str,
    userpws: str,
    keystr: str,
    cardid: str,
    cardnum: str,
    sporder_id: str,
    sporder_time: str,
    game_userid: str,
    ret_url: str,
    game_area: str = "",
    game_srv: str = "",
) -> dict[str, str]:
    """The onlineorder form, signed over exactly the values it carries."""
    params = {
        "userid": userid,
        "userpws": userpws,
        "cardid": cardid,
        "cardnum": cardnum,
        "sporder_id": sporder_id,
        "sporder_time": sporder_time,
        "game_userid": game_userid,
    }
    if game_area:
        params["game_area"] = game_area
    if game_srv:
        params["game_srv"] = game_srv
    params["md5_str"] = order_sign(
        userid=userid,
        userpws=userpws,
        cardid=cardid,
        cardnum=cardnum,
        sporder_id=sporder_id,
        sporder_time=sporder_time,
        game_userid=game_userid,
        game_area=game_area,
        game_srv=game_srv,
        keystr=keystr,
    )
    params["ret_url"] = ret_url
    params["version"] = VERSION
    return params


def encode_form(params: Mapping[str, str]) -> bytes:
    return urllib.parse.urlencode(params, encoding=ENCODING).encode("ascii")


def _refuse(*_: object) -> None:
    raise XmlRejected("DTDs and entities are refused")


def _refuse_external(*_: object) -> int:
    raise XmlRejected("external entities are refused")


def parse_xml(content: bytes) -> ET.Element:
    """Parse one small XML reply safely; raise XmlRejected otherwise.

    The bytes are decoded here (as UTF-8 when the document says so, else as
    GB18030) and handed to expat as UTF-8, overriding the declared GB2312,
    which expat cannot read. Every handler that could let a DTD or an entity
    in raises."""
    if len(content) > MAX_XML_BYTES:
        raise XmlRejected("reply too large")
    declared = re.match(rb"\s*<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9_-]+)", content)
    utf8 = declared is not None and declared.group(1).lower().replace(b"_", b"-") in (b"utf-8", b"utf8")
    try:
        text = content.decode("utf-8" if utf8 else "gb18030")
    except UnicodeDecodeError:
        raise XmlRejected("not GB18030 text") from None
    builder = ET.TreeBuilder()
    parser = xml.parsers.expat.ParserCreate(encoding="UTF-8")
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse_external
    parser.StartElementHandler = lambda tag, attrib: builder.start(tag, attrib)
    parser.EndElementHandler = lambda tag: builder.end(tag)
    parser.CharacterDataHandler = lambda data: builder.data(data)
    try:
        parser.Parse(text.encode("utf-8"), True)
    except xml.parsers.expat.ExpatError as exc:
        raise XmlRejected(f"malformed XML ({xml.parsers.expat.errors.messages[exc.code]})") from None
    root: ET.Element | None = builder.close()
    if root is None:
        raise XmlRejected("no root element")
    return root


def reply_fields(content: bytes, root_tag: str) -> dict[str, str] | Unknown:
    """The child elements of a ``<root_tag>`` reply as text, or why it is UNKNOWN."""
    try:
        root = parse_xml(content)
    except XmlRejected as exc:
        return Unknown(f"unparseable reply: {exc}")
    if root.tag != root_tag:
        return Unknown(f"unexpected reply <{root.tag[:40]}>")
    fields: dict[str, str] = {}
    for child in root:
        value, previous = (child.text or "").strip(), fields.get(child.tag)
        if not previous:
            fields[child.tag] = value
        elif value and value != previous and child.tag != "err_msg":
            # two different answers in one reply: trust neither
            return Unknown(f"reply repeats <{child.tag[:40]}>")
    if not fields.get("retcode"):
        return Unknown("reply without a retcode")
    return fields


def _detail(fields: Mapping[str, str]) -> str:
    message = fields.get("err_msg", "")
    return "".join(c for c in message if c.isprintable())[:_MAX_DETAIL]


def submit_outcome(request: SubmitRequest, cardid: str, cardnum: str, fields: Mapping[str, str]) -> Outcome:
    """The outcome of an onlineorder reply (already parsed)."""
    retcode, detail = fields["retcode"], _detail(fields)
    if retcode == RETCODE_ACCEPTED:
        for key, ours in (
            ("sporder_id", request.attempt_key),
            ("game_userid", request.account),
            ("cardid", cardid),
        ):
            theirs = fields.get(key)
            if theirs and theirs != ours:
                return Unknown(f"the reply describes another order ({key} differs)")
        theirs = fields.get("cardnum")
        if theirs and parse_money(theirs) != Decimal(cardnum):
            return Unknown("the reply describes another order (cardnum differs)")
        orderid = fields.get("orderid", "")
        ref = orderid if _ACCOUNT.match(orderid) else None
        state = fields.get("game_state", "")
        if state == GAME_STATE_PENDING:
            return Pending(supplier_ref=ref)
        if state == GAME_STATE_FAILED:
            return Failed("failed", detail)
        if state == GAME_STATE_DONE:
            if ref is None:
                return Unknown("top-up reported done without Ofpay's order number")
            cost = parse_money(fields.get("ordercash"))
            return Delivered(Deliverables(receipt=ref), unit_cost=cost, supplier_ref=ref)
        return Unknown(f"unknown game_state {state[:20]!r}")
    if retcode in RETCODE_UNKNOWN:
        return Unknown(f"retcode {retcode}, query to confirm: {detail}"[:_MAX_DETAIL])
    if retcode in RETCODE_REJECTED:
        return Rejected(RETCODE_REJECTED[retcode], detail)
    if retcode in RETCODE_INVALID:
        return Invalid(RETCODE_INVALID[retcode], detail)
    return Unknown(f"retcode {retcode[:20]}: {detail}"[:_MAX_DETAIL])


def query_outcome(status: int, content: bytes) -> Outcome:
    """The outcome of a query.do reply: plain text 1, 0, 9 or -1."""
    if not 200 <= status < 300:
        return Unknown(f"HTTP {status}")
    text = content.decode("ascii", errors="replace").strip().lstrip("\ufeff")
    state = QUERY_STATES.get(text)
    if state == "delivered":
        return Delivered(Deliverables())
    if state == "pending":
        return Pending()
    if state == "failed":
        return Failed("failed", "query says failed")
    if state == "not_found":
        return NotFound("query says -1: no such order")
    return Unknown(f"unexpected query reply {text[:20]!r}")


def callback_fields(body: bytes) -> dict[str, str]:
    """The callback's form fields (``%XX`` read as GBK). Raises
    CallbackRejected("malformed") when a field is repeated."""
    text = body.decode("latin-1")
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, encoding="gb18030", errors="replace")
    except ValueError:
        raise CallbackRejected("malformed", "not a form") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise CallbackRejected("malformed", "a field is repeated")
        fields[name] = value
    return fields


def callback_outcome(fields: Mapping[str, str], userid: str, keystr: str) -> Callback:
    """Verify a callback's fields and read them. Raises CallbackRejected."""
    if "userid" in fields and fields["userid"] != userid:
        raise CallbackRejected("unknown_merchant")
    ret_code, sporder_id, sign = (fields.get(k, "") for k in ("ret_code", "sporder_id", "sign"))
    if not (ret_code and sporder_id and sign):
        raise CallbackRejected("malformed", "ret_code, sporder_id or sign missing")
    if not (ret_code.isascii() and sporder_id.isascii()) or not signs_match(
        callback_sign(userid, ret_code, sporder_id, keystr), sign
    ):
        raise CallbackRejected("bad_signature")
    # signed from here on; only the shape can still be wrong
    if not _SPORDER_ID.match(sporder_id):
        raise CallbackRejected("malformed", "sporder_id out of shape")
    outcome: Outcome
    if ret_code == "1":
        outcome = Delivered(Deliverables())
    elif ret_code == "9":
        outcome = Failed("failed", "failed by callback: " + _detail(fields))
    else:
        outcome = Pending()
    return Callback(attempt_key=sporder_id, outcome=outcome)


# ---------------------------------------------------------------- plugin


class OfpayPlugin:
    """Ofpay direct top-up, bound to one supplier."""

    name: ClassVar[str] = "ofpay"
    #: ``keystr`` is optional (default OFCARD)
    required_credentials: ClassVar[Collection[str]] = frozenset({"userid", "password"})
    schedule: ClassVar[QuerySchedule] = QuerySchedule(
        # the long-polling lesson: about 1, 2, 3, 5 minutes, then every 10
        first_query_s=60.0,
        interval_s=60.0,
        backoff=1.5,
        max_interval_s=600.0,
        not_found_grace_s=300.0,
        resubmit_safe=False,
    )
    #: the in-process Ofpay for ``simulate:`` (kamen_router/sim/ofpay.py)
    simulator: ClassVar[type[OfpaySimulator]] = OfpaySimulator
    #: what the conformance kit must know about Ofpay, and where the protocol
    #: cannot say what a check asks for (see the notes above)
    conformance: ClassVar[Profile] = Profile(
        cards=None,  # direct top-ups only
        leeway={
            **{
                check: accept(
                    f"the sources give Ofpay's text for {what} but not its retcode; answered with the "
                    "generic 9999, the plugin reads it as UNKNOWN and queries (query.do's -1 then ends it)",
                    "unknown",
                )
                for check, what in (
                    ("insufficient_balance", "a low balance (账户余额不足)"),
                    ("wrong_credentials", "a bad password or MD5 string (用户名或密码错误, MD5串验证错误)"),
                )
            },
            **{
                check: accept(
                    f"Ofpay documents no answer for {what}; answered with the generic 9999, the plugin "
                    "reads it as UNKNOWN and queries (query.do's -1 then ends it)",
                    "unknown",
                )
                for check, what in (("maintenance", "maintenance"), ("rate_limited", "a rate limit"))
            },
            "out_of_stock": accept(
                "a top-up has no stock at Ofpay: a product it cannot serve now is 1004 (此商品暂不可用)",
                "rejected:product_unavailable",
            ),
            "price_above_ceiling": skip(
                "ofpay has no price-cap field: the router's own max_price check against the offer's "
                "price is the only ceiling"
            ),
            **{
                check: accept(
                    "query.do and the callback carry no receipt: the receipt (Ofpay's orderid) comes "
                    "with the submit reply, and the router keeps it as the attempt's supplier_ref",
                    "delivered",
                )
                for check in ("pending_then_delivered", "callback_delivered")
            },
        },
    )

    def __init__(self, context: SupplierContext) -> None:
        file = str(context.supplier.file)
        problems = [
            Problem(file, f"credentials.{key}", "is required by plugin 'ofpay'")
            for key in sorted(self.required_credentials)
            if key not in context.credentials
        ]
        for sku, offer in context.supplier.offers.items():
            if parse_product(offer.product_id) is None:
                problems.append(
                    Problem(
                        file,
                        f"offers.{sku}.product_id",
                        'must be CARDID:CARDNUM, such as "140101:100" (fast top-up, 100 yuan)',
                    )
                )
        creds = context.credentials
        for key in ("userid", "password", "keystr"):
            value = creds[key].reveal() if key in creds else ""
            try:
                value.encode(ENCODING)
            except UnicodeEncodeError:
                problems.append(Problem(file, f"credentials.{key}", "must be GBK text"))
        if problems:
            raise ConfigError(problems)
        self._context = context
        # Secrets, revealed only to sign and to send
        self._userid = creds["userid"]
        self._password = creds["password"]
        self._keystr = creds.get("keystr")
        self._base = context.endpoint.rstrip("/")
        #: the clock behind ``sporder_time`` when the core gives no start time
        self.clock: Callable[[], float] = time.time
        self._times: collections.OrderedDict[str, str] = collections.OrderedDict()

    def __repr__(self) -> str:
        return f"OfpayPlugin(supplier={self._context.name!r})"

    # --------------------------------------------------------------- contract

    async def submit(self, request: SubmitRequest) -> Outcome:
        product = parse_product(request.product_id)
        if product is None:
            # offers are checked when the plugin starts; this is a product id from elsewhere
            return Rejected(RejectReason.PRODUCT_UNAVAILABLE, "the product id is not CARDID:CARDNUM")
        cardid, cardnum = product
        problem = order_problem(request, cardid)
        if problem is not None:
            return problem
        assert request.account is not None
        params = order_params(
            userid=self._userid.reveal(),
            userpws=password_hash(self._password.reveal()),
            keystr=self._keystr_value(),
            cardid=cardid,
            cardnum=cardnum,
            sporder_id=request.attempt_key,
            sporder_time=self.sporder_time(request),
            game_userid=request.account,
            game_area=request.fields.get("game_area", ""),
            game_srv=request.fields.get("game_srv", ""),
            ret_url=request.callback_url or "",
        )
        response = await send(
            self._context.http,
            "POST",
            self._base + PATH_ORDER,
            timeout_s=self._context.timeout_s,
            content=encode_form(params),
            headers={"content-type": "application/x-www-form-urlencoded; charset=GBK"},
        )
        if not 200 <= response.status_code < 300:
            return Unknown(f"HTTP {response.status_code}")
        fields = reply_fields(response.content, "orderinfo")
        if isinstance(fields, Unknown):
            return fields
        return self._redact(submit_outcome(request, cardid, cardnum, fields))

    async def query(self, request: SubmitRequest) -> Outcome:
        response = await send(
            self._context.http,
            "GET",
            self._base + PATH_QUERY,
            timeout_s=self._context.timeout_s,
            params={"userid": self._userid.reveal(), "spbillid": request.attempt_key},
        )
        return query_outcome(response.status_code, response.content)

    async def balance(self) -> Decimal:
        params = {
            "userid": self._userid.reveal(),
            "userpws": password_hash(self._password.reveal()),
            "version": VERSION,
        }
        response = await send(
            self._context.http,
            "POST",
            self._base + PATH_BALANCE,
            timeout_s=self._context.timeout_s,
            content=encode_form(params),
            headers={"content-type": "application/x-www-form-urlencoded; charset=GBK"},
        )
        where = f"balance of {self._context.name}"
        if not 200 <= response.status_code < 300:
            raise OfpayReplyError(f"{where}: HTTP {response.status_code}")
        fields = reply_fields(response.content, "userinfo")
        if isinstance(fields, Unknown):
            raise OfpayReplyError(f"{where}: {fields.detail}")
        if fields["retcode"] != RETCODE_ACCEPTED:
            raise OfpayReplyError(f"{where}: retcode {fields['retcode'][:20]}")
        money = parse_money(fields.get("ret_leftcredit"))
        if money is None:
            raise OfpayReplyError(f"{where}: the reply has no valid balance")
        return money

    def parse_callback(self, request: Request) -> Callback:
        """Verify and read one callback (``kamen_router.http.Request``).
        Raises ``CallbackRejected`` unless its sign matches."""
        if request.method != "POST":
            raise CallbackRejected("malformed", "not a POST")
        return callback_outcome(callback_fields(request.body), self._userid.reveal(), self._keystr_value())

    def callback_reply(self, accepted: bool) -> CallbackReply:
        """``OK`` for a callback the router took; an empty HTTP 500 for one it did not."""
        if accepted:
            return CallbackReply(200, CALLBACK_ACK)
        return CallbackReply(500, b"")

    # ---------------------------------------------------------------- helpers

    def sporder_time(self, request: SubmitRequest) -> str:
        """The attempt's ``sporder_time``, the same on every retry of it."""
        started: Any = getattr(request, "started_at", None)
        if isinstance(started, int | float) and not isinstance(started, bool):
            return format_sporder_time(float(started))
        stamp = self._times.get(request.attempt_key)
        if stamp is None:
            stamp = format_sporder_time(self.clock())
            self._times[request.attempt_key] = stamp
            while len(self._times) > _REMEMBERED_TIMES:
                self._times.popitem(last=False)
        return stamp

    def _keystr_value(self) -> str:
        return self._keystr.reveal() if self._keystr is not None else DEFAULT_KEYSTR

    def _redact(self, outcome: Outcome) -> Outcome:
        """Keep credentials out of details copied from the supplier's text
        (details are journaled)."""
        secrets = [self._userid.reveal(), self._password.reveal(), password_hash(self._password.reveal())]
        if self._keystr is not None:
            secrets.append(self._keystr.reveal())
        redacted: Outcome = _common.redact(outcome, secrets, min_length=4)
        return redacted


PLUGIN = OfpayPlugin
