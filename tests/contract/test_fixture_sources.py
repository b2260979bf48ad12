"""The copied SendGrid schemas are what the spec says: when ../shared holds the spec (the team's
machines; not a clone), the copy must be exactly what tests/fixtures/sendgrid/extract.py makes of it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sendgrid"


def load_extractor():
    spec = importlib.util.spec_from_file_location("sendgrid_extract", FIXTURES / "extract.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_copy_matches_the_spec_it_names():
    extract = load_extractor()
    if not extract.SPEC_DIR.is_dir():
        pytest.skip(f"the spec is not here ({extract.SPEC_DIR}); the committed copy is what the tests use")
    copied = json.loads((FIXTURES / "openapi_subset.json").read_text())
    assert set(copied) == {"_source", *extract.WANTED}
    for name, (file, path, method, status) in extract.WANTED.items():
        spec = yaml.safe_load((extract.SPEC_DIR / file).read_text())
        assert copied[name] == json.loads(json.dumps(extract.entry(spec, file, path, method, status))), name
