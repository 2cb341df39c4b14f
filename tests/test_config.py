"""router.yaml and suppliers.d/: every kind of mistake an operator can make
is reported with the file and the key path, all at once, and never with a
secret in the message."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import pytest

from kamen_router.config import RouterConfig, Secret, load_config
from kamen_router.errors import ConfigError, Problem
from kamen_router.plugin import QuerySchedule, validate_plugin

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-VALUE-9f8e7d6c5b4a"


class FakeSim:
    """A minimal plugin that honours the contract, registered as ``sim`` so
    these tests do not depend on the real protocol's code."""

    name = "sim"
    required_credentials = frozenset({"api_key"})
    schedule = QuerySchedule()
    #: a stand-in: these tests never start it
    simulator = object

    def __init__(self, context: object) -> None:
        self.context = context

    async def submit(self, request: object) -> object:
        raise NotImplementedError

    async def query(self, request: object) -> object:
        raise NotImplementedError

    async def balance(self) -> None:
        return None


class FakeFulu(FakeSim):
    name = "fulu"
    required_credentials = frozenset({"app_key", "app_secret"})


PLUGINS = {
    "sim": validate_plugin(FakeSim, "sim", __name__),
    "fulu": validate_plugin(FakeFulu, "fulu", __name__),
}

ROUTER = """\
api: {socket: run/orders.sock, socket_mode: "0660"}
journal: {path: var/journal.sqlite3, plaintext: true}
suppliers_dir: suppliers.d
orders: {default_deadline_s: 600}
skus:
  mobile-cmcc-100: {name: China Mobile 100}
  steam-50: {name: Steam 50}
"""

ALPHA = """\
plugin: sim
credentials: {api_key: alpha-key}
limits: {rate_per_s: 20, max_in_flight: 50, timeout_s: 5}
offers:
  mobile-cmcc-100: {product_id: "A100", price: 99.20}
  steam-50: {product_id: "A50", price: 48.50}
simulate: {fail_rate: 0.1}
"""

BETA = """\
plugin: sim
credentials: {api_key: beta-key}
offers:
  mobile-cmcc-100: {product_id: "B100", price: 98.90}
simulate: {}
"""


def write(
    root: Path,
    router: str = ROUTER,
    suppliers: Mapping[str, str] | None = None,
) -> Path:
    """Write ``root/router.yaml`` and ``root/suppliers.d/<file>`` (keys are
    file names, such as ``alpha.yaml``); return the router.yaml path."""
    root.mkdir(parents=True, exist_ok=True)
    sdir = root / "suppliers.d"
    sdir.mkdir(exist_ok=True)
    for name, text in (
        suppliers if suppliers is not None else {"alpha.yaml": ALPHA, "beta.yaml": BETA}
    ).items():
        (sdir / name).write_text(textwrap.dedent(text), encoding="utf-8")
    path = root / "router.yaml"
    path.write_text(textwrap.dedent(router), encoding="utf-8")
    return path


def load(path: Path) -> RouterConfig:
    return load_config(path, plugins=PLUGINS)


def fails(path: Path, plugins: object = PLUGINS) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, plugins=plugins)  # type: ignore[arg-type]
    assert info.value.problems, "a ConfigError must carry its problems"
    return info.value


def same_file(shown: str, path: Path) -> bool:
    return Path(shown).resolve() == path.resolve()


def problem(exc: ConfigError, file: Path, key: str, *fragments: str) -> Problem:
    """The problem reported for ``file`` at ``key``; its message holds every
    fragment, and ``str(exc)`` shows it as ``file: key: message``."""
    found = [p for p in exc.problems if same_file(p.file, file) and p.key == key]
    assert found, f"no problem at {file.name}: {key!r}; got:\n{exc}"
    p = found[0]
    for fragment in fragments:
        assert fragment in p.message, f"{fragment!r} not in {p.message!r}"
    text = str(exc)
    where = f"{p.file}: {key}" if key else p.file
    assert f"{where}: {p.message}" in text
    assert file.name in text
    return p


def keys(exc: ConfigError) -> set[tuple[str, str]]:
    return {(Path(p.file).resolve().name, p.key) for p in exc.problems}


# ------------------------------------------------------------- the good path


def test_a_valid_config_loads(tmp_path: Path) -> None:
    config = load(write(tmp_path))
    assert set(config.suppliers) == {"alpha", "beta"}
    assert list(config.skus) == ["mobile-cmcc-100", "steam-50"]
    assert config.skus["mobile-cmcc-100"].name == "China Mobile 100"
    alpha = config.suppliers["alpha"]
    assert alpha.plugin == "sim"
    assert alpha.enabled is True
    assert alpha.limits.rate_per_s == 20
    assert alpha.limits.max_in_flight == 50
    assert alpha.limits.timeout_s == 5
    assert alpha.simulate is not None and alpha.simulate.fail_rate == 0.1
    assert alpha.credentials["api_key"].reveal() == "alpha-key"
    assert config.api.socket_mode == 0o660
    assert [s.name for s, _ in config.offers_for("mobile-cmcc-100")] == ["alpha", "beta"]


def test_skus_default_to_everything_offered_when_not_listed(tmp_path: Path) -> None:
    config = load(write(tmp_path, router="suppliers_dir: suppliers.d\njournal: {plaintext: true}\n"))
    assert set(config.skus) == {"mobile-cmcc-100", "steam-50"}


def test_an_endpoint_replaces_the_simulate_block(tmp_path: Path) -> None:
    text = BETA.replace("simulate: {}", "endpoint: https://api.example.com/v1")
    config = load(
        write(
            tmp_path,
            suppliers={"beta.yaml": text},
            router="suppliers_dir: suppliers.d\njournal: {plaintext: true}\n",
        )
    )
    assert config.suppliers["beta"].endpoint == "https://api.example.com/v1"
    assert config.suppliers["beta"].simulate is None


def test_the_endpoint_may_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KR_TEST_BETA_URL", "https://api.example.com/v1")
    text = BETA.replace("simulate: {}", "endpoint: ${KR_TEST_BETA_URL}")
    config = load(
        write(
            tmp_path,
            suppliers={"beta.yaml": text},
            router="suppliers_dir: suppliers.d\njournal: {plaintext: true}\n",
        )
    )
    assert config.suppliers["beta"].endpoint == "https://api.example.com/v1"


def test_an_endpoint_from_the_environment_must_still_be_a_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KR_TEST_BETA_URL", "not a url")
    text = BETA.replace("simulate: {}", "endpoint: ${KR_TEST_BETA_URL}")
    path = write(
        tmp_path,
        suppliers={"beta.yaml": text},
        router="suppliers_dir: suppliers.d\njournal: {plaintext: true}\n",
    )
    exc = fails(path)
    problem(exc, tmp_path / "suppliers.d/beta.yaml", "endpoint", "http(s) URL")
    assert "not a url" not in str(exc)


# ------------------------------------------------------------- unknown keys


def test_unknown_top_level_key_in_router_yaml(tmp_path: Path) -> None:
    exc = fails(write(tmp_path, router=ROUTER + "suppliers_dri: suppliers.d\n"))
    problem(exc, tmp_path / "router.yaml", "suppliers_dri", "unknown key")
    assert keys(exc) == {("router.yaml", "suppliers_dri")}


@pytest.mark.parametrize(
    ("replace", "with_", "key"),
    [
        ("orders: {default_deadline_s: 600}", "orders: {default_deadline_s: 600, bogus: 1}", "orders.bogus"),
        ('api: {socket: run/orders.sock, socket_mode: "0660"}', "api: {sokcet: x}", "api.sokcet"),
        ("steam-50: {name: Steam 50}", "steam-50: {name: Steam 50, price: 1}", "skus.steam-50.price"),
    ],
)
def test_unknown_nested_key_in_router_yaml(tmp_path: Path, replace: str, with_: str, key: str) -> None:
    assert replace in ROUTER
    exc = fails(write(tmp_path, router=ROUTER.replace(replace, with_)))
    problem(exc, tmp_path / "router.yaml", key, "unknown key")


@pytest.mark.parametrize(
    ("replace", "with_", "key"),
    [
        ("plugin: sim", "plugin: sim\nenabeld: true", "enabeld"),
        ("limits: {rate_per_s: 20,", "limits: {bogus: 1, rate_per_s: 20,", "limits.bogus"),
        (
            '{product_id: "A50", price: 48.50}',
            '{product_id: "A50", price: 48.50, bogus: 2}',
            "offers.steam-50.bogus",
        ),
        ("simulate: {fail_rate: 0.1}", "simulate: {fail_rate: 0.1, fial_rate: 1}", "simulate.fial_rate"),
    ],
)
def test_unknown_key_in_a_supplier_file(tmp_path: Path, replace: str, with_: str, key: str) -> None:
    assert replace in ALPHA
    path = write(tmp_path, suppliers={"alpha.yaml": ALPHA.replace(replace, with_), "beta.yaml": BETA})
    exc = fails(path)
    problem(exc, tmp_path / "suppliers.d/alpha.yaml", key, "unknown key")
    assert keys(exc) == {("alpha.yaml", key)}


# ------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("replace", "with_", "key", "message"),
    [
        (
            "default_deadline_s: 600",
            'default_deadline_s: "ten minutes"',
            "orders.default_deadline_s",
            "expected a number, got a string",
        ),
        ("orders: {default_deadline_s: 600}", "orders: [600]", "orders", "expected a mapping, got a list"),
        (
            "orders: {default_deadline_s: 600}",
            "orders: {max_open: true}",
            "orders.max_open",
            "expected an integer, got a boolean",
        ),
        (
            "suppliers_dir: suppliers.d",
            "suppliers_dir: suppliers.d\nmetrics: {listen: 9464}",
            "metrics.listen",
            "expected a string",
        ),
        (
            "suppliers_dir: suppliers.d",
            "suppliers_dir: suppliers.d\nmetrics: {listen: nowhere}",
            "metrics.listen",
            "host:port",
        ),
    ],
)
def test_wrong_type_in_router_yaml(tmp_path: Path, replace: str, with_: str, key: str, message: str) -> None:
    assert replace in ROUTER
    exc = fails(write(tmp_path, router=ROUTER.replace(replace, with_)))
    problem(exc, tmp_path / "router.yaml", key, message)


@pytest.mark.parametrize(
    ("replace", "with_", "key", "message"),
    [
        ("rate_per_s: 20", 'rate_per_s: "fast"', "limits.rate_per_s", "expected a number, got a string"),
        (
            "limits: {rate_per_s: 20, max_in_flight: 50, timeout_s: 5}",
            "limits: [20, 50, 5]",
            "limits",
            "expected a mapping, got a list",
        ),
        (
            "max_in_flight: 50",
            "max_in_flight: true",
            "limits.max_in_flight",
            "expected an integer, got a boolean",
        ),
        (
            "max_in_flight: 50",
            "max_in_flight: 2.5",
            "limits.max_in_flight",
            "expected an integer, got a number",
        ),
        ("plugin: sim", "plugin: [sim]", "plugin", "expected a string, got a list"),
        ("plugin: sim", "plugin: sim\nenabled: maybe", "enabled", "expected true or false, got a string"),
        ("price: 48.50", "price: [48.50]", "offers.steam-50.price", "expected a price, got a list"),
        ("offers:\n", "offers: [mobile-cmcc-100]\nx:\n", "offers", "expected a mapping, got a list"),
        ("simulate: {fail_rate: 0.1}", "simulate: {latency_ms: 20}", "simulate.latency_ms", "[low, high]"),
    ],
)
def test_wrong_type_in_a_supplier_file(
    tmp_path: Path, replace: str, with_: str, key: str, message: str
) -> None:
    assert replace in ALPHA
    path = write(tmp_path, suppliers={"alpha.yaml": ALPHA.replace(replace, with_), "beta.yaml": BETA})
    exc = fails(path)
    problem(exc, tmp_path / "suppliers.d/alpha.yaml", key, message)


def test_a_supplier_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    exc = fails(write(tmp_path, suppliers={"alpha.yaml": "- plugin: sim\n", "beta.yaml": BETA}))
    problem(exc, tmp_path / "suppliers.d/alpha.yaml", "(top level)", "expected a mapping, got a list")


# ------------------------------------------------------------- bad ranges


@pytest.mark.parametrize(
    ("replace", "with_", "key", "message"),
    [
        ("rate_per_s: 20", "rate_per_s: -5", "limits.rate_per_s", "greater than 0"),
        ("rate_per_s: 20", "rate_per_s: 0", "limits.rate_per_s", "greater than 0"),
        ("timeout_s: 5", "timeout_s: 0", "limits.timeout_s", "at least 0.1"),
        ("max_in_flight: 50", "max_in_flight: 0", "limits.max_in_flight", "at least 1"),
        ("fail_rate: 0.1", "fail_rate: 2", "simulate.fail_rate", "at most 1"),
        ("fail_rate: 0.1", "fail_rate: -0.5", "simulate.fail_rate", "at least 0"),
        ("fail_rate: 0.1", "fail_rate: 0.6, timeout_rate: 0.6", "simulate.fail_rate", "at most 1"),
        ("price: 48.50", "price: 0", "offers.steam-50.price", "positive price"),
        ("price: 48.50", "price: -1.00", "offers.steam-50.price", "positive price"),
        ("price: 48.50", 'price: "cheap"', "offers.steam-50.price", "such as 99.20"),
    ],
)
def test_out_of_range_in_a_supplier_file(
    tmp_path: Path, replace: str, with_: str, key: str, message: str
) -> None:
    assert replace in ALPHA
    path = write(tmp_path, suppliers={"alpha.yaml": ALPHA.replace(replace, with_), "beta.yaml": BETA})
    problem(fails(path), tmp_path / "suppliers.d/alpha.yaml", key, message)


@pytest.mark.parametrize(
    ("replace", "with_", "key", "message"),
    [
        ('socket_mode: "0660"', 'socket_mode: "999"', "api.socket_mode", "octal mode"),
        ('socket_mode: "0660"', 'socket_mode: "rw-rw----"', "api.socket_mode", "octal mode"),
        ("default_deadline_s: 600", "default_deadline_s: 0", "orders.default_deadline_s", "at least 1"),
        (
            "suppliers_dir: suppliers.d",
            "suppliers_dir: suppliers.d\nrouting: {submit_retries: 0}",
            "routing.submit_retries",
            "at least 1",
        ),
        (
            "suppliers_dir: suppliers.d",
            "suppliers_dir: suppliers.d\nmetrics: {listen: 127.0.0.1:70000}",
            "metrics.listen",
            "host:port",
        ),
        (
            "suppliers_dir: suppliers.d",
            "suppliers_dir: suppliers.d\ncallbacks: {public_url: ftp://x}",
            "callbacks.public_url",
            "http(s) URL",
        ),
    ],
)
def test_out_of_range_in_router_yaml(
    tmp_path: Path, replace: str, with_: str, key: str, message: str
) -> None:
    assert replace in ROUTER
    problem(
        fails(write(tmp_path, router=ROUTER.replace(replace, with_))), tmp_path / "router.yaml", key, message
    )


def test_socket_mode_accepts_octal_text(tmp_path: Path) -> None:
    config = load(write(tmp_path, router=ROUTER.replace('"0660"', '"600"')))
    assert config.api.socket_mode == 0o600


# ------------------------------------------------------------- plugins and skus


def test_unknown_plugin_lists_the_known_ones(tmp_path: Path) -> None:
    path = write(
        tmp_path, suppliers={"alpha.yaml": ALPHA.replace("plugin: sim", "plugin: kamenn"), "beta.yaml": BETA}
    )
    p = problem(fails(path), tmp_path / "suppliers.d/alpha.yaml", "plugin", "kamenn")
    assert "known: fulu, sim" in p.message


def test_a_listed_sku_nobody_offers(tmp_path: Path) -> None:
    router = ROUTER + "  qq-coin-10: {name: QQ coins}\n"
    exc = fails(write(tmp_path, router=router))
    problem(exc, tmp_path / "router.yaml", "skus.qq-coin-10", "no supplier offers")
    assert keys(exc) == {("router.yaml", "skus.qq-coin-10")}


def test_an_offer_for_a_sku_not_listed(tmp_path: Path) -> None:
    beta = BETA.replace("offers:\n", 'offers:\n  qq-coin-10: {product_id: "Q10", price: 9.60}\n')
    exc = fails(write(tmp_path, suppliers={"alpha.yaml": ALPHA, "beta.yaml": beta}))
    problem(exc, tmp_path / "suppliers.d/beta.yaml", "offers.qq-coin-10", "not a sku listed under skus")
    assert keys(exc) == {("beta.yaml", "offers.qq-coin-10")}


def test_an_invalid_sku_code(tmp_path: Path) -> None:
    router = ROUTER + '  "bad sku!": {}\n'
    problem(
        fails(write(tmp_path, router=router)), tmp_path / "router.yaml", "skus.bad sku!", "not a valid sku"
    )


# ------------------------------------------------------------- missing keys


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (ALPHA.replace("plugin: sim\n", ""), "plugin", "is required"),
        (ALPHA.replace("plugin: sim\n", "plugin:\n"), "plugin", "expected a string"),
        (ALPHA.split("offers:")[0] + "simulate: {}\n", "offers", "at least one sku"),
        (ALPHA.replace("simulate: {fail_rate: 0.1}\n", ""), "endpoint", "is required"),
        (ALPHA.replace("simulate: {fail_rate: 0.1}\n", "endpoint:\n"), "endpoint", "is required"),
        (ALPHA.replace('product_id: "A50", ', ""), "offers.steam-50.product_id", "is required"),
        (ALPHA.replace(", price: 48.50", ""), "offers.steam-50.price", "is required"),
        (
            ALPHA.replace("credentials: {api_key: alpha-key}\n", ""),
            "credentials.api_key",
            "required by plugin 'sim'",
        ),
    ],
)
def test_missing_required_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    exc = fails(write(tmp_path, suppliers={"alpha.yaml": text, "beta.yaml": BETA}))
    problem(exc, tmp_path / "suppliers.d/alpha.yaml", key, message)


def test_an_empty_supplier_file_names_what_is_missing(tmp_path: Path) -> None:
    exc = fails(write(tmp_path, suppliers={"alpha.yaml": "", "beta.yaml": BETA}))
    alpha = tmp_path / "suppliers.d/alpha.yaml"
    for key in ("plugin", "offers", "endpoint"):
        problem(exc, alpha, key)


# ------------------------------------------------------------- files


def test_broken_yaml_in_a_supplier_file_gives_the_line(tmp_path: Path) -> None:
    broken = "plugin: sim\nenabled: true\n  limits: {}\n"
    exc = fails(write(tmp_path, suppliers={"alpha.yaml": broken, "beta.yaml": BETA}))
    p = problem(exc, tmp_path / "suppliers.d/alpha.yaml", "", "not valid YAML", "line 3")
    assert "Traceback" not in p.message


def test_broken_yaml_in_router_yaml_gives_the_line(tmp_path: Path) -> None:
    exc = fails(write(tmp_path, router="api: {socket: x}\nskus: [a, b\norders: {}\n"))
    problem(exc, tmp_path / "router.yaml", "", "not valid YAML", "line 3")


def test_router_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    exc = fails(write(tmp_path, router="just a string\n"))
    problem(exc, tmp_path / "router.yaml", "(top level)", "expected a mapping")


def test_a_missing_router_yaml(tmp_path: Path) -> None:
    exc = fails(tmp_path / "nowhere.yaml")
    problem(exc, tmp_path / "nowhere.yaml", "", "not found")


@pytest.mark.parametrize("name", ["Alpha.yaml", "fulu main.yaml", "-alpha.yaml", "alpha!.yaml"])
def test_a_file_name_that_is_not_a_supplier_name(tmp_path: Path, name: str) -> None:
    exc = fails(write(tmp_path, suppliers={name: ALPHA, "beta.yaml": BETA}))
    problem(exc, tmp_path / "suppliers.d" / name, "", "file name must be a supplier name")
    assert keys(exc) == {(name, "")}


def test_the_same_supplier_twice(tmp_path: Path) -> None:
    exc = fails(write(tmp_path, suppliers={"alpha.yaml": ALPHA, "alpha.yml": ALPHA, "beta.yaml": BETA}))
    problem(exc, tmp_path / "suppliers.d/alpha.yml", "", "defined twice")


def test_files_that_are_not_yaml_are_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        suppliers={"alpha.yaml": ALPHA, "beta.yaml": BETA, "notes.txt": "x: [", ".alpha.yaml.swp": "["},
    )
    assert set(load(path).suppliers) == {"alpha", "beta"}


def test_a_missing_suppliers_dir(tmp_path: Path) -> None:
    exc = fails(
        write(tmp_path, router=ROUTER.replace("suppliers_dir: suppliers.d", "suppliers_dir: supliers.d"))
    )
    problem(exc, tmp_path / "router.yaml", "suppliers_dir", "supliers.d", "not a directory")


def test_an_empty_suppliers_dir(tmp_path: Path) -> None:
    exc = fails(write(tmp_path, suppliers={}))
    problem(exc, tmp_path / "router.yaml", "suppliers_dir", "no supplier files")


def test_a_missing_plugins_dir(tmp_path: Path) -> None:
    exc = fails(write(tmp_path, router=ROUTER + "plugins_dir: plugns\n"))
    problem(exc, tmp_path / "router.yaml", "plugins_dir", "plugns", "not a directory")


def test_every_error_in_every_file_is_reported_together(tmp_path: Path) -> None:
    router = ROUTER.replace(
        "orders: {default_deadline_s: 600}", 'orders: {default_deadline_s: "x", bogus: 1}'
    )
    alpha = ALPHA.replace("rate_per_s: 20", "rate_per_s: -1").replace("plugin: sim", "plugin: nope")
    beta = BETA.replace("price: 98.90", "price: free")
    gamma = "plugin: sim\n  offers: {}\n"
    path = write(
        tmp_path, router=router, suppliers={"alpha.yaml": alpha, "beta.yaml": beta, "gamma.yaml": gamma}
    )
    exc = fails(path)
    sdir = tmp_path / "suppliers.d"
    problem(exc, tmp_path / "router.yaml", "orders.default_deadline_s", "expected a number")
    problem(exc, tmp_path / "router.yaml", "orders.bogus", "unknown key")
    problem(exc, sdir / "alpha.yaml", "plugin", "unknown plugin")
    problem(exc, sdir / "alpha.yaml", "limits.rate_per_s", "greater than 0")
    problem(exc, sdir / "beta.yaml", "offers.mobile-cmcc-100.price", "price")
    problem(exc, sdir / "gamma.yaml", "", "not valid YAML", "line 2")
    # exactly these: no follow-on noise such as "no supplier offers this sku"
    # for skus that only the broken files offer
    assert len(exc.problems) == 6, str(exc)
    assert len(str(exc).splitlines()) == 6


# ------------------------------------------------------------- secrets


def test_env_substitution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KR_TEST_KEY", SECRET)
    monkeypatch.setenv("KR_TEST_REGION", "cn")
    alpha = ALPHA.replace(
        "{api_key: alpha-key}", '{api_key: "${KR_TEST_KEY}", region: "${KR_TEST_REGION}-east"}'
    )
    config = load(write(tmp_path, suppliers={"alpha.yaml": alpha, "beta.yaml": BETA}))
    creds = config.suppliers["alpha"].credentials
    assert creds["api_key"].reveal() == SECRET
    assert creds["region"].reveal() == "cn-east"


def test_a_missing_env_var_names_the_variable_not_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KR_TEST_KEY_PART", SECRET)
    monkeypatch.delenv("KR_TEST_UNSET", raising=False)
    alpha = ALPHA.replace("{api_key: alpha-key}", '{api_key: "${KR_TEST_KEY_PART}${KR_TEST_UNSET}"}')
    exc = fails(write(tmp_path, suppliers={"alpha.yaml": alpha, "beta.yaml": BETA}))
    problem(exc, tmp_path / "suppliers.d/alpha.yaml", "credentials.api_key", "KR_TEST_UNSET", "not set")
    assert SECRET not in str(exc)
    assert SECRET not in repr(exc.problems)
    # the missing variable is reported once, not also as "api_key is required"
    assert keys(exc) == {("alpha.yaml", "credentials.api_key")}


def test_api_key_file_is_read_relative_to_the_supplier_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "etc"
    (root / "suppliers.d/keys").mkdir(parents=True)
    (root / "suppliers.d/keys/alpha.key").write_text(SECRET + "\n")
    alpha = ALPHA.replace("{api_key: alpha-key}", "{api_key_file: keys/alpha.key}")
    path = write(root, suppliers={"alpha.yaml": alpha, "beta.yaml": BETA})
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "keys").mkdir(parents=True)
    (elsewhere / "keys/alpha.key").write_text("the wrong key\n")
    monkeypatch.chdir(elsewhere)
    creds = load(path).suppliers["alpha"].credentials
    assert creds["api_key"].reveal() == SECRET
    assert "api_key_file" not in creds


def test_api_key_file_from_an_absolute_path_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "secrets/alpha.secret"
    key.parent.mkdir()
    key.write_text(SECRET + "\r\n")
    monkeypatch.setenv("KR_TEST_SECRETS", str(key.parent))
    alpha = ALPHA.replace("{api_key: alpha-key}", '{api_key_file: "${KR_TEST_SECRETS}/alpha.secret"}')
    config = load(write(tmp_path / "cfg", suppliers={"alpha.yaml": alpha, "beta.yaml": BETA}))
    assert config.suppliers["alpha"].credentials["api_key"].reveal() == SECRET


def test_a_missing_secret_file_names_the_key(tmp_path: Path) -> None:
    alpha = ALPHA.replace("{api_key: alpha-key}", "{api_key_file: keys/missing.key}")
    exc = fails(write(tmp_path, suppliers={"alpha.yaml": alpha, "beta.yaml": BETA}))
    problem(exc, tmp_path / "suppliers.d/alpha.yaml", "credentials.api_key_file", "cannot read secret file")
    # not reported a second time as a missing api_key
    assert keys(exc) == {("alpha.yaml", "credentials.api_key_file")}


def test_a_credential_given_twice(tmp_path: Path) -> None:
    (tmp_path / "suppliers.d").mkdir(parents=True)
    (tmp_path / "suppliers.d/alpha.key").write_text(SECRET)
    alpha = ALPHA.replace("{api_key: alpha-key}", "{api_key: alpha-key, api_key_file: alpha.key}")
    exc = fails(write(tmp_path, suppliers={"alpha.yaml": alpha, "beta.yaml": BETA}))
    problem(exc, tmp_path / "suppliers.d/alpha.yaml", "credentials.api_key_file", "given twice")
    assert SECRET not in str(exc)


def test_secrets_never_show_in_reprs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KR_TEST_KEY", SECRET)
    alpha = ALPHA.replace("{api_key: alpha-key}", '{api_key: "${KR_TEST_KEY}"}')
    config = load(write(tmp_path, suppliers={"alpha.yaml": alpha, "beta.yaml": BETA}))
    supplier = config.suppliers["alpha"]
    secret = supplier.credentials["api_key"]
    assert isinstance(secret, Secret)
    shown = [
        repr(config),
        str(config),
        repr(supplier),
        str(supplier),
        repr(supplier.credentials),
        str(dict(supplier.credentials)),
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret!s}",
        f"{secret:>40}",
        "%s %r" % (secret, secret),  # noqa: UP031 - old-style formatting is what logging uses
        "{}".format(secret),  # noqa: UP032
    ]
    for text in shown:
        assert SECRET not in text
    assert str(secret) == "***"
    assert "***" in repr(supplier)
    assert "api_key" in repr(supplier)  # the name is fine, the value is not
    assert secret.reveal() == SECRET


@pytest.mark.parametrize(
    "value",
    [
        f"[{SECRET}]",
        f"{{nested: {SECRET}}}",
        f"[{SECRET}, other]",
    ],
)
def test_a_wrongly_typed_credential_never_echoes_its_value(tmp_path: Path, value: str) -> None:
    alpha = ALPHA.replace("{api_key: alpha-key}", f"{{api_key: {value}}}")
    exc = fails(write(tmp_path, suppliers={"alpha.yaml": alpha, "beta.yaml": BETA}))
    problem(exc, tmp_path / "suppliers.d/alpha.yaml", "credentials.api_key", "expected a string")
    assert SECRET not in str(exc)
    assert SECRET not in repr(exc.problems)


def test_a_misspelt_credentials_section_never_echoes_its_value(tmp_path: Path) -> None:
    alpha = ALPHA.replace("credentials: {api_key: alpha-key}", f"credentails: {{api_key: {SECRET}}}")
    exc = fails(write(tmp_path, suppliers={"alpha.yaml": alpha, "beta.yaml": BETA}))
    problem(exc, tmp_path / "suppliers.d/alpha.yaml", "credentails", "unknown key")
    problem(exc, tmp_path / "suppliers.d/alpha.yaml", "credentials.api_key", "is required")
    assert SECRET not in str(exc)


def test_a_credential_that_is_a_number_is_rejected_without_echoing_it(tmp_path: Path) -> None:
    alpha = ALPHA.replace("{api_key: alpha-key}", "{api_key: 8134.5678}")
    exc = fails(write(tmp_path, suppliers={"alpha.yaml": alpha, "beta.yaml": BETA}))
    problem(exc, tmp_path / "suppliers.d/alpha.yaml", "credentials.api_key", "expected a string")
    assert "8134" not in str(exc)


# ------------------------------------------------------------- money


def test_prices_are_exact_decimals_from_the_yaml_text(tmp_path: Path) -> None:
    alpha = ALPHA.replace("price: 48.50", "price: 0.1")
    beta = BETA.replace("price: 98.90", 'price: "98.90"')
    config = load(write(tmp_path, suppliers={"alpha.yaml": alpha, "beta.yaml": beta}))
    a100 = config.suppliers["alpha"].offers["mobile-cmcc-100"].price
    assert isinstance(a100, Decimal)
    assert a100 == Decimal("99.20")
    assert str(a100) == "99.20"  # the trailing zero survives: no float on the way
    a50 = config.suppliers["alpha"].offers["steam-50"].price
    assert str(a50) == "0.1"
    assert a50 * 3 == Decimal("0.3")  # 0.1 as a float would not be exact
    b100 = config.suppliers["beta"].offers["mobile-cmcc-100"].price
    assert b100 == Decimal("98.90") and isinstance(b100, Decimal)


def test_an_integer_price_and_balance(tmp_path: Path) -> None:
    alpha = ALPHA.replace("price: 48.50", "price: 50").replace("{fail_rate: 0.1}", "{balance: 12345.67}")
    config = load(write(tmp_path, suppliers={"alpha.yaml": alpha, "beta.yaml": BETA}))
    assert config.suppliers["alpha"].offers["steam-50"].price == Decimal(50)
    simulate = config.suppliers["alpha"].simulate
    assert simulate is not None
    assert simulate.balance == Decimal("12345.67") and isinstance(simulate.balance, Decimal)


def test_product_ids_stay_text(tmp_path: Path) -> None:
    alpha = ALPHA.replace('product_id: "A50"', "product_id: 10000585")
    offer = (
        load(write(tmp_path, suppliers={"alpha.yaml": alpha, "beta.yaml": BETA})).suppliers["alpha"].offers
    )
    assert offer["steam-50"].product_id == "10000585"
    assert offer["mobile-cmcc-100"].product_id == "A100"


# ------------------------------------------------------------- paths


def test_relative_paths_are_relative_to_router_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "etc/kamen-router"
    (root / "plugins").mkdir(parents=True)
    path = write(root, router=ROUTER + "plugins_dir: plugins\n")
    # a decoy in the working directory must not be picked up
    decoy = tmp_path / "cwd"
    (decoy / "suppliers.d").mkdir(parents=True)
    (decoy / "suppliers.d/decoy.yaml").write_text("plugin: nope\n")
    monkeypatch.chdir(decoy)
    config = load(path)
    assert config.api.socket == root / "run/orders.sock"
    assert config.journal.path == root / "var/journal.sqlite3"
    assert config.suppliers_dir == root / "suppliers.d"
    assert config.plugins_dir == root / "plugins"
    assert config.file == path
    assert set(config.suppliers) == {"alpha", "beta"}


def test_router_yaml_given_by_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "cfg")
    monkeypatch.chdir(tmp_path)
    config = load(Path("cfg/router.yaml"))
    assert config.api.socket == tmp_path / "cfg/run/orders.sock"
    assert config.api.socket.is_absolute()
    assert config.suppliers_dir == tmp_path / "cfg/suppliers.d"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    sock = tmp_path / "elsewhere/orders.sock"
    journal = tmp_path / "data/journal.sqlite3"
    router = ROUTER.replace("socket: run/orders.sock", f"socket: {sock}").replace(
        "path: var/journal.sqlite3", f"path: {journal}"
    )
    config = load(write(tmp_path / "cfg", router=router))
    assert config.api.socket == sock
    assert config.journal.path == journal


def test_defaults_for_omitted_sections(tmp_path: Path) -> None:
    config = load(
        write(tmp_path, router="journal: {plaintext: true}\nskus:\n  mobile-cmcc-100: {}\n  steam-50: {}\n")
    )
    assert config.api.socket == tmp_path / "run/orders.sock"
    assert config.journal.path == tmp_path / "var/journal.sqlite3"
    assert config.suppliers_dir == tmp_path / "suppliers.d"
    assert config.plugins_dir is None
    assert config.metrics.listen is None
    assert config.orders.default_deadline_s == 600


# ------------------------------------------------------------- the shipped config


def test_the_shipped_config_loads_from_any_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(REPO / "router.yaml")  # plugins from the entry points and plugins/
    assert set(config.suppliers) == {p.stem for p in (REPO / "suppliers.d").glob("*.yaml")}
    assert config.skus
    assert config.api.socket == REPO / "run/orders.sock"
    for supplier in config.suppliers.values():
        assert supplier.offers
        for sku, offer in supplier.offers.items():
            assert sku in config.skus
            assert isinstance(offer.price, Decimal)
        # every credential of the shipped demo suppliers comes from a file in
        # demo-secrets/, and none shows in a repr
        assert supplier.credentials
        for secret in supplier.credentials.values():
            assert secret.reveal() not in repr(config)
        secrets = {
            p.read_text().strip() for p in (REPO / "suppliers.d/demo-secrets").iterdir() if p.suffix != ".md"
        }
        assert any(s.reveal() in secrets for s in supplier.credentials.values()), supplier.name
    for sku in config.skus:
        assert config.offers_for(sku), sku
