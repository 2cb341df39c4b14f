"""``kamen-router check`` as an operator runs it: a real process, from a
directory that is not the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-VALUE-4b1d2c3e"


def check(config: Path | str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KAMEN_ROUTER")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "kamen_router", "check", "-c", str(config)],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def routing_table(stdout: str) -> dict[str, list[tuple[str, Decimal]]]:
    """``{sku: [(supplier, price), ...]}`` in printed order."""
    table: dict[str, list[tuple[str, Decimal]]] = {}
    for line in stdout.splitlines():
        m = re.match(r"^\s+(\S+)\s{2,}(.+)$", line)
        if m:
            table[m.group(1)] = [
                (name, Decimal(price))
                for name, price in re.findall(r"([a-z0-9][a-z0-9_-]*) (\d+\.\d+)", m.group(2))
            ]
    return table


def shipped_offers() -> dict[str, list[tuple[str, Decimal]]]:
    """What the shipped supplier files offer, read independently of the
    package: {sku: [(supplier, price)]}."""
    offers: dict[str, list[tuple[str, Decimal]]] = {}
    for path in sorted((REPO / "suppliers.d").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        for sku, offer in data["offers"].items():
            price = Decimal(str(offer["price"])).quantize(Decimal("0.01"))
            offers.setdefault(sku, []).append((path.stem, price))
    return offers


def test_check_the_shipped_config(tmp_path: Path) -> None:
    result = check(REPO / "router.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    expected = shipped_offers()
    assert (
        f"OK, {len(list((REPO / 'suppliers.d').glob('*.yaml')))} suppliers, {len(expected)} skus"
        in result.stdout
    )
    table = routing_table(result.stdout)
    assert set(table) == set(expected)
    for sku, offers in expected.items():
        printed = table[sku]
        assert sorted(printed) == sorted(offers), sku
        prices = [price for _, price in printed]
        assert prices == sorted(prices), f"{sku}: not cheapest first: {printed}"


def test_check_prints_prices_exactly(tmp_path: Path) -> None:
    result = check(REPO / "router.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # two decimals as written in the files, never a float artefact
    for sku, offers in shipped_offers().items():
        for name, price in offers:
            assert f"{name} {price}" in result.stdout, (sku, name, price)


def test_check_never_prints_a_secret(tmp_path: Path) -> None:
    result = check(REPO / "router.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for key in (REPO / "suppliers.d/demo-secrets").glob("*.key"):
        secret = key.read_text().strip()
        assert secret not in result.stdout
        assert secret not in result.stderr


def write(root: Path, router: str, suppliers: dict[str, str]) -> Path:
    (root / "suppliers.d").mkdir(parents=True)
    for name, text in suppliers.items():
        (root / "suppliers.d" / name).write_text(text)
    (root / "router.yaml").write_text(router)
    return root / "router.yaml"


ROUTER = """\
journal: {plaintext: true}
suppliers_dir: suppliers.d
skus:
  steam-50: {}
  qq-coin-10: {}
"""


def sim_supplier(*, price: str = "48.50", extra: str = "", enabled: str = "true") -> str:
    return f"""\
plugin: sim
enabled: {enabled}
credentials: {{api_key: "${{KR_TEST_KEY}}"}}
offers:
  steam-50: {{product_id: "S50", price: {price}}}
  qq-coin-10: {{product_id: "Q10", price: 9.60}}
simulate: {{}}
{extra}"""


def test_check_orders_by_price_and_flags_disabled_suppliers(tmp_path: Path) -> None:
    path = write(
        tmp_path / "cfg",
        ROUTER,
        {
            "dear.yaml": sim_supplier(price="49.00"),
            "cheap.yaml": sim_supplier(price="47.10"),
            "off.yaml": sim_supplier(price="46.00", enabled="false"),
        },
    )
    result = check(path, cwd=tmp_path, KR_TEST_KEY=SECRET)
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.strip().startswith("steam-50"))
    assert line.index("off 46.00 (disabled)") < line.index("cheap 47.10") < line.index("dear 49.00")
    assert SECRET not in result.stdout + result.stderr


def test_check_a_broken_config_lists_every_error(tmp_path: Path) -> None:
    router = ROUTER + "orders: {default_deadline_s: -1, bogus: true}\n"
    path = write(
        tmp_path,
        router,
        {
            "alpha.yaml": sim_supplier(extra="limits: {rate_per_s: fast}\n"),
            "beta.yaml": sim_supplier().replace("plugin: sim", "plugin: nosuch"),
            "gamma.yaml": "plugin: sim\n  offers: [\n",
        },
    )
    result = check(path, cwd=tmp_path, KR_TEST_KEY=SECRET)
    assert result.returncode == 1
    err = result.stderr
    assert "Traceback" not in err
    assert "configuration has 5 error(s)" in err
    # file and key path on every line, paths relative to where the operator stands
    assert "router.yaml: orders.default_deadline_s: must be at least 1" in err
    assert "router.yaml: orders.bogus: unknown key" in err
    assert "suppliers.d/alpha.yaml: limits.rate_per_s: expected a number" in err
    assert "suppliers.d/beta.yaml: plugin: unknown plugin 'nosuch' (known: " in err
    assert re.search(r"suppliers\.d/gamma\.yaml: not valid YAML: line 2\b", err)
    assert SECRET not in result.stdout + err
    assert "OK" not in result.stdout


def test_check_a_missing_env_var(tmp_path: Path) -> None:
    path = write(tmp_path, ROUTER, {"alpha.yaml": sim_supplier()})
    result = check(path, cwd=tmp_path)  # KR_TEST_KEY not set
    assert result.returncode == 1
    assert (
        "suppliers.d/alpha.yaml: credentials.api_key: environment variable KR_TEST_KEY is not set"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_check_a_missing_config_file(tmp_path: Path) -> None:
    result = check(tmp_path / "nope.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "nope.yaml" in result.stderr
    assert "not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_a_broken_plugin(tmp_path: Path) -> None:
    path = write(tmp_path, ROUTER + "plugins_dir: plugins\n", {"alpha.yaml": sim_supplier()})
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins/acme.py").write_text("PLUGIN = 42\n")
    result = check(path, cwd=tmp_path, KR_TEST_KEY=SECRET)
    assert result.returncode == 1
    assert "router.yaml: plugins_dir: plugin 'acme'" in result.stderr
    assert "expected a class" in result.stderr
    assert "Traceback" not in result.stderr
