"""Runs whose process died: mark them failed, so the one-at-a-time queue moves on.

The instance runs one run at a time (`max_concurrent_runs: 1`, because every
run uses the one DuckDB file). A run whose process is killed (SIGKILL, OOM,
a closed laptop lid) stays STARTED forever, and the queue waits behind it:
the nightly schedules included. Dagster's own run monitoring cannot see it
with the default run launcher, which has no worker health check.

Every run records the process that executes it in its RUN_START event
(`pid`). A run is stalled when that process no longer exists, or the pid now
belongs to a process started after the run (a reused pid). `stalled_runs_sensor`
looks every minute from the daemon; the `engagement` command looks before each
of its runs. Only runs that recorded this host when they started (the
`engagement/host` tag, ops/run_host.py) are judged: a run on another host, or
one that has not recorded its host, is left to Dagster's run monitoring (its
maximum runtime, deploy/config.py).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg

from engagement_pipeline.ops.run_host import HOST_TAG

SWEEP_INTERVAL_S = 60


def _process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None if there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError, StopIteration):
        # no /proc (not Linux): fall back to "exists or not"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0


def process_is_gone(pid: int, run_started_at: float) -> bool:
    """True when no process `pid` runs, or the one that does started after the run did."""
    started = _process_start_time(pid)
    return started is None or started > run_started_at + 1.0


def fail_stalled_runs(instance: dg.DagsterInstance) -> list[str]:
    """Report every STARTED run of this host whose process is gone as failed; returns their run ids."""
    failed = []
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    for record in records:
        run = record.dagster_run
        if run.tags.get(HOST_TAG) != socket.gethostname():  # another host's, or not recorded: not ours to judge
            continue
        starts = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
        if not starts or starts[0].event_log_entry.dagster_event is None:
            continue
        entry = starts[0].event_log_entry
        pid = entry.dagster_event.pid
        if pid is None or not process_is_gone(pid, entry.timestamp):
            continue
        instance.report_run_failed(
            run,
            message=f"The process running this run (pid {pid}) is gone (killed?): marked failed so queued runs start.",
        )
        failed.append(run.run_id)
    return failed


@dg.sensor(
    name="stalled_runs_sensor",
    minimum_interval_seconds=SWEEP_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Every minute: a run whose process died (killed, out of memory) is marked failed, "
        "so the one-at-a-time queue, and the nightly schedules behind it, move on."
    ),
)
def stalled_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    failed = fail_stalled_runs(context.instance)
    if failed:
        return dg.SkipReason(f"marked {len(failed)} stalled run(s) failed: {', '.join(failed)}")
    return dg.SkipReason("no stalled runs")


# MLflow's side of the same story: a training run killed mid-way stays RUNNING in the
# tracking store. Training tags its run with its process, and marks a dead one FAILED
# when it next starts.
MLFLOW_PID_TAG = "engagement.pid"
MLFLOW_HOST_TAG = "engagement.host"


def process_tags() -> dict[str, str]:
    """Tags that say which process owns an MLflow run (read back by fail_stalled_mlflow_runs)."""
    return {MLFLOW_PID_TAG: str(os.getpid()), MLFLOW_HOST_TAG: socket.gethostname()}


def fail_stalled_mlflow_runs(client, experiment_id: str) -> list[str]:
    """Mark RUNNING runs of this host whose process is gone as FAILED; returns their run ids."""
    failed = []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        tags = run.data.tags
        if tags.get(MLFLOW_HOST_TAG) != socket.gethostname() or not tags.get(MLFLOW_PID_TAG, "").isdigit():
            continue
        if process_is_gone(int(tags[MLFLOW_PID_TAG]), run.info.start_time / 1000):
            client.set_tag(run.info.run_id, "engagement.failure", "its process was gone (killed?)")
            client.set_terminated(run.info.run_id, status="FAILED")
            failed.append(run.info.run_id)
    return failed
