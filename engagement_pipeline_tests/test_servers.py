"""Proof with the real servers: what an operator opens is what the code defines.

* The Dagster UI, started as an operator starts it (`engagement dagster-ui
  --port P`: `dagster dev` on `workspace.yaml`, webserver and daemon) on
  127.0.0.1 in its own process group, answers its GraphQL API with the asset
  graph, the checks and the schedule of the committed snapshot
  (snapshots/definitions.json, held to the code by test_definitions.py); a
  SIGTERM to the command stops the whole group in bounded time.
* The MLflow UI, started exactly as `engagement mlflow-ui` starts it, after a
  small real training run on a fresh ENGAGEMENT_HOME, shows through its REST
  API the experiment, the registered model and the `champion` alias the
  training asset reported.

Servers get free ports, generous but bounded start-up waits (CI has 2 slow
cores), and are always stopped by killing their whole process group: the
webserver's code server and MLflow's workers are children that outlive a
signal sent to the parent alone.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import requests

from engagement_pipeline.cli.servers import mlflow_ui_command
from engagement_pipeline.definitions import defs
from engagement_pipeline.resources import CHAMPION_ALIAS, EXPERIMENT_NAME, REGISTERED_MODEL_NAME
from engagement_pipeline.scoring.assets import user_predictions
from engagement_pipeline.settings import Settings
from engagement_pipeline_tests.project import project_resources
from engagement_pipeline_tests.shared_homes import copy_home

REPO_ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"
START_TIMEOUT_S = 240  # a cold start on a busy 2-core machine; typically 10-30 s
STOP_TIMEOUT_S = 30  # SIGTERM grace before SIGKILL
GONE_TIMEOUT_S = 15  # after SIGKILL
CONTRACT_ASSETS = {"classifications", "labels", "engagement_model", "user_predictions"}


# --------------------------------------------------------------------------- process groups


def free_port() -> int:
    """A port nothing listens on now (bound to port 0, then released for the server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def live_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that are still running (zombies, already dead, are not counted).

    Read from /proc rather than probed with killpg(pgid, 0), which also
    succeeds for zombies waiting for a parent to reap them.
    """
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # the process ended while we looked
            continue
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the whole group, SIGKILL what is left after STOP_TIMEOUT_S; return once none of it runs."""
    pgid = process.pid  # start_new_session=True: the server leads its own group
    for sig, timeout in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, GONE_TIMEOUT_S)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process.poll()  # reap the leader so it does not linger as a zombie
            if not live_members(pgid):
                return
            time.sleep(0.2)


@contextmanager
def server_group(argv: list[str], log_path: Path, cwd: Path = REPO_ROOT) -> Iterator[subprocess.Popen]:
    """Run `argv` as the leader of a new process group; always stop the whole group afterwards."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, cwd=cwd, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        stop_group(process)


def log_tail(log_path: Path, lines: int = 40) -> str:
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, log_path: Path, what: str) -> None:
    """Poll `ready` until it holds; fail early if the server died, or after START_TIMEOUT_S."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with code {process.returncode}:\n{log_tail(log_path)}")
        try:
            if ready():
                return
        except requests.RequestException:  # not listening yet
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} not ready after {START_TIMEOUT_S}s:\n{log_tail(log_path)}")


def assert_group_stops(process: subprocess.Popen) -> None:
    """The group is gone once `stop_group` returns (it waits at most STOP_TIMEOUT_S + GONE_TIMEOUT_S)."""
    stop_group(process)
    assert not live_members(process.pid), f"processes {live_members(process.pid)} of the group survived SIGKILL"


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A session that ignores proxy settings: the servers are on 127.0.0.1."""
    with requests.Session() as session:
        session.trust_env = False
        yield session


# --------------------------------------------------------------------------- Dagster webserver

LOCATION_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
    ... on PythonError { message }
  }
}
"""

REPOSITORY_QUERY = """
{
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        schedules { name cronSchedule executionTimezone pipelineName }
        jobs { name }
        assetNodes {
          assetKey { path }
          groupName
          kinds
          description
          isPartitioned
          dependencyKeys { path }
          owners { __typename ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
          assetChecksOrError {
            __typename
            ... on AssetChecks { checks { name description } }
          }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""


def graphql(http: requests.Session, url: str, query: str) -> dict:
    response = http.post(url, json={"query": query}, timeout=60)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def location_loaded(http: requests.Session, url: str) -> bool:
    """True once the code location is loaded; fails the test at once if it failed to load."""
    workspace = graphql(http, url, LOCATION_QUERY)["workspaceOrError"]
    assert workspace["__typename"] == "Workspace", workspace
    entries = workspace["locationEntries"]
    for entry in entries:
        error = entry["locationOrLoadError"] or {}
        assert error.get("__typename") != "PythonError", f"{entry['name']} failed to load: {error.get('message')}"
    return bool(entries) and all(entry["loadStatus"] == "LOADED" and entry["locationOrLoadError"] for entry in entries)


def engagement_command() -> list[str]:
    script = Path(sys.executable).with_name("engagement")
    return [str(script)] if script.exists() else [sys.executable, "-m", "engagement_pipeline.cli"]


def assert_stops_on_sigterm(process: subprocess.Popen) -> None:
    """SIGTERM to the command alone (as a service manager sends it) stops every process of its group."""
    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S * 2
    while live_members(process.pid) and time.monotonic() < deadline:
        process.poll()
        time.sleep(0.2)
    assert not live_members(process.pid), f"processes {live_members(process.pid)} still run after SIGTERM"


def test_dagster_ui_shows_the_pipeline(tmp_path, http):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "dagster-ui.log"
    with server_group([*engagement_command(), "dagster-ui", "--port", str(port)], log_path) as server:
        wait_until(lambda: http.get(f"{base}/server_info", timeout=5).ok, server, log_path, "the Dagster UI")
        wait_until(lambda: location_loaded(http, f"{base}/graphql"), server, log_path, "the code location")
        repositories = graphql(http, f"{base}/graphql", REPOSITORY_QUERY)["repositoriesOrError"]
        assert repositories["__typename"] == "RepositoryConnection", repositories
        (repository,) = repositories["nodes"]
        assert repository["location"]["name"] == "engagement_pipeline.definitions"

        expected = json.loads(SNAPSHOT.read_text())
        nodes = {"/".join(node["assetKey"]["path"]): node for node in repository["assetNodes"]}
        assert CONTRACT_ASSETS <= nodes.keys()
        served_graph = {
            key: {
                "group": node["groupName"],
                "kinds": sorted(node["kinds"]),
                "upstream": sorted("/".join(dep["path"]) for dep in node["dependencyKeys"]),
                "partitioned": node["isPartitioned"],
            }
            for key, node in nodes.items()
        }
        expected_graph = {
            key: {
                "group": asset["group"],
                "kinds": asset["kinds"],
                "upstream": asset["upstream"],
                "partitioned": asset["partitions"] is not None,
            }
            for key, asset in expected["assets"].items()
        }
        assert served_graph == expected_graph
        assert served_graph["user_predictions"]["partitioned"]
        for key, node in nodes.items():
            assert (node["description"] or "").strip(), f"{key} shows no description"
            assert {"__typename": "TeamAssetOwner", "team": "engagement"} in node["owners"], key

        served_checks = {}
        for key, node in nodes.items():
            checks = node["assetChecksOrError"]
            assert checks["__typename"] == "AssetChecks", checks
            for check in checks["checks"]:
                assert (check["description"] or "").strip(), f"check {key}:{check['name']} shows no description"
            if checks["checks"]:
                served_checks[key] = sorted(check["name"] for check in checks["checks"])
        assert served_checks == {asset: sorted(names) for asset, names in expected["checks"].items()}
        assert {"labels", "features", "classifications", "user_predictions"} <= served_checks.keys()

        schedules = {schedule["name"]: schedule for schedule in repository["schedules"]}
        nightly = schedules["nightly_refresh_schedule"]
        assert (nightly["cronSchedule"], nightly["executionTimezone"]) == ("0 1 * * *", "UTC")
        assert nightly["pipelineName"] in {job["name"] for job in repository["jobs"]}
        assert {job["name"] for job in repository["jobs"] if not job["name"].startswith("__")} == set(expected["jobs"])

        assert_stops_on_sigterm(server)


# --------------------------------------------------------------------------- MLflow UI


@pytest.fixture
def trained(trained_home) -> tuple[Path, dict]:
    """The session's trained home (conftest.py: every unpartitioned asset materialized on a fresh
    ENGAGEMENT_HOME, the latest version crowned) and what the training asset reported. Read only."""
    return trained_home


def test_mlflow_ui_shows_the_experiment_model_and_champion(trained, monkeypatch, tmp_path, http):
    home, reported = trained
    monkeypatch.setenv("ENGAGEMENT_HOME", str(home))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    log_path = tmp_path / "mlflow-ui.log"
    argv = mlflow_ui_command(Settings.from_environment(), "127.0.0.1", port)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    with server_group(argv, log_path) as server:
        wait_until(lambda: http.get(f"http://127.0.0.1:{port}/health", timeout=5).ok, server, log_path, "mlflow server")

        response = http.get(f"{api}/experiments/get-by-name", params={"experiment_name": EXPERIMENT_NAME}, timeout=30)
        assert response.ok, response.text
        experiment = response.json()["experiment"]

        response = http.get(f"{api}/registered-models/get", params={"name": REGISTERED_MODEL_NAME}, timeout=30)
        assert response.ok, response.text
        model = response.json()["registered_model"]
        assert {alias["alias"] for alias in model.get("aliases", [])} == {CHAMPION_ALIAS}

        alias = {"name": REGISTERED_MODEL_NAME, "alias": CHAMPION_ALIAS}
        response = http.get(f"{api}/registered-models/alias", params=alias, timeout=30)
        assert response.ok, response.text
        champion = response.json()["model_version"]
        # The version crowned by hand in shared_homes (not by the gate) is the one the asset registered and ran.
        assert int(champion["version"]) == int(reported["registered_version"])
        assert champion["run_id"] == reported["mlflow_run_id"]
        assert reported["mlflow_run_id"] in reported["mlflow_run"]

        response = http.get(f"{api}/runs/get", params={"run_id": champion["run_id"]}, timeout=30)
        assert response.ok, response.text
        run = response.json()["run"]
        assert run["info"]["experiment_id"] == experiment["experiment_id"]
        metrics = {metric["key"] for metric in run["data"]["metrics"]}
        assert {"test_roc_auc_10m", "gbdt_test_roc_auc_10m", "base_rate_test_brier_30m"} <= metrics
        # CONTRACT.md: artifacts live under $ENGAGEMENT_HOME/mlartifacts/, not in the working directory.
        assert experiment["artifact_location"].startswith((home / "mlartifacts").as_uri()), experiment

        assert_group_stops(server)


def test_declared_prediction_schema_matches_a_scored_day(trained, engagement_home):
    """The column schema the Dagster UI shows for user_predictions is the file the asset writes."""
    copy_home(trained[0], engagement_home)  # a private copy: scoring writes into the home
    with project_resources()["warehouse"].connect() as con:
        (day,) = con.execute("select max(created_at)::date::varchar from classifications").fetchone()
    result = dg.materialize([user_predictions], partition_key=day, resources=project_resources())
    assert result.success
    written = pq.read_schema(project_resources()["storage"].prediction_file(day))
    declared = defs.resolve_asset_graph().get(dg.AssetKey("user_predictions")).metadata["dagster/column_schema"]
    assert [(column.name, column.type) for column in declared.columns] == [
        (field.name, str(field.type)) for field in written
    ]
