"""Supplier simulators, one per protocol.

A supplier with a ``simulate`` block gets an in-process upstream on loopback
that speaks its plugin's protocol, so the daemon, the demo, the tests and the
benchmarks drive the real plugin over real HTTP. This package holds ``sim``,
the reference protocol: a small signed JSON-over-HTTP API
(``kamen_router.sim.protocol``), its simulated server
(``kamen_router.sim.server``) and its client plugin
(``kamen_router.sim.plugin``). A real protocol's simulator follows the same
pattern.
"""
