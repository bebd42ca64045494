"""The resources every asset talks to; their fields are set in definitions.py (see settings.py).

* `Warehouse` is the DuckDB file. Every connection runs `SET TimeZone='UTC'`
  and is taken under an exclusive file lock, so two processes (the nightly
  schedule and someone materializing from the UI) queue instead of one dying
  on DuckDB's own lock.
* `Tracking` points MLflow at the project's sqlite store and artifact folder,
  or at MLFLOW_TRACKING_URI.
* `Exports` is the folder of classification exports (empty: the bundled sample).
* `Storage` is the home folder and every file the pipeline writes outside the
  warehouse: the sample, the salt, the predictions, the reports.

Each takes the home as a field (`home`, default ./.engagement); nothing here
reads the environment.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

from engagement_pipeline.ops.disk_space import DiskFullError, is_disk_full
from engagement_pipeline.settings import (
    DEFAULT_HOME,
    EXPORTS_VARIABLE,
    HOME_VARIABLE,
    TRACKING_VARIABLE,
    Settings,
)

EXPERIMENT_NAME = "engagement"
REGISTERED_MODEL_NAME = "engagement-lstm"
CHAMPION_ALIAS = "champion"
HOME_DESCRIPTION = "Folder for all local state (ENGAGEMENT_HOME); relative paths are taken from the working directory."


def home_path(home: str) -> Path:
    return Path(home or DEFAULT_HOME).resolve()


def private_folder(folder: Path) -> Path:
    """Create `folder` (and parents) readable by its owner only: state under the home is nobody else's business."""
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
        folder.chmod(0o700)  # mkdir's mode is masked by the umask
    return folder


def clear_folder(folder: Path) -> None:
    """Remove every file directly in `folder` (leftovers of a killed process), keeping the folder."""
    if folder.is_dir():
        for leftover in folder.iterdir():
            if leftover.is_file() or leftover.is_symlink():
                leftover.unlink(missing_ok=True)


class Storage(dg.ConfigurableResource):
    """The home folder and the files the pipeline keeps there beside the warehouse and the MLflow store."""

    home: str = Field(DEFAULT_HOME, description=HOME_DESCRIPTION)

    @property
    def root(self) -> Path:
        return home_path(self.home)

    @property
    def sample_exports(self) -> Path:
        return self.root / "sample_exports"

    @property
    def salt_file(self) -> Path:
        return self.root / "user_name_salt"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def serving(self) -> Path:
        """The online scorer's history snapshot (serving/history_snapshot.py), read without the warehouse lock."""
        return self.root / "serving"

    @property
    def ingest_scratch(self) -> Path:
        return self.root / "ingest_tmp"

    def prediction_file(self, day: str) -> Path:
        return self.predictions / f"date={day}" / "predictions.parquet"


class Exports(dg.ConfigurableResource):
    """The folder of Zooniverse classification exports (*.csv, *.csv.gz, read recursively)."""

    folder: str = Field(
        "", description="ENGAGEMENT_EXPORTS_DIR; empty = the bundled sample, written once under the home."
    )

    @property
    def path(self) -> Path | None:
        return Path(self.folder).resolve() if self.folder else None


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

    home: str = Field(DEFAULT_HOME, description=HOME_DESCRIPTION)
    database: str = Field("", description="The DuckDB file; empty = <home>/warehouse.duckdb.")
    memory_limit: str = Field("4GB", description="DuckDB memory_limit; beyond it DuckDB spills to <home>/duckdb_tmp.")
    threads: int = Field(0, description="DuckDB threads (0 = DuckDB's default, every core).")
    lock_timeout_s: float = Field(6 * 3600, description="How long a run waits for another process's warehouse lock.")

    @property
    def path(self) -> Path:
        return Path(self.database).resolve() if self.database else home_path(self.home) / "warehouse.duckdb"

    @contextmanager
    def connect(self, log=None):
        import duckdb

        path = self.path
        private_folder(path.parent)
        spill = path.parent / "duckdb_tmp"
        with exclusive_lock(path.with_name(path.name + ".lock"), timeout_s=self.lock_timeout_s, log=log):
            # Holding the lock, no other process spills here: what is left was a killed run's, and
            # spill files hold raw rows (user names before hashing), so they go before anything else.
            clear_folder(spill)
            con = duckdb.connect(str(path))
            try:
                path.chmod(0o600)
                con.execute("SET TimeZone = 'UTC'")
                con.execute("SET memory_limit = ?", [self.memory_limit])
                con.execute("SET temp_directory = ?", [str(spill)])
                if self.threads:
                    con.execute("SET threads = ?", [self.threads])
                yield con
            except duckdb.Error as error:
                if is_disk_full(error):  # rolled back: what was stored stays
                    raise DiskFullError.for_warehouse(path, error) from None
                raise
            finally:
                con.close()


class Tracking(dg.ConfigurableResource):
    """MLflow tracking: the project's sqlite store unless MLFLOW_TRACKING_URI says otherwise."""

    home: str = Field(DEFAULT_HOME, description=HOME_DESCRIPTION)
    tracking_uri: str = Field("", description="MLFLOW_TRACKING_URI; empty = sqlite:///<home>/mlflow.db.")
    experiment_name: str = EXPERIMENT_NAME
    registered_model_name: str = REGISTERED_MODEL_NAME

    @property
    def project_store(self) -> bool:
        """True for the project's own sqlite store (artifacts under <home>/mlartifacts)."""
        return not self.tracking_uri

    @property
    def artifacts(self) -> Path:
        return home_path(self.home) / "mlartifacts"

    def uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{home_path(self.home) / 'mlflow.db'}"

    def store_exists(self) -> bool:
        """False only for the project's own store before anything was logged to it (a server's: unknown, True)."""
        return not self.project_store or (home_path(self.home) / "mlflow.db").exists()

    def client(self):
        """Point mlflow at the store (creating the experiment with its artifact folder) and return a client."""
        import mlflow

        uri = self.uri()
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        if client.get_experiment_by_name(self.experiment_name) is None:
            artifact_root = None  # a tracking server of your own decides where artifacts go
            if self.project_store:
                self.artifacts.mkdir(parents=True, exist_ok=True)
                artifact_root = self.artifacts.as_uri()
            client.create_experiment(self.experiment_name, artifact_location=artifact_root)
        mlflow.set_experiment(self.experiment_name)
        return client


def _value(settings: Settings, variable: str, value: str, as_env_vars: bool):
    """A set variable as a dg.EnvVar (resolved when a run starts) if asked, else the plain value."""
    if as_env_vars and variable in settings.from_env:
        return dg.EnvVar(variable)
    return value


def resources_for(settings: Settings, *, as_env_vars: bool = False) -> dict:
    """The resources every asset receives.

    `as_env_vars=True` is for the code location (definitions.py): set variables stay
    `dg.EnvVar`s, which only a run can resolve. Plain values otherwise, for resources used
    directly (the `engagement` command, notebooks, tests).
    """
    home = _value(settings, HOME_VARIABLE, str(settings.home), as_env_vars)
    tracking_uri = _value(settings, TRACKING_VARIABLE, settings.tracking_uri or "", as_env_vars)
    return {
        "warehouse": Warehouse(home=home),
        "tracking": Tracking(home=home, tracking_uri=tracking_uri),
        "exports": Exports(folder=_value(settings, EXPORTS_VARIABLE, str(settings.exports_dir or ""), as_env_vars)),
        "storage": Storage(home=home),
    }
