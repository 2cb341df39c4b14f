"""The conformance kit: the reference ``sim`` plugin passes every check, and
plugins (or simulators) that break the contract fail the right check with a
message that says what was expected and what came instead."""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio

from kamen_router.config import Limits, Offer, Secret, Simulate, SupplierConfig
from kamen_router.conformance import (
    CHECKS,
    Profile,
    Verdict,
    accept,
    add_conform_parser,
    check_names,
    conformance_tests,
    run_conformance,
    skip,
)
from kamen_router.http import Request
from kamen_router.outcome import Failed, Outcome, Unknown
from kamen_router.plugin import Callback, SubmitRequest
from kamen_router.sim import protocol
from kamen_router.sim.plugin import SimPlugin
from kamen_router.sim.server import SimSupplier

API_KEY = "conformance-key-3b9e51d2"


def acme(**simulate: Any) -> SupplierConfig:
    return SupplierConfig(
        name="acme",
        file=Path("suppliers.d/acme.yaml"),
        plugin="sim",
        enabled=True,
        endpoint=None,
        credentials={"api_key": Secret(API_KEY)},
        limits=Limits(timeout_s=5),
        offers={
            "mobile-cmcc-100": Offer("mobile-cmcc-100", "P100", Decimal("99.20")),
            "steam-50": Offer("steam-50", "C50", Decimal("48.50")),
        },
        simulate=Simulate(seed=3, **simulate),
    )


# one line per plugin: every check is its own test
test_sim_conforms = conformance_tests(SimPlugin, acme())


async def run(plugin: Any, *checks: str, profile: Profile | None = None) -> dict[str, Any]:
    with trio.fail_after(60):
        report = await run_conformance(plugin, acme(), checks=checks or None, profile=profile)
    return {r.name: r for r in report.results}


# ------------------------------------------------------ broken plugins


class DuplicateIsFailed(SimPlugin):
    """Maps 1007 "duplicate order number" to Failed: the router would fail
    over an order the supplier holds, and deliver it twice."""

    async def submit(self, request: SubmitRequest) -> Outcome:
        outcome = await super().submit(request)
        if outcome == Unknown("duplicate order number"):
            return Failed("failed", "duplicate order number")
        return outcome


async def test_a_duplicate_mapped_to_failed_fails_the_duplicate_and_reuse_checks() -> None:
    results = await run(DuplicateIsFailed, "duplicate_reply", "attempt_key_reuse", "delivers_topup")
    duplicate, reuse = results["duplicate_reply"], results["attempt_key_reuse"]
    assert duplicate.verdict is Verdict.FAILED
    assert "expected unknown, or an exception other than SupplierUnreachable" in duplicate.message
    assert "got failed:failed ('duplicate order number')" in duplicate.message
    assert reuse.verdict is Verdict.FAILED
    assert "the same attempt key submitted again" in reuse.message
    assert "would start a second supplier" in reuse.message
    assert results["delivers_topup"].verdict is Verdict.PASSED


class LeaksTheKey(SimPlugin):
    """Puts the api key into the message of a transport error."""

    async def submit(self, request: SubmitRequest) -> Outcome:
        try:
            return await super().submit(request)
        except Exception as exc:
            raise RuntimeError(f"submit failed with key {self._api_key.reveal()}") from exc


async def test_a_key_in_an_error_message_fails_with_where_it_appeared() -> None:
    results = await run(LeaksTheKey, "secrets", "reset_after_accept", "unreachable", "delivers_topup")
    for name in ("secrets", "reset_after_accept", "unreachable"):
        result = results[name]
        assert result.verdict is Verdict.FAILED, name
        assert "credentials.api_key appears in the exception from submit" in result.message
        assert API_KEY not in result.message
    # the unreachable check also says what it wanted, with the key redacted
    assert "expected SupplierUnreachable, got an exception, RuntimeError" in results["unreachable"].message
    assert "submit failed with key ***" in results["unreachable"].message
    assert results["delivers_topup"].verdict is Verdict.PASSED


class OutOfStockIsFailed(SimPlugin):
    async def submit(self, request: SubmitRequest) -> Outcome:
        outcome = await super().submit(request)
        if outcome.kind == "rejected" and outcome.reason == "out_of_stock":
            return Failed("failed", "no stock")
        return outcome


async def test_a_refusal_mapped_to_the_wrong_outcome_fails() -> None:
    results = await run(OutOfStockIsFailed, "out_of_stock")
    assert results["out_of_stock"].message == (
        "submit of a product out of stock: expected rejected:out_of_stock, got failed:failed ('no stock')"
    )


class SkipsTheSignature(SimPlugin):
    """Believes every callback."""

    def parse_callback(self, request: Request) -> Callback:
        headers = dict(request.headers)
        headers[protocol.HEADER_SIGN.lower()] = protocol.sign(API_KEY, headers["x-timestamp"], request.body)
        headers[protocol.HEADER_MERCHANT.lower()] = "acme"
        return super().parse_callback(
            Request(request.method, request.path, request.query, headers, request.body)
        )


async def test_a_plugin_that_trusts_unsigned_callbacks_fails_the_forgery_check() -> None:
    results = await run(SkipsTheSignature, "callback_forged", "callback_delivered")
    assert results["callback_forged"].verdict is Verdict.FAILED
    assert "changed after signing was accepted" in results["callback_forged"].message
    assert results["callback_delivered"].verdict is Verdict.PASSED


class TrustingSimulator(SimSupplier):
    """A simulator that never checks signatures: the kit must notice, or
    plugin and simulator would not be checking each other."""

    def _authentic(self, request: Request) -> bool:
        return True


class PluginWithTrustingSimulator(SimPlugin):
    simulator: ClassVar[type[SimSupplier]] = TrustingSimulator


async def test_a_simulator_that_skips_signatures_fails_the_credentials_check() -> None:
    results = await run(PluginWithTrustingSimulator, "wrong_credentials")
    message = results["wrong_credentials"].message
    assert results["wrong_credentials"].verdict is Verdict.FAILED
    assert "signed with other credentials" in message


class NoSimulator(SimPlugin):
    simulator = None  # type: ignore[assignment]


async def test_a_plugin_without_a_simulator_fails_every_check_saying_so() -> None:
    results = await run(NoSimulator, "delivers_topup", "balance")
    for result in results.values():
        assert result.verdict is Verdict.FAILED
        assert "the plugin has no simulator" in result.message


# ------------------------------------------------------------- leeway


class OutOfStockIsUnknown(SimPlugin):
    """As a protocol without an out-of-stock code would have it."""

    async def submit(self, request: SubmitRequest) -> Outcome:
        outcome = await super().submit(request)
        if outcome.kind == "rejected" and outcome.reason == "out_of_stock":
            return Unknown("code 1003")
        return outcome


async def test_leeway_accepts_a_documented_safe_answer_and_says_why() -> None:
    strict = await run(OutOfStockIsUnknown, "out_of_stock")
    assert strict["out_of_stock"].verdict is Verdict.FAILED
    profile = Profile(
        leeway={
            "out_of_stock": accept("the protocol has no out-of-stock code", "unknown"),
            "catalog": skip("no catalog in this protocol"),
        }
    )
    lenient = await run(OutOfStockIsUnknown, "out_of_stock", "catalog", profile=profile)
    assert lenient["out_of_stock"].verdict is Verdict.PASSED
    [note] = lenient["out_of_stock"].notes
    assert "unknown ('code 1003') accepted (the protocol has no out-of-stock code)" in note
    assert lenient["catalog"].verdict is Verdict.SKIPPED
    assert lenient["catalog"].message == "no catalog in this protocol"


async def test_leeway_never_excuses_a_simulator_that_took_a_refused_order() -> None:
    class TakesEverything(SimSupplier):
        def _order(self, body: Any) -> Any:
            self.account.products["P100"].stock = None
            return super()._order(body)

    class Plugin(OutOfStockIsUnknown):
        simulator: ClassVar[type[SimSupplier]] = TakesEverything

    profile = Profile(leeway={"out_of_stock": accept("no out-of-stock code", "unknown", "delivered")})
    results = await run(Plugin, "out_of_stock", profile=profile)
    assert "the simulator took the order, yet it should have refused it" in results["out_of_stock"].message


# ------------------------------------------------------------- report


async def test_the_report_reads_well_and_raises_with_every_failure() -> None:
    with trio.fail_after(60):
        report = await run_conformance(
            DuplicateIsFailed, acme(), checks=["duplicate_reply", "supplier_config"]
        )
    text = str(report)
    assert text.splitlines()[0] == (
        "conformance of plugin 'sim' (supplier 'acme'): 0 passed, 1 failed, 1 skipped"
    )
    assert "FAILED  duplicate_reply: a submit answered with the protocol's 'duplicate order number'" in text
    assert "SKIPPED supplier_config: the plugin defines no check_supplier" in text
    assert not report.ok
    with pytest.raises(AssertionError, match="fails 1 check"):
        report.raise_for_failures()


async def test_unknown_check_names_are_refused() -> None:
    with pytest.raises(ValueError, match="no such conformance check: nope"):
        await run_conformance(SimPlugin, acme(), checks=["nope"])


def test_every_check_has_a_name_and_a_doc_and_runs_in_order() -> None:
    assert check_names() == list(CHECKS)
    assert check_names()[:2] == ["supplier_config", "delivers_topup"]
    assert all(c.doc and c.name == name for name, c in CHECKS.items())


def test_the_command_line_runs_the_kit_on_a_supplier_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(
        "plugin: sim\n"
        f"credentials: {{api_key: {API_KEY}}}\n"
        "offers:\n"
        "  mobile-cmcc-100: {product_id: P100, price: 99.20}\n"
        "  steam-50: {product_id: C50, price: 48.50}\n"
        "simulate: {seed: 9}\n",
        encoding="utf-8",
    )
    parser = argparse.ArgumentParser()
    add_conform_parser(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["conform", "-c", str(path), "--check", "delivers_cards", "--check", "balance"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "2 passed, 0 failed, 0 skipped" in out and API_KEY not in out
    args = parser.parse_args(["conform", "-c", str(path), "--check", "nope"])
    assert args.func(args) == 2
