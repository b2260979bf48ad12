"""The project's own source, as the tests that read it (boundaries, layout) find it: its root folder
and a file's dotted module name."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted name of a source file under root."""
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
