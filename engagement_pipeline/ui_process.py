"""The UIs' server processes, run in the foreground by `engagement dagster-ui` and `engagement mlflow-ui`.

A busy port ends the command at once with PORT_IN_USE and one line: checked
before the start, and watched for in the server's output, which passes through
here. Ctrl-C and SIGTERM stop the server cleanly, without a traceback.
"""

import signal
import subprocess
import sys

from engagement_pipeline.console import PORT_IN_USE, CommandFailed

SERVER_STOP_TIMEOUT_S = 30


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind `host:port` now (the same socket options the UIs' servers use)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


BIND_FAILED = ("address already in use", "[errno 98]")


def require_free_port(host: str, port: int) -> None:
    if not port_is_free(host, port):
        raise port_in_use(host, port)


def port_in_use(host: str, port: int) -> CommandFailed:
    return CommandFailed(
        PORT_IN_USE, f"Port {port} on {host} is in use by another process: stop it, or choose another with --port N."
    )


def run_server(argv: list[str], environment: dict[str, str], host: str, port: int) -> int:
    """Run a server in the foreground until it exits, and stop it cleanly when we are stopped.

    A busy port ends the command at once (PORT_IN_USE, one line): checked
    before the start, and watched for in the server's output, which passes
    through here (its own bind error, when another process took the port in
    between, stops the server: `dg dev` would otherwise keep its daemon running).
    Ctrl-C in a terminal reaches the server too; a SIGTERM sent to this
    process alone (a service manager, `kill`) is passed on as SIGINT, the
    signal `dg dev` and `mlflow server` shut their own workers down on
    (its `dagster dev` server ignores SIGTERM). Either way no traceback, and a server
    that does not stop within SERVER_STOP_TIMEOUT_S is killed.
    """
    import threading

    require_free_port(host, port)
    print("$ " + " ".join(argv), flush=True)
    # A shell that starts us in the background (`engagement dagster-ui &`) sets SIGINT to "ignore",
    # which the server would inherit and then never stop: give it the default disposition back.
    process = subprocess.Popen(
        argv,
        env=environment,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    )
    bind_failed = threading.Event()

    def pass_through() -> None:
        for line in process.stdout:
            if bind_failed.is_set():
                continue  # drained, not shown, until the server has stopped
            if any(marker in line.lower() for marker in BIND_FAILED):
                bind_failed.set()
                process.send_signal(signal.SIGINT)
                threading.Timer(SERVER_STOP_TIMEOUT_S, lambda: process.poll() is None and process.kill()).start()
                continue
            sys.stdout.write(line)
            sys.stdout.flush()

    reader = threading.Thread(target=pass_through, daemon=True)
    reader.start()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signal.SIGINT))
    try:
        try:
            code = process.wait()
        except KeyboardInterrupt:
            try:
                code = process.wait(timeout=SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    reader.join(timeout=5)
    if bind_failed.is_set():
        raise port_in_use(host, port)
    return code
