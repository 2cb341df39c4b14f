"""Wiring: the journal, the simulated upstreams, the plugin clients, the
dispatcher and the listeners, in one nursery.

Start order matters: the order socket is bound first (so a second daemon on
the same path is refused early), recovery of open orders runs next, and only
then does ``serve_daemon`` report started; until recovery is done the order
API answers 503 ``starting``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import attrs
import httpx
import trio

from .api import CallbackApi, OrderApi
from .config import RouterConfig, SupplierConfig
from .dispatch import Dispatcher
from .http import HttpServer, bound_port, open_tcp_listener, open_unix_listener
from .journal import open_journal
from .metrics import Metrics
from .plugin import Plugin, PluginRegistry, SupplierContext

log = logging.getLogger("kamen_router.daemon")


@attrs.frozen
class DaemonInfo:
    """What a started daemon serves, for callers and tests."""

    socket: Path
    metrics_url: str | None
    simulators: Mapping[str, str]
    dispatcher: Dispatcher
    metrics: Metrics


async def serve_simulated_supplier(
    plugin: type[Plugin],
    supplier: SupplierConfig,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve an in-process upstream speaking ``plugin``'s protocol for
    ``supplier`` on loopback; reports its base URL when listening."""
    factory = getattr(plugin, "simulator", None)
    if factory is None:
        raise RuntimeError(f"plugin {plugin.name!r} has no simulator")
    assert supplier.simulate is not None
    handler = factory(supplier)
    listen = supplier.simulate.listen
    listener = await open_tcp_listener(listen.host, listen.port)
    url = f"http://{listen.host}:{bound_port(listener)}"
    server = HttpServer(handler, name=f"sim:{supplier.name}")
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, [listener])
        task_status.started(url)


async def serve_daemon(
    config: RouterConfig,
    plugins: PluginRegistry,
    *,
    task_status: trio.TaskStatus[DaemonInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until cancelled."""
    journal = await open_journal(config.journal.path)
    socket_path = config.api.socket
    socket_bound = False
    try:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        async with httpx.AsyncClient(trust_env=False, limits=limits) as http, trio.open_nursery() as nursery:
            api_listener = await open_unix_listener(socket_path, config.api.socket_mode)
            socket_bound = True
            simulators: dict[str, str] = {}
            clients: dict[str, Plugin] = {}
            for name, supplier in config.suppliers.items():
                plugin = plugins[supplier.plugin]
                endpoint = supplier.endpoint
                if supplier.simulate is not None:
                    endpoint = simulators[name] = await nursery.start(
                        serve_simulated_supplier, plugin, supplier
                    )
                assert endpoint is not None
                clients[name] = plugin(SupplierContext(supplier, endpoint, http))
            metrics = Metrics()
            metrics.register_suppliers(list(config.suppliers))
            dispatcher = Dispatcher(config, clients, journal, metrics)
            metrics.watch_suppliers(dispatcher.suppliers_snapshot)
            await nursery.start(HttpServer(OrderApi(dispatcher), name="api").serve, [api_listener])
            metrics_url = None
            if config.metrics.listen is not None:
                m = config.metrics.listen
                metrics_listener = await open_tcp_listener(m.host, m.port)
                metrics_url = f"http://{m.host}:{bound_port(metrics_listener)}/metrics"
                await nursery.start(HttpServer(metrics.handle, name="metrics").serve, [metrics_listener])
            if config.callbacks.listen is not None:
                c = config.callbacks.listen
                callback_listener = await open_tcp_listener(c.host, c.port)
                local = f"http://{c.host}:{bound_port(callback_listener)}"
                dispatcher.callback_base = (config.callbacks.public_url or local).rstrip("/")
                await nursery.start(
                    HttpServer(CallbackApi(dispatcher), name="callbacks").serve, [callback_listener]
                )
            await nursery.start(dispatcher.serve)
            log.info(
                "ready: orders on %s, metrics on %s, %d suppliers (%d simulated)",
                socket_path,
                metrics_url or "-",
                len(clients),
                len(simulators),
            )
            task_status.started(DaemonInfo(socket_path, metrics_url, simulators, dispatcher, metrics))
    finally:
        with trio.CancelScope(shield=True):
            await journal.close()
        if socket_bound:  # never remove a socket another daemon owns
            socket_path.unlink(missing_ok=True)
