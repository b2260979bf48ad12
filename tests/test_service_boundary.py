"""Services know no request: only views read the request, the browser's session or the signed-in
user, and only views answer 404 (a service returns None; the view aborts, as Flask's tutorial does).

Walks the AST of every module under webapp/services/ (imports inside functions included), in the
style of tests/test_provider_boundary.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.source_tree import ROOT, module_name

SERVICES = ROOT / "webapp" / "services"
# What belongs to a request (and so to a view): its data, the browser's session, the signed-in user,
# and the HTTP answers that end it.
REQUEST_BOUND = {
    "flask": {"abort", "request", "session", "g"},
    "flask_login": {"current_user", "login_user", "logout_user"},
    "werkzeug.exceptions": {"NotFound", "abort"},
}


def request_bound_names(path: Path) -> set[str]:
    """Every request-bound name a file imports or reaches as an attribute of its module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    imported_modules: dict[str, str] = {}  # local name -> module, for `import flask [as f]`
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in REQUEST_BOUND:
                    imported_modules[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module in REQUEST_BOUND:
            bound = REQUEST_BOUND[node.module]
            found.update(f"{node.module}.{alias.name}" for alias in node.names if alias.name in bound)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = imported_modules.get(node.value.id)
            if module and node.attr in REQUEST_BOUND[module]:
                found.add(f"{module}.{node.attr}")
    return found


def test_no_service_reads_the_request_or_answers_404():
    offenders = {
        module_name(path): sorted(request_bound_names(path)) for path in sorted(SERVICES.rglob("*.py"))
    }
    assert {module: names for module, names in offenders.items() if names} == {}


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("from flask import abort", {"flask.abort"}),
        ("from flask import current_app, session", {"flask.session"}),
        ("def f():\n    from flask import request, g", {"flask.request", "flask.g"}),
        ("from flask_login import current_user", {"flask_login.current_user"}),
        ("import flask\nflask.abort(404)", {"flask.abort"}),
        ("import flask as f\nx = f.session", {"flask.session"}),
        ("from werkzeug.exceptions import NotFound", {"werkzeug.exceptions.NotFound"}),
        ("from flask import current_app", set()),
        ("from flask_sqlalchemy.pagination import Pagination", set()),
    ],
)
def test_the_walker_sees_every_form_of_use(tmp_path, source, caught):
    path = tmp_path / "x.py"
    path.write_text(source + "\n")
    assert request_bound_names(path) == caught
