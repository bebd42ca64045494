"""Long-running services in their own process groups, recorded in <home>/deploy/state.json.

Each service is started with `start_new_session=True`: it leads a process group of its own, and
whatever it starts (Dagster's code servers and run workers, PostgreSQL's backends, MLflow's
workers) stays in that group. Stopping a service signals the whole group, waits, and kills what
is left, so `engagement deploy down` leaves no process behind. A record names the process by pid
and start time (a pid alone may be reused after a reboot).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

STOP_TIMEOUT_S = 30


def _process_start_time(pid: int) -> float | None:
    from engagement_pipeline.ops.stalled_runs import _process_start_time as start_time  # imports dagster: lazily

    return start_time(pid)


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@dataclass
class Service:
    name: str
    pid: int
    started_at: float  # the process's start time, seconds since the epoch (from /proc)
    address: str
    log: str
    stop_signal: int = signal.SIGTERM

    def running(self) -> bool:
        """The recorded process still runs: same pid, same start time, and not a zombie waiting to be reaped."""
        started = _process_start_time(self.pid)
        return started is not None and abs(started - self.started_at) < 2.0 and not is_zombie(self.pid)

    def since(self) -> str:
        return dt.datetime.fromtimestamp(self.started_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def load(state_file: Path) -> dict[str, Service]:
    if not state_file.exists():
        return {}
    return {name: Service(**record) for name, record in json.loads(state_file.read_text()).items()}


def save(state_file: Path, services: dict[str, Service]) -> None:
    temporary = state_file.with_suffix(".tmp")
    temporary.write_text(json.dumps({name: asdict(service) for name, service in services.items()}, indent=2))
    temporary.replace(state_file)


def start(name: str, argv: list[str], env: dict[str, str], log: Path, address: str, stop_signal=signal.SIGTERM):
    """Start `argv` in a new process group, its output appended to `log`; returns its record."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n--- {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC: {' '.join(argv)}\n".encode())
        out.flush()
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    started_at = _process_start_time(process.pid) or time.time()
    return Service(name, process.pid, started_at, address, str(log), int(stop_signal)), process


def group_members(pgid: int) -> list[int]:
    """Pids of the processes in process group `pgid` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def stop(service: Service, timeout_s: float = STOP_TIMEOUT_S) -> str:
    """Stop the service's whole process group: its stop signal, then SIGKILL after `timeout_s`."""
    if not service.running():
        leftovers = group_members(service.pid)
        if not leftovers:
            return "was not running"
        os.killpg(service.pid, signal.SIGKILL)  # the leader died, its children did not
        return f"killed {len(leftovers)} leftover process(es)"
    try:
        os.killpg(service.pid, service.stop_signal)
    except ProcessLookupError:
        return "was not running"
    deadline = time.monotonic() + timeout_s
    while group_members(service.pid):
        if time.monotonic() > deadline:
            os.killpg(service.pid, signal.SIGKILL)
            time.sleep(0.2)
            return f"killed after {timeout_s:.0f}s"
        try:
            os.waitpid(-service.pid, os.WNOHANG)  # reap our own children
        except ChildProcessError:
            pass
        time.sleep(0.1)
    return "stopped"


def wait_http(url: str, timeout_s: float, alive) -> None:
    """Wait until `url` answers 200, or fail naming what happened."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if not alive():
            raise RuntimeError(f"the process serving {url} exited")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout_s:.0f}s")
        time.sleep(0.3)
