"""`engagement deploy up | status | down` for $ENGAGEMENT_HOME.

`up` starts, in order and each in its own process group: PostgreSQL (initdb the first time), the
MLflow tracking server (backend store in PostgreSQL, artifacts in <home>/mlartifacts, served by the
server), the Dagster daemon and the Dagster webserver, all on 127.0.0.1; it writes the deployed
dagster.yaml and records the tracking URI in the home, then prints the addresses. A service already
running is left as it is. `status` says what runs and since when; `down` stops all of it, newest
first, and waits until no process of theirs is left.
"""

from __future__ import annotations

import json
import signal
import socket
import sys

from engagement_pipeline.deploy import config, postgres, services
from engagement_pipeline.settings import DEPLOY_FOLDER, TRACKING_URI_FILE, TRACKING_VARIABLE, Settings

ORDER = ("postgres", "mlflow", "daemon", "webserver")
START_TIMEOUT_S = {"postgres": 60, "mlflow": 180, "webserver": 180}


class Layout:
    """Where a deployment keeps its files, under <home>/deploy."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = settings.home / DEPLOY_FOLDER
        self.data = self.root / "postgres"
        self.socket_dir = self.root / "run"
        self.logs = self.root / "logs"
        self.state = self.root / "state.json"
        self.ports = self.root / "ports.json"
        self.password = self.root / "postgres.password"
        self.workspace = self.root / "workspace.yaml"
        self.tracking_uri = self.root / TRACKING_URI_FILE
        self.artifacts = settings.home / "mlartifacts"
        self.dagster_yaml = settings.dagster_instance_home / "dagster.yaml"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nobody listens on `port` (connections of a server just stopped, in TIME_WAIT, do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def choose_ports(layout: Layout, running: dict[str, services.Service]) -> dict[str, int]:
    """The ports recorded at the last `up` where still free (or ours), new free ones otherwise."""
    recorded = json.loads(layout.ports.read_text()) if layout.ports.exists() else {}
    ports = {}
    for name in ("postgres", "mlflow", "webserver"):
        port = recorded.get(name)
        if not port or (name not in running and not port_is_free(port)):
            port = free_port()
        ports[name] = port
    config.write(layout.ports, json.dumps(ports))
    return ports


def service_environment(settings: Settings, tracking_uri: str) -> dict[str, str]:
    environment = settings.child_environment()
    environment[TRACKING_VARIABLE] = tracking_uri
    environment.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")  # a server that is down fails a run in seconds
    return environment


def commands(layout: Layout, ports: dict[str, int]) -> dict[str, tuple[list[str], str, int]]:
    """Per service: its command line, its address, the signal that stops it."""
    python = sys.executable
    mlflow_store = postgres.url(layout.socket_dir, ports["postgres"], "mlflow")
    return {
        "postgres": (
            postgres.server_command(layout.data, layout.socket_dir, ports["postgres"]),
            f"postgresql://127.0.0.1:{ports['postgres']} (socket {layout.socket_dir})",
            signal.SIGINT,  # PostgreSQL's "fast" shutdown
        ),
        "mlflow": (
            [
                python,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                mlflow_store,
                "--artifacts-destination",
                layout.artifacts.as_uri(),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["mlflow"]),
                "--workers",
                "1",
            ],  # fmt: skip
            f"http://127.0.0.1:{ports['mlflow']}",
            signal.SIGTERM,
        ),
        "daemon": ([python, "-m", "dagster._daemon", "run", "-w", str(layout.workspace)], "-", signal.SIGTERM),
        "webserver": (
            [
                python,
                "-m",
                "dagster_webserver",
                "-h",
                "127.0.0.1",
                "-p",
                str(ports["webserver"]),
                "-w",
                str(layout.workspace),
            ],  # fmt: skip
            f"http://127.0.0.1:{ports['webserver']}",
            signal.SIGTERM,
        ),
    }


def up(settings: Settings, monitoring_interval_s: int = 60, max_runtime_s: int = config.MAX_RUNTIME_S) -> int:
    from engagement_pipeline.resources import private_folder

    layout = Layout(settings)
    private_folder(settings.home)
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.root.chmod(0o700)
    layout.logs.mkdir(exist_ok=True)
    running = {name: s for name, s in services.load(layout.state).items() if s.running()}
    ports = choose_ports(layout, running)
    tracking_uri = f"http://127.0.0.1:{ports['mlflow']}"
    if layout.tracking_uri.exists() and layout.tracking_uri.read_text().strip() != tracking_uri:
        for name in ("daemon", "webserver"):  # they run with the old MLFLOW_TRACKING_URI: start them again
            if name in running:
                print(f"{name:10} {services.stop(running.pop(name))} (the MLflow server moved to {tracking_uri})")
    if "postgres" not in running and "webserver" in running:  # its pooled connections died with PostgreSQL:
        # each would fail one request of the UI (a launch half-made) before Dagster drops it
        print(f"webserver  {services.stop(running.pop('webserver'))} (PostgreSQL is started again)", flush=True)
    if postgres.initdb(layout.data, layout.password, layout.logs / "initdb.log"):
        print(f"created the PostgreSQL cluster {layout.data}", flush=True)
    postgres.own(layout.socket_dir)
    layout.artifacts.mkdir(parents=True, exist_ok=True)
    dagster_url = postgres.url(layout.socket_dir, ports["postgres"], "dagster")
    if layout.dagster_yaml.exists() and "postgres:" not in layout.dagster_yaml.read_text():
        kept = layout.dagster_yaml.with_name("dagster.yaml.before-deploy")
        layout.dagster_yaml.replace(kept)
        print(f"kept the local instance's configuration as {kept}", flush=True)
    config.write(layout.dagster_yaml, config.dagster_yaml(dagster_url, monitoring_interval_s, max_runtime_s))
    config.write(layout.workspace, config.WORKSPACE_YAML)
    config.write(layout.tracking_uri, tracking_uri + "\n")
    environment = service_environment(settings, tracking_uri)

    recorded = dict(running)
    for name, (argv, address, stop_signal) in commands(layout, ports).items():
        if name in running:
            print(f"{name:10} already running (pid {running[name].pid})", flush=True)
            continue
        print(f"starting {name} ...", flush=True)
        service, process = services.start(name, argv, environment, layout.logs / f"{name}.log", address, stop_signal)
        recorded[name] = service
        services.save(layout.state, recorded)
        alive = lambda p=process: p.poll() is None
        try:
            if name == "postgres":
                postgres.wait_ready(layout.socket_dir, ports["postgres"], START_TIMEOUT_S[name], alive)
            elif name == "mlflow":
                services.wait_http(f"{address}/health", START_TIMEOUT_S[name], alive)
            elif name == "webserver":
                services.wait_http(f"{address}/server_info", START_TIMEOUT_S[name], alive)
        except RuntimeError as error:
            raise SystemExit(
                f"{name} did not start: {error}. Its log: {service.log}\n"
                "What did start still runs: `engagement deploy down` stops it."
            ) from None
    print(f"ENGAGEMENT_HOME={settings.home}")
    print(f"DAGSTER_HOME={settings.dagster_instance_home} (runs, event logs, schedules in PostgreSQL)")
    print_addresses(recorded)
    return 0


def print_addresses(recorded: dict[str, services.Service]) -> None:
    for name in ORDER:
        if name in recorded:
            service = recorded[name]
            state = f"running since {service.since()}" if service.running() else "NOT running"
            print(f"{name:10} {service.address:60} pid {service.pid:<8} {state}", flush=True)


def status(settings: Settings) -> int:
    layout = Layout(settings)
    recorded = services.load(layout.state)
    if not recorded:
        print(f"Nothing deployed for {settings.home}: `engagement deploy up` starts it.")
        return 3
    print(f"ENGAGEMENT_HOME={settings.home}")
    print_addresses(recorded)
    down = [name for name, service in recorded.items() if not service.running()]
    if down:
        print(f"not running: {', '.join(down)} (their logs: {layout.logs}); `engagement deploy up` starts them again")
        return 3
    return 0


def down(settings: Settings) -> int:
    layout = Layout(settings)
    recorded = services.load(layout.state)
    if not recorded:
        print(f"Nothing deployed for {settings.home}.")
        return 0
    for name in reversed(ORDER):  # the webserver and daemon before the stores they write to
        if name in recorded:
            print(f"{name:10} {services.stop(recorded[name])}", flush=True)
            del recorded[name]
            services.save(layout.state, recorded)
    layout.state.unlink(missing_ok=True)
    print(f"Stopped. The data stays in {layout.root} and {layout.artifacts}; `engagement deploy up` starts it again.")
    return 0


def deployed_elsewhere(settings: Settings, what: str) -> int | None:
    """On a deployed home, the UIs run already (`engagement deploy up`): say where, start nothing (a second
    Dagster daemon on the same storage would run every schedule twice)."""
    recorded = services.load(Layout(settings).state)
    if not recorded:
        return None
    service = recorded[what]
    state = "running" if service.running() else "recorded but not running (`engagement deploy up`)"
    print(f"{settings.home} is deployed: its {what} is {service.address}, {state}. See `engagement deploy status`.")
    return 0


def run(args) -> int:
    if args.action == "up":
        return up(args.settings, args.monitoring_interval, args.max_runtime)
    if args.action == "status":
        return status(args.settings)
    return down(args.settings)


def add_parser(commands_parser) -> None:
    help_text = "start, inspect or stop the services of a deployment (PostgreSQL, MLflow server, Dagster daemon+UI)"
    sub = commands_parser.add_parser("deploy", help=help_text, description=help_text + "; see README, Deploy.")
    sub.add_argument("action", choices=("up", "status", "down"))
    sub.add_argument(
        "--monitoring-interval",
        type=int,
        default=60,
        help="seconds between Dagster's run-monitoring checks (default 60)",
    )
    sub.add_argument(
        "--max-runtime",
        type=int,
        default=config.MAX_RUNTIME_S,
        help=f"a run going longer is failed by Dagster's run monitoring (seconds, default {config.MAX_RUNTIME_S})",
    )
    sub.set_defaults(func=run)
