"""The provider boundary holds: only webapp/providers/ names a provider module; the providers
know nothing of Flask or the database; the webhook routes (events and inbound mail alike) leave
every provider format to the providers.

Walks the AST of every module under webapp/ and jobs/ (imports inside functions included);
tests/ and benchmarks/ are exempt.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from tests.source_tree import ROOT, module_name
from webapp.providers import INBOUND_READERS, WEBHOOK_PARSERS, inbound_reader
from webapp.sandbox import WIRE_FORMATS

PROVIDERS = ROOT / "webapp" / "providers"
SANDBOX = ROOT / "webapp" / "sandbox"
# What any module may import of the providers package: the factory and the contract.
SHARED = {"webapp.providers", "webapp.providers.base"}
WEBHOOKS = ROOT / "webapp" / "webhooks"
# What a provider module must not import: the web framework, the database, or our app around it.
APP_SIDE = ("flask", "flask_", "sqlalchemy", "rq", "redis", "webapp.extensions", "webapp.models")
APP_PACKAGES = ("webapp.services", "webapp.webhooks", "webapp.queue", "webapp.database")
# What would parse a provider's body: the webhook routes hand the exact bytes to a provider instead.
BODY_PARSERS = ("json", "orjson", "email", "werkzeug.sansio.multipart", "werkzeug.formparser")
BODY_READERS = {"form", "files", "json", "get_json", "values"}


def names_a_module(module: str, name: str) -> bool:
    """Whether `from module import name` imports a module (a value the module defines does not)."""
    try:
        value = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return True  # not defined there: a submodule, perhaps one not written yet
    return inspect.ismodule(value)


def imported_names(path: Path, root: Path = ROOT) -> set[str]:
    """Every module a file imports, anywhere in it; `from a import b` counts as a, and as a.b when
    b is a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, root).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(
                f"{module}.{alias.name}" for alias in node.names if names_a_module(module, alias.name)
            )
    return names


def provider_module(name: str) -> bool:
    """Whether an imported name is (inside) an adapter module or a sandbox wire-format package."""
    if name.startswith("webapp.providers.") and name not in SHARED:
        return True
    return any(
        name == f"webapp.sandbox.{wire}" or name.startswith(f"webapp.sandbox.{wire}.")
        for wire in WIRE_FORMATS
    )


def sources(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def test_no_module_outside_the_providers_package_names_a_provider():
    offenders = {
        module_name(path): sorted(name for name in imported_names(path) if provider_module(name))
        for path in sources("webapp", "jobs")
        if PROVIDERS not in path.parents and SANDBOX not in path.parents
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_the_simulators_do_not_borrow_from_the_adapters():
    """A simulator sharing the adapter's code would agree with it by construction, not by the docs."""
    offenders = {
        module_name(path): sorted(
            name
            for name in imported_names(path)
            if name.startswith("webapp.providers.") and name not in SHARED
        )
        for path in sources("webapp/sandbox")
    }
    assert {module: names for module, names in offenders.items() if names} == {}


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("from webapp.providers.sendgrid import parse_webhook_events", True),
        ("from webapp.providers import sendgrid", True),
        ("import webapp.providers.postmark as pm", True),
        ("def f():\n    from webapp.sandbox.sendgrid.app import SendGridSandbox", True),
        ("from webapp.providers import get_provider", False),
        ("from webapp.providers.postmark.inbound import read_inbound", True),
        ("from webapp.providers import inbound_reader", False),
        ("from webapp.providers.base import InboundMail", False),
        ("from webapp.providers.base import ProviderEvent", False),
        ("from webapp.sandbox import client_mail", False),
        ("from ..providers import sendgrid", True),
        ("from ..providers import get_provider", False),
    ],
)
def test_the_walker_sees_every_form_of_import(tmp_path, source, caught):
    path = tmp_path / "webapp" / "services" / "x.py"
    path.parent.mkdir(parents=True)
    path.write_text(source + "\n")
    assert any(provider_module(name) for name in imported_names(path, tmp_path)) is caught


def app_side(name: str) -> bool:
    """Whether an imported name belongs to the web app around the providers (Flask, the database)."""
    return name.startswith(APP_SIDE) or any(
        name == package or name.startswith(f"{package}.") for package in APP_PACKAGES
    )


def test_the_providers_know_no_flask_nor_the_database():
    """Adapters, inbound readers included, take plain values and return the contract's objects."""
    offenders = {
        module_name(path): sorted(name for name in imported_names(path) if app_side(name))
        for path in sources("webapp/providers")
    }
    assert {module: names for module, names in offenders.items() if names} == {}
    assert app_side("flask") and app_side("flask_limiter") and app_side("webapp.services.inbound.filing")
    assert not app_side("webapp.providers.base") and not app_side("werkzeug.http")


def test_the_webhook_routes_parse_no_provider_format():
    """Event batches and inbound mail reach the routes as bytes and leave them for a provider to read."""
    found = {}
    for path in sources("webapp/webhooks"):
        tree = ast.parse(path.read_text(), filename=str(path))
        readers = {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "request"
            and node.attr in BODY_READERS
        }
        parsers = {
            name
            for name in imported_names(path)
            if any(name == parser or name.startswith(f"{parser}.") for parser in BODY_PARSERS)
        }
        if readers or parsers:
            found[module_name(path)] = sorted(readers | parsers)
    assert found == {}
    assert (WEBHOOKS / "inbound.py").exists()  # the inbound routes are among those walked


def test_every_wire_format_reads_its_events_and_its_inbound_mail():
    assert set(WEBHOOK_PARSERS) == set(INBOUND_READERS) == set(WIRE_FORMATS)
    for name, target in INBOUND_READERS.items():
        module = target.partition(":")[0]
        assert module.startswith("webapp.providers.") and module not in SHARED
        assert callable(inbound_reader(name))


def test_the_factory_is_where_adapters_are_named():
    """The check is not vacuous: the walker finds the factory's lazy imports of the adapters."""
    assert "webapp.providers.sendgrid" in imported_names(PROVIDERS / "__init__.py")
