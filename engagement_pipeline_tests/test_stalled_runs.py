"""A run whose process was killed is marked failed, so the one-at-a-time queue (and the nightly schedules) move on."""

import os
from pathlib import Path

import dagster as dg
import pytest

from engagement_pipeline.ops.stalled_runs import fail_stalled_runs, process_is_gone, stalled_runs_sensor
from engagement_pipeline.resources import resources_for
from engagement_pipeline.sample import write_export
from engagement_pipeline_tests.crash_helpers import Run, lock_is_held, materialize_argv, pipeline_env, wait_until


def started_runs(instance: dg.DagsterInstance) -> list[str]:
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    return [record.dagster_run.run_id for record in records]


def start_ingest(tmp_path: Path, name: str) -> tuple[Run, Path]:
    """An ingest of a 200k-row export (written once per test, a link of it in each home's folder) holding the lock."""
    home, exports = tmp_path / f"home-{name}", tmp_path / f"exports-{name}"
    exports.mkdir()
    big = tmp_path / "big.csv"
    if not big.exists():
        write_export(big, 200_000, seed=5)
    os.link(big, exports / "big.csv")
    run = Run.start(materialize_argv("classifications"), pipeline_env(home, exports), tmp_path / f"{name}.log")
    # the run has started (RUN_START is in the instance) once it holds the warehouse lock
    wait_until(lambda: lock_is_held(home / "warehouse.duckdb.lock"), timeout_s=180, what="the ingest holding the lock")
    return run, home


@pytest.mark.slow
def test_a_killed_run_is_marked_failed_and_a_live_one_is_left_alone(tmp_path):
    killed, killed_home = start_ingest(tmp_path, "killed")
    killed.kill()  # SIGKILL to its process group: Dagster never hears of it
    with dg.DagsterInstance.from_config(str(killed_home / "dagster")) as instance:
        (stalled,) = started_runs(instance)  # before: the run claims to be running, forever
        assert fail_stalled_runs(instance) == [stalled]
        run = instance.get_run_by_id(stalled)
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert started_runs(instance) == []
        assert fail_stalled_runs(instance) == []  # once is enough

    live, live_home = start_ingest(tmp_path, "live")
    try:
        with dg.DagsterInstance.from_config(str(live_home / "dagster")) as instance:
            (running,) = started_runs(instance)
            assert fail_stalled_runs(instance) == []
            assert instance.get_run_by_id(running).status == dg.DagsterRunStatus.STARTED
    finally:
        live.kill()


def test_a_pid_reused_by_a_younger_process_counts_as_gone():
    assert not process_is_gone(os.getpid(), run_started_at=1e12)  # this process, "started" before that run
    assert process_is_gone(os.getpid(), run_started_at=0.0)  # a run from 1970 was not run by this process
    assert process_is_gone(2**22 + 12345, run_started_at=0.0)  # above pid_max: no such process


def test_the_sweep_runs_every_minute_from_the_daemon_without_being_switched_on():
    assert stalled_runs_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert stalled_runs_sensor.minimum_interval_seconds == 60


def test_a_training_run_whose_process_died_is_marked_failed_in_mlflow(settings, mlflow_store):
    import socket
    import subprocess
    import sys

    from engagement_pipeline.ops.stalled_runs import (
        MLFLOW_HOST_TAG,
        MLFLOW_PID_TAG,
        fail_stalled_mlflow_runs,
        process_tags,
    )

    tracking = resources_for(settings)["tracking"]
    client = tracking.client()
    experiment = client.get_experiment_by_name(tracking.experiment_name).experiment_id
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = client.create_run(experiment, tags={MLFLOW_PID_TAG: str(dead.pid), MLFLOW_HOST_TAG: socket.gethostname()})
    alive = client.create_run(experiment, tags=process_tags())
    elsewhere = client.create_run(experiment, tags={MLFLOW_PID_TAG: str(dead.pid), MLFLOW_HOST_TAG: "another-host"})

    assert fail_stalled_mlflow_runs(client, experiment) == [killed.info.run_id]
    status = {run: client.get_run(run.info.run_id).info.status for run in (killed, alive, elsewhere)}
    assert status == {killed: "FAILED", alive: "RUNNING", elsewhere: "RUNNING"}
