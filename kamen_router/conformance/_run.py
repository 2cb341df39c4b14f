"""Running checks, the report, the pytest helper and the command line."""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Collection, Coroutine
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from ..config import SupplierConfig
from ._callbacks import CHECKS
from ._checks import Check
from ._rig import CheckFailed, Profile, Rig, Skipped, base_supplier

#: the longest one check may take
CHECK_TIMEOUT_S = 30.0


class Verdict(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@attrs.frozen
class CheckResult:
    name: str
    verdict: Verdict
    #: why it failed or was skipped (credentials redacted)
    message: str = ""
    #: departures the profile's leeway accepted
    notes: tuple[str, ...] = ()
    duration_s: float = 0.0


@attrs.frozen
class Report:
    """Every check's result for one plugin and supplier."""

    plugin: str
    supplier: str
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.verdict is Verdict.FAILED]

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(name)

    def __str__(self) -> str:
        counts = {v: sum(r.verdict is v for r in self.results) for v in Verdict}
        lines = [
            f"conformance of plugin {self.plugin!r} (supplier {self.supplier!r}): "
            + ", ".join(f"{counts[v]} {v}" for v in Verdict)
        ]
        for r in self.results:
            lines.append(f"  {r.verdict.upper():7} {r.name}" + (f": {r.message}" if r.message else ""))
            lines += [f"          note: {note}" for note in r.notes]
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise AssertionError listing every failed check."""
        if self.failures:
            listed = "\n".join(f"- {r.name}: {r.message}" for r in self.failures)
            raise AssertionError(f"plugin {self.plugin!r} fails {len(self.failures)} check(s):\n{listed}")


def check_names() -> list[str]:
    """Every check, in the order they run."""
    return list(CHECKS)


def profile_of(plugin_cls: Any) -> Profile:
    """The plugin's ``conformance`` profile, else its simulator's, else the default."""
    for owner in (plugin_cls, getattr(plugin_cls, "simulator", None)):
        profile = getattr(owner, "conformance", None)
        if isinstance(profile, Profile):
            return profile
    return Profile()


async def run_conformance(
    plugin_cls: Any,
    supplier: SupplierConfig,
    *,
    checks: Collection[str] | None = None,
    profile: Profile | None = None,
) -> Report:
    """Run the conformance checks (all, or ``checks``, in the kit's order)
    on ``plugin_cls`` against its simulator (``plugin_cls.simulator``) for
    ``supplier``. Every check gets its own simulator on loopback, seeded
    from ``supplier.simulate.seed`` and the check's name, with every fault
    off but the ones it tests. ``profile`` defaults to ``profile_of``."""
    if isinstance(checks, str):
        checks = [checks]
    _known(checks)
    profile = profile or profile_of(plugin_cls)
    wanted = [c for c in CHECKS.values() if checks is None or c.name in checks]
    results = [await _run_one(c, plugin_cls, supplier, profile) for c in wanted]
    return Report(str(getattr(plugin_cls, "name", plugin_cls.__name__)), supplier.name, tuple(results))


def _known(checks: Collection[str] | None) -> None:
    unknown = sorted(set(checks or ()) - set(CHECKS))
    if unknown:
        raise ValueError(f"no such conformance check: {', '.join(unknown)}")


async def _run_one(check: Check, plugin_cls: Any, supplier: SupplierConfig, profile: Profile) -> CheckResult:
    leeway = profile.leeway.get(check.name)
    if leeway is not None and leeway.skip:
        return CheckResult(check.name, Verdict.SKIPPED, leeway.why)
    started = trio.current_time()
    copy = base_supplier(supplier, check.name, **check.simulate)
    if check.timeout_s is not None:
        copy = attrs.evolve(copy, limits=attrs.evolve(copy.limits, timeout_s=check.timeout_s))
    verdict, message = Verdict.FAILED, f"did not finish within {CHECK_TIMEOUT_S:g} s"
    rig: Rig | None = None
    with trio.move_on_after(CHECK_TIMEOUT_S):
        try:
            async with httpx.AsyncClient(trust_env=False) as http, trio.open_nursery() as nursery:
                rig = Rig(check.name, plugin_cls, copy, profile, http, nursery)
                try:
                    await rig.start()
                    await check.fn(rig)
                    verdict, message = Verdict.PASSED, ""
                except CheckFailed as exc:
                    message = str(exc)
                except Skipped as exc:
                    verdict, message = Verdict.SKIPPED, str(exc)
                except Exception as exc:
                    message = f"the check stopped on {type(exc).__name__}: {exc}"
                finally:
                    nursery.cancel_scope.cancel()
        except Exception as exc:  # the simulator or the receiver crashed
            verdict, message = Verdict.FAILED, f"a background task failed: {_leaves(exc)}"
    notes: tuple[str, ...] = ()
    if rig is not None:
        message = rig.redact(message)
        notes = tuple(rig.notes)
        leaks = rig.leaks()
        if leaks:
            leaked = "a credential leaked: " + "; ".join(leaks)
            verdict, message = Verdict.FAILED, f"{message}; {leaked}" if verdict is Verdict.FAILED else leaked
    return CheckResult(check.name, verdict, message, notes, trio.current_time() - started)


def _leaves(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_leaves(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------ pytest


def conformance_tests(
    plugin_cls: Any,
    supplier: SupplierConfig | Callable[[], SupplierConfig],
    *,
    checks: Collection[str] | None = None,
    profile: Profile | None = None,
) -> Callable[[str], Coroutine[Any, Any, None]]:
    """A pytest test, parametrized over the checks, so a test module needs
    one line per plugin::

        test_acme_conforms = conformance_tests(AcmePlugin, acme_supplier())

    ``supplier`` may be a function, called when the test runs. A skipped
    check is reported as a pytest skip. Needs pytest and pytest-trio
    (``trio_mode = true``)."""
    import pytest

    _known(checks)
    names = [name for name in CHECKS if checks is None or name in checks]

    @pytest.mark.parametrize("check", names)
    async def test(check: str) -> None:
        config = supplier() if callable(supplier) else supplier
        report = await run_conformance(plugin_cls, config, checks=[check], profile=profile)
        [result] = report.results
        if result.verdict is Verdict.SKIPPED:
            pytest.skip(result.message)
        report.raise_for_failures()

    return test


# -------------------------------------------------------------------- CLI


def add_conform_parser(subparsers: Any) -> None:
    """Add ``kamen-router conform`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "conform", help="run the plugin conformance kit on one supplier file against its simulator"
    )
    p.add_argument("-c", "--config", required=True, help="a supplier file, such as suppliers.d/NAME.yaml")
    p.add_argument("--plugins-dir", help="extra plugins directory")
    p.add_argument(
        "--check", action="append", dest="checks", metavar="NAME", help="run only this check (repeatable)"
    )
    p.set_defaults(func=cmd_conform)


def cmd_conform(args: Any) -> int:
    """``kamen-router conform``: 0 when every check passes, 1 otherwise."""
    from ..config import read_supplier
    from ..errors import ConfigError, Problem
    from ..plugin import load_plugins

    plugins = load_plugins(Path(args.plugins_dir) if args.plugins_dir else None)
    problems: list[Problem] = []
    supplier = read_supplier(Path(args.config).absolute(), problems, plugins)
    if supplier is None:
        raise ConfigError(problems)
    unknown = sorted(set(args.checks or ()) - set(CHECKS))
    if unknown:
        print(f"error: no such check: {', '.join(unknown)} (checks: {', '.join(CHECKS)})")
        return 2
    run = functools.partial(run_conformance, plugins[supplier.plugin], supplier, checks=args.checks)
    report = trio.run(run)
    print(report)
    return 0 if report.ok else 1
