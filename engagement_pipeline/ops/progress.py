"""How a long step says how long it has run: durations as a person reads them, and a heartbeat thread.

Shared by training (model/budget.py) and the ingest (ingest/progress.py).
"""

import contextlib
import threading
import time


def duration(seconds: float) -> str:
    """Seconds as a person reads them: "45 s", "7 min", "1 h 20 min"."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {round(seconds % 3600 / 60):02d} min"


@contextlib.contextmanager
def heartbeat(said: list[float], speak, started: float, every_s: float = 25.0):
    """While the block runs, `speak(seconds so far)` whenever nothing was said (`said[0]`) for `every_s`."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(min(1.0, every_s / 4)):
            if time.perf_counter() - said[0] >= every_s:
                said[0] = time.perf_counter()
                speak(said[0] - started)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
