"""Wiring: the journal, the simulated upstreams, the plugin clients, the
dispatcher and the listeners, in one nursery; reload and shutdown.

Start order matters: the order socket is bound first (so a second daemon on
the same path is refused early), recovery of open orders runs next, and only
then is the daemon ready (``READY=1``); until then the order API answers 503
``starting``.

Reload (SIGHUP, or a change seen by polling router.yaml and suppliers.d/)
parses and validates everything first and swaps only if all of it is good;
a bad reload keeps the running config and says which file and key are
wrong. Shutdown (SIGTERM, SIGINT) stops taking orders, lets submits on the
wire finish for ``orders.shutdown_grace_s``, and leaves every other order in
the journal for the next start.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
import httpx
import trio

from . import logs
from .api import CallbackApi, OrderApi
from .config import HostPort, RouterConfig, SupplierConfig, load_config
from .crypto import FieldCipher
from .dispatch import Dispatcher
from .errors import ConfigError, KamenRouterError
from .http import HttpServer, bound_port, open_tcp_listener, open_unix_listener
from .journal import open_journal
from .logs import SECRETS, event
from .metrics import Metrics
from .notify import Notifier, inherited_socket
from .plugin import Plugin, PluginRegistry, SupplierContext, load_plugins
from .upstream import supplier_client, tls_context

log = logging.getLogger("kamen_router.daemon")

#: how often router.yaml and suppliers.d/ are checked for changes
POLL_S = 2.0


@attrs.frozen
class DaemonInfo:
    """What a started daemon serves, for callers and tests."""

    socket: Path
    metrics_url: str | None
    callbacks_url: str | None
    simulators: Mapping[str, str]
    dispatcher: Dispatcher
    metrics: Metrics
    daemon: Daemon


async def _flush_logs() -> None:
    """Write batched log lines that have waited ``logs.BATCH_S``; lines that
    keep coming flush each other."""
    while True:
        await trio.sleep(logs.BATCH_S)
        logs.flush_due()


async def serve_simulated_supplier(
    plugin: type[Plugin],
    supplier: SupplierConfig,
    *,
    callback_url: str | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve an in-process upstream speaking ``plugin``'s protocol for
    ``supplier`` on loopback; reports its base URL when listening.
    ``callback_url`` is the notify address kept on file, for protocols whose
    suppliers keep one per account instead of taking one per order."""
    factory = getattr(plugin, "simulator", None)
    if factory is None:
        raise KamenRouterError(f"plugin {plugin.name!r} has no simulator")
    assert supplier.simulate is not None
    handler = factory(supplier)
    if callback_url is not None and hasattr(handler, "callback_url_on_file"):
        handler.callback_url_on_file = callback_url
    listen = supplier.simulate.listen
    listener = await open_tcp_listener(listen.host, listen.port)
    url = f"http://{HostPort(listen.host, bound_port(listener))}"
    server = HttpServer(handler, name=f"sim:{supplier.name}")
    async with trio.open_nursery() as nursery:
        run = getattr(handler, "run", None)
        if run is not None:  # background work of its own: pending orders, callbacks
            await nursery.start(run)
        await nursery.start(server.serve, [listener])
        task_status.started(url)


def _fingerprint(config: RouterConfig) -> tuple[tuple[str, int, int], ...]:
    paths = [config.file]
    with contextlib.suppress(OSError):
        paths += sorted(p for p in config.suppliers_dir.iterdir() if p.suffix in (".yaml", ".yml"))
    out = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)


#: settings bound at start; a reload that changes them is logged, not applied
_RESTART_ONLY: tuple[tuple[str, Callable[[RouterConfig], object]], ...] = (
    ("api.socket", lambda c: c.api.socket),
    ("api.socket_mode", lambda c: c.api.socket_mode),
    ("api.socket_group", lambda c: c.api.socket_group),
    ("metrics.listen", lambda c: c.metrics.listen),
    ("callbacks.listen", lambda c: c.callbacks.listen),
    ("callbacks.public_url", lambda c: c.callbacks.public_url),
    # the cipher is built at start: a new key_file or old_key_files would
    # otherwise be taken silently and never used
    ("journal", lambda c: c.journal),
    ("logging", lambda c: c.logging),
)


class Daemon:
    """One running kamen-router."""

    def __init__(
        self,
        config: RouterConfig,
        plugins: PluginRegistry,
        *,
        notifier: Notifier | None = None,
        handle_signals: bool = False,
        poll_s: float | None = POLL_S,
    ) -> None:
        self.config = config
        self.plugins = plugins
        self.notifier = notifier or Notifier({})
        self.handle_signals = handle_signals
        self.poll_s = poll_s
        self.metrics = Metrics()
        self.simulators: dict[str, str] = {}
        self._stop = trio.Event()
        self._nursery: trio.Nursery | None = None
        #: one HTTP client per supplier (see ``upstream``), closed on exit
        self._http: dict[str, httpx.AsyncClient] = {}
        self._pools: contextlib.AsyncExitStack | None = None
        self._tls: ssl.SSLContext | None = None
        self._dispatcher: Dispatcher | None = None
        self._callback_base: str | None = None
        self._reload_lock = trio.Lock()
        self._fingerprint = _fingerprint(config)

    # ---------------------------------------------------------------- control

    def shutdown(self) -> None:
        """Begin a graceful shutdown (idempotent)."""
        self._stop.set()

    async def reload(self) -> bool:
        """Load and validate the configuration again; swap it in only if all
        of it is good. Returns whether it was applied."""
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                return await self._reload()
            finally:
                self.notifier.ready(self._status())

    async def _reload(self) -> bool:
        path = self.config.file
        self._fingerprint = _fingerprint(self.config)
        try:
            new = await trio.to_thread.run_sync(load_config, path)
            plugins = await trio.to_thread.run_sync(load_plugins, new.plugins_dir)
        except ConfigError as exc:
            for problem in exc.problems:
                event(
                    log,
                    "reload refused",
                    logging.ERROR,
                    file=problem.file,
                    key=problem.key,
                    problem=problem.message,
                )
            self.metrics.reload_failed()
            return False
        except KamenRouterError as exc:
            event(log, "reload refused", logging.ERROR, problem=str(exc))
            self.metrics.reload_failed()
            return False
        for key, read in _RESTART_ONLY:
            if read(new) != read(self.config):
                event(log, "setting changed; it takes effect after a restart", logging.WARNING, key=key)
                new = _keep_bound(new, self.config, key)
        # keep the fingerprint taken before loading: a file written while the
        # load ran must still look changed to the next poll
        await self._apply(new, plugins)
        self.metrics.reload_succeeded()
        return True

    async def _apply(self, new: RouterConfig, plugins: PluginRegistry) -> None:
        assert self._dispatcher is not None
        old = self.config
        clients: dict[str, Plugin] = {}
        for name, supplier in new.suppliers.items():
            before = old.suppliers.get(name)
            if before is not None and before == supplier:
                continue
            if before is not None and before.simulate != supplier.simulate and name in self.simulators:
                event(log, "simulate changes take effect after a restart", logging.WARNING, supplier=name)
            clients[name] = await self._client(supplier, plugins[supplier.plugin])
        added = [n for n in new.suppliers if n not in old.suppliers]
        removed = [n for n in old.suppliers if n not in new.suppliers]
        self.config = new
        self.plugins = plugins
        SECRETS.set_secrets(s.reveal() for sup in new.suppliers.values() for s in sup.credentials.values())
        self._dispatcher.reconfigure(new, clients)
        event(
            log,
            "configuration reloaded",
            suppliers=len(new.suppliers),
            added=",".join(added) or "-",
            removed=",".join(removed) or "-",
            changed=",".join(n for n in clients if n not in added) or "-",
        )

    async def _client(self, supplier: SupplierConfig, plugin: type[Plugin]) -> Plugin:
        assert self._nursery is not None and self._pools is not None
        endpoint = supplier.endpoint
        if supplier.simulate is not None:
            if supplier.name not in self.simulators:
                callback_url = (
                    None
                    if self._callback_base is None
                    else f"{self._callback_base}/callbacks/{supplier.name}"
                )
                self.simulators[supplier.name] = await self._nursery.start(
                    functools.partial(serve_simulated_supplier, plugin, supplier, callback_url=callback_url)
                )
            endpoint = self.simulators[supplier.name]
        assert endpoint is not None
        http = self._http.get(supplier.name)
        if http is None:
            # a client per supplier: httpcore's work per request grows with
            # the connections a pool holds, so a shared pool made each
            # request pay for every other supplier's connections; it also
            # keeps one slow supplier from holding the connections the
            # others need
            if self._tls is None:
                self._tls = await trio.to_thread.run_sync(tls_context)
            http = await self._pools.enter_async_context(supplier_client(self._tls))
            self._http[supplier.name] = http
        return plugin(SupplierContext(supplier, endpoint, http))

    def _status(self) -> str:
        d = self._dispatcher
        open_orders = 0 if d is None else d.open_count
        return f"{len(self.config.suppliers)} suppliers, {open_orders} open orders"

    # -------------------------------------------------------------------- run

    async def run(self, *, task_status: trio.TaskStatus[DaemonInfo] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until ``shutdown()`` (or a signal, with ``handle_signals``)."""
        config = self.config
        # bind the order socket first: a second daemon on the same path is
        # refused before it touches the journal
        socket_path = config.api.socket
        socket_ours = False
        inherited = inherited_socket()
        if inherited is not None:
            api_listener = trio.SocketListener(trio.socket.from_stdlib_socket(inherited))
            socket_path = Path(str(inherited.getsockname()) or socket_path)
        else:
            api_listener = await open_unix_listener(
                socket_path, config.api.socket_mode, config.api.socket_group
            )
            socket_ours = True
        journal = None
        try:
            j = config.journal
            cipher = None if j.key_file is None else FieldCipher.from_files(j.key_file, j.old_key_files)
            journal = await open_journal(j.path, cipher)
            self.metrics.watch_journal(journal)
            async with (
                contextlib.AsyncExitStack() as pools,
                trio.open_nursery() as nursery,
            ):
                self._nursery, self._pools = nursery, pools
                nursery.start_soon(_flush_logs)
                if self.handle_signals:
                    await nursery.start(self._serve_signals)
                # listeners first: simulated suppliers whose protocol keeps
                # the notify URL per account need the callback address
                metrics_listener = callback_listener = None
                metrics_url = callbacks_url = None
                if config.metrics.listen is not None:
                    m = config.metrics.listen
                    metrics_listener = await open_tcp_listener(m.host, m.port)
                    metrics_url = f"http://{HostPort(m.host, bound_port(metrics_listener))}/metrics"
                if config.callbacks.listen is not None:
                    c = config.callbacks.listen
                    callback_listener = await open_tcp_listener(c.host, c.port)
                    callbacks_url = f"http://{HostPort(c.host, bound_port(callback_listener))}"
                    self._callback_base = (config.callbacks.public_url or callbacks_url).rstrip("/")
                clients = {
                    name: await self._client(sup, self.plugins[sup.plugin])
                    for name, sup in config.suppliers.items()
                }
                self.metrics.register_suppliers(list(config.suppliers))
                dispatcher = self._dispatcher = Dispatcher(config, clients, journal, self.metrics)
                dispatcher.callback_base = self._callback_base
                self.metrics.watch_suppliers(lambda: dispatcher.suppliers_snapshot(with_offers=False))
                await nursery.start(HttpServer(OrderApi(dispatcher), name="api").serve, [api_listener])
                if metrics_listener is not None:
                    await nursery.start(
                        HttpServer(self.metrics.handle, name="metrics").serve, [metrics_listener]
                    )
                if callback_listener is not None:
                    await nursery.start(
                        HttpServer(CallbackApi(dispatcher), name="callbacks").serve, [callback_listener]
                    )
                await nursery.start(dispatcher.serve)
                await nursery.start(self.notifier.serve_watchdog)
                if self.poll_s:
                    nursery.start_soon(self._watch_files)
                self.metrics.reload_succeeded()
                event(
                    log,
                    "ready",
                    socket=socket_path,
                    metrics=metrics_url or "-",
                    callbacks=callbacks_url or "-",
                    suppliers=len(clients),
                    simulated=len(self.simulators),
                    recovered=dispatcher.open_count,
                )
                self.notifier.ready(self._status())
                task_status.started(
                    DaemonInfo(
                        socket_path,
                        metrics_url,
                        callbacks_url,
                        self.simulators,
                        dispatcher,
                        self.metrics,
                        self,
                    )
                )
                await self._stop.wait()
                await self._drain(dispatcher)
                nursery.cancel_scope.cancel()
        finally:
            if journal is not None:
                with trio.CancelScope(shield=True):
                    await journal.close()
            await api_listener.aclose()
            if socket_ours:  # never remove a socket another daemon owns
                socket_path.unlink(missing_ok=True)
            event(log, "stopped")

    async def _drain(self, dispatcher: Dispatcher) -> None:
        self.notifier.stopping()
        grace = self.config.orders.shutdown_grace_s
        event(log, "shutting down", grace_s=grace, open_orders=dispatcher.open_count)
        dispatcher.draining = True
        start = time.monotonic()
        with trio.move_on_after(grace):
            await dispatcher.wait_submits_done()
        left = dispatcher.submits_in_flight
        event(
            log,
            "drained" if not left else "grace period over",
            logging.INFO if not left else logging.WARNING,
            submits_in_flight=left,
            waited_s=round(time.monotonic() - start, 2),
        )

    async def _serve_signals(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    event(log, "SIGHUP: reloading")
                    await self.reload()
                else:
                    event(log, f"{signal.Signals(signum).name}: shutting down")
                    self.shutdown()

    async def _watch_files(self) -> None:
        assert self.poll_s
        while True:
            await trio.sleep(self.poll_s)
            current = await trio.to_thread.run_sync(_fingerprint, self.config)
            if current != self._fingerprint:
                event(log, "configuration files changed: reloading")
                await self.reload()


def _keep_bound(new: RouterConfig, old: RouterConfig, key: str) -> RouterConfig:
    if key.startswith("api."):
        return attrs.evolve(new, api=old.api)
    if key == "metrics.listen":
        return attrs.evolve(new, metrics=old.metrics)
    if key.startswith("callbacks."):
        return attrs.evolve(
            new,
            callbacks=attrs.evolve(
                new.callbacks, listen=old.callbacks.listen, public_url=old.callbacks.public_url
            ),
        )
    if key == "journal":
        return attrs.evolve(new, journal=old.journal)
    if key == "logging":
        return attrs.evolve(new, logging=old.logging)
    return new


async def serve_daemon(
    config: RouterConfig,
    plugins: PluginRegistry,
    *,
    task_status: trio.TaskStatus[DaemonInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a daemon on ``config`` until cancelled (no signals, no polling)."""
    await Daemon(config, plugins, poll_s=None).run(task_status=task_status)


__all__ = ["Daemon", "DaemonInfo", "serve_daemon", "serve_simulated_supplier"]
