"""The conformance checks, in the order they run. Each gets a fresh ``Rig``
(its own seeded simulator, set up as the check's ``simulate`` says) and
raises ``CheckFailed`` with a message saying what it expected and what it
got."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

import attrs
import trio

from ..outcome import Delivered
from ..plugin import SubmitRequest
from ._rig import CheckFailed, Raised, Rig, Seen, Skipped, altered, closed_port, describe

CheckFn = Callable[[Rig], Awaitable[None]]


@attrs.frozen
class Check:
    name: str
    #: one line: what the check holds the plugin to
    doc: str
    fn: CheckFn
    #: ``Simulate`` fields the check turns on
    simulate: Mapping[str, Any] = attrs.Factory(dict)
    #: the plugin's timeout for this check (default: the supplier's, at most 2 s)
    timeout_s: float | None = None


CHECKS: dict[str, Check] = {}


def check(
    name: str, doc: str, *, timeout_s: float | None = None, **simulate: Any
) -> Callable[[CheckFn], CheckFn]:
    def register(fn: CheckFn) -> CheckFn:
        CHECKS[name] = Check(name, doc, fn, simulate, timeout_s)
        return fn

    return register


#: what a reply spoiled after the order was taken may come out as: the router
#: takes both as UNKNOWN and queries
SPOILED = {"unknown", "exception"}
SPOILED_WANT = "unknown, or an exception other than SupplierUnreachable (the order may have been taken)"


def topup_delivered(seen: Seen) -> bool:
    return isinstance(seen, Delivered) and bool(seen.deliverables.receipt) and not seen.deliverables.cards


def cards_delivered(quantity: int) -> Callable[[Seen], bool]:
    def ok(seen: Seen) -> bool:
        if not isinstance(seen, Delivered):
            return False
        cards = seen.deliverables.cards
        return len(cards) == quantity and all(c.number and c.password for c in cards)

    return ok


def check_cost(rig: Rig, request: SubmitRequest, seen: Seen) -> None:
    if isinstance(seen, Delivered) and seen.unit_cost is not None and seen.unit_cost != rig.price(request):
        raise CheckFailed(
            f"unit_cost is {seen.unit_cost}, but the simulator charged {rig.price(request)} a unit"
        )


async def wait_for_ledger(
    rig: Rig, request: SubmitRequest, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The attempt's ledger entry, once ``done`` holds for it or the wait runs out."""
    with trio.move_on_after(rig.profile.wait_s):
        while True:
            entry = rig.expect_taken_once("the simulator's ledger", request)
            if done(entry):
                return entry
            await trio.sleep(0.02)
    return rig.expect_taken_once("the simulator's ledger", request)


async def wait_until(rig: Rig, when: float) -> None:
    """Sleep until ``when`` on the simulator's clock (trio's), plus a hair."""
    await trio.sleep(max(0.0, when - trio.current_time()) + 0.05)


# ------------------------------------------------------------------ orders


@check("supplier_config", "the plugin's check_supplier, when it has one, accepts the supplier file")
async def _supplier_config(rig: Rig) -> None:
    fn = getattr(rig.plugin_cls, "check_supplier", None)
    if fn is None:
        raise Skipped("the plugin defines no check_supplier")
    problems = list(fn(rig.supplier))
    if problems:
        listed = "; ".join(f"{key}: {message}" for key, message in problems)
        raise CheckFailed(f"check_supplier refuses the supplier: {listed}")


@check(
    "delivers_topup", "a top-up is delivered (at once or by query) with a receipt, at the simulator's price"
)
async def _delivers_topup(rig: Rig) -> None:
    request = rig.request(rig.profile.topup)
    _, seen = await rig.submit_and_settle(request)
    rig.expect(
        "a top-up (submit, then query while pending)", seen, topup_delivered, "delivered with a receipt"
    )
    check_cost(rig, request, seen)
    entry = rig.expect_taken_once("the delivered top-up", request)
    if entry["status"] != "success":
        raise CheckFailed(f"the plugin reports delivered, the simulator's ledger says {entry['status']}")


@check(
    "delivers_cards", "a card order is delivered with as many cards as the quantity, each with its password"
)
async def _delivers_cards(rig: Rig) -> None:
    if rig.profile.cards is None:
        raise Skipped("the profile says the protocol sells no cards")
    request = rig.request(rig.profile.cards)
    _, seen = await rig.submit_and_settle(request)
    want = cards_delivered(request.quantity)
    rig.expect(
        "a card order (submit, then query while pending)",
        seen,
        want,
        f"delivered with {request.quantity} cards",
    )
    check_cost(rig, request, seen)
    rig.expect_taken_once("the delivered card order", request)


@check(
    "pending_then_delivered",
    "an order the supplier holds as processing is Pending, then Delivered by query once it completes",
    pending_rate=1.0,
    pending_s=0.6,
)
async def _pending(rig: Rig) -> None:
    request = rig.request(rig.profile.topup)
    rig.expect(
        "submit of an order the supplier holds as processing",
        await rig.submit(request),
        {"pending"},
        "pending",
    )
    rig.expect("a query before it completes", await rig.query(request), {"pending"}, "pending")
    order = rig.account.find(request.attempt_key)
    if order is None or order.ready_at is None:
        raise CheckFailed("the simulator did not hold the order as processing")
    await wait_until(rig, order.ready_at)
    seen = await rig.settle(request, await rig.query(request))
    rig.expect("a query after it completed", seen, topup_delivered, "delivered with a receipt")


@check(
    "failed",
    "an order the supplier fails is Failed, on submit or by query, and on every later query",
    fail_rate=1.0,
)
async def _failed(rig: Rig) -> None:
    request = rig.request(rig.profile.topup)
    _, seen = await rig.submit_and_settle(request)
    rig.expect("an order the supplier failed at once", seen, {"failed"}, "failed")
    rig.expect("a query of the failed order", await rig.query(request), {"failed"}, "failed")


async def refused(rig: Rig, step: str, request: SubmitRequest, want: set[str], wanted: str) -> None:
    rig.expect(step, await rig.submit(request), want, wanted)
    rig.expect_not_taken(step, request)


@check("out_of_stock", "a product out of stock is Rejected(out_of_stock)")
async def _out_of_stock(rig: Rig) -> None:
    request = rig.request(rig.profile.topup)
    rig.account.products[request.product_id].stock = 0
    await refused(
        rig, "submit of a product out of stock", request, {"rejected:out_of_stock"}, "rejected:out_of_stock"
    )


@check("insufficient_balance", "a balance that cannot pay is Rejected(insufficient_balance)")
async def _insufficient_balance(rig: Rig) -> None:
    request = rig.request(rig.profile.topup)
    rig.account.balance = rig.price(request) * request.quantity - Decimal("0.01")
    await refused(
        rig,
        "submit with the balance one cent short",
        request,
        {"rejected:insufficient_balance"},
        "rejected:insufficient_balance",
    )


@check(
    "product_unavailable", "a product off shelf, or unknown to the supplier, is Rejected(product_unavailable)"
)
async def _product_unavailable(rig: Rig) -> None:
    want, wanted = {"rejected:product_unavailable"}, "rejected:product_unavailable"
    request = rig.request(rig.profile.topup)
    rig.account.products[request.product_id].on_shelf = False
    await refused(rig, "submit of a product off shelf", request, want, wanted)
    request = rig.request(rig.profile.topup)
    del rig.account.products[request.product_id]
    await refused(rig, "submit of a product the supplier does not know", request, want, wanted)


@check("price_above_ceiling", "a supplier price above the order's max_price is Rejected(price_above_ceiling)")
async def _price_above_ceiling(rig: Rig) -> None:
    request = rig.request(rig.profile.topup)
    request = attrs.evolve(request, max_price=request.unit_price)
    rig.account.products[request.product_id].price = request.unit_price + 1
    await refused(
        rig,
        "submit after the supplier raised its price above max_price",
        request,
        {"rejected:price_above_ceiling"},
        "rejected:price_above_ceiling",
    )


@check(
    "invalid_account", "an account the supplier refuses is Invalid(invalid_account or blacklisted_account)"
)
async def _invalid_account(rig: Rig) -> None:
    request = rig.request(rig.profile.topup, account=rig.profile.invalid_account)
    want = {"invalid:invalid_account", "invalid:blacklisted_account"}
    await refused(rig, "submit for an account the supplier refuses", request, want, "invalid:invalid_account")


@check("maintenance", "a supplier down for maintenance is Rejected(maintenance)")
async def _maintenance(rig: Rig) -> None:
    rig.account.maintenance = True
    request = rig.request(rig.profile.topup)
    await refused(
        rig, "submit while down for maintenance", request, {"rejected:maintenance"}, "rejected:maintenance"
    )


@check("rate_limited", "a supplier's rate limit is RateLimited")
async def _rate_limited(rig: Rig) -> None:
    rig.account.rate_limit_per_s = 0.2
    first = rig.request(rig.profile.topup)
    _, seen = await rig.submit_and_settle(first)
    rig.expect("the first order", seen, {"delivered"}, "delivered")
    request = rig.request(rig.profile.topup)
    await refused(rig, "an order over the rate limit", request, {"rate_limited"}, "rate_limited")


@check(
    "wrong_credentials",
    "the simulator checks signatures: other credentials are refused (Rejected(auth) on submit, never a "
    "definitive answer on query) and take nothing",
)
async def _wrong_credentials(rig: Rig) -> None:
    wrong = rig.bind(rig.with_credentials(altered(rig.supplier.credentials)), rig.url)
    placed = rig.request(rig.profile.topup)
    _, seen = await rig.submit_and_settle(placed)
    rig.expect("an order with the right credentials", seen, {"delivered"}, "delivered")
    rig.expect(
        "a query of it signed with other credentials",
        await rig.query(placed, wrong),
        {"unknown", "exception"},
        "unknown (a refused query says nothing about the order)",
    )
    request = rig.request(rig.profile.topup)
    seen = await rig.submit(request, wrong)
    rig.expect("a submit signed with other credentials", seen, {"rejected:auth"}, "rejected:auth")
    if rig.ledger_for(request):
        raise CheckFailed(
            "the simulator took an order signed with other credentials: it must check signatures"
        )
    balance = await rig.call("balance", wrong.balance)
    if not isinstance(balance, Raised) and balance is not None:
        raise CheckFailed(
            "balance() signed with other credentials returned a balance: the simulator must refuse it"
        )


# ------------------------------------------------------- spoiled replies


async def spoiled(rig: Rig, what: str) -> None:
    request = rig.request(rig.profile.topup)
    rig.expect(f"a submit answered with {what}", await rig.submit(request), SPOILED, SPOILED_WANT)
    rig.expect_taken_once(f"after {what}", request)
    seen = await rig.settle(request, await rig.query(request))
    rig.expect("a later query", seen, {"delivered"}, "delivered (the supplier took the order)")


@check(
    "timeout_after_accept",
    "a reply that never comes in time is not SupplierUnreachable, and a later query finds the order",
    timeout_s=0.5,
    timeout_rate=1.0,
)
async def _timeout(rig: Rig) -> None:
    await spoiled(rig, "a reply held past the plugin's timeout")


@check("reset_after_accept", "a connection reset after the order was taken is Unknown", reset_rate=1.0)
async def _reset(rig: Rig) -> None:
    await spoiled(rig, "a connection reset")


@check(
    "error_after_accept", "an HTTP 502/503 after the order was taken is Unknown", error_after_accept_rate=1.0
)
async def _error_after_accept(rig: Rig) -> None:
    await spoiled(rig, "an HTTP 502/503 gateway page")


@check("system_error", "the supplier's 'system error, query to confirm' is Unknown", unknown_rate=1.0)
async def _system_error(rig: Rig) -> None:
    await spoiled(rig, "the protocol's system error")


@check(
    "duplicate_reply",
    "a 'duplicate order number' reply is Unknown, never Rejected or Failed",
    duplicate_reply_rate=1.0,
)
async def _duplicate_reply(rig: Rig) -> None:
    await spoiled(rig, "the protocol's 'duplicate order number'")


# ----------------------------------------------------------------- queries


@check("query_unknown_key", "a query for an attempt key the supplier never saw is NotFound")
async def _query_unknown_key(rig: Rig) -> None:
    request = rig.request(rig.profile.topup)
    rig.expect("a query for a key never submitted", await rig.query(request), {"not_found"}, "not_found")


@check(
    "not_found_window",
    "an order the supplier's queries do not see yet is NotFound, then Delivered once they do",
    not_found_rate=1.0,
    not_found_s=1.0,
)
async def _not_found_window(rig: Rig) -> None:
    request = rig.request(rig.profile.topup)
    taken = {"delivered", "pending"}
    rig.expect("submit", await rig.submit(request), taken, "delivered or pending")
    rig.expect("a query inside the window", await rig.query(request), {"not_found"}, "not_found")
    order = rig.account.find(request.attempt_key)
    if order is None or order.plan.not_found_until is None:
        raise CheckFailed("the simulator drew no not-found window for the order")
    await wait_until(rig, order.plan.not_found_until)
    seen = await rig.settle(request, await rig.query(request))
    rig.expect("a query after the window", seen, {"delivered"}, "delivered")


@check(
    "attempt_key_reuse",
    "submitting an attempt key again never creates a second order nor ends the attempt, even when the "
    "first copy took the last unit and the last of the balance",
)
async def _attempt_key_reuse(rig: Rig) -> None:
    request = rig.request(rig.profile.topup)
    product = rig.account.products[request.product_id]
    product.stock = request.quantity
    rig.account.balance = product.price * request.quantity
    _, seen = await rig.submit_and_settle(request)
    rig.expect("the first submit", seen, {"delivered"}, "delivered")
    again = await rig.submit(request)
    rig.expect(
        "the same attempt key submitted again",
        again,
        {"unknown", "exception", "pending", "delivered"},
        "unknown (or the same order, pending or delivered): a rejected, failed or invalid answer would "
        "start a second supplier on an order this one holds",
    )
    rig.expect_taken_once("after the resubmission", request)
    if rig.account.balance != 0:
        raise CheckFailed("the simulator charged the attempt twice")


# ---------------------------------------------------------- the account


@check("unreachable", "a connection refused is SupplierUnreachable (nothing was sent)")
async def _unreachable(rig: Rig) -> None:
    plugin = rig.bind(rig.supplier, f"http://127.0.0.1:{closed_port()}")
    request = rig.request(rig.profile.topup)
    rig.expect(
        "submit to a closed port", await rig.submit(request, plugin), {"unreachable"}, "SupplierUnreachable"
    )
    seen = await rig.query(request, plugin)
    rig.expect("query to a closed port", seen, {"unreachable", "unknown"}, "SupplierUnreachable or unknown")


@check("balance", "balance() reads the simulator's balance, before and after an order")
async def _balance(rig: Rig) -> None:
    for step in ("before any order", "after an order"):
        if step != "before any order":
            await rig.submit_and_settle(rig.request(rig.profile.topup))
        got = await rig.call("balance", rig.plugin.balance)
        leeway = rig.profile.leeway.get(rig.check)
        if got is None and leeway is not None and "none" in leeway.accept:
            rig.notes.append(f"balance() returns None ({leeway.why})")
            return
        if isinstance(got, Raised):
            raise CheckFailed(f"balance() {step}: {rig.redact(describe(got))}")
        if got != rig.account.balance:
            raise CheckFailed(f"balance() {step} returned {got!r}; the simulator holds {rig.account.balance}")


@check(
    "catalog",
    "catalog(), when defined, lists every product at its price, and shows one off shelf as unavailable",
)
async def _catalog(rig: Rig) -> None:
    catalog = getattr(rig.plugin, "catalog", None)
    if catalog is None:
        raise Skipped("the plugin has no catalog")
    items = await rig.call("catalog", catalog)
    if isinstance(items, Raised):
        raise CheckFailed(f"catalog(): {rig.redact(describe(items))}")
    by_id = {item.product_id: item for item in items}
    for product_id, product in rig.account.products.items():
        item = by_id.get(product_id)
        if item is None:
            raise CheckFailed(f"the catalog does not list product {product_id!r}")
        if item.price is not None and item.price != product.price:
            raise CheckFailed(
                f"the catalog prices {product_id!r} at {item.price}; the simulator at {product.price}"
            )
        if item.available is False:
            raise CheckFailed(
                f"the catalog shows {product_id!r} unavailable while it is on shelf and in stock"
            )
    product_id = next(iter(rig.account.products))
    rig.account.products[product_id].on_shelf = False
    items = await rig.call("catalog", catalog)
    if isinstance(items, Raised):
        raise CheckFailed(f"catalog(): {rig.redact(describe(items))}")
    item = next((i for i in items if i.product_id == product_id), None)
    if item is not None and item.available is not False:
        raise CheckFailed(f"the catalog shows {product_id!r} available while it is off shelf")


@check(
    "secrets",
    "no credential appears in the plugin's repr, attributes, errors or outcomes (every check also scans "
    "what it saw)",
    reset_rate=1.0,
)
async def _secrets(rig: Rig) -> None:
    for name, value in getattr(rig.plugin, "__dict__", {}).items():
        rig.record(f"the plugin's attribute {name}", repr(value))
    request = rig.request(rig.profile.topup)
    await rig.submit(request)  # reset after sending: an exception
    await rig.query(request)
    await rig.call("balance", rig.plugin.balance)
    wrong = rig.bind(rig.with_credentials(altered(rig.supplier.credentials)), rig.url)
    other = rig.request(rig.profile.topup)
    await rig.submit(other, wrong)
    await rig.query(other, wrong)
    await rig.call("balance", wrong.balance)
    gone = rig.bind(rig.supplier, f"http://127.0.0.1:{closed_port()}")
    await rig.submit(other, gone)
    await rig.call("balance", gone.balance)
