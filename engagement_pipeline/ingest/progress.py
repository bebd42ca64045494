"""Where a long ingest step is, said at most every `every_s` seconds: a 37 GB export is read four times
(digest and lines, records, DuckDB's parse, the insert) and each pass takes minutes.

    with progress.step("export.csv.gz: checking (digest, lines, encoding)", bytes_read(size, passes=2)):
        scan_file(...)

prints, only while the step runs past `every_s`,

    export.csv.gz: checking (digest, lines, encoding): 41%, 2 min so far, about 3 min left

How far a step is comes from what it reads: the bytes this process has read from disk since the step began
(Linux's /proc/self/io `rchar`, which counts compressed bytes for a .gz) over the passes it makes over the
file, or DuckDB's own progress of the statement running on a connection. Where neither is known the line
says only the time so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from engagement_pipeline.ops.progress import duration, heartbeat

PROC_IO = Path("/proc/self/io")
Fraction = Callable[[], float | None]


def bytes_read_so_far() -> int | None:
    """Bytes this process has read through read() calls so far (every thread), or None off Linux."""
    try:
        for line in PROC_IO.read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def bytes_read(size: int, passes: int = 1) -> Fraction:
    """The share of `passes` reads of `size` bytes done since this call (None where it cannot be known)."""
    start = bytes_read_so_far()
    if start is None or size <= 0:
        return lambda: None

    def fraction() -> float | None:
        now = bytes_read_so_far()
        return None if now is None else min((now - start) / (size * passes), 1.0)

    return fraction


def duckdb_progress(con, parts: int = 1, part: list[int] | None = None) -> Fraction:
    """The share done of `parts` statements run one after another on `con`, `part[0]` (0-based) the one
    running now: DuckDB's progress of the running statement (the connection needs `enable_progress_bar`)."""

    def fraction() -> float | None:
        try:
            percent = con.query_progress()
        except Exception:  # noqa: BLE001 - no statement running, or a connection closed: say the time only
            return None
        done = part[0] if part else 0
        if percent < 0:
            return None
        # 100 is a statement ending, or the one before the current part still reported: count it as not begun
        return (done + (percent / 100.0 if percent < 100 else 0.0)) / parts

    return fraction


class Progress:
    """Prints (through `say`) how far each step is, at most every `every_s` seconds while it runs."""

    def __init__(self, say: Callable[[str], None] | None, every_s: float = 30.0):
        self.say, self.every_s = say, every_s

    @contextmanager
    def step(self, label: str, fraction: Fraction = lambda: None) -> Iterator[None]:
        if self.say is None:
            yield
            return
        started = time.perf_counter()
        furthest: list[float | None] = [None]

        def speak(elapsed: float) -> None:
            now = fraction()
            if now is not None:  # a reading never moves back (DuckDB's can, between a query's pipelines)
                furthest[0] = max(now, furthest[0] or 0.0)
            self.say(self.line(label, elapsed, furthest[0]))

        with heartbeat([started], speak, started, self.every_s):
            yield

    @staticmethod
    def line(label: str, elapsed: float, fraction: float | None) -> str:
        if fraction is None or fraction <= 0:
            return f"{label}: {duration(elapsed)} so far"
        left = elapsed * (1 - fraction) / fraction
        return f"{label}: {fraction:.0%}, {duration(elapsed)} so far, about {duration(left)} left"
