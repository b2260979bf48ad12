"""Every setting the app reads is in config.py's table: no hidden settings, none listed twice."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from config import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
# Read by the app, set by Flask, its extensions or create_app itself (not by whoever deploys it).
FRAMEWORK = {"MAX_CONTENT_LENGTH", "TESTING"}
FRAMEWORK_PREFIXES = ("SQLALCHEMY_", "SESSION_COOKIE_", "SESSION_REFRESH_", "WTF_", "RATELIMIT_")
TEST_HOOKS = {"DKIM_DNSFUNC"}  # tests put a function here (a DKIM key lookup in place of DNS)
READS = re.compile(r"""config(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]+)["']|config\.([A-Z][A-Z0-9_]+)""")


def names_read() -> set[str]:
    """Every upper-case name read from a config in product code and templates."""
    files = [*(ROOT / "webapp").rglob("*.py"), *(ROOT / "jobs").rglob("*.py")]
    files += (ROOT / "templates").rglob("*.html")
    return {first or second for path in files for first, second in READS.findall(path.read_text())}


def test_every_setting_the_app_reads_is_in_the_table():
    listed = {setting.name for setting in SETTINGS}
    hidden = {
        name
        for name in names_read() - listed - FRAMEWORK - TEST_HOOKS
        if not name.startswith(FRAMEWORK_PREFIXES)
    }
    assert hidden == set()
    # Not vacuous: the scan finds reads written each way.
    assert {"EMAIL_PROVIDER", "SKIP_SERVICE_CHECK", "SUPPORT_ADDRESS"} <= names_read()


def test_each_setting_is_listed_once():
    assert [name for name, count in Counter(setting.name for setting in SETTINGS).items() if count > 1] == []
