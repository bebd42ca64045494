"""Online scoring, for real: `engagement serve` as its own process group on a free port.

The pipeline (history A, held-out rows B, the batch reference) and the servers
are serving_fixtures.py's, shared with test_serving_http.py: see there.
"""

import json
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from engagement_pipeline.ingest.assets import ingest_assets
from engagement_pipeline.serving.history_snapshot import history_snapshot
from engagement_pipeline.transform.sql_models import sql_model_assets
from engagement_pipeline_tests.project import project_resources
from engagement_pipeline_tests.serving_fixtures import request_rows
from engagement_pipeline_tests.test_online_features import by_volunteer
from engagement_pipeline_tests.test_servers import free_port, log_tail, server_group, stop_group

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parent.parent
HORIZON_COLUMNS = ["p_continue_10m", "p_continue_20m", "p_continue_30m"]


def _assert_matches_reference(predictions: list[dict], records: list[dict], reference: dict) -> float:
    assert [p["classification_id"] for p in predictions] == [int(r["classification_id"]) for r in records]
    worst = 0.0
    for prediction in predictions:
        user_key, expected = reference[prediction["classification_id"]]
        # the batch key for a row with a user_id; null for a row keyed by its user_name (no re-identification)
        assert prediction["user_key"] == (None if user_key.startswith("h:") else user_key)
        got = np.array([prediction[c] for c in HORIZON_COLUMNS])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def _raw_identities(rows: list[dict]) -> set[str]:
    return {r["user_name"] for r in rows if r["user_name"]} | {r["user_ip"] for r in rows if r["user_ip"]}


def test_online_equals_batch_for_new_rows_of_several_volunteers_and_leaks_no_identity(reading_server, serving_pipeline):
    server, pipeline = reading_server, serving_pipeline
    held, reference = pipeline["held"], pipeline["reference"]
    records = request_rows(held)
    response = server.invocations(records)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    worst = _assert_matches_reference(predictions, records, reference)
    print(f"online vs batch: {len(predictions)} rows, max |difference| {worst:.2e}")
    assert any(p["user_key"] is None for p in predictions)  # the not-logged-in volunteer: keyed by name, no key
    assert not any((p["user_key"] or "").startswith("h:") for p in predictions)

    # The same rows in another order, twice in one request: the same event each time, the same answers.
    again = request_rows(held, seed=1)
    response = server.invocations(again + again[:5])
    assert response.status_code == 200
    _assert_matches_reference(response.json()["predictions"], again + again[:5], reference)

    # One volunteer per request, as a project scores them while they work: the models' kept plan.
    volunteers = by_volunteer(records)
    for rows in volunteers.values():
        response = server.invocations(rows)
        assert response.status_code == 200
        _assert_matches_reference(response.json()["predictions"], rows, reference)
    # the server writes a request's log line after its response: on a busy machine the last one can lag
    deadline = time.monotonic() + 10
    while server.log_path.read_text().count("(kept plan)") < len(volunteers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.log_path.read_text().count("(kept plan)") >= len(volunteers)

    # Rows already in the stored history are those same events: re-sending them changes nothing.
    stored = pipeline["history"][-40:]
    first = server.invocations(stored).json()["predictions"]
    second = server.invocations(stored[::-1]).json()["predictions"]
    assert {p["classification_id"]: p["p_continue_10m"] for p in first} == {
        p["classification_id"]: p["p_continue_10m"] for p in second
    }

    secrets = _raw_identities(held) | _raw_identities(stored)
    server_log = server.log_path.read_text()
    for text in (json.dumps(predictions), server_log):
        assert not [s for s in secrets if s in text], "a raw user_name or user_ip reached a response or the log"
    assert "favourite_colour" not in server_log and "teal" not in server_log


def test_bad_rows_are_refused_naming_the_record_and_the_problem(reading_server, serving_pipeline):
    server = reading_server
    good = serving_pipeline["held"][0]
    bad = dict(good, created_at="yesterday-ish", user_name="Ada Lovelace", user_ip="10.9.8.7")
    response = server.invocations([good, bad])
    assert response.status_code == 400
    message = response.json()["message"]
    assert "record 1: unparseable created_at" in message
    assert "Ada Lovelace" not in message and "10.9.8.7" not in message and "yesterday-ish" not in message

    not_records = server.http.post(f"{server.url}/invocations", json={"instances": [1]}, timeout=30)
    assert not_records.status_code == 400 and "dataframe_records" in not_records.json()["message"]
    not_json = server.http.post(
        f"{server.url}/invocations", data=b"{oops", headers={"Content-Type": "application/json"}, timeout=30
    )
    assert not_json.status_code == 400
    assert server.http.get(f"{server.url}/version", timeout=30).json()["model_name"] == "engagement-lstm"
    assert "Ada Lovelace" not in server.log_path.read_text()


def test_keeps_answering_while_the_pipeline_runs_and_uses_the_new_history_without_a_restart(
    fresh_server, serving_pipeline, monkeypatch
):
    server, pipeline = fresh_server, serving_pipeline
    held, reference = pipeline["held"], pipeline["reference"]
    by_user: dict[str, list[dict]] = {}
    for row in held:
        by_user.setdefault(row["user_id"] or row["user_name"], []).append(row)
    # A volunteer's last held-out row alone: before the refresh its history lacks the earlier held-out rows.
    last = max(by_user.values(), key=len)[-1]
    before = server.invocations([last]).json()["predictions"][0]

    statuses: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            statuses.append(server.invocations(request_rows(held)[:20]).status_code)

    # The project's exports folder grows by a new file (the held-out rows); the home keeps its one folder.
    grown = pipeline["exports_a"] / "b.csv"
    shutil.copy(pipeline["exports_ab"] / "b.csv", grown)
    asking = threading.Thread(target=keep_asking)
    asking.start()
    try:
        # The pipeline takes the warehouse (ingest of B, SQL models), then writes a new snapshot.
        monkeypatch.setenv("ENGAGEMENT_EXPORTS_DIR", str(pipeline["exports_a"]))
        started = time.monotonic()
        result = dg.materialize(
            [*ingest_assets, *sql_model_assets(), history_snapshot],
            resources=project_resources(),
        )
        assert result.success
        refresh_s = time.monotonic() - started
    finally:
        stop.set()
        asking.join(timeout=120)
        grown.unlink()  # the folder is the module's: other tests see it as it was
    assert statuses and set(statuses) == {200}, f"{statuses.count(200)} of {len(statuses)} answered"
    print(f"{len(statuses)} requests answered while the pipeline ran for {refresh_s:.0f}s")

    after = server.invocations([last]).json()["predictions"][0]
    _, expected = reference[after["classification_id"]]
    np.testing.assert_allclose([after[c] for c in HORIZON_COLUMNS], expected, rtol=0, atol=1e-5)
    assert after["p_continue_10m"] != before["p_continue_10m"]  # the history changed: the new snapshot is used
    assert server.process.poll() is None  # the same server process throughout

    server.process.send_signal(signal.SIGTERM)  # as a service manager stops it: a clean exit, said in the log
    assert server.process.wait(timeout=60) == 0
    assert server.log_path.read_text().splitlines()[-1] == "stopped"


def test_serve_refuses_to_start_without_a_champion(engagement_home, tmp_path):
    (engagement_home / "user_name_salt").write_text("0" * 64)
    log_path = tmp_path / "serve.log"
    argv = [sys.executable, "-m", "engagement_pipeline.cli", "serve", "--port", str(free_port())]
    env_home = {"ENGAGEMENT_HOME": str(engagement_home), "PYTHONPATH": str(REPO_ROOT)}
    with pytest.MonkeyPatch.context() as env:
        for key, value in env_home.items():
            env.setenv(key, value)
        with server_group(argv, log_path) as process:
            try:
                process.wait(timeout=240)
            finally:
                stop_group(process)
    assert process.returncode not in (0, None)
    assert "materialize the `engagement_model` asset first" in log_tail(log_path)
