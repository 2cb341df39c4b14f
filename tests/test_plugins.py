"""Plugin discovery and load-time validation: a malformed plugin is an error
that names the plugin and what is wrong with it, when the config is loaded,
never a surprise at the first order."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kamen_router.config import load_config
from kamen_router.errors import ConfigError, PluginError
from kamen_router.plugin import load_plugins

# A plugin module that honours the contract; NAME is replaced by the file name.
VALID = """\
from kamen_router.plugin import QuerySchedule
from kamen_router.outcome import Unknown


class Plugin:
    name = "NAME"
    required_credentials = ("api_key",)
    schedule = QuerySchedule(first_query_s=0.5)

    def __init__(self, context):
        self.context = context

    async def submit(self, request):
        return Unknown("not implemented")

    async def query(self, request):
        return Unknown("not implemented")

    async def balance(self):
        return None


PLUGIN = Plugin
"""


def plugin_file(directory: Path, name: str, source: str = VALID) -> Path:
    """Write ``directory/<name>.py`` from ``source``, with NAME replaced."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source.replace("NAME", name)))
    return path


def plugin_error(directory: Path, name: str) -> str:
    with pytest.raises(PluginError) as info:
        load_plugins(directory)
    message = str(info.value)
    assert repr(name) in message, message
    return message


def edit(source: str, old: str, new: str) -> str:
    assert old in source, old
    return source.replace(old, new)


def test_a_valid_plugin_loads(tmp_path: Path) -> None:
    plugin_file(tmp_path / "plugins", "acme")
    plugins = load_plugins(tmp_path / "plugins")
    assert "acme" in plugins
    cls = plugins["acme"]
    assert cls.name == "acme"
    assert set(cls.required_credentials) == {"api_key"}
    assert cls.schedule.first_query_s == 0.5
    # the entry-point plugins are there too
    assert "sim" in plugins


def test_no_plugins_dir_gives_the_entry_point_plugins(tmp_path: Path) -> None:
    assert "sim" in load_plugins(None)


def test_optional_extra_parameters_are_allowed(tmp_path: Path) -> None:
    source = edit(VALID, "async def submit(self, request):", "async def submit(self, request, trace=None):")
    plugin_file(tmp_path / "plugins", "lenient", source)
    assert "lenient" in load_plugins(tmp_path / "plugins")


def test_a_module_without_plugin(tmp_path: Path) -> None:
    path = plugin_file(tmp_path / "plugins", "nop", edit(VALID, "PLUGIN = Plugin", "Plugin = Plugin"))
    message = plugin_error(tmp_path / "plugins", "nop")
    assert "defines no PLUGIN" in message
    assert str(path) in message


def test_a_syntax_error(tmp_path: Path) -> None:
    plugin_file(
        tmp_path / "plugins", "typo", edit(VALID, "async def balance(self):", "async def balance(self)")
    )
    message = plugin_error(tmp_path / "plugins", "typo")
    assert "import failed" in message
    assert "SyntaxError" in message


def test_an_error_raised_at_import(tmp_path: Path) -> None:
    plugin_file(tmp_path / "plugins", "boom", 'raise RuntimeError("needs libfoo")\n' + VALID)
    message = plugin_error(tmp_path / "plugins", "boom")
    assert "import failed" in message
    assert "RuntimeError: needs libfoo" in message


def test_a_missing_dependency_at_import(tmp_path: Path) -> None:
    plugin_file(tmp_path / "plugins", "deps", "import kamen_router_no_such_module\n" + VALID)
    message = plugin_error(tmp_path / "plugins", "deps")
    assert "ModuleNotFoundError" in message
    assert "kamen_router_no_such_module" in message


def test_sys_exit_at_import_is_an_import_error(tmp_path: Path) -> None:
    plugin_file(tmp_path / "plugins", "quitter", "import sys\nsys.exit(3)\n" + VALID)
    message = plugin_error(tmp_path / "plugins", "quitter")
    assert "import failed" in message


def test_a_name_that_does_not_match_the_file(tmp_path: Path) -> None:
    source = VALID.replace('name = "NAME"', 'name = "other"')
    plugin_file(tmp_path / "plugins", "mine", source)
    message = plugin_error(tmp_path / "plugins", "mine")
    assert "name is 'other', expected 'mine'" in message


def test_submit_not_async(tmp_path: Path) -> None:
    plugin_file(
        tmp_path / "plugins",
        "sync",
        edit(VALID, "async def submit(self, request):", "def submit(self, request):"),
    )
    message = plugin_error(tmp_path / "plugins", "sync")
    assert "submit must be a coroutine function (async def)" in message


def test_query_missing(tmp_path: Path) -> None:
    source = edit(VALID, 'async def query(self, request):\n        return Unknown("not implemented")\n', "")
    plugin_file(tmp_path / "plugins", "noquery", source)
    message = plugin_error(tmp_path / "plugins", "noquery")
    assert "missing method: async def query(self, request)" in message


@pytest.mark.parametrize(
    ("old", "new", "fault"),
    [
        (
            "async def submit(self, request):",
            "async def submit(self):",
            "submit must take 1 argument(s) after self, takes 0",
        ),
        (
            "async def query(self, request):",
            "async def query(self, request, attempt):",
            "query must take 1 argument(s) after self, takes 2",
        ),
        (
            "async def balance(self):",
            "async def balance(self, currency):",
            "balance must take 0 argument(s) after self, takes 1",
        ),
        (
            "async def submit(self, request):",
            "async def submit(self, request, *, token):",
            "submit must not require keyword-only arguments",
        ),
    ],
)
def test_wrong_number_of_arguments(tmp_path: Path, old: str, new: str, fault: str) -> None:
    plugin_file(tmp_path / "plugins", "args", edit(VALID, old, new))
    assert fault in plugin_error(tmp_path / "plugins", "args")


def test_schedule_not_a_query_schedule(tmp_path: Path) -> None:
    source = edit(VALID, "schedule = QuerySchedule(first_query_s=0.5)", 'schedule = {"first_query_s": 0.5}')
    plugin_file(tmp_path / "plugins", "sched", source)
    assert "schedule must be a QuerySchedule" in plugin_error(tmp_path / "plugins", "sched")


@pytest.mark.parametrize("value", ['"api_key"', "None", "(1, 2)"])
def test_required_credentials_not_a_collection_of_names(tmp_path: Path, value: str) -> None:
    source = edit(VALID, 'required_credentials = ("api_key",)', f"required_credentials = {value}")
    plugin_file(tmp_path / "plugins", "creds", source)
    assert "required_credentials must be a collection of strings" in plugin_error(
        tmp_path / "plugins", "creds"
    )


def test_plugin_that_is_not_a_class(tmp_path: Path) -> None:
    plugin_file(tmp_path / "plugins", "inst", edit(VALID, "PLUGIN = Plugin", "PLUGIN = Plugin(None)"))
    assert "expected a class" in plugin_error(tmp_path / "plugins", "inst")


def test_a_constructor_without_the_context(tmp_path: Path) -> None:
    plugin_file(
        tmp_path / "plugins", "ctor", edit(VALID, "def __init__(self, context):", "def __init__(self):")
    )
    assert "constructor must take one argument" in plugin_error(tmp_path / "plugins", "ctor")


def test_every_fault_is_listed_at_once(tmp_path: Path) -> None:
    source = VALID.replace('name = "NAME"', 'name = "x"')
    source = edit(source, "async def submit(self, request):", "def submit(self, request):")
    source = edit(source, "schedule = QuerySchedule(first_query_s=0.5)", "schedule = 5")
    plugin_file(tmp_path / "plugins", "many", source)
    message = plugin_error(tmp_path / "plugins", "many")
    assert "name is 'x'" in message
    assert "submit must be a coroutine function" in message
    assert "schedule must be a QuerySchedule" in message


def test_files_starting_with_underscore_are_skipped(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugin_file(plugins, "good")
    (plugins / "_helpers.py").write_text("this is not python (\n")
    (plugins / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    (plugins / "README.md").write_text("# not a plugin\n")
    found = load_plugins(plugins)
    assert "good" in found
    assert not any(name.startswith("_") for name in found)


def test_a_plugin_file_clashing_with_an_entry_point(tmp_path: Path) -> None:
    path = plugin_file(tmp_path / "plugins", "sim")
    message = plugin_error(tmp_path / "plugins", "sim")
    assert "defined twice" in message
    assert "entry point" in message
    assert str(path) in message


# ------------------------------------------------------------- through load_config

ROUTER = """\
journal: {plaintext: true}
suppliers_dir: suppliers.d
plugins_dir: plugins
skus:
  steam-50: {}
"""


def supplier(plugin: str, credentials: str) -> str:
    return f"""\
plugin: {plugin}
credentials: {credentials}
endpoint: https://api.example.com
offers:
  steam-50: {{product_id: "S50", price: 48.50}}
"""


def write_config(root: Path, *suppliers: tuple[str, str]) -> Path:
    (root / "suppliers.d").mkdir(parents=True, exist_ok=True)
    (root / "plugins").mkdir(exist_ok=True)
    for name, text in suppliers:
        (root / "suppliers.d" / f"{name}.yaml").write_text(text)
    (root / "router.yaml").write_text(ROUTER)
    return root / "router.yaml"


def test_a_supplier_uses_a_plugin_from_plugins_dir(tmp_path: Path) -> None:
    path = write_config(tmp_path, ("acme-main", supplier("acme", "{api_key: k}")))
    plugin_file(tmp_path / "plugins", "acme")
    config = load_config(path)
    assert config.suppliers["acme-main"].plugin == "acme"


def test_a_broken_plugin_fails_the_config_naming_the_plugin(tmp_path: Path) -> None:
    path = write_config(tmp_path, ("acme-main", supplier("acme", "{api_key: k}")))
    plugin_file(
        tmp_path / "plugins",
        "acme",
        edit(VALID, "async def query(self, request):", "def query(self, request):"),
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "router.yaml: plugins_dir" in text
    assert "'acme'" in text
    assert "query must be a coroutine function" in text


def test_a_clashing_plugin_fails_the_config(tmp_path: Path) -> None:
    path = write_config(tmp_path, ("one", supplier("sim", "{api_key: k}")))
    plugin_file(tmp_path / "plugins", "sim")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "'sim' is defined twice" in str(info.value)


def test_a_missing_required_credential(tmp_path: Path) -> None:
    source = edit(
        VALID, 'required_credentials = ("api_key",)', 'required_credentials = ("app_key", "app_secret")'
    )
    plugin_file(tmp_path / "plugins", "fulu", source)
    path = write_config(tmp_path, ("fulu-main", supplier("fulu", "{app_key: k}")))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [problem] = info.value.problems
    assert Path(problem.file).resolve() == (tmp_path / "suppliers.d/fulu-main.yaml").resolve()
    assert problem.key == "credentials.app_secret"
    assert "required by plugin 'fulu'" in problem.message
    assert "fulu-main.yaml: credentials.app_secret: is required by plugin 'fulu'" in str(info.value)


def test_a_required_credential_from_a_file(tmp_path: Path) -> None:
    source = edit(
        VALID, 'required_credentials = ("api_key",)', 'required_credentials = ("app_key", "app_secret")'
    )
    plugin_file(tmp_path / "plugins", "fulu", source)
    path = write_config(
        tmp_path, ("fulu-main", supplier("fulu", "{app_key: k, app_secret_file: fulu.secret}"))
    )
    (tmp_path / "suppliers.d/fulu.secret").write_text("the-secret\n")
    config = load_config(path)
    assert config.suppliers["fulu-main"].credentials["app_secret"].reveal() == "the-secret"


def test_a_plugin_without_required_credentials_needs_none(tmp_path: Path) -> None:
    plugin_file(
        tmp_path / "plugins",
        "open",
        edit(VALID, 'required_credentials = ("api_key",)', "required_credentials = ()"),
    )
    path = write_config(tmp_path, ("open-shop", supplier("open", "{}")))
    assert load_config(path).suppliers["open-shop"].credentials == {}
