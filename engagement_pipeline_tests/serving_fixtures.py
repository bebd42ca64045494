"""The online scorer's test pipeline and servers, shared by test_serving.py and test_serving_http.py.

One small pipeline is built once for the session: a generated export split in
two, (A) every row but the last few of some volunteers (one of them not
logged in, so keyed by the salted hash) and of one volunteer seen only in
(B), the held-out rows. A is ingested, modelled, trained on and snapshotted;
the server then scores B's rows as raw export rows (strings, user_ip and an
unknown column included, shuffled across volunteers). The batch reference is
a copy of that home where B was ingested too and the SQL models rebuilt: its
`features` + the same champion give, for every held-out classification, the
probability the online answer must equal (within 1e-5), with the same user_key.

The fixtures are imported by conftest.py, so both modules share one pipeline
and one reading server (one training, one server start).
"""

import csv
import os
import random
import shutil
import socket
import sys
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
from engagement_pipeline_tests.training_fixtures import crown_latest_version

REPO_ROOT = Path(__file__).resolve().parent.parent
# ENGAGEMENT_TEST_SERVE_TREE=<another checkout> runs that checkout's server under these tests (e.g. the
# server before issue 24, from `git worktree add`), to see which of them it fails.
SERVE_TREE = Path(os.environ.get("ENGAGEMENT_TEST_SERVE_TREE") or REPO_ROOT)
SERVE_TOKEN = "test-token-0123456789abcdef"  # the reading server runs with a token (ENGAGEMENT_SERVE_TOKEN)


def _pipeline(home: Path, exports: Path, assets: list, **run_config) -> None:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ENGAGEMENT_HOME", str(home))
        env.setenv("ENGAGEMENT_EXPORTS_DIR", str(exports))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = dg.materialize(assets, resources=project_resources(), run_config=run_config or None)
        assert result.success
        if engagement_model in assets:
            crown_latest_version(
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


@pytest.fixture(scope="session")
def serving_pipeline(tmp_path_factory):
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


def copy_home(pipeline, tmp_path: Path) -> Path:
    home = tmp_path / "served_home"
    shutil.copytree(pipeline["home"], home)
    return home


class Server:
    def __init__(self, home: Path, tmp_path: Path, token: str | None = None):
        # imported here: test_servers imports conftest, which imports this module
        from engagement_pipeline_tests.test_servers import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "serve.log"
        self.home = home
        self.token = token
        self.http = requests.Session()
        self.http.trust_env = False  # the server is on 127.0.0.1: no proxy
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def invocations(self, records: list[dict]) -> requests.Response:
        return self.http.post(f"{self.url}/invocations", json={"dataframe_records": records}, timeout=120)

    def raw(self, request: bytes, wait_s: float = 10.0) -> bytes:
        """Send raw bytes on a fresh connection; everything the server sends back until it closes (or wait_s)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=wait_s) as connection:
            connection.sendall(request)
            received = b""
            deadline = time.monotonic() + wait_s
            try:
                while time.monotonic() < deadline:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    received += chunk
            except (TimeoutError, ConnectionResetError):
                pass
        return received

    def auth_header(self) -> bytes:
        return f"Authorization: Bearer {self.token}\r\n".encode() if self.token else b""


@contextmanager
def _serving(home: Path, tmp_path: Path, token: str | None = None) -> Iterator[Server]:
    """`python -m engagement_pipeline.cli serve` on `home` in its own group (ENGAGEMENT_HOME already set)."""
    from engagement_pipeline_tests.test_servers import server_group, wait_until

    handle = Server(home, tmp_path, token)
    argv = [sys.executable, "-m", "engagement_pipeline.cli", "serve", "--port", str(handle.port)]
    with server_group(argv, handle.log_path, cwd=SERVE_TREE) as process:
        handle.process = process
        wait_until(
            lambda: handle.http.get(f"{handle.url}/ping", timeout=5).status_code == 200,
            process,
            handle.log_path,
            "engagement serve",
        )
        yield handle
    handle.http.close()


@pytest.fixture(scope="session")
def reading_server(serving_pipeline, tmp_path_factory):
    """One server for the tests that only send requests: nothing they send changes what it serves.

    Its log accumulates every such test's requests, so each "no identity in the log" check covers
    the earlier tests' rows too. A test that changes the pipeline's state takes `server` instead.
    """
    tmp_path = tmp_path_factory.mktemp("reading_server")
    home = copy_home(serving_pipeline, tmp_path)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ENGAGEMENT_HOME", str(home))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.setenv("PYTHONPATH", str(SERVE_TREE))
        env.setenv("ENGAGEMENT_SERVE_TOKEN", SERVE_TOKEN)  # on loopback a token is optional, and then required
        with _serving(home, tmp_path, SERVE_TOKEN) as handle:
            env.undo()  # the server has its environment; the tests keep theirs
            yield handle


@pytest.fixture
def fresh_server(serving_pipeline, tmp_path, monkeypatch):
    """A server of its own on a private copy of the pipeline's home, for a test that changes that home."""
    home = copy_home(serving_pipeline, tmp_path)
    monkeypatch.setenv("ENGAGEMENT_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(SERVE_TREE))
    monkeypatch.delenv("ENGAGEMENT_SERVE_TOKEN", raising=False)
    with _serving(home, tmp_path) as handle:
        yield handle


def request_rows(held: list[dict], seed: int = 0) -> list[dict]:
    """Held-out rows as a caller sends them: strings, user_ip kept, an unknown column, volunteers interleaved."""
    records = [dict(row, favourite_colour="teal") for row in held]
    random.Random(seed).shuffle(records)
    return records
