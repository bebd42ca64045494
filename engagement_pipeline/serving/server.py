"""`engagement serve`: the champion over MLflow's scoring protocol, from raw export rows.

    GET  /ping         200 when the server can score (a champion is loaded and the history snapshot exists)
    GET  /version      the registered model and version that scores
    POST /invocations  {"dataframe_records": [row, ...]} -> {"predictions": [{...}, ...]}, one per row

Each row is a classification export row as its CSV holds it (string values);
the answer for a row is the champion's probability at that classification,
given the volunteer's stored history (the `history_snapshot` file) and the
request's earlier rows, computed by `online_features.OnlineFeatures` with
the batch path's own SQL, then windowed (`windows.gather_windows`) and scored
exactly as the nightly scoring does. Parity with the batch path is tested.

The stdlib's ThreadingHTTPServer (one thread per connection, keep-alive):
DuckDB and torch release the GIL, and each request works on a connection
of its own to the in-memory history, so requests run side by side. The
server never opens the warehouse, so it keeps answering while the pipeline
holds it, and it checks the snapshot file on every request, so a refreshed
snapshot is used from the next request on. The champion alias is checked
every `champion_check_s` seconds and a new champion is loaded in the
background, then swapped in between requests.

Privacy: request bodies, rows, `user_name` and `user_ip` are never logged;
the access log says method, path, status, rows and milliseconds. An error
message names a record's position and the problem, never a value.
"""

import signal
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import orjson

from engagement_pipeline.model.windows import gather_windows
from engagement_pipeline.serving.history_snapshot import snapshot_path
from engagement_pipeline.serving.online_features import BadRequest, NoSnapshotError, OnlineFeatures

MAX_BODY_BYTES = 64 * 1024 * 1024
PREDICT_BATCH = 8192  # windows per call of the model, as the nightly scoring's default


class ModelMismatch(RuntimeError):
    """The champion was trained on other features than the SQL models now produce."""


class OnlineScorer:
    """Request body -> response dict, with the champion held and swapped when the alias moves."""

    def __init__(self, features: OnlineFeatures, tracking, champion_check_s: float = 60.0, log=print):
        from engagement_pipeline.model.registry import find_champion, load_model

        self.features = features
        self._tracking = tracking
        self._find, self._load = find_champion, load_model
        self._log = log
        self.champion = load_model(find_champion(tracking))
        self._check_s = champion_check_s
        self._stop = threading.Event()
        if champion_check_s > 0:
            threading.Thread(target=self._follow_champion, name="champion-check", daemon=True).start()

    def _follow_champion(self) -> None:
        while not self._stop.wait(self._check_s):
            try:
                version = self._find(self._tracking)
                if version.version != self.champion.version:
                    self.champion = self._load(version)  # one reference swap: a request uses one or the other
                    self._log(f"champion is now {version.name} v{version.version}")
            except Exception as error:  # a store busy with a training run: keep the loaded champion
                self._log(f"champion check failed ({type(error).__name__}); still serving v{self.champion.version}")

    def close(self) -> None:
        self._stop.set()

    def score(self, body: bytes) -> tuple[dict, str]:
        """The response to a request body, and where its time went (for the access log)."""
        champion = self.champion
        started = time.perf_counter()
        batch = self.features.build(body)
        features_done = time.perf_counter()
        matrix = batch.matrix
        if matrix.feature_names != champion.feature_names:
            raise ModelMismatch(
                f"the champion ({champion.name} v{champion.version}) was trained on other features than the "
                "SQL models now produce: materialize `engagement_model` again"
            )
        # Each classification once, in history order: the answer for a row does not depend on the order of
        # the request's rows or on repeats (a batched float32 forward pass is not bit-for-bit order-free).
        unique_rows, inverse = np.unique(batch.rows, return_inverse=True)
        scored = np.empty((len(unique_rows), len(champion.horizons)), dtype=np.float64)
        for start in range(0, len(unique_rows), PREDICT_BATCH):
            chunk = unique_rows[start : start + PREDICT_BATCH]
            scored[start : start + len(chunk)] = champion.predict(gather_windows(matrix, chunk, champion.window))
        probabilities = scored[inverse]
        model_done = time.perf_counter()
        names = [f"p_continue_{h}m" for h in champion.horizons]
        ids = matrix.classification_id[batch.rows].tolist()
        keys = matrix.user_key[batch.rows].tolist()
        rows = probabilities.tolist()
        predictions = [
            {"classification_id": i, "user_key": k, **dict(zip(names, p))} for i, k, p in zip(ids, keys, rows)
        ]
        road = "kept plan" if batch.kept_plan else "planned"
        timing = (
            f"features {(features_done - started) * 1000:.1f} ms ({road}), "
            f"model {(model_done - features_done) * 1000:.1f} ms"
        )
        return {"predictions": predictions}, timing


def _handler(scorer: OnlineScorer, log):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a caller scoring as volunteers work reuses its connection
        disable_nagle_algorithm = True  # TCP_NODELAY: headers and body go out at once, no 40 ms delayed-ACK stall
        server_version = "engagement-serve"
        rows = 0
        timing = ""

        def _send(self, status: int, payload, content_type: str = "application/json") -> None:
            data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: HTTPStatus, code: str, message: str) -> None:
            self._send(status, {"error_code": code, "message": message})

        def do_GET(self):  # noqa: N802 (http.server's naming)
            self.started = time.perf_counter()
            if self.path in ("/ping", "/health"):
                if not scorer.features.snapshot.exists():
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"no history snapshot yet\n", "text/plain")
                else:
                    self._send(HTTPStatus.OK, b"\n", "text/plain")
            elif self.path == "/version":
                champion = scorer.champion
                self._send(HTTPStatus.OK, {"model_name": champion.name, "model_version": champion.version})
            else:
                self._error(HTTPStatus.NOT_FOUND, "NOT_FOUND", "GET /ping, GET /version or POST /invocations")

        def do_POST(self):  # noqa: N802
            self.started = time.perf_counter()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if 0 < length <= MAX_BODY_BYTES else b""
            if self.path != "/invocations":
                self._error(HTTPStatus.NOT_FOUND, "NOT_FOUND", "POST /invocations")
            elif length > MAX_BODY_BYTES:
                self.close_connection = True  # the body was not read
                self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "BAD_REQUEST", f"body over {MAX_BODY_BYTES} bytes")
            elif not (self.headers.get("Content-Type") or "").startswith("application/json"):
                self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "BAD_REQUEST", "send Content-Type: application/json")
            else:
                try:
                    response, self.timing = scorer.score(body)
                except BadRequest as error:
                    self._error(HTTPStatus.BAD_REQUEST, "BAD_REQUEST", str(error))
                except (NoSnapshotError, ModelMismatch) as error:
                    self._error(HTTPStatus.SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", str(error))
                except Exception as error:  # its message could quote a value of the request: not sent, not logged
                    log(f"error scoring a request: {type(error).__name__}")
                    self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", type(error).__name__)
                else:
                    self.rows = len(response["predictions"])
                    self._send(HTTPStatus.OK, response)

        def log_request(self, code="-", size="-"):
            milliseconds = (time.perf_counter() - getattr(self, "started", time.perf_counter())) * 1000
            path = self.path if self.path in ("/ping", "/health", "/version", "/invocations") else "(other)"
            timing = f" ({self.timing})" if self.timing else ""
            log(f"{self.command} {path} {code} {self.rows} rows {milliseconds:.1f} ms{timing}")

        def log_message(self, format, *args):  # http.server's own messages: the request line is never logged
            log("http: " + (format.split(":")[0] if "%" in format else format))

    return Handler


def make_server(storage, host: str, port: int, tracking, log=print) -> ThreadingHTTPServer:
    """A server for the pipeline whose files `storage` (a resources.Storage) names: snapshot and salt; not yet serving."""
    import torch

    from engagement_pipeline.ingest.load import load_salt

    # One intra-op thread per forward pass: requests already run side by side in threads, and torch's
    # OpenMP workers spinning against them made a 100-row pass 4-10x slower on 2 busy cores (measured).
    torch.set_num_threads(1)
    salt_file = storage.salt_file
    if not salt_file.exists():
        raise SystemExit(f"{salt_file} does not exist: ingest exports first (engagement demo / engagement run)")
    features = OnlineFeatures(snapshot_path(storage.serving), load_salt(salt_file))
    if features.snapshot.exists():
        started = time.perf_counter()
        features.load()  # before the first request, so /ping's 200 means "ready" and no caller waits for it
        log(f"history loaded in {time.perf_counter() - started:.1f}s")
    scorer = OnlineScorer(features, tracking, log=log)
    server = ThreadingHTTPServer((host, port), _handler(scorer, log))
    server.daemon_threads = True
    server.scorer = scorer
    return server


def serve(storage, host: str, port: int, tracking) -> int:
    """Serve until SIGINT or SIGTERM; requests in flight are answered first."""
    from engagement_pipeline.model.registry import NoChampionError

    log = lambda line: print(line, file=sys.stderr, flush=True)
    try:
        server = make_server(storage, host, port, tracking, log=log)
    except NoChampionError as error:
        raise SystemExit(str(error)) from None
    champion = server.scorer.champion
    log(
        f"serving {champion.name} v{champion.version} on http://{host}:{server.server_address[1]} "
        f"(POST /invocations, GET /ping); history {server.scorer.features.snapshot}"
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.scorer.close()
        server.server_close()
    log("stopped")
    return 0
