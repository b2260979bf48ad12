"""Jobs the benchmarks enqueue to measure RQ itself."""


def noop() -> None:
    """Do nothing: what a worker costs per job before any work."""
