"""The plugin conformance kit: a plugin against its own simulator.

A plugin and its simulator are written from the same protocol document, and
each checks the other: the simulator verifies every signature it receives
and signs what it sends (replies, callbacks), the plugin does the same from
its side. The kit starts the simulator on loopback, binds the plugin to it
over real HTTP, drives every answer and every fault the simulator can give,
and checks that the plugin maps each to the right outcome
(``kamen_router.outcome``):

- deliveries (a top-up with a receipt, cards by quantity), pending then
  delivered, failed;
- refusals: out of stock, insufficient balance, product unavailable, price
  above ceiling, invalid account, maintenance, rate limited, and a wrong
  signature (which also proves the simulator checks signatures);
- a reply spoiled after the order was taken (timeout, reset, 5xx, system
  error, "duplicate order number") is never anything that ends the attempt,
  and a later query finds the order;
- queries: NotFound for an unknown key and through a not-found window;
- attempt-key reuse never creates a second order;
- callbacks (when the plugin takes them): genuine ones parse right and are
  acknowledged, forged ones raise ``CallbackRejected``, duplicated, delayed,
  reordered and early ones are harmless;
- ``SupplierUnreachable`` for a refused connection, ``balance`` and
  ``catalog`` against the simulator's books;
- no credential ever appears in the plugin's repr, attributes, exceptions
  or outcomes, in any check.

``run_conformance(plugin_cls, supplier)`` returns a ``Report``;
``conformance_tests(plugin_cls, supplier)`` makes a pytest test of it.
Where a protocol cannot express something (no code for "insufficient
balance", no cards), its ``Profile`` says so, check by check, with the
reason, and the kit accepts the documented safe answer instead (usually
``unknown``). A profile is the ``conformance`` attribute of the plugin class
or of its simulator class.
"""

from ._callbacks import CHECKS as CHECKS
from ._rig import Leeway as Leeway
from ._rig import Profile as Profile
from ._rig import Sample as Sample
from ._rig import accept as accept
from ._rig import skip as skip
from ._run import CheckResult as CheckResult
from ._run import Report as Report
from ._run import Verdict as Verdict
from ._run import add_conform_parser as add_conform_parser
from ._run import check_names as check_names
from ._run import cmd_conform as cmd_conform
from ._run import conformance_tests as conformance_tests
from ._run import profile_of as profile_of
from ._run import run_conformance as run_conformance

__all__ = [
    "CHECKS",
    "CheckResult",
    "Leeway",
    "Profile",
    "Report",
    "Sample",
    "Verdict",
    "accept",
    "add_conform_parser",
    "check_names",
    "cmd_conform",
    "conformance_tests",
    "profile_of",
    "run_conformance",
    "skip",
]
