"""The callback checks: genuine callbacks parse right and are acknowledged,
forged ones are refused, and the simulator's callback faults are harmless.
They run for plugins with ``parse_callback``; the kit's receiver stands in
for the daemon's callback listener."""

from __future__ import annotations

from typing import Any

import attrs
import trio

from ..http import Request
from ..outcome import Delivered
from ..plugin import CallbackRejected, SubmitRequest
from ._checks import CHECKS as CHECKS
from ._checks import check, topup_delivered, wait_for_ledger
from ._rig import CheckFailed, Raised, Rig, Skipped, altered, describe


def needs_callbacks(rig: Rig) -> None:
    if rig.receiver is None:
        raise Skipped("the plugin takes no callbacks (no parse_callback)")


async def first_callback(rig: Rig, request: SubmitRequest) -> tuple[Any, Request]:
    receiver = rig.receiver
    assert receiver is not None
    key = request.attempt_key
    if not await receiver.wait_until(lambda: bool(receiver.for_key(key)), rig.profile.wait_s):
        why = [f"{len(receiver.got)} parsed for other attempt keys"] if receiver.got else []
        why += [f"refused: {', '.join(r for r, _ in receiver.rejected)}"] if receiver.rejected else []
        why += [f"parse_callback raised {'; '.join(receiver.errors)}"] if receiver.errors else []
        extra = f" ({'; '.join(why)})" if why else ""
        raise CheckFailed(f"no callback for the attempt arrived within {rig.profile.wait_s:g} s{extra}")
    return next((c, r) for c, r in receiver.got if c.attempt_key == key)


def no_refusals(rig: Rig) -> None:
    receiver = rig.receiver
    assert receiver is not None
    if receiver.errors:
        raise CheckFailed(f"parse_callback raised other than CallbackRejected: {'; '.join(receiver.errors)}")
    if receiver.rejected:
        reasons = ", ".join(reason for reason, _ in receiver.rejected)
        raise CheckFailed(f"genuine callbacks were refused by parse_callback ({reasons})")


async def expect_acknowledged(rig: Rig, request: SubmitRequest) -> None:
    entry = await wait_for_ledger(rig, request, lambda e: e["callbacks_acked"] >= 1)
    if entry["callbacks_acked"] < 1:
        raise CheckFailed(
            f"the simulator sent {entry['callbacks_sent']} callbacks and took none of the plugin's "
            "callback_reply(True) answers as an acknowledgement"
        )


@check(
    "callback_delivered", "a delivered order's callback parses to Delivered, and its answer acknowledges it"
)
async def _callback_delivered(rig: Rig) -> None:
    needs_callbacks(rig)
    request = rig.request(rig.profile.topup)
    _, seen = await rig.submit_and_settle(request)
    rig.expect("the order", seen, {"delivered"}, "delivered")
    callback, _ = await first_callback(rig, request)
    rig.expect(
        "the callback of a delivered top-up", callback.outcome, topup_delivered, "delivered with a receipt"
    )
    if isinstance(callback.outcome, Delivered) and isinstance(seen, Delivered):
        theirs, ours = callback.outcome.deliverables.receipt, seen.deliverables.receipt
        if theirs and ours and theirs != ours:
            raise CheckFailed("the callback's receipt differs from the one the query returned")
    no_refusals(rig)
    await expect_acknowledged(rig, request)


@check("callback_failed", "a failed order's callback parses to Failed", fail_rate=1.0)
async def _callback_failed(rig: Rig) -> None:
    needs_callbacks(rig)
    request = rig.request(rig.profile.topup)
    await rig.submit_and_settle(request)
    callback, _ = await first_callback(rig, request)
    rig.expect("the callback of a failed order", callback.outcome, {"failed"}, "failed")
    no_refusals(rig)
    await expect_acknowledged(rig, request)


def tamper(request: Request, key: str) -> Request | None:
    """``request`` with the attempt key changed after signing, or None when
    the key is nowhere in its body or query string."""
    other = key[:-1] + ("1" if key[-1] == "0" else "0")
    body = request.body.replace(key.encode(), other.encode())
    query = {k: [v.replace(key, other) for v in vs] for k, vs in request.query.items()}
    if body == request.body and query == dict(request.query):
        return None
    return attrs.evolve(request, body=body, query=query)


@check(
    "callback_forged",
    "forged callbacks raise CallbackRejected: one whose attempt key was changed after signing, and one "
    "signed with other credentials",
)
async def _callback_forged(rig: Rig) -> None:
    needs_callbacks(rig)
    receiver = rig.receiver
    assert receiver is not None
    request = rig.request(rig.profile.topup)
    await rig.submit_and_settle(request)
    _, genuine = await first_callback(rig, request)
    forged = tamper(genuine, request.attempt_key)
    if forged is None:
        raise CheckFailed("the callback does not carry the attempt key in its body or query string")
    try:
        rig.plugin.parse_callback(forged)
    except CallbackRejected:
        pass
    except Exception as exc:
        raise CheckFailed(f"a tampered callback raised {type(exc).__name__}, not CallbackRejected") from None
    else:
        raise CheckFailed("a callback whose attempt key was changed after signing was accepted")
    twin = rig.with_credentials(altered(rig.supplier.credentials))
    _, twin_url = await rig.open_simulator(twin)
    twin_plugin = rig.bind(twin, twin_url)
    other = rig.request(rig.profile.topup)
    refused_before = len(receiver.rejected)
    seen = await rig.submit(other, twin_plugin)
    key = other.attempt_key
    arrived = await receiver.wait_until(
        lambda: len(receiver.rejected) > refused_before or bool(receiver.for_key(key)), rig.profile.wait_s
    )
    if receiver.for_key(key):
        raise CheckFailed("a callback signed with other credentials was accepted")
    if not arrived:
        raise CheckFailed(
            "no callback came from a simulator with other credentials "
            f"(its plugin's submit came out {rig.redact(describe(seen))})"
        )


@check(
    "callback_faults",
    "duplicated, delayed, reordered callbacks and one that overtakes the submit reply all parse, agree "
    "with the order, and are acknowledged",
    callback_duplicates=2,
    callback_reorder_rate=1.0,
    callback_before_reply_rate=1.0,
    callback_delay_s=(0.05, 0.2),
)
async def _callback_faults(rig: Rig) -> None:
    needs_callbacks(rig)
    receiver = rig.receiver
    assert receiver is not None
    request = rig.request(rig.profile.topup)
    _, seen = await rig.submit_and_settle(request)
    rig.expect("the order", seen, {"delivered"}, "delivered")
    key = request.attempt_key
    await receiver.wait_until(lambda: len(receiver.for_key(key)) >= 3, rig.profile.wait_s)
    await trio.sleep(0.5)  # the stale callback follows the final ones
    no_refusals(rig)
    callbacks = receiver.for_key(key)
    if len(callbacks) < 3:
        raise CheckFailed(f"{len(callbacks)} of the 3 copies of the final callback were parsed")
    allowed = {seen.kind, "pending", "unknown"} if not isinstance(seen, Raised) else set()
    for callback in callbacks:
        if callback.outcome.kind not in allowed:
            raise CheckFailed(
                f"a callback of a delivered order parsed to {rig.redact(describe(callback.outcome))}"
            )
    entry = rig.expect_taken_once("the simulator's ledger", request)
    if entry["callbacks_acked"] != entry["callbacks_sent"]:
        raise CheckFailed(
            f"the simulator sent {entry['callbacks_sent']} callbacks and took "
            f"{entry['callbacks_acked']} answers as acknowledgements"
        )


# the secret scan's own check reads best last, after every check that scans too
CHECKS["secrets"] = CHECKS.pop("secrets")
