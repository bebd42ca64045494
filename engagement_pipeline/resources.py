"""Where state lives, and the two resources every asset talks to.

* `paths()` resolves CONTRACT.md's environment variables once, with their
  defaults: everything local lives under ENGAGEMENT_HOME.
* `Warehouse` is the DuckDB file. Every connection runs `SET TimeZone='UTC'`
  and is taken under an exclusive file lock, so two processes (the nightly
  schedule and someone materializing from the UI) queue instead of one dying
  on DuckDB's own lock.
* `Tracking` points MLflow at the project's sqlite store and artifact folder.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

DEFAULT_PARTITIONS_START = "2015-01-01"
EXPERIMENT_NAME = "engagement"
REGISTERED_MODEL_NAME = "engagement-lstm"
CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class Paths:
    home: Path

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def sample_exports(self) -> Path:
        return self.home / "sample_exports"

    @property
    def predictions(self) -> Path:
        return self.home / "predictions"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def salt_file(self) -> Path:
        return self.home / "user_name_salt"


def paths() -> Paths:
    """The project's folders, from ENGAGEMENT_HOME (default ./.engagement)."""
    return Paths(Path(os.environ.get("ENGAGEMENT_HOME", ".engagement")).resolve())


def exports_dir() -> Path | None:
    """ENGAGEMENT_EXPORTS_DIR, or None for the bundled sample."""
    value = os.environ.get("ENGAGEMENT_EXPORTS_DIR")
    return Path(value).resolve() if value else None


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths().mlflow_db}"


def partitions_start() -> str:
    return os.environ.get("ENGAGEMENT_PARTITIONS_START", DEFAULT_PARTITIONS_START)


@contextmanager
def exclusive_lock(lock_path: Path, *, timeout_s: float, log=None) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path`, waiting up to `timeout_s`.

    The kernel drops the lock when its holder dies, so a killed run never
    leaves the warehouse locked.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        deadline = time.monotonic() + timeout_s
        waiting_said = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{lock_path} has been held by another process for over {timeout_s:.0f}s; "
                        "another run is using the warehouse (see README, Troubleshooting)."
                    ) from None
                if log is not None and not waiting_said:
                    log.info(f"Waiting for another process to release {lock_path} ...")
                    waiting_said = True
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Warehouse(dg.ConfigurableResource):
    """The DuckDB warehouse at $ENGAGEMENT_HOME/warehouse.duckdb.

    `connect()` yields a connection in UTC, holding the warehouse lock for its
    whole life: DuckDB allows one writing process per file, and this turns a
    second process into a queue rather than an error.
    """

    database: str = ""
    memory_limit: str = "4GB"
    threads: int = 0
    lock_timeout_s: float = 6 * 3600

    @property
    def path(self) -> Path:
        return Path(self.database) if self.database else paths().warehouse

    @contextmanager
    def connect(self, log=None):
        import duckdb

        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(path.with_name(path.name + ".lock"), timeout_s=self.lock_timeout_s, log=log):
            con = duckdb.connect(str(path))
            try:
                con.execute("SET TimeZone = 'UTC'")
                con.execute("SET memory_limit = ?", [self.memory_limit])
                con.execute("SET temp_directory = ?", [str(path.parent / "duckdb_tmp")])
                if self.threads:
                    con.execute("SET threads = ?", [self.threads])
                yield con
            finally:
                con.close()


class Tracking(dg.ConfigurableResource):
    """MLflow tracking: the project's sqlite store unless MLFLOW_TRACKING_URI says otherwise."""

    tracking_uri: str = ""
    experiment_name: str = EXPERIMENT_NAME
    registered_model_name: str = REGISTERED_MODEL_NAME

    def uri(self) -> str:
        return self.tracking_uri or tracking_uri()

    def client(self):
        """Point mlflow at the store (creating the experiment with its artifact folder) and return a client."""
        import mlflow

        uri = self.uri()
        # Decided before set_tracking_uri, which exports MLFLOW_TRACKING_URI itself.
        project_store = not self.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        if client.get_experiment_by_name(self.experiment_name) is None:
            artifact_root = None  # a tracking server of your own decides where artifacts go
            if project_store:
                paths().mlartifacts.mkdir(parents=True, exist_ok=True)
                artifact_root = paths().mlartifacts.as_uri()
            client.create_experiment(self.experiment_name, artifact_location=artifact_root)
        mlflow.set_experiment(self.experiment_name)
        return client
