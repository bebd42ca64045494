"""Faults a deployment meets, on the real services: PostgreSQL restarted mid-run, the MLflow server killed
while a model trains or down while a day is scored, a full disk under a scoring run, a run past its maximum
runtime.

One deployment for the module (test_deploy.py's `deployment` fixture: the trained home deployed with
`engagement deploy up`, a champion trained through its MLflow server, the nightly schedule quiet). Every run
is launched as a person launches one from the UI: through the webserver's GraphQL API, queued, started by
the daemon. Each test leaves the deployment healthy (what it stopped is started again by `deploy up`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time

import dagster as dg
import duckdb
import pytest

from engagement_pipeline.deploy import services
from engagement_pipeline.resources import CHAMPION_ALIAS, REGISTERED_MODEL_NAME, exclusive_lock
from engagement_pipeline_tests.conftest import QUICK_TRAINING
from engagement_pipeline_tests.crash_helpers import assert_ingest_consistent, fill_disk, small_disk
from engagement_pipeline_tests.test_deploy import Deployment, engagement
from engagement_pipeline_tests.test_deploy import deployment as module_deployment  # noqa: F401 - pytest's, by this name

LOCATION = "engagement_pipeline"
ENDED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
MONITORING_S = 5  # the fixture's `deploy up --monitoring-interval 5`


@pytest.fixture
def deployment(module_deployment: Deployment) -> Deployment:  # noqa: F811 - test_deploy.py's, one per module
    return module_deployment


def launch(deployed: Deployment, job: str, *, assets=None, run_config=None, tags=None) -> str:
    """Launch `job` through the deployment's webserver, as the UI's Launch button does; the daemon starts it."""
    from dagster_graphql import DagsterGraphQLClient

    address = services.load(deployed.layout.state)["webserver"].address.removeprefix("http://")
    host, port = address.split(":")
    client = DagsterGraphQLClient(host, port_number=int(port), timeout=60)
    return client.submit_job_execution(
        job, repository_location_name=LOCATION, run_config=run_config, tags=tags, asset_selection=assets
    )


def events(deployed: Deployment, run_id: str) -> list[dg.EventLogEntry]:
    with deployed.instance() as instance:
        return list(instance.all_logs(run_id))


def wait_for_event(deployed: Deployment, run_id: str, what, timeout_s: float = 120) -> dg.EventLogEntry:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [entry for entry in events(deployed, run_id) if what(entry)]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"run {run_id}: awaited event not seen in {timeout_s}s")


def wait_until_ended(deployed: Deployment, run_id: str, timeout_s: float) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with deployed.instance() as instance:
            run = instance.get_run_by_id(run_id)
        if run.status in ENDED:
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} ({run.job_name}) still {run.status.value} after {timeout_s}s")


def failure_texts(deployed: Deployment, run_id: str) -> list[str]:
    """The run's failure messages, and every error (with its causes) its steps failed with, as 'Class: words'."""
    texts = []
    for entry in events(deployed, run_id):
        if entry.dagster_event_type == dg.DagsterEventType.RUN_FAILURE:
            texts.append(entry.dagster_event.message or "")
        if entry.dagster_event_type == dg.DagsterEventType.STEP_FAILURE:
            error = entry.dagster_event.event_specific_data.error
            while error is not None:
                texts.append(f"{error.cls_name}: {error.message.strip()}")
                error = error.cause or error.context
    return texts


def registry(deployed: Deployment) -> tuple[str | None, dict[str, dict[str, str]]]:
    """(the champion's version, {version: its tags}) from the deployment's MLflow server."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=deployed.layout.tracking_uri.read_text().strip())
    aliases = client.get_registered_model(REGISTERED_MODEL_NAME).aliases
    versions = client.search_model_versions(f"name = '{REGISTERED_MODEL_NAME}'")
    return aliases.get(CHAMPION_ALIAS), {str(v.version): dict(v.tags) for v in versions}


def assert_registry_consistent(champion: str | None, versions: dict[str, dict[str, str]]) -> None:
    """The champion was promoted with its decision recorded; no version says promoted without a decision."""
    from engagement_pipeline.model.registry import DECISION_TAG, PROMOTED_TAG

    assert champion is not None and versions[str(champion)].get(PROMOTED_TAG) == "true", (champion, versions)
    for version, tags in versions.items():
        if tags.get(PROMOTED_TAG) == "true":
            assert tags.get(DECISION_TAG), f"v{version} promoted without its decision"


def assert_predictions_have_runs(deployed: Deployment) -> None:
    """Every predictions file on disk is a materialization Dagster recorded (none from a run that failed)."""
    with deployed.instance() as instance:
        recorded = instance.get_materialized_partitions(dg.AssetKey("user_predictions"))
    on_disk = {p.parent.name.removeprefix("date=") for p in (deployed.home / "predictions").glob("date=*/*.parquet")}
    assert on_disk <= recorded, f"predictions without their run: {sorted(on_disk - recorded)}"
    assert not list((deployed.home / "predictions").rglob("*.tmp")), "a half-written predictions file"


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_server_that_does_not_answer_is_told_apart_from_other_failures(monkeypatch):
    import socket

    import mlflow
    from mlflow.exceptions import MlflowException

    from engagement_pipeline.model.outage import no_answer, outage_message, scoring_outage_message

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens there once the block ends
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException) as refused:
        mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{closed}").get_registered_model(REGISTERED_MODEL_NAME)
    assert no_answer(refused.value) == "connection refused"
    assert no_answer(MlflowException("RESOURCE_DOES_NOT_EXIST: no such model")) is None  # the server answered
    assert no_answer(ValueError("bad config")) is None
    said = outage_message("http://h:1", "connection refused", {"version": "4"})
    assert said.startswith("The MLflow server http://h:1 did not answer (connection refused)")
    assert "v4 is not promoted" in said and "alias did not move" in said
    said = scoring_outage_message("http://h:1", "connection refused", "2025-09-19")
    assert said.startswith("The MLflow server http://h:1 did not answer (connection refused) while `user_predictions`")
    assert "nothing was scored, the predictions of 2025-09-19 are as they were" in said


@pytest.mark.slow
def test_postgres_restarted_mid_refresh_ends_the_run_and_the_next_night_runs_on_what_was_stored(deployment):
    from engagement_pipeline.sample import write_export

    new_export = write_export(deployment.exports / "next-night.csv", 1_500, seed=11)  # rows the refresh must store
    run_id = launch(deployment, "refresh_warehouse")
    wait_for_event(deployment, run_id, lambda e: e.dagster_event_type == dg.DagsterEventType.STEP_START)
    assert services.stop(services.load(deployment.layout.state)["postgres"]) == "stopped"  # a fast shutdown
    time.sleep(10)  # longer than Dagster's own retries of a lost connection (~6 s)
    engagement(deployment.env, "deploy", "up", "--monitoring-interval", str(MONITORING_S))

    # The run ends, never left STARTED: failed (the lost connection, at the step or at the run's level, or the
    # sweep of dead runs finding its process gone), or done if the ingest finished on the restarted database.
    run = wait_until_ended(deployment, run_id, 300)
    if run.status == dg.DagsterRunStatus.FAILURE:
        assert any(text.strip() for text in failure_texts(deployment, run_id))
    assert_ingest_consistent(deployment.home)  # nothing half-stored, whether the ingest committed or not

    # The next night: launched through the UI at once, the refresh succeeds and scoring follows it.
    started = time.time()
    again = launch(deployment, "refresh_warehouse")
    assert wait_until_ended(deployment, again, 240).status == dg.DagsterRunStatus.SUCCESS, failure_texts(
        deployment, again
    )
    deployment.wait_for_run("nightly_score_and_report", dg.DagsterRunStatus.SUCCESS, 240, after=started)
    counts = assert_ingest_consistent(deployment.home)
    with duckdb.connect(str(deployment.home / "warehouse.duckdb"), read_only=True) as con:
        (stored,) = con.execute(
            "select sum(rows_inserted) from ingested_files where source_file like ?", [f"%{new_export.name}"]
        ).fetchone()
        (distinct,) = con.execute("select count(distinct classification_id) from classifications").fetchone()
    assert stored == 1_500 and distinct == counts["rows"], (stored, distinct, counts)
    assert_registry_consistent(*registry(deployment))
    assert_predictions_have_runs(deployment)


@pytest.mark.slow
def test_the_mlflow_server_killed_while_training_promotes_nothing_and_the_run_says_why(deployment):
    from engagement_pipeline.model.registry import DECISION_TAG, PROMOTED_TAG

    champion, before = registry(deployment)
    uri = deployment.layout.tracking_uri.read_text().strip()
    config = {"ops": {"engagement_model": {"config": QUICK_TRAINING}}}
    run_id = launch(deployment, "__ASSET_JOB", assets=["engagement_model"], run_config=config)
    wait_for_event(deployment, run_id, lambda e: "epoch 0/" in (e.user_message or ""), timeout_s=600)
    os.killpg(services.load(deployment.layout.state)["mlflow"].pid, signal.SIGKILL)  # the server and its workers
    try:
        assert wait_until_ended(deployment, run_id, 300).status == dg.DagsterRunStatus.FAILURE
        said = f"The MLflow server {uri} did not answer (connection refused) while `engagement_model` trained"
        (error,) = [t for t in failure_texts(deployment, run_id) if t.startswith("TrackingServerUnavailable: ")]
        assert said in error and f"the `{CHAMPION_ALIAS}` alias did not move" in error, error
        logged = [e.user_message for e in events(deployment, run_id) if e.level >= 40 and said in e.user_message]
        assert logged, "the run's log does not say why"
    finally:  # the server back, whatever was asserted: the next tests need it
        engagement(deployment.env, "deploy", "up", "--monitoring-interval", str(MONITORING_S))
    assert deployment.layout.tracking_uri.read_text().strip() == uri  # the same port: the daemon's runs reach it
    after_champion, after = registry(deployment)
    assert after_champion == champion  # registered or not, nothing was promoted
    assert all(after[v].get(PROMOTED_TAG) != "true" for v in set(after) - set(before)), after
    assert_registry_consistent(after_champion, after)

    # Back: the next training is judged by the gate against the champion (promoted or not, with its numbers).
    again = launch(deployment, "__ASSET_JOB", assets=["engagement_model"], run_config=config)
    assert wait_until_ended(deployment, again, 240).status == dg.DagsterRunStatus.SUCCESS
    now, versions = registry(deployment)
    newest = max(versions, key=int)
    decision = versions[newest][DECISION_TAG]
    assert f"champion v{champion}" in decision and "could not be looked up" not in decision, decision
    assert now == (newest if versions[newest][PROMOTED_TAG] == "true" else champion), (now, decision)
    assert_registry_consistent(now, versions)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("engagement").experiment_id
    assert client.search_runs([experiment], "attributes.status = 'RUNNING'") == []  # the killed run: marked FAILED


@pytest.mark.slow
def test_the_mlflow_server_down_fails_scoring_plainly_and_a_retry_succeeds_once_it_is_back(deployment):
    day = "2025-09-19"
    target = deployment.home / "predictions" / f"date={day}" / "predictions.parquet"
    before = digest(target) if target.exists() else None
    uri = deployment.layout.tracking_uri.read_text().strip()
    assert services.stop(services.load(deployment.layout.state)["mlflow"]) == "stopped"
    try:
        down = launch(deployment, "nightly_score_and_report", tags={"dagster/partition": day})
        assert wait_until_ended(deployment, down, 180).status == dg.DagsterRunStatus.FAILURE
        (error,) = [t for t in failure_texts(deployment, down) if t.startswith("TrackingServerUnavailable: ")]
        said = f"The MLflow server {uri} did not answer (connection refused) while `user_predictions`"
        assert said in error and f"nothing was scored, the predictions of {day} are as they were" in error, error
        assert (digest(target) if target.exists() else None) == before and not list(target.parent.glob("*.tmp"))
    finally:  # the server back, whatever was asserted: the next tests need it
        engagement(deployment.env, "deploy", "up", "--monitoring-interval", str(MONITORING_S))
    again = launch(deployment, "nightly_score_and_report", tags={"dagster/partition": day})
    assert wait_until_ended(deployment, again, 180).status == dg.DagsterRunStatus.SUCCESS, failure_texts(
        deployment, again
    )
    assert target.exists()
    assert_predictions_have_runs(deployment)


@pytest.mark.slow
def test_a_full_disk_fails_scoring_clearly_and_keeps_the_champion_and_the_predictions(deployment, tmp_path):
    day, folder = "2025-09-20", deployment.home / "predictions"
    kept = tmp_path / "predictions"
    folder.mkdir(exist_ok=True)
    shutil.copytree(folder, kept)  # the tmpfs hides what lies below it: copied in, and back out
    champion, versions = registry(deployment)
    with small_disk(folder, 16 * 1024):
        shutil.copytree(kept, folder, dirs_exist_ok=True)
        score = {"dagster/partition": day}
        first = launch(deployment, "nightly_score_and_report", tags=score)
        assert wait_until_ended(deployment, first, 180).status == dg.DagsterRunStatus.SUCCESS
        target = folder / f"date={day}" / "predictions.parquet"
        before = digest(target)
        fill_disk(folder)

        full = launch(deployment, "nightly_score_and_report", tags=score)
        assert wait_until_ended(deployment, full, 180).status == dg.DagsterRunStatus.FAILURE
        (error,) = [t for t in failure_texts(deployment, full) if t.startswith("DiskFullError: ")]
        assert f"No space left on device to write the predictions file {target}" in error, error
        assert "the previous file is unchanged" in error, error
        assert digest(target) == before and not list(folder.rglob("*.tmp"))
        assert registry(deployment) == (champion, versions)
        (folder / "ballast").unlink()
        shutil.copytree(folder, kept, dirs_exist_ok=True)  # what the deployment wrote there, kept
    shutil.copytree(kept, folder, dirs_exist_ok=True)
    assert_predictions_have_runs(deployment)
    with duckdb.connect(str(deployment.home / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from classifications").fetchone()[0] > 0


@pytest.mark.slow
def test_a_run_past_its_maximum_runtime_is_failed_by_run_monitoring(deployment):
    """The run waits for the warehouse, held here; its `dagster/max_runtime` tag says 3 s; the daemon ends it.

    Dagster's run monitoring reports the run CANCELING, terminates it, then reports it failed; the run's own
    process may record its cancellation first, so the run ends FAILURE or CANCELED, either way with the reason."""
    lock = deployment.home / "warehouse.duckdb.lock"
    with exclusive_lock(lock, timeout_s=60):
        run_id = launch(deployment, "refresh_warehouse", tags={"dagster/max_runtime": "3"})
        started = wait_for_event(deployment, run_id, lambda e: e.dagster_event_type == dg.DagsterEventType.RUN_START)
        run = wait_until_ended(deployment, run_id, 3 + 4 * MONITORING_S + 60)
        assert run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
        canceling = [e for e in events(deployment, run_id) if e.dagster_event_type == dg.DagsterEventType.RUN_CANCELING]
        reason = "Canceling due to exceeding maximum runtime of 3 seconds."
        (by_monitoring,) = [e for e in canceling if e.dagster_event.message == reason]  # then "Sending run termination"
        assert by_monitoring.timestamp - started.timestamp < 3 + 3 * MONITORING_S + 30
        pid = started.dagster_event.pid
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{pid}") and not services.is_zombie(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not os.path.exists(f"/proc/{pid}") or services.is_zombie(pid), "the failed run still runs"
