"""A deployment on real services: PostgreSQL, an MLflow server, the Dagster daemon and webserver.

The slow tests share one deployed home per module (deploy up: ~1 min, most of it MLflow's migrations on
PostgreSQL): the trained home's warehouse and exports, a champion trained once through the deployed MLflow
server, then the daemon's nights on a cron of every minute. Fast tests check the pieces without servers.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from engagement_pipeline.deploy import config, services
from engagement_pipeline.deploy.command import Layout
from engagement_pipeline.ops.run_host import HOST_TAG, this_host
from engagement_pipeline.partitions import NIGHT_TAG, last_complete_day
from engagement_pipeline.settings import Settings

ENGAGEMENT = [sys.executable, "-m", "engagement_pipeline.cli"]
NEVER_SOON = "0 0 1 1 *"  # New Year's midnight: the schedule stays quiet while the champion trains


# --------------------------------------------------------------------------- without servers


def test_a_deployed_home_names_its_mlflow_server_and_the_environment_still_wins(tmp_path):
    home = tmp_path / "home"
    assert Settings.from_environment({"ENGAGEMENT_HOME": str(home)}).tracking_uri is None  # the quickstart: sqlite
    (home / "deploy").mkdir(parents=True)
    (home / "deploy" / "tracking_uri").write_text("http://127.0.0.1:41234\n")
    assert Settings.from_environment({"ENGAGEMENT_HOME": str(home)}).tracking_uri == "http://127.0.0.1:41234"
    chosen = {"ENGAGEMENT_HOME": str(home), "MLFLOW_TRACKING_URI": "http://elsewhere:5000"}
    assert Settings.from_environment(chosen).tracking_uri == "http://elsewhere:5000"


def test_the_deployed_instance_config_is_valid_and_bounds_every_run(tmp_path):
    from dagster._core.instance.config import dagster_instance_config

    text = config.dagster_yaml("postgresql+psycopg2://engagement@/dagster?host=/x&port=5", 7, 600)
    (tmp_path / "dagster.yaml").write_text(text)
    parsed, _ = dagster_instance_config(str(tmp_path))
    assert parsed["run_monitoring"]["max_runtime_seconds"] == 600
    assert parsed["run_monitoring"]["poll_interval_seconds"] == 7
    assert parsed["run_queue"]["max_concurrent_runs"] == 1
    assert parsed["storage"]["postgres"]["postgres_url"].endswith("host=/x&port=5")


@pytest.mark.slow  # two fresh interpreters load the code location
def test_the_nightly_cron_comes_from_the_environment(tmp_path):
    probe = "from engagement_pipeline.definitions import defs; print(defs.resolve_schedule_def('nightly_refresh_schedule').cron_schedule)"  # noqa: E501
    for value, expected in ((None, "0 1 * * *"), ("*/5 * * * *", "*/5 * * * *")):
        env = {k: v for k, v in os.environ.items() if k != "ENGAGEMENT_NIGHTLY_CRON"}
        env["ENGAGEMENT_HOME"] = str(tmp_path / "home")
        if value:
            env["ENGAGEMENT_NIGHTLY_CRON"] = value
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
        assert done.stdout.strip() == expected, done.stderr


def test_the_refresh_names_its_night_and_scoring_follows_that_night_only_after_success():
    from engagement_pipeline.definitions import defs

    schedule = defs.resolve_schedule_def("nightly_refresh_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING  # a deployed home needs nobody to switch it on
    tick = dt.datetime(2025, 9, 21, 1, 0, tzinfo=dt.UTC)
    context = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def())
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.tags[NIGHT_TAG] == "2025-09-20"

    sensor = defs.resolve_sensor_def("score_after_refresh_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.instance_for_test() as instance:
        refresh = instance.create_run_for_job(defs.resolve_job_def("refresh_warehouse"), tags={NIGHT_TAG: "2025-09-20"})
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=dg.DagsterEvent(
                event_type_value="PIPELINE_SUCCESS", job_name="refresh_warehouse", message="done"
            ),
            dagster_instance=instance,
            dagster_run=refresh,
        )
        request = sensor(context)
    assert (request.partition_key, request.run_key) == ("2025-09-20", f"after:{refresh.run_id}")
    (job,) = [defs.resolve_job_def(target.job_name) for target in sensor.targets]
    assert sorted(k.to_user_string() for k in job.asset_layer.selected_asset_keys) == [
        "engagement_report",
        "user_predictions",
    ]


def test_the_stalled_run_sweep_judges_only_runs_that_recorded_this_host(tmp_path):
    from engagement_pipeline.ops.stalled_runs import fail_stalled_runs

    dead = subprocess.Popen(["true"])
    dead.wait()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        job_def = dg.Definitions(jobs=[dg.JobDefinition(graph_def=dg.GraphDefinition("j"))]).resolve_job_def("j")
        ids = {}
        for name, tags in (("here", {HOST_TAG: this_host()}), ("there", {HOST_TAG: "another-host"}), ("untagged", {})):
            run = instance.create_run_for_job(job_def, tags=tags)
            instance.handle_run_event(run.run_id, dg.DagsterEvent(event_type_value="PIPELINE_STARTING", job_name="j"))
            instance.handle_new_event(
                dg.EventLogEntry(
                    error_info=None,
                    level="DEBUG",
                    user_message="",
                    run_id=run.run_id,
                    timestamp=time.time(),
                    dagster_event=dg.DagsterEvent(
                        event_type_value="PIPELINE_START", job_name="j", pid=dead.pid, message="started"
                    ),
                )
            )
            ids[name] = run.run_id
        assert fail_stalled_runs(instance) == [ids["here"]]
        assert instance.get_run_by_id(ids["there"]).status == dg.DagsterRunStatus.STARTED


def test_runs_record_their_host_when_they_start(tmp_path):
    """A run launched like the daemon's (a run record, then executed by the code location's executor) tags its host."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import execute_run

    from engagement_pipeline.ops.run_host import host_recording_in_process_executor

    @dg.asset
    def a():
        return 1

    defs = dg.Definitions(
        assets=[a], jobs=[dg.define_asset_job("j", selection=[a])], executor=host_recording_in_process_executor
    )
    job = defs.resolve_job_def("j")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        run = instance.create_run_for_job(job)
        assert HOST_TAG not in run.tags
        assert execute_run(InMemoryJob(job), run, instance).success
        assert instance.get_run_by_id(run.run_id).tags[HOST_TAG] == this_host()


# --------------------------------------------------------------------------- on the real services


def engagement(env: dict[str, str], *args: str, timeout_s: float = 300) -> str:
    done = subprocess.run([*ENGAGEMENT, *args], env=env, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"engagement {' '.join(args)}: rc {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def processes_of(home: Path) -> list[int]:
    """Pids of every process whose environment names `home` as its ENGAGEMENT_HOME."""
    marker = f"ENGAGEMENT_HOME={home}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "environ").read_bytes() and (entry / "stat").read_text().split()[2] != "Z":
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


class Deployment:
    def __init__(self, home: Path, exports: Path, env: dict[str, str]):
        self.home, self.exports, self.env = home, exports, env
        self.layout = Layout(Settings.from_environment(env))

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home / "dagster"))

    def runs(self, job: str) -> list[dg.DagsterRun]:
        with self.instance() as instance:
            return [r.dagster_run for r in instance.get_run_records(filters=dg.RunsFilter(job_name=job))]

    def wait_for_run(self, job: str, status: dg.DagsterRunStatus, timeout_s: float, after: float = 0.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.instance() as instance:
                records = instance.get_run_records(filters=dg.RunsFilter(job_name=job, statuses=[status]))
            found = [r.dagster_run for r in records if r.create_timestamp.timestamp() > after]
            if found:
                return found[0]
            time.sleep(2)
        logs = (self.layout.logs / "daemon.log").read_text()[-4000:]
        raise AssertionError(f"no {status.value} run of {job} within {timeout_s}s; daemon log:\n{logs}")

    def restart_daemon(self, cron: str) -> None:
        services.stop(services.load(self.layout.state)["daemon"])
        self.env["ENGAGEMENT_NIGHTLY_CRON"] = cron
        engagement(self.env, "deploy", "up", "--monitoring-interval", "5")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, trained_home):
    """The trained home deployed (its MLflow sqlite store dropped: the server holds the champion), trained once."""
    from engagement_pipeline.model.assets import engagement_model
    from engagement_pipeline.resources import resources_for
    from engagement_pipeline_tests.conftest import QUICK_TRAINING
    from engagement_pipeline_tests.crash_helpers import pipeline_env
    from engagement_pipeline_tests.shared_homes import copy_home
    from engagement_pipeline_tests.training_fixtures import crown_latest_version_by_hand

    source, _ = trained_home
    root = tmp_path_factory.mktemp("dep")
    home = copy_home(source, root / "home")
    (home / "mlflow.db").unlink()
    shutil.rmtree(home / "mlartifacts", ignore_errors=True)
    exports = Path(shutil.copytree(source.parent / "exports", root / "exports"))
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:  # the project moved, its exports with it
        con.execute("update exports_folder set folder = ?", [str(exports)])
    env = pipeline_env(home, exports)
    env.update(ENGAGEMENT_NIGHTLY_CRON=NEVER_SOON, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    deployed = Deployment(home, exports, env)
    try:
        out = engagement(env, "deploy", "up", "--monitoring-interval", "5")
        assert "webserver" in out and "http://127.0.0.1:" in out
        settings = Settings.from_environment(env)
        assert settings.tracking_uri.startswith("http://127.0.0.1:")  # recorded in the home by `up`
        result = dg.materialize(
            [engagement_model],
            resources=resources_for(settings),
            run_config={"ops": {"engagement_model": {"config": QUICK_TRAINING}}},
        )
        assert result.success
        crown_latest_version_by_hand(resources_for(settings)["tracking"])
        yield deployed
    finally:
        print(engagement(env, "deploy", "down", timeout_s=180))
    assert processes_of(home) == [], "deploy down left processes behind"


@pytest.mark.slow
def test_deploy_status_names_each_service_and_since_when(deployment):
    out = engagement(deployment.env, "deploy", "status")
    for name in ("postgres", "mlflow", "daemon", "webserver"):
        (line,) = [line for line in out.splitlines() if line.startswith(name)]
        assert "running since" in line, out
    import urllib.request

    (mlflow,) = [line.split()[1] for line in out.splitlines() if line.startswith("mlflow")]
    with urllib.request.urlopen(f"{mlflow}/health", timeout=10) as response:
        assert response.status == 200
    assert processes_of(deployment.home)  # what `down` must end


def freshness(deployment: Deployment) -> dict[str, bool]:
    """Run the freshness checks now, against the deployed instance: {asset: passed}."""
    from engagement_pipeline.definitions import defs
    from engagement_pipeline.monitoring.definitions import freshness_checks as report_checks
    from engagement_pipeline.scoring.definitions import freshness_checks as scoring_checks

    keys = [key for checks in (*scoring_checks, *report_checks) for key in checks.check_keys]
    job = dg.define_asset_job("freshness_now", selection=dg.AssetSelection.checks(*keys))
    merged = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
    with deployment.instance() as instance:
        result = merged.resolve_job_def("freshness_now").execute_in_process(instance=instance, raise_on_error=False)
    return {e.asset_key.to_user_string(): e.passed for e in result.get_asset_check_evaluations()}


@pytest.mark.slow
def test_the_daemon_runs_the_nights_and_never_scores_after_a_failed_refresh(deployment):
    day = last_complete_day()
    broken = deployment.exports / "broken.csv"
    broken.write_text("not,a,classifications,export\n1,2,3,4\n")  # the refresh's ingest refuses its header
    started = time.time()
    deployment.restart_daemon("* * * * *")

    failed = deployment.wait_for_run("refresh_warehouse", dg.DagsterRunStatus.FAILURE, 240, after=started)
    assert failed.tags[NIGHT_TAG] == day
    assert deployment.runs("nightly_score_and_report") == []  # nothing scored on stale features
    assert freshness(deployment) == {"user_predictions": False, "engagement_report": False}

    broken.unlink()
    scored = deployment.wait_for_run("nightly_score_and_report", dg.DagsterRunStatus.SUCCESS, 300, after=started)
    refresh_id = scored.tags["dagster/run_key"].removeprefix("after:")
    with deployment.instance() as instance:
        assert instance.get_run_by_id(refresh_id).status == dg.DagsterRunStatus.SUCCESS
    assert scored.tags["dagster/partition"] == day
    assert (deployment.home / "predictions" / f"date={day}" / "predictions.parquet").exists()
    assert list((deployment.home / "reports").glob(f"*{day}*")), "no report of the night"
    if dt.datetime.now(dt.UTC).hour >= 6:  # before 06:00 the check asks for the day before, never scored here
        assert freshness(deployment) == {"user_predictions": True, "engagement_report": True}


@pytest.mark.slow
def test_a_run_killed_with_the_daemon_is_marked_failed_and_the_next_tick_runs(deployment):
    deployment.restart_daemon("* * * * *")
    started = time.time()
    running = deployment.wait_for_run("refresh_warehouse", dg.DagsterRunStatus.STARTED, 180, after=started)
    # the run records its host first thing (ops/run_host.py); one killed before that is left to the maximum runtime
    deadline = time.monotonic() + 60
    while HOST_TAG not in running.tags and time.monotonic() < deadline:
        time.sleep(0.2)
        with deployment.instance() as instance:
            running = instance.get_run_by_id(running.run_id)
    assert running.tags.get(HOST_TAG) == this_host()
    daemon = services.load(deployment.layout.state)["daemon"]
    os.killpg(daemon.pid, signal.SIGKILL)  # the daemon, its code server and the run it launched: no goodbye
    time.sleep(1)
    with deployment.instance() as instance:
        assert instance.get_run_by_id(running.run_id).status == dg.DagsterRunStatus.STARTED  # it cannot know
    engagement(deployment.env, "deploy", "up", "--monitoring-interval", "5")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with deployment.instance() as instance:
            if instance.get_run_by_id(running.run_id).status == dg.DagsterRunStatus.FAILURE:
                break
        time.sleep(2)
    with deployment.instance() as instance:
        run = instance.get_run_by_id(running.run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE, "the killed run still claims to run"
    after_kill = time.time()
    deployment.wait_for_run("refresh_warehouse", dg.DagsterRunStatus.SUCCESS, 240, after=after_kill)


def test_the_uis_of_a_deployed_home_are_named_not_started_twice(engagement_home, capsys):
    from engagement_pipeline import cli
    from engagement_pipeline.ops.stalled_runs import _process_start_time

    me = os.getpid()
    recorded = {
        name: services.Service(name, me, _process_start_time(me), f"http://127.0.0.1:{port}", "log")
        for name, port in (("mlflow", 41111), ("webserver", 42222))
    }
    state = engagement_home / "deploy" / "state.json"
    state.parent.mkdir(parents=True)
    services.save(state, recorded)
    assert cli.main(["mlflow-ui"]) == 0  # returns at once: no second server on the deployment's store
    assert cli.main(["dagster-ui"]) == 0  # no second daemon running every schedule twice
    out = capsys.readouterr().out
    assert "http://127.0.0.1:41111, running" in out and "http://127.0.0.1:42222, running" in out


def test_a_port_is_taken_only_while_someone_listens_on_it():
    """`up` keeps each service's port while free; a restarted MLflow server on a new port would strand the daemon."""
    import socket

    from engagement_pipeline.deploy.command import free_port, port_is_free

    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert not port_is_free(port)
    assert port_is_free(port)


def test_a_service_that_exited_is_not_running_even_before_it_is_reaped():
    """A service whose parent (`deploy up`) exited may stay a zombie for a while: `up` must start it again."""
    from engagement_pipeline.ops.stalled_runs import _process_start_time

    child = subprocess.Popen(["sleep", "0.1"])
    service = services.Service("x", child.pid, _process_start_time(child.pid), "-", "-")
    assert service.running()
    deadline = time.monotonic() + 10
    while not services.is_zombie(child.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert services.is_zombie(child.pid)  # exited, not yet reaped
    assert not service.running()
    child.wait()
