"""`engagement serve` as a client and an attacker meet it: HTTP framing, bursts, names, hosts, tokens.

Each case of issue 24's table has a test here that the stdlib server failed.
The malformed HTTP goes over raw sockets (no client library would send it).
The slow tests use the session's reading server (serving_fixtures.py: one
pipeline, one server, started with a token); the pure ones run in milliseconds.
"""

import asyncio
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest

from engagement_pipeline.serving.http_app import LARGE_BODY_BYTES, App, Guard, Limits, own_hosts
from engagement_pipeline.serving.online_features import BadRequest, parse_records
from engagement_pipeline_tests.serving_fixtures import SERVE_TREE, request_rows
from engagement_pipeline_tests.test_servers import free_port, log_tail

SECRET = "ada_SECRETNAME_lovelace"
ACCESS_LINE = re.compile(
    r"^(GET|POST|HEAD|PUT|DELETE|OPTIONS|PATCH|\(other\)) (/ping|/health|/version|/invocations|\(other\)) "
    r"(\d{3}|-) \d+ rows \d+\.\d ms( \(.*\))?$"
)


def _head(server, method: str, path: str, extra: str = "", host: str | None = None) -> bytes:
    host = host or f"127.0.0.1:{server.port}"
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n".encode() + server.auth_header() + extra.encode()


def _statuses(received: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)]


def _json_body(received: bytes) -> dict:
    return orjson.loads(received.split(b"\r\n\r\n", 1)[1])


# --- malformed HTTP: one 4xx, once, and the connection closed ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: -1\r\n",
        "Content-Length: 2\r\nContent-Length: 40\r\n",
        f"Content-Length: {SECRET}\r\n",
        "Transfer-Encoding: gzip\r\n",
        "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
    ],
    ids=["negative", "duplicate", "not-a-number", "unknown-encoding", "both-framings"],
)
def test_malformed_framing_gets_one_4xx_and_the_smuggled_request_is_never_answered(reading_server, framing):
    server = reading_server
    smuggled = _head(server, "GET", "/version", "\r\n")
    request = _head(server, "POST", "/invocations", "Content-Type: application/json\r\n" + framing + "\r\n")
    received = server.raw(request + b"{}" + smuggled)
    statuses = _statuses(received)
    assert len(statuses) == 1 and 400 <= statuses[0] < 500, received[:300]
    assert b"model_version" not in received  # the GET in the body was not read as a second request
    assert SECRET not in log_tail(server.log_path, 400)


@pytest.mark.slow
def test_a_chunked_body_is_read_as_the_body(reading_server, serving_pipeline):
    server = reading_server
    body = orjson.dumps({"dataframe_records": request_rows(serving_pipeline["held"])[:5]})
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:100], body[100:])) + b"0\r\n\r\n"
    head = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    received = server.raw(_head(server, "POST", "/invocations", head) + chunks)
    assert _statuses(received) == [200], received[:300]
    assert len(_json_body(received)["predictions"]) == 5


@pytest.mark.slow
def test_a_body_over_the_limit_is_refused_before_it_is_read_and_a_chunked_one_as_it_passes(reading_server):
    server = reading_server
    limit = Limits().max_body_bytes
    declared = _head(
        server, "POST", "/invocations", f"Content-Type: application/json\r\nContent-Length: {limit + 1}\r\n\r\n"
    )
    started = time.monotonic()
    received = server.raw(declared)  # no body sent at all: the answer cannot wait for it
    assert _statuses(received) == [413] and time.monotonic() - started < 5

    chunk = b"x" * (1024 * 1024)
    head = _head(server, "POST", "/invocations", "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(head)
        try:
            for _ in range(limit // len(chunk) + 2):
                connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while we were still sending: the point
        received = connection.recv(65536)
    assert _statuses(received) == [413]


@pytest.mark.slow
def test_large_bodies_are_read_and_scored_one_at_a_time(reading_server, serving_pipeline):
    server = reading_server
    padding = "x" * (LARGE_BODY_BYTES + 1024)  # an unknown column: ignored, but it makes the body large
    body = orjson.dumps({"dataframe_records": [dict(serving_pipeline["held"][0], padding=padding)]})
    head = f"Content-Type: application/json\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    request = _head(server, "POST", "/invocations", head)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as first:
        first.sendall(request + body[:1000])  # holds the large-body slot while the rest does not come
        time.sleep(1.0)
        with socket.create_connection(("127.0.0.1", server.port), timeout=3) as second:
            second.sendall(request + body)
            with pytest.raises(TimeoutError):
                second.recv(100)  # waits for the slot: no answer while the first body is being read
            first.sendall(body[1000:])
            assert _statuses(first.recv(65536)) == [200]
            second.settimeout(30)
            assert _statuses(second.recv(65536)) == [200]


@pytest.mark.slow
def test_an_idle_connection_is_closed(reading_server):
    with socket.create_connection(("127.0.0.1", reading_server.port), timeout=Limits().idle_s + 10) as connection:
        started = time.monotonic()
        assert connection.recv(1) == b""  # closed by the server, having sent nothing
        assert time.monotonic() - started < Limits().idle_s + 5


# --- bad JSON: a 400 naming the problem, never a value ---------------------------------------------------


@pytest.mark.slow
def test_json_nested_a_thousand_deep_in_metadata_is_a_400_not_a_500(reading_server, serving_pipeline):
    record = orjson.dumps(dict(serving_pipeline["held"][0], metadata=None))
    nested = b'{"' + SECRET.encode() + b'":' * 1 + b'{"a":' * 998 + b"1" + b"}" * 999
    body = b'{"dataframe_records": [' + record.replace(b'"metadata":null', b'"metadata":' + nested) + b"]}"
    response = reading_server.http.post(
        f"{reading_server.url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert response.status_code == 400, response.text
    assert "nested too deeply" in response.json()["message"] and SECRET not in response.text
    assert "RecursionError" not in log_tail(reading_server.log_path, 400)


@pytest.mark.slow
def test_a_stored_classification_sent_as_another_volunteers_is_refused_with_its_position(
    reading_server, serving_pipeline
):
    stored = serving_pipeline["history"][-1]
    other = next(r for r in serving_pipeline["history"] if r["user_id"] and r["user_id"] != stored["user_id"])
    impostor = dict(stored, user_id=other["user_id"], user_name=other["user_name"])
    response = reading_server.invocations([serving_pipeline["held"][0], impostor])
    assert response.status_code == 400, response.text
    assert "record 1: classification_id is stored as another volunteer's classification" in response.json()["message"]
    assert other["user_id"] not in response.text
    assert reading_server.invocations([serving_pipeline["held"][0], stored]).status_code == 200  # its own: fine


@pytest.mark.slow
def test_dataframe_split_and_health_work_as_mlflow_defines_them(reading_server, serving_pipeline):
    records = request_rows(serving_pipeline["held"])[:8]
    columns = sorted({c for r in records for c in r})
    split = {"columns": columns, "index": list(range(8)), "data": [[r.get(c) for c in columns] for r in records]}
    as_split = reading_server.http.post(
        f"{reading_server.url}/invocations", json={"dataframe_split": split}, timeout=60
    )
    assert as_split.status_code == 200, as_split.text
    assert as_split.json() == reading_server.invocations(records).json()
    assert reading_server.http.get(f"{reading_server.url}/health", timeout=10).status_code == 200


# --- no re-identification ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_name_sent_in_a_request_never_comes_back_as_a_key(reading_server, serving_pipeline):
    history = serving_pipeline["history"]
    named = [r for r in history if not r["user_id"]][-1]  # a stored volunteer keyed by the hash of their name
    logged_in = [r for r in history if r["user_id"]][-1]
    probes = [
        dict(named, classification_id=str(10**12 + n), user_id="", user_name=candidate)
        for n, candidate in enumerate([named["user_name"], "not-logged-in-0123abcd", "Someone Else"])
    ]
    response = reading_server.invocations([*probes, logged_in])
    assert response.status_code == 200, response.text
    keys = [p["user_key"] for p in response.json()["predictions"]]
    assert keys == [None, None, None, logged_in["user_id"]]


@pytest.mark.slow
def test_a_foreign_host_or_a_missing_token_is_refused(reading_server):
    server = reading_server
    for host, status in (
        ("evil.example", 421),
        (f"evil.example:{server.port}", 421),
        (f"localhost:{server.port}", 200),
    ):
        received = server.raw(_head(server, "GET", "/ping", "Connection: close\r\n\r\n", host=host))
        assert _statuses(received) == [status], host
    wrong = f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {SECRET}\r\n\r\n"
    for request in (wrong.encode(), f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()):
        received = server.raw(request, wait_s=2)
        assert _statuses(received) == [401] and b"www-authenticate: bearer" in received.lower()
    assert SECRET not in log_tail(server.log_path, 400)


@pytest.mark.slow
def test_a_bind_beyond_loopback_without_a_token_does_not_start(engagement_home, tmp_path, monkeypatch):
    monkeypatch.delenv("ENGAGEMENT_SERVE_TOKEN", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(SERVE_TREE))
    argv = [sys.executable, "-m", "engagement_pipeline.cli", "serve", "--host", "0.0.0.0", "--port", str(free_port())]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=SERVE_TREE, start_new_session=True)
    except subprocess.TimeoutExpired:  # (the subprocess is killed by run)
        pytest.fail("the server started on 0.0.0.0 without a token")
    assert done.returncode != 0 and "ENGAGEMENT_SERVE_TOKEN" in done.stderr


# --- many clients at once ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_burst_of_100_connections_is_queued_not_dropped(reading_server):
    server = reading_server
    request = _head(server, "GET", "/ping", "Connection: close\r\n\r\n")
    start = threading.Barrier(100)

    def one(_) -> tuple[float, list[int]]:
        start.wait()
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
            connected = time.monotonic() - began
            connection.sendall(request)
            received = b""
            while chunk := connection.recv(4096):
                received += chunk
        return connected, _statuses(received)

    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(one, range(100)))
    assert [statuses for _, statuses in results] == [[200]] * 100
    # A full listen queue drops SYNs and the client tries again after 1 s: with a backlog of 5 most waited.
    assert max(connected for connected, _ in results) < 1.0


@pytest.mark.slow
def test_20_clients_scoring_at_once_are_all_answered_and_the_log_keeps_whole_lines(reading_server, serving_pipeline):
    server = reading_server
    rows = request_rows(serving_pipeline["held"])
    url = f"{server.url}/invocations"

    def client(n: int) -> list[int]:
        import requests

        with requests.Session() as http:
            http.trust_env = False
            http.headers["Authorization"] = f"Bearer {server.token}"
            return [
                http.post(url, json={"dataframe_records": rows[n : n + 3]}, timeout=120).status_code for _ in range(4)
            ]

    with ThreadPoolExecutor(20) as pool:
        statuses = [s for batch in pool.map(client, range(20)) for s in batch]
    assert statuses == [200] * 80

    def logged() -> list[str]:  # each request's line is written after its response: wait for the last ones
        return [line for line in server.log_path.read_text().splitlines() if line.startswith(("GET ", "POST ", "("))]

    deadline = time.monotonic() + 10
    while len(logged()) < 80 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = logged()
    assert len(lines) >= 80 and all(ACCESS_LINE.match(line) for line in lines), [
        line for line in lines if not ACCESS_LINE.match(line)
    ][:3]


# --- pure: no server ------------------------------------------------------------------------------------


def test_every_scoring_thread_runs_torch_with_one_thread():
    import torch

    app = App(scorer=None, limits=Limits(workers=2), errors=(BadRequest, RuntimeError, RuntimeError))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # the caller's own setting is not what a worker thread gets
        counts = {app.pool.submit(torch.get_num_threads).result() for _ in range(8)}
    finally:
        app.close()
        torch.set_num_threads(before)
    assert counts == {1}


def test_dataframe_split_reads_as_records_and_bad_splits_name_the_problem():
    body = orjson.dumps(
        {"dataframe_split": {"columns": ["a", "b"], "index": [7, 8], "data": [["1", None], ["2", "x"]]}}
    )
    assert parse_records(body) == [{"a": "1", "b": None}, {"a": "2", "b": "x"}]
    for split, problem in (
        ({"columns": ["a"], "data": [["1", SECRET]]}, "data row 0 is not a list of 1 values"),
        ({"columns": ["a", "a"], "data": [["1", "2"]]}, "names a column twice"),
        ({"columns": ["a"], "data": []}, "data is empty"),
        ({"data": [["1"]]}, "dataframe_split must be"),
    ):
        with pytest.raises(BadRequest, match=problem) as refused:
            parse_records(orjson.dumps({"dataframe_split": split}))
        assert SECRET not in str(refused.value)


def test_own_hosts_are_the_bound_address_and_loopback_names_at_the_port():
    assert own_hosts("127.0.0.1", 5001) == {"127.0.0.1:5001", "localhost:5001", "[::1]:5001"}
    assert own_hosts("10.1.2.3", 80) == {"10.1.2.3:80"}
    assert "localhost:5001" not in own_hosts("10.1.2.3", 5001)


def _call(app, scope: dict) -> tuple[list[dict], list[str]]:
    sent, logged = [], []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    guard = Guard(app, own_hosts("127.0.0.1", 5001), token=None, log=logged.append)
    asyncio.run(guard(scope, receive, send))
    return sent, logged


def test_a_500_logs_where_it_happened_and_never_the_message():
    async def failing(scope, receive, send):
        raise ValueError(f"could not parse {SECRET}")  # as a library's message may quote the input

    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": [(b"host", b"127.0.0.1:5001")]}
    sent, logged = _call(failing, scope)
    assert sent[0]["status"] == 500 and SECRET.encode() not in sent[1]["body"]
    text = "\n".join(logged)
    assert SECRET not in text
    assert "builtins.ValueError" in text and "test_serving_http.py" in text and "in failing" in text
    assert ACCESS_LINE.match(logged[-1]) and logged[-1].startswith("POST /invocations 500")


def test_the_access_log_names_no_query_path_or_method_it_does_not_know():
    async def ok(scope, receive, send):
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    scope = {"type": "http", "method": SECRET.upper(), "path": f"/{SECRET}", "query_string": SECRET.encode(),
             "headers": [(b"host", b"localhost:5001")]}  # fmt: skip
    _, logged = _call(ok, scope)
    assert logged == [logged[-1]] and logged[-1].startswith("(other) (other) 404 0 rows")


def test_a_request_not_scored_in_time_gets_a_503_and_its_large_body_slot_waits_for_the_work():
    release = threading.Event()

    class SlowScorer:  # a scoring thread still busy when the request's time is up
        def score(self, body):
            release.wait(10)
            return {"predictions": []}, ""

    app = App(SlowScorer(), Limits(workers=1, score_timeout_s=0.2), (BadRequest, RuntimeError, RuntimeError))
    body = b"x" * (LARGE_BODY_BYTES + 1)
    headers = [(b"host", b"127.0.0.1:5001"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": headers, "query_string": b""}

    async def run() -> tuple[int, bool, bool]:
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        await app(dict(scope, state={}), receive, send)
        held_after_answer = app.large_slot.locked()
        release.set()
        await asyncio.sleep(0.5)
        return sent[0]["status"], held_after_answer, app.large_slot.locked()

    try:
        status, held_after_answer, held_after_work = asyncio.run(run())
    finally:
        release.set()
        app.close()
    assert status == 503 and held_after_answer and not held_after_work
