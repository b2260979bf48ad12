"""No test module imports from another (nor from a conftest.py): what two of them share lives in a
helper module (tests/helpers.py, tests/faults.py, tests/contract/reading.py, ...). Importing a test
module runs it a second time under another name and hands its tests and fixtures to the importer."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.source_tree import ROOT, module_name

TESTS = ROOT / "tests"


def runs_tests(module: str) -> bool:
    """Whether a dotted name is a test module's or a conftest's (by pytest's naming)."""
    last = module.rsplit(".", 1)[-1]
    return last.startswith("test_") or last == "conftest"


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module a file names in an import, and each name it takes from one (which may be a
    submodule), resolved from relative imports; read from the source, nothing imported."""
    package = module_name(path, root).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_no_test_module_is_imported_by_another_file_of_the_tests():
    importing = {
        module_name(path): sorted(name for name in imported_modules(path) if runs_tests(name))
        for path in sorted(TESTS.rglob("*.py"))
    }
    assert {module: names for module, names in importing.items() if names} == {}


def test_the_check_sees_each_way_of_importing_a_test_module(tmp_path):
    folder = tmp_path / "tests" / "contract"
    folder.mkdir(parents=True)
    lines = {
        "from tests.contract.test_shapes import load_spec": "tests.contract.test_shapes",
        "from tests.contract import test_shapes": "tests.contract.test_shapes",
        "from .test_shapes import load_spec": "tests.contract.test_shapes",
        "from . import conftest": "tests.contract.conftest",
        "import tests.test_faults": "tests.test_faults",
    }
    for line, module in lines.items():
        source = folder / "reading.py"
        source.write_text(f"{line}\n")
        found = {name for name in imported_modules(source, tmp_path) if runs_tests(name)}
        assert module in found, line
    (folder / "reading.py").write_text("from tests.contract.adapters import ADAPTERS\n")
    assert not [name for name in imported_modules(folder / "reading.py", tmp_path) if runs_tests(name)]
