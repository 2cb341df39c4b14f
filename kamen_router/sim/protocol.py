"""The ``sim`` wire protocol, shared by the plugin and the simulator.

Every request is a POST with a JSON body, except ``GET /ledger`` (a
simulator-only inspection endpoint, unsigned). Requests carry three headers:

``X-Merchant``
    the supplier name the caller is registered under;
``X-Timestamp``
    unix seconds, as a decimal integer;
``X-Sign``
    lower-case hex HMAC-SHA256 of ``timestamp + "\\n" + body`` keyed with
    the ``api_key`` credential, over the exact body bytes sent.

The timestamp is inside the signed bytes so a captured request cannot be
replayed outside the server's skew window; the key itself never travels.

Endpoints and JSON shapes (amounts are strings such as ``"99.20"`` so no
side ever rounds them through a float):

``POST /order``  :class:`OrderRequest` -> :class:`OrderReply`
``POST /query``  :class:`QueryRequest` -> :class:`OrderReply`
``POST /balance`` ``{}`` -> :class:`BalanceReply`
``GET /ledger``  -> :class:`LedgerReply`

Every reply has ``code`` (a :class:`Code`) and ``message``. Business codes
come with HTTP 200, except 1001 (401), 1429 (429), 1000 (400/404/405/415)
and 5000 (500).

Callbacks. When an order the supplier took reaches a final state (success
or failed) and its ``/order`` request carried a ``notify_url``, the supplier
POSTs a :class:`CallbackJson` (the order, as in replies) to that URL, signed
exactly like a request: ``X-Merchant`` is the merchant the order belongs to,
``X-Timestamp`` the time of sending, ``X-Sign`` the HMAC of
``timestamp + "\\n" + body`` with the merchant's ``api_key``. The receiver
acknowledges with HTTP 200 and the body ``ok`` (:data:`CALLBACK_ACK`).
Anything else (another body such as ``fail``, another status, no answer
within :data:`CALLBACK_TIMEOUT_S`, a refused connection) is a failed
delivery, retried later, signed afresh each time. A receiver must expect the
same callback more than once, callbacks for one order out of order (a
``processing`` one after the final one), and a final callback before the
``/order`` reply itself.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from typing import TypedDict

HEADER_MERCHANT = "X-Merchant"
HEADER_TIMESTAMP = "X-Timestamp"
HEADER_SIGN = "X-Sign"

PATH_ORDER = "/order"
PATH_QUERY = "/query"
PATH_BALANCE = "/balance"
PATH_CATALOG = "/catalog"
PATH_LEDGER = "/ledger"

#: how far a request's timestamp may be from the server's wall clock
MAX_SKEW_S = 300.0
#: the largest quantity one order may ask for
MAX_QUANTITY = 1000
#: the body a callback receiver answers (with HTTP 200) to acknowledge one
CALLBACK_ACK = b"ok"
#: the body the ``sim`` plugin answers to a callback it did not take; the
#: supplier retries it (as it does any answer but ``ok``)
CALLBACK_NACK = b"fail"
#: how long the supplier waits for a callback's answer
CALLBACK_TIMEOUT_S = 10.0


class Code(enum.IntEnum):
    """Result codes of the ``sim`` protocol.

    =====  ===================================================================
    code   meaning
    =====  ===================================================================
    0      ok; the reply carries the order (or the balance)
    1000   bad request: malformed JSON, wrong shape, unknown endpoint
    1001   bad signature, unknown merchant or stale timestamp
    1002   unknown product id, or the product is off the shelf
    1003   out of stock
    1004   the merchant's prepaid balance cannot pay for the order
    1005   the unit price is above the caller's ``max_unit_price``
    1006   invalid or blacklisted account
    1007   the merchant order number exists; the reply carries that order
    1008   down for maintenance
    1429   rate limited; the reply carries ``retry_after`` in seconds
    2001   (query) no order with that merchant order number
    5000   system error: the result is unconfirmed, query to confirm
    =====  ===================================================================
    """

    OK = 0
    BAD_REQUEST = 1000
    BAD_SIGNATURE = 1001
    PRODUCT_UNAVAILABLE = 1002
    OUT_OF_STOCK = 1003
    INSUFFICIENT_BALANCE = 1004
    PRICE_ABOVE_CEILING = 1005
    INVALID_ACCOUNT = 1006
    DUPLICATE_ORDER = 1007
    MAINTENANCE = 1008
    RATE_LIMITED = 1429
    ORDER_NOT_FOUND = 2001
    SYSTEM_ERROR = 5000


class Status(enum.StrEnum):
    """An order's state at the supplier."""

    SUCCESS = "success"
    PROCESSING = "processing"
    FAILED = "failed"


# ------------------------------------------------------------ JSON shapes


class OrderRequest(TypedDict):
    merchant_order_no: str
    product_id: str
    quantity: int
    #: the phone number or game account to charge; empty or null for a card
    account: str | None
    fields: dict[str, str]
    #: the caller's ceiling per unit, or null for none
    max_unit_price: str | None
    notify_url: str | None


class QueryRequest(TypedDict):
    merchant_order_no: str


class CardJson(TypedDict):
    number: str
    password: str
    expires: str | None


class OrderJson(TypedDict):
    order_no: str
    merchant_order_no: str
    product_id: str
    quantity: int
    status: str
    unit_price: str
    #: ``quantity`` cards once a card order succeeds, else empty
    cards: list[CardJson]
    #: the operator's serial number once a top-up succeeds, else null
    receipt: str | None


#: a callback's body: the order as it stands (``status`` may be any
#: :class:`Status`; a stale ``processing`` one can follow the final one)
CallbackJson = OrderJson


class _Reply(TypedDict):
    code: int
    message: str


class OrderReply(_Reply, total=False):
    #: present with code 0 and 1007
    order: OrderJson
    #: present with code 1429
    retry_after: float


class BalanceReply(_Reply, total=False):
    balance: str


class LedgerEntry(TypedDict):
    merchant_order_no: str
    #: the supplier's own order number (what plugins report as supplier_ref)
    order_no: str
    product_id: str
    quantity: int
    #: the last four characters of the account, or null for a card order
    account_masked: str | None
    unit_price: str
    status: str
    #: seconds on the simulator's clock
    accepted_at: float
    delivered_at: float | None
    #: how many ``/order`` requests for this merchant order number passed the
    #: signature, shape and rate checks: 1 for an attempt submitted once
    #: (every later one was answered 1007 and took nothing)
    submits: int
    #: callback requests sent for the order: every copy, retry and stale one
    callbacks_sent: int
    #: of those, how many the receiver answered ``ok``
    callbacks_acked: int


class LedgerReply(TypedDict):
    supplier: str
    orders: list[LedgerEntry]
    #: most requests (other than /ledger) it was answering at once since
    #: the previous /ledger request
    peak_requests: int


# ---------------------------------------------------------------- signing


def sign(api_key: str, timestamp: str, body: bytes) -> str:
    """The ``X-Sign`` value for ``body`` sent at ``timestamp``."""
    message = timestamp.encode("ascii") + b"\n" + body
    return hmac.new(api_key.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signed_headers(merchant: str, api_key: str, body: bytes, now: float) -> dict[str, str]:
    """Every header a request needs, signed for ``body`` at unix time ``now``."""
    timestamp = str(int(now))
    return {
        "Content-Type": "application/json",
        HEADER_MERCHANT: merchant,
        HEADER_TIMESTAMP: timestamp,
        HEADER_SIGN: sign(api_key, timestamp, body),
    }


def verify(api_key: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` signs ``body`` at ``timestamp`` (constant time)."""
    # compare_digest refuses non-ASCII text; such a header cannot be valid
    if not (timestamp.isascii() and signature.isascii()):
        return False
    return hmac.compare_digest(sign(api_key, timestamp, body), signature.strip().lower())
