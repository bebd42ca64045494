"""Online scoring, for real: `engagement serve` as its own process group on a free port.

One small pipeline is built once for the module: a generated export split in
two, (A) every row but the last few of some volunteers (one of them not
logged in, so keyed by the salted hash) and of one volunteer seen only in
(B), the held-out rows. A is ingested, modelled, trained on and snapshotted;
the server then scores B's rows as raw export rows (strings, user_ip and an
unknown column included, shuffled across volunteers). The batch reference is
a copy of that home where B was ingested too and the SQL models rebuilt: its
`features` + the same champion give, for every held-out classification, the
probability the online answer must equal (within 1e-5), with the same user_key.
"""

import csv
import json
import random
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import requests

from engagement_pipeline.ingest.assets import ingest_assets
from engagement_pipeline.model.assets import engagement_model
from engagement_pipeline.model.registry import find_champion, load_model
from engagement_pipeline.model.windows import gather_windows, load_feature_matrix
from engagement_pipeline.sample import write_export
from engagement_pipeline.serving.history_snapshot import history_snapshot
from engagement_pipeline.transform.sql_models import sql_model_assets
from engagement_pipeline_tests.conftest import QUICK_TRAINING, csv_text
from engagement_pipeline_tests.project import project_resources
from engagement_pipeline_tests.test_online_features import by_volunteer
from engagement_pipeline_tests.test_servers import free_port, log_tail, server_group, stop_group, wait_until
from engagement_pipeline_tests.training_fixtures import crown_latest_version_by_hand

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parent.parent
HORIZON_COLUMNS = ["p_continue_10m", "p_continue_20m", "p_continue_30m"]


def _pipeline(home: Path, exports: Path, assets: list, **run_config) -> None:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ENGAGEMENT_HOME", str(home))
        env.setenv("ENGAGEMENT_EXPORTS_DIR", str(exports))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = dg.materialize(assets, resources=project_resources(), run_config=run_config or None)
        assert result.success
        if engagement_model in assets:
            crown_latest_version_by_hand(
                project_resources()["tracking"]
            )  # a tiny export cannot pass the promotion gate: these tests are about what happens after it


def _split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(history, held out): the last rows of a few volunteers (one anonymous) and all of one volunteer."""
    by_user: dict[str, list[dict]] = {}
    for row in rows:
        by_user.setdefault(row["user_id"] or row["user_name"], []).append(row)
    for history in by_user.values():
        history.sort(key=lambda r: (r["created_at"], int(r["classification_id"])))
    logged_in = sorted((u for u in by_user if by_user[u][0]["user_id"]), key=lambda u: -len(by_user[u]))
    anonymous = sorted((u for u in by_user if not by_user[u][0]["user_id"]), key=lambda u: -len(by_user[u]))
    newcomer = next(u for u in logged_in if 5 <= len(by_user[u]) <= 30)
    held = {u: by_user[u][-12:] for u in logged_in[:3] + anonymous[:1]}
    held[newcomer] = by_user[newcomer]
    held_ids = {r["classification_id"] for rs in held.values() for r in rs}
    return [r for r in rows if r["classification_id"] not in held_ids], [r for rs in held.values() for r in rs]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """(home with history A + champion + snapshot, held-out rows, batch reference by classification_id)."""
    root = tmp_path_factory.mktemp("serving")
    generated = write_export(root / "generated.csv", n_classifications=6_000, seed=3)
    with open(generated, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
        handle.seek(0)
        rows = list(csv.DictReader(handle))
    history, held = _split(rows)
    exports_a, exports_ab = root / "exports_a", root / "exports_ab"
    exports_a.mkdir()
    exports_ab.mkdir()
    as_csv = lambda part: csv_text(header, [[r[c] for c in header] for r in part])
    (exports_a / "a.csv").write_text(as_csv(history))
    shutil.copy(exports_a / "a.csv", exports_ab / "a.csv")
    (exports_ab / "b.csv").write_text(as_csv(held))

    home = root / "home"
    _pipeline(
        home,
        exports_a,
        [*ingest_assets, *sql_model_assets(), engagement_model, history_snapshot],
        ops={"engagement_model": {"config": QUICK_TRAINING}},
    )
    batch_home = root / "batch_home"
    shutil.copytree(home, batch_home)
    # the same project's grown export, in a warehouse rebuilt from it (same salt, same champion)
    for stale in batch_home.glob("warehouse.duckdb*"):
        stale.unlink()
    _pipeline(batch_home, exports_ab, [*ingest_assets, *sql_model_assets()])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ENGAGEMENT_HOME", str(batch_home))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        champion = load_model(find_champion(project_resources()["tracking"]))
        with project_resources()["warehouse"].connect() as con:
            matrix = load_feature_matrix(con)
    ids = np.array([int(r["classification_id"]) for r in held])
    index = np.flatnonzero(np.isin(matrix.classification_id, ids))
    probabilities = champion.predict(gather_windows(matrix, index, champion.window))
    reference = {
        int(matrix.classification_id[i]): (str(matrix.user_key[i]), probabilities[n]) for n, i in enumerate(index)
    }
    assert len(reference) == len(held)
    return {
        "home": home,
        "exports_a": exports_a,
        "exports_ab": exports_ab,
        "held": held,
        "history": history,
        "reference": reference,
    }


def _copy_home(pipeline, tmp_path: Path) -> Path:
    home = tmp_path / "served_home"
    shutil.copytree(pipeline["home"], home)
    return home


class Server:
    def __init__(self, home: Path, tmp_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "serve.log"
        self.home = home
        self.http = requests.Session()
        self.http.trust_env = False  # the server is on 127.0.0.1: no proxy

    def invocations(self, records: list[dict]) -> requests.Response:
        return self.http.post(f"{self.url}/invocations", json={"dataframe_records": records}, timeout=120)


@contextmanager
def _serving(home: Path, tmp_path: Path) -> Iterator[Server]:
    """`python -m engagement_pipeline.cli serve` on `home` in its own group (ENGAGEMENT_HOME already set)."""
    handle = Server(home, tmp_path)
    argv = [sys.executable, "-m", "engagement_pipeline.cli", "serve", "--port", str(handle.port)]
    with server_group(argv, handle.log_path) as process:
        handle.process = process
        wait_until(
            lambda: handle.http.get(f"{handle.url}/ping", timeout=5).status_code == 200,
            process,
            handle.log_path,
            "engagement serve",
        )
        yield handle
    handle.http.close()


@pytest.fixture(scope="module")
def reading_server(pipeline, tmp_path_factory):
    """One server for the tests that only send requests: nothing they send changes what it serves.

    Its log accumulates every such test's requests, so each "no identity in the log" check covers
    the earlier tests' rows too. A test that changes the pipeline's state takes `server` instead.
    """
    tmp_path = tmp_path_factory.mktemp("reading_server")
    home = _copy_home(pipeline, tmp_path)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ENGAGEMENT_HOME", str(home))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.setenv("PYTHONPATH", str(REPO_ROOT))
        with _serving(home, tmp_path) as handle:
            env.undo()  # the server has its environment; the tests keep theirs
            yield handle


@pytest.fixture
def server(pipeline, tmp_path, monkeypatch):
    """A server of its own on a private copy of the pipeline's home, for a test that changes that home."""
    home = _copy_home(pipeline, tmp_path)
    monkeypatch.setenv("ENGAGEMENT_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    with _serving(home, tmp_path) as handle:
        yield handle


def _request_rows(held: list[dict], seed: int = 0) -> list[dict]:
    """Held-out rows as a caller sends them: strings, user_ip kept, an unknown column, volunteers interleaved."""
    records = [dict(row, favourite_colour="teal") for row in held]
    random.Random(seed).shuffle(records)
    return records


def _assert_matches_reference(predictions: list[dict], records: list[dict], reference: dict) -> float:
    assert [p["classification_id"] for p in predictions] == [int(r["classification_id"]) for r in records]
    worst = 0.0
    for prediction in predictions:
        user_key, expected = reference[prediction["classification_id"]]
        assert prediction["user_key"] == user_key
        got = np.array([prediction[c] for c in HORIZON_COLUMNS])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def _raw_identities(rows: list[dict]) -> set[str]:
    return {r["user_name"] for r in rows if r["user_name"]} | {r["user_ip"] for r in rows if r["user_ip"]}


def test_online_equals_batch_for_new_rows_of_several_volunteers_and_leaks_no_identity(reading_server, pipeline):
    server = reading_server
    held, reference = pipeline["held"], pipeline["reference"]
    records = _request_rows(held)
    response = server.invocations(records)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    worst = _assert_matches_reference(predictions, records, reference)
    print(f"online vs batch: {len(predictions)} rows, max |difference| {worst:.2e}")
    assert any(p["user_key"].startswith("h:") for p in predictions)  # the not-logged-in volunteer, hashed

    # The same rows in another order, twice in one request: the same event each time, the same answers.
    again = _request_rows(held, seed=1)
    response = server.invocations(again + again[:5])
    assert response.status_code == 200
    _assert_matches_reference(response.json()["predictions"], again + again[:5], reference)

    # One volunteer per request, as a project scores them while they work: the models' kept plan.
    volunteers = by_volunteer(records)
    for rows in volunteers.values():
        response = server.invocations(rows)
        assert response.status_code == 200
        _assert_matches_reference(response.json()["predictions"], rows, reference)
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


def test_bad_rows_are_refused_naming_the_record_and_the_problem(reading_server, pipeline):
    server = reading_server
    good = pipeline["held"][0]
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
    server, pipeline, monkeypatch
):
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
            statuses.append(server.invocations(_request_rows(held)[:20]).status_code)

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
