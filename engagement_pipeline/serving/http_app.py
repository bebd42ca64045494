"""The HTTP face of `engagement serve`: a Starlette app behind a guard, run by uvicorn with h11.

What a client may rely on (docs/CONTRACT.md, Online scoring) and where it is done:

- HTTP framing: uvicorn with h11, a strict parser (a negative, non-numeric or
  conflicting `Content-Length`, a `Transfer-Encoding` other than chunked, or
  both framings at once get one 400 or 501 and the connection is closed: a
  request is never read as two). Chunked bodies are read as such.
- `Guard`, a plain ASGI middleware, before anything else: the `Host` must be
  one of the server's own names at its port (421 otherwise: a page of another
  origin cannot reach a loopback scorer by DNS rebinding), and with a token
  the `Authorization: Bearer` header must carry it (compared in constant
  time). It writes one whole access-log line per request (method, path,
  status, rows, ms; never a query, header or body value) and turns an
  exception that escaped into a 500 whose log names where it happened (the
  traceback's frames) and the exception's type, never its message, which
  could quote a value of the request.
- The body: a `Content-Length` over the limit is refused before a byte of
  the body is read; a chunked body is counted as it arrives and refused as
  soon as it passes the limit. A body over `LARGE_BODY_BYTES` first waits for
  the one large-body slot, so a few huge requests cannot take the memory of
  many (a parsed body takes about 15x its size). Reading a body must finish
  within `body_timeout_s` (408 otherwise).
- Scoring runs on a pool of `workers` threads, each with one torch intra-op
  thread (DuckDB's connections have one thread each too): the event loop only
  parses HTTP, so thousands of idle or queued connections cost no threads,
  and a request waits its turn instead of being reset. A request not scored
  within `score_timeout_s` gets a 503 saying so.
"""

import asyncio
import hmac
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson

LARGE_BODY_BYTES = 256 * 1024  # bodies over this take the one large-body slot (a volunteer's 100 rows: ~90 KB)
KNOWN_PATHS = ("/ping", "/health", "/version", "/invocations")
KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 64 * 1024 * 1024
    workers: int = field(default_factory=lambda: os.cpu_count() or 2)  # scoring threads: one per core
    body_timeout_s: float = 30.0  # reading one request's body
    score_timeout_s: float = 60.0  # waiting for a scoring thread and scoring
    idle_s: float = 5.0  # a connection with no request (or no whole line and headers) is closed after this
    max_connections: int = 1024  # open connections and requests in flight; beyond: 503 (uvicorn)
    backlog: int = 1024  # connections the kernel queues before they are accepted


def _json(status: int, payload: dict, extra: list | None = None) -> tuple[int, list, bytes]:
    body = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return status, headers + (extra or []), body


def error_response(status: int, code: str, message: str, extra: list | None = None):
    return _json(status, {"error_code": code, "message": message}, extra)


async def send_response(send, response) -> None:
    status, headers, body = response
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def where_it_happened(error: BaseException) -> str:
    """The traceback of an error without its message (which could quote a value): frames and types only."""
    lines = []
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        frames = traceback.extract_tb(error.__traceback__)
        lines.append(f"{type(error).__module__}.{type(error).__qualname__} (message withheld) at:")
        lines += [f"  {frame.filename}:{frame.lineno} in {frame.name}" for frame in frames]
        error = error.__cause__ or error.__context__
    return "\n".join(lines)


def own_hosts(host: str, port: int) -> frozenset[str]:
    """The `Host` values of a request meant for this server: its address (or, bound to every address,
    this machine's names and addresses) at its port; loopback also as localhost, 127.0.0.1 and [::1]."""
    import socket

    names = {host}
    if host in ("", "0.0.0.0", "::"):
        names |= {socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1", "::1"}
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError:
            pass
    if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        names |= {"localhost", "127.0.0.1", "::1"}
    bracketed = {f"[{n}]" if ":" in n else n for n in names if n}
    return frozenset(f"{n.lower()}:{port}" for n in bracketed)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Guard:
    """Plain ASGI middleware: the Host and token checks, the access log, and the last word on errors."""

    def __init__(self, app, hosts: frozenset[str], token: str | None, log):
        self.app = app
        self.hosts = hosts
        self.expected = b"Bearer " + token.encode() if token else None
        self.log = log

    def _refusal(self, scope):
        hosts = [value for name, value in scope["headers"] if name == b"host"]
        if len(hosts) != 1:
            return error_response(400, "BAD_REQUEST", "send exactly one Host header")
        if hosts[0].decode("latin-1").lower() not in self.hosts:
            return error_response(421, "MISDIRECTED_REQUEST", "the Host header does not name this server")
        if self.expected is not None:
            given = [value for name, value in scope["headers"] if name == b"authorization"]
            if len(given) != 1 or not hmac.compare_digest(given[0], self.expected):
                return error_response(
                    401, "UNAUTHENTICATED", "send Authorization: Bearer <ENGAGEMENT_SERVE_TOKEN>",
                    [(b"www-authenticate", b'Bearer realm="engagement"')],
                )  # fmt: skip
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        note = scope.setdefault("state", {})
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "(other)"
        path = scope["path"] if scope["path"] in KNOWN_PATHS else "(other)"
        status = 0

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await send_response(sending, refusal)
            else:
                await self.app(scope, receive, sending)
        except Exception as error:
            self.log(f"error answering {method} {path}: {where_it_happened(error)}")
            if not status:
                await send_response(sending, error_response(500, "INTERNAL_ERROR", type(error).__name__))
        finally:
            timing = f" ({note['timing']})" if note.get("timing") else ""
            milliseconds = (time.perf_counter() - started) * 1000
            shown = note.get("status") or status or "-"
            self.log(f"{method} {path} {shown} {note.get('rows', 0)} rows {milliseconds:.1f} ms{timing}")


def h11_protocol():
    """uvicorn's h11 protocol, with its idle timer armed from the connection's first moment: uvicorn arms
    it only after a response, so a connection that never sends a whole request would stay open for ever."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class IdleTimedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )  # cancelled once a request's line and headers have arrived

    return IdleTimedH11Protocol


def whole_lines(line: str) -> None:
    """One write per line (the event loop's thread writes them all): lines never run together."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _one_thread() -> None:
    """Each scoring thread: one torch intra-op thread (OpenMP's setting is per thread)."""
    import torch

    torch.set_num_threads(1)


class App:
    """The routes, as a Starlette app; `scorer` is a server.OnlineScorer."""

    def __init__(self, scorer, limits: Limits, errors: tuple[type, type, type]):
        from starlette.applications import Starlette
        from starlette.routing import Route

        self.scorer = scorer
        self.limits = limits
        self.bad_request, self.unavailable, self.mismatch = errors
        self.pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="score", initializer=_one_thread)
        self.large_slot = asyncio.Semaphore(1)
        self.starlette = Starlette(
            routes=[
                Route("/ping", self.ping, methods=["GET"]),
                Route("/health", self.ping, methods=["GET"]),
                Route("/version", self.version, methods=["GET"]),
                Route("/invocations", self.invocations, methods=["POST"]),
            ]
        )

    async def __call__(self, scope, receive, send):
        await self.starlette(scope, receive, send)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    async def ping(self, request):
        from starlette.responses import PlainTextResponse

        if not self.scorer.features.snapshot.exists():
            return PlainTextResponse("no history snapshot yet\n", status_code=503)
        return PlainTextResponse("\n")

    async def version(self, request):
        from starlette.responses import Response

        champion = self.scorer.champion
        return Response(
            orjson.dumps({"model_name": champion.name, "model_version": champion.version}),
            media_type="application/json",
        )

    async def invocations(self, request):
        from starlette.requests import ClientDisconnect
        from starlette.responses import Response

        limit = self.limits.max_body_bytes
        too_large = error_response(413, "BAD_REQUEST", f"body over {limit} bytes", [(b"connection", b"close")])
        if not (request.headers.get("content-type") or "").startswith("application/json"):
            return _response(error_response(415, "BAD_REQUEST", "send Content-Type: application/json"))
        declared = request.headers.get("content-length")  # h11 has checked it is one plain decimal number
        if declared is not None and int(declared) > limit:
            return _response(too_large)
        slot = _Slot(self.large_slot)
        try:
            if declared is not None and int(declared) > LARGE_BODY_BYTES:
                try:
                    await asyncio.wait_for(slot.take(), self.limits.score_timeout_s)
                except TimeoutError:
                    return _response(error_response(503, "SERVICE_UNAVAILABLE", "busy with a large body; try again"))
            try:
                body = await asyncio.wait_for(self._read(request, slot), self.limits.body_timeout_s)
            except TimeoutError:
                return _response(error_response(408, "REQUEST_TIMEOUT", "the body did not arrive in time",
                                                [(b"connection", b"close")]))  # fmt: skip
            except _TooLarge:
                return _response(too_large)
            except ClientDisconnect:  # nobody to answer; the log says 499, as nginx does
                request.scope["state"]["status"] = 499
                return _response(error_response(400, "BAD_REQUEST", "the client went away"))
            work = asyncio.get_running_loop().run_in_executor(self.pool, self.scorer.score, body)
            del body
            try:
                response, timing = await asyncio.wait_for(asyncio.shield(work), self.limits.score_timeout_s)
            except TimeoutError:  # the thread scores on: a large body's slot is given back when it is done
                work.add_done_callback(lambda _, held=slot: held.give_back())
                slot = _Slot(self.large_slot)  # (not held: the `finally` below gives back nothing)
                return _response(error_response(503, "SERVICE_UNAVAILABLE", "busy: not scored in time; try again"))
            except self.bad_request as error:
                return _response(error_response(400, "BAD_REQUEST", str(error)))
            except (self.unavailable, self.mismatch) as error:
                return _response(error_response(503, "SERVICE_UNAVAILABLE", str(error)))
        finally:
            slot.give_back()
        request.scope["state"].update(rows=len(response["predictions"]), timing=timing)
        return Response(orjson.dumps(response), media_type="application/json")

    async def _read(self, request, slot: "_Slot") -> bytes:
        """The body, counted as it arrives; one that passes LARGE_BODY_BYTES waits for the large-body slot."""
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                raise _TooLarge
            if size > LARGE_BODY_BYTES:
                await slot.take()
            parts.append(chunk)
        return b"".join(parts)


class _Slot:
    """A semaphore's one permit, taken at most once and given back at most once."""

    def __init__(self, semaphore: asyncio.Semaphore):
        self.semaphore, self.held = semaphore, False

    async def take(self) -> None:
        if not self.held:
            await self.semaphore.acquire()
            self.held = True

    def give_back(self) -> None:
        if self.held:
            self.semaphore.release()
            self.held = False


class _TooLarge(Exception):
    pass


def _response(response):
    from starlette.responses import Response

    status, headers, body = response
    extra = {name.decode(): value.decode() for name, value in headers[2:]}
    return Response(body, status_code=status, media_type="application/json", headers=extra)
