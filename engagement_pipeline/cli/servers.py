"""The servers the command starts in the foreground: `engagement dagster-ui`, `mlflow-ui` and `serve`.

A busy port ends the command at once with PORT_IN_USE and one line: checked
before the start, and watched for in the server's output, which passes through
here. Ctrl-C and SIGTERM stop the server cleanly, without a traceback.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

from engagement_pipeline.cli.console import PORT_IN_USE, CommandFailed, silence_library_noise
from engagement_pipeline.cli.instance import WORKSPACE_YAML, open_dagster_instance, prepare_dagster_home
from engagement_pipeline.settings import Settings

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


def mlflow_ui_command(settings: Settings, host: str, port: int, workers: int = 2) -> list[str]:
    """The MLflow UI against the project's tracking store and artifact folder.

    Two workers rather than MLflow's four: one person browsing needs no more,
    and it starts twice as fast on a small machine.
    """
    from engagement_pipeline.resources import resources_for

    tracking = resources_for(settings)["tracking"]
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking.uri(),
               "--host", host, "--port", str(port), "--workers", str(workers)]  # fmt: skip
    if tracking.project_store:
        tracking.artifacts.mkdir(parents=True, exist_ok=True)
        command += ["--default-artifact-root", tracking.artifacts.as_uri()]
    return command


def dagster_ui_command(workspace: Path, host: str, port: int) -> list[str]:
    """`dg dev` (webserver and daemon, so the schedules run) on the instance's workspace.yaml.

    `dg dev`, not `dagster dev`, which Dagster 1.13 marks as superseded; given a
    workspace file it starts Dagster's own dev server on it, in this environment.
    The workspace names the module, not a path, so an installed wheel works as a checkout does.
    """
    return [sys.executable, "-m", "dagster_dg_cli.cli", "dev", "-w", str(workspace), "-h", host, "-p", str(port)]


ML_WORKFLOW = "workflowType=machine_learning"  # MLflow 3.17's UI picks GenAI or ML views by this, not by the tag


def mlflow_start_url(settings: Settings, host: str, port: int) -> str:
    """Where to open the MLflow UI: the `engagement` experiment's training runs, in the UI's machine-learning views.

    MLflow 3.17.2's UI takes the experiment kind from its workflow type (the URL's `workflowType`, else
    the browser's stored choice, "genai" in a fresh browser), not from the tag `mlflow.experimentKind`.
    """
    from engagement_pipeline.resources import resources_for

    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    tracking = resources_for(settings)["tracking"]
    try:
        experiment = (
            tracking.client().get_experiment_by_name(tracking.experiment_name) if tracking.store_exists() else None
        )
    except Exception:  # a store not created yet, or unreadable: the server will say so
        experiment = None
    if experiment is None:
        return f"{base}/#/experiments?{ML_WORKFLOW}"
    return f"{base}/#/experiments/{experiment.experiment_id}/runs?{ML_WORKFLOW}"


def cmd_mlflow_ui(args) -> int:
    from engagement_pipeline.deploy.command import deployed_elsewhere

    if (deployed := deployed_elsewhere(args.settings, "mlflow")) is not None:
        return deployed
    require_free_port(args.host, args.port)  # before the imports of mlflow_ui_command (seconds)
    environment = args.settings.child_environment()
    print(f"Open {mlflow_start_url(args.settings, args.host, args.port)} (the training runs)", flush=True)
    return run_server(mlflow_ui_command(args.settings, args.host, args.port), environment, args.host, args.port)


def cmd_dagster_ui(args) -> int:
    from engagement_pipeline.deploy.command import deployed_elsewhere

    if (deployed := deployed_elsewhere(args.settings, "webserver")) is not None:
        return deployed
    require_free_port(args.host, args.port)
    open_dagster_instance(args.settings).dispose()  # its storage created once, before the UI and daemon start
    workspace = prepare_dagster_home(args.settings) / "workspace.yaml"
    if not workspace.exists() or workspace.read_text() != WORKSPACE_YAML:
        workspace.write_text(WORKSPACE_YAML)
    environment = args.settings.child_environment()
    silence_library_noise(environment)  # the runs it launches load models too
    return run_server(dagster_ui_command(workspace, args.host, args.port), environment, args.host, args.port)


def cmd_serve(args) -> int:
    from engagement_pipeline.resources import resources_for
    from engagement_pipeline.serving.http_app import is_loopback
    from engagement_pipeline.serving.server import serve

    token = os.environ.get("ENGAGEMENT_SERVE_TOKEN") or None
    if not is_loopback(args.host) and token is None:
        raise SystemExit(
            f"serving on {args.host} (not loopback) needs a token: set ENGAGEMENT_SERVE_TOKEN; "
            "clients send it as `Authorization: Bearer <token>`"
        )
    if token is not None and (len(token) < 16 or not token.isascii() or not token.isprintable()):
        raise SystemExit("ENGAGEMENT_SERVE_TOKEN must be at least 16 printable ASCII characters")
    resources = resources_for(args.settings)  # the history snapshot and the salt are the storage's files
    return serve(resources["storage"], args.host, args.port, resources["tracking"], token=token)
