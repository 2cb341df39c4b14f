"""Shared test helpers: configs in tmp_path, a real daemon in-process, and
ledger reads from the simulators."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml

from kamen_router.config import RouterConfig, load_config
from kamen_router.crypto import write_new_key
from kamen_router.daemon import DaemonInfo, serve_daemon
from kamen_router.plugin import load_plugins

SKUS = {
    "mobile-cmcc-100": {"name": "China Mobile 100"},
    "steam-50": {"name": "Steam 50"},
}


def supplier(
    prices: Mapping[str, float | str],
    *,
    simulate: Mapping[str, Any] | None = None,
    endpoint: str | None = None,
    enabled: bool = True,
    timeout_s: float = 2,
    **extra: Any,
) -> dict[str, Any]:
    """A supplier file's content for the sim plugin, fast and fault-free
    unless ``simulate`` says otherwise."""
    data: dict[str, Any] = {
        "plugin": "sim",
        "enabled": enabled,
        "credentials": {"api_key": "test-key-0123456789"},
        "limits": {"rate_per_s": 1000, "max_in_flight": 100, "timeout_s": timeout_s},
        "offers": {sku: {"product_id": f"P-{sku}", "price": str(price)} for sku, price in prices.items()},
    }
    if endpoint is not None:
        data["endpoint"] = endpoint
    else:
        data["simulate"] = {"latency_ms": [1, 3], "seed": 1, **(simulate or {})}
    data.update(extra)
    return data


def write_config(
    root: Path,
    suppliers: Mapping[str, Mapping[str, Any]],
    *,
    skus: Mapping[str, Any] | None = None,
    **router: Any,
) -> Path:
    """Write router.yaml and suppliers.d/ under ``root``; return router.yaml."""
    sdir = root / "suppliers.d"
    sdir.mkdir(parents=True, exist_ok=True)
    for old in sdir.glob("*.yaml"):
        old.unlink()
    for name, data in suppliers.items():
        # prices as strings in YAML would be rejected: write them as numbers
        text = yaml.safe_dump(_prices_as_numbers(data), sort_keys=False)
        (sdir / f"{name}.yaml").write_text(text)
    key = root / "var/journal.key"
    if not key.exists():
        write_new_key(key)
    config: dict[str, Any] = {
        "api": {"socket": "run/orders.sock"},
        "metrics": {"listen": "127.0.0.1:0"},
        "journal": {"path": "var/journal.sqlite3", "key_file": "var/journal.key"},
        "suppliers_dir": "suppliers.d",
        # no exploration: the tests assert which supplier gets each order
        "routing": {"retry_backoff_s": 0.01, "exploration": {"share": 0}},
        "skus": dict(skus if skus is not None else SKUS),
    }
    for key, value in router.items():
        config[key] = value
    path = root / "router.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _prices_as_numbers(data: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(data)
    if "offers" in out:
        out["offers"] = {
            sku: {**offer, "price": float(offer["price"])} if isinstance(offer.get("price"), str) else offer
            for sku, offer in out["offers"].items()
        }
    return out


def load(path: Path) -> RouterConfig:
    return load_config(path)


class RunningDaemon:
    """A daemon started in the test's nursery; ``stop()`` cancels it."""

    def __init__(self, info: DaemonInfo, scope: trio.CancelScope, done: trio.Event) -> None:
        self.info = info
        self.scope = scope
        self.done = done
        self.http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(info.socket)),
            base_url="http://t",
            timeout=30,
            trust_env=False,
        )

    async def post(self, body: Mapping[str, Any] | bytes, **kw: Any) -> httpx.Response:
        if isinstance(body, bytes):
            return await self.http.post(
                "/v1/orders", content=body, headers={"content-type": "application/json"}, **kw
            )
        return await self.http.post("/v1/orders", json=body, **kw)

    async def order(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST and wait for a final state; return the reply body."""
        response = await self.post({"wait_s": 20, **body})
        assert response.status_code in (200, 202), response.text
        data: dict[str, Any] = response.json()
        return data

    async def get(self, order_id: str, wait_s: float | None = None) -> httpx.Response:
        params = {"wait_s": str(wait_s)} if wait_s else None
        return await self.http.get(f"/v1/orders/{order_id}", params=params)

    async def scrape(self) -> str:
        assert self.info.metrics_url is not None
        async with httpx.AsyncClient(trust_env=False) as http:
            return (await http.get(self.info.metrics_url)).text

    async def ledger(self, name: str) -> list[dict[str, Any]]:
        return await ledger(self.info.simulators[name])

    async def stop(self) -> None:
        await self.http.aclose()
        self.scope.cancel()
        await self.done.wait()


async def until(predicate: Any, within: float, what: str, step: float = 0.05) -> None:
    """Poll ``predicate`` (sync or async) until true, for at most ``within`` s."""
    with trio.move_on_after(within):
        while True:
            result = predicate()
            if hasattr(result, "__await__"):
                result = await result
            if result:
                return
            await trio.sleep(step)
    raise AssertionError(f"timed out after {within} s waiting for {what}")


async def ledger(base_url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(trust_env=False) as http:
        reply = await http.get(f"{base_url}/ledger")
        reply.raise_for_status()
        orders: list[dict[str, Any]] = reply.json()["orders"]
        return orders


async def start_daemon(nursery: trio.Nursery, config_path: Path) -> RunningDaemon:
    config = load_config(config_path)
    plugins = load_plugins(config.plugins_dir)
    scope = trio.CancelScope()
    done = trio.Event()

    async def run(task_status: trio.TaskStatus[DaemonInfo] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with scope:
                await serve_daemon(config, plugins, task_status=task_status)
        finally:
            done.set()

    info = await nursery.start(run)
    return RunningDaemon(info, scope, done)


@pytest.fixture
async def make_daemon(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await make_daemon(suppliers, **router)`` writes a config and starts a
    daemon on it."""

    started: list[RunningDaemon] = []

    async def make(suppliers: Mapping[str, Mapping[str, Any]], **router: Any) -> RunningDaemon:
        path = write_config(tmp_path, suppliers, **router)
        daemon = await start_daemon(nursery, path)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        await daemon.http.aclose()
