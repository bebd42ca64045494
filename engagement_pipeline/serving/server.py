"""`engagement serve`: the champion over MLflow's scoring protocol, from raw export rows.

    GET  /ping, /health  200 when the server can score (a champion is loaded and the history snapshot exists)
    GET  /version        the registered model and version that scores
    POST /invocations    {"dataframe_records": [row, ...]} or {"dataframe_split": {"columns", "data"}}
                         -> {"predictions": [{...}, ...]}, one per row

Each row is a classification export row as its CSV holds it (string values);
the answer for a row is the champion's probability at that classification,
given the volunteer's stored history (the `history_snapshot` file) and the
request's earlier rows, computed by `online_features.OnlineFeatures` with
the batch path's own SQL, then windowed (`windows.gather_windows`) and scored
exactly as the nightly scoring does. Parity with the batch path is tested.

HTTP is uvicorn with the strict h11 parser in front of a Starlette app
(`http_app.py`: the Host and token checks, body limits, timeouts, the access
log); scoring runs on a small pool of threads with one torch and one DuckDB
thread each, and each request works on a DuckDB connection of its own to the
in-memory history. The server never opens the warehouse, so it keeps
answering while the pipeline holds it, and it checks the snapshot file on
every request, so a refreshed snapshot is used from the next request on. The
champion alias is checked every `champion_check_s` seconds and a new
champion is loaded in the background, then swapped in between requests.

Privacy: request bodies, rows, `user_name` and `user_ip` are never logged;
the access log says method, path, status, rows and milliseconds. An error
message names a record's position and the problem, never a value. A row
keyed by `user_name` is answered with `user_key` null.
"""

import signal
import sys
import threading
import time

import numpy as np

from engagement_pipeline.model.windows import gather_windows
from engagement_pipeline.serving.history_snapshot import snapshot_path
from engagement_pipeline.serving.online_features import BadRequest, NoSnapshotError, OnlineFeatures

NAME_KEY_PREFIX = "h:"  # ingest/sql/parse_rows.sql: the key of a row without user_id, hashed from its user_name
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
        keys = matrix.user_key[batch.rows]
        # A row keyed by user_name carries the salted hash of a name the caller sent: never sent back, or
        # anyone could hash candidate names against a predictions file. A user_id row's key is the id.
        keys = np.where(np.char.startswith(keys.astype(str), NAME_KEY_PREFIX), None, keys).tolist()
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


def make_server(storage, host: str, port: int, tracking, token: str | None = None, limits=None, log=print):
    """A uvicorn server for the pipeline whose files `storage` (a resources.Storage) names: snapshot and salt.

    Returns (server, socket): the socket is bound and listening (its backlog queues a burst of clients
    while the server starts), the server not yet running: `server.run(sockets=[socket])`.
    """
    import socket

    import uvicorn

    from engagement_pipeline.ingest.load import load_salt
    from engagement_pipeline.serving.http_app import App, Guard, Limits, h11_protocol, own_hosts

    limits = limits or Limits()
    salt_file = storage.salt_file
    if not salt_file.exists():
        raise SystemExit(f"{salt_file} does not exist: ingest exports first (engagement demo / engagement run)")
    features = OnlineFeatures(snapshot_path(storage.serving), load_salt(salt_file), threads=1)
    if features.snapshot.exists():
        started = time.perf_counter()
        features.load()  # before the first request, so /ping's 200 means "ready" and no caller waits for it
        log(f"history loaded in {time.perf_counter() - started:.1f}s")
    scorer = OnlineScorer(features, tracking, log=log)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        scorer.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(limits.backlog)
    port = sock.getsockname()[1]
    app = App(scorer, limits, (BadRequest, NoSnapshotError, ModelMismatch))
    config = uvicorn.Config(
        Guard(app, own_hosts(host, port), token, log),
        http=h11_protocol(),  # the strict parser h11: httptools would take what h11 refuses
        interface="asgi3",
        lifespan="off",
        access_log=False,  # its lines carry the request line, query values included: Guard writes ours
        log_config=None,
        server_header=False,
        date_header=True,
        backlog=limits.backlog,
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.idle_s,
        timeout_graceful_shutdown=limits.score_timeout_s,
        h11_max_incomplete_event_size=64 * 1024,  # the request line and headers
    )
    server = uvicorn.Server(config)
    server.scorer, server.app, server.port = scorer, app, port
    return server, sock


def serve(storage, host: str, port: int, tracking, token: str | None = None) -> int:
    """Serve until SIGINT or SIGTERM; requests in flight are answered first."""
    import logging

    from engagement_pipeline.model.registry import NoChampionError
    from engagement_pipeline.serving.http_app import whole_lines

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    uvicorn_log = logging.getLogger("uvicorn")
    uvicorn_log.addHandler(handler)  # its own warnings (e.g. "Invalid HTTP request received."), never a value
    uvicorn_log.setLevel(logging.WARNING)
    uvicorn_log.propagate = False
    try:
        server, sock = make_server(storage, host, port, tracking, token=token, log=whole_lines)
    except NoChampionError as error:
        raise SystemExit(str(error)) from None
    champion = server.scorer.champion
    shown = f"[{host}]" if ":" in host else host
    whole_lines(
        f"serving {champion.name} v{champion.version} on http://{shown}:{server.port} "
        f"(POST /invocations, GET /ping){' with a token' if token else ''}; history {server.scorer.features.snapshot}"
    )
    # uvicorn stops on SIGINT/SIGTERM once the requests in flight are answered, then raises the signal again
    # under the handlers it found: these, so the process ends here, cleanly, rather than killed by it.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        server.scorer.close()
        server.app.close()
        sock.close()
    whole_lines("stopped")
    return 0
