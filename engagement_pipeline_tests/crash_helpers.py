"""Helpers for the tests that run the pipeline in other processes: start, watch, kill, inspect.

Every run is a real `dagster asset materialize` process against a real
ENGAGEMENT_HOME (DuckDB file, MLflow sqlite store, Dagster instance); the
tests kill it with SIGKILL at a point they can observe from outside (a line in
its log, the warehouse lock being held), never through a hook in the code.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from engagement_pipeline_tests.conftest import QUICK_TRAINING, copy_real_exports

DAGSTER = str(Path(sys.executable).with_name("dagster"))
SCORE_DAY = "2017-01-13"  # a day of the Michigan fixture export with several volunteers
# A model small enough to train in seconds: the point is the pipeline around it.
TINY_TRAINING = {**QUICK_TRAINING, "num_layers": 1, "window": 8, "batch_size": 128, "max_val_examples": 1_000}


def pipeline_env(home: Path, exports: Path) -> dict[str, str]:
    """The environment of a pipeline process: everything under `home`, exports from `exports`."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "ENGAGEMENT_EXPORTS_DIR")}
    env.update(
        ENGAGEMENT_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        ENGAGEMENT_EXPORTS_DIR=str(exports),
        PYTHONUNBUFFERED="1",
    )
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    return env


def materialize_argv(selection: str, partition: str | None = None, training: dict | None = None) -> list[str]:
    argv = [DAGSTER, "asset", "materialize", "-m", "engagement_pipeline.definitions", "--select", selection]
    if partition:
        argv += ["--partition", partition]
    if training is not None:
        argv += ["--config-json", json.dumps({"ops": {"engagement_model": {"config": training}}})]
    return argv


@dataclass
class Run:
    """A pipeline process whose stdout and stderr go to a log file the test can watch."""

    process: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], log_path: Path) -> Run:
        log = open(log_path, "wb")
        try:
            # Its own process group, so a kill reaches anything it started and nothing else.
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        return cls(process, log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout_s: float = 120) -> None:
        """Block until `pattern` (a regex) appears in the log; fail if the process ends first."""
        deadline = time.monotonic() + timeout_s
        while not re.search(pattern, self.log()):
            if self.process.poll() is not None:
                raise AssertionError(
                    f"process ended (rc {self.process.returncode}) before {pattern!r}:\n{self.log()[-3000:]}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"{pattern!r} not seen in {timeout_s}s:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no handler, no finally block, no atexit runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def finish(self, timeout_s: float = 300) -> str:
        """Wait for a successful end; return the log."""
        try:
            returncode = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {timeout_s}s:\n{self.log()[-3000:]}") from None
        assert returncode == 0, f"rc {returncode}:\n{self.log()[-5000:]}"
        return self.log()


def run_to_end(argv: list[str], env: dict[str, str], log_path: Path, timeout_s: float = 300) -> str:
    return Run.start(argv, env, log_path).finish(timeout_s)


def lock_is_held(lock_path: Path) -> bool:
    """Whether another process holds the warehouse lock (Warehouse.connect's flock) right now."""
    if not lock_path.exists():
        return False
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def wait_until(condition, timeout_s: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout_s}s")
        time.sleep(0.02)


def read_warehouse(home: Path, sql: str, params=None) -> list[tuple]:
    """Open the warehouse as a second process would (it replays any WAL a crash left) and query it."""
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql, params or []).fetchall()


def assert_ingest_consistent(home: Path) -> dict[str, int]:
    """No half-loaded file: every stored row belongs to a file recorded whole in `ingested_files`."""
    rows, recorded, files_with_rows, recorded_files, dangling = read_warehouse(
        home,
        """
        select (select count(*) from classifications),
               (select coalesce(sum(rows_inserted), 0) from ingested_files),
               (select count(distinct source_file) from classifications),
               (select count(*) from ingested_files),
               (select count(*) from classifications where source_file not in (select source_file from ingested_files))
        """,
    )[0]
    assert rows == recorded, f"{rows} classifications but ingested_files accounts for {recorded}"
    assert dangling == 0, f"{dangling} rows from a file that is not recorded as ingested"
    per_file = dict(
        read_warehouse(
            home,
            """
            with recorded as (select source_file, sum(rows_inserted) as rows from ingested_files group by all),
                 stored as (select source_file, count(*) as rows from classifications group by all)
            select source_file, recorded.rows = coalesce(stored.rows, 0)
            from recorded left join stored using (source_file)
            """,
        )
    )
    assert all(per_file.values()), f"a file's rows differ from its recorded count: {per_file}"
    return {"rows": rows, "files": recorded_files, "files_with_rows": files_with_rows}


def champion(home: Path) -> tuple[str | None, int]:
    """(version under the `champion` alias or None, number of registered versions), from the MLflow store.

    Read with sqlite3, a fresh connection each time: MLflow's client caches its
    engine per URI, which would keep reading a store file the tests replaced.
    """
    from engagement_pipeline.resources import CHAMPION_ALIAS, REGISTERED_MODEL_NAME

    with closing(sqlite3.connect(f"{(home / 'mlflow.db').as_uri()}?mode=ro", uri=True)) as con:
        alias = con.execute(
            "select version from registered_model_aliases where name = ? and alias = ?",
            [REGISTERED_MODEL_NAME, CHAMPION_ALIAS],
        ).fetchone()
        (versions,) = con.execute(
            "select count(*) from model_versions where name = ?", [REGISTERED_MODEL_NAME]
        ).fetchone()
    return (str(alias[0]) if alias else None), versions


def prediction_file(home: Path, day: str = SCORE_DAY) -> Path:
    return home / "predictions" / f"date={day}" / "predictions.parquet"


def build_scored_home(
    home: Path, exports: Path, logs: Path, mlflow_store_template: Path | None = None, generated_rows: int = 6_000
) -> dict[str, str]:
    """A complete pipeline state: real + generated exports ingested, models built, a champion, one day scored.

    The home's MLflow store starts as a copy of `mlflow_store_template` when one is given
    (shared_homes.new_mlflow_store). Returns the environment of the pipeline processes.
    """
    from engagement_pipeline.sample import write_export
    from engagement_pipeline_tests.shared_homes import new_mlflow_store

    exports.mkdir(parents=True, exist_ok=True)
    copy_real_exports(exports)
    write_export(exports / "generated.csv", generated_rows, seed=3)
    env = pipeline_env(home, exports)
    if mlflow_store_template is not None:
        new_mlflow_store(mlflow_store_template, home)
    logs.mkdir(parents=True, exist_ok=True)
    run_to_end(materialize_argv("*engagement_model", training=TINY_TRAINING), env, logs / "base-train.log")
    from engagement_pipeline.resources import Tracking
    from engagement_pipeline_tests.training_fixtures import crown_latest_version_by_hand

    crown_latest_version_by_hand(
        Tracking(home=str(home))
    )  # a tiny export cannot pass the promotion gate: these tests are about what happens after it
    run_to_end(materialize_argv("user_predictions", partition=SCORE_DAY), env, logs / "base-score.log")
    return env


@dataclass
class ScoredHome:
    """A home built once by `build_scored_home` and saved; calling it restores the home to that state.

    It is restored to the same path because MLflow records absolute artifact locations.
    """

    home: Path
    saved: Path
    env: dict[str, str]

    def __call__(self) -> tuple[Path, dict[str, str]]:
        restore(self.saved, self.home)
        return self.home, self.env


def snapshot(home: Path, to: Path) -> None:
    """Copy a home whose processes have all ended (the copy restores it to the same path)."""
    shutil.rmtree(to, ignore_errors=True)
    shutil.copytree(home, to)


def restore(snapshot_dir: Path, home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(snapshot_dir, home)


@contextmanager
def small_disk(folder: Path, size_kb: int) -> Iterator[Path]:
    """A tmpfs of `size_kb` mounted on `folder` (created), unmounted afterwards; skips when mounting is refused.

    Whether this process may mount is found out by trying (root in a container without the capability cannot).
    """
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)  # busy: detach it now, freed when let go


def fill_disk(folder: Path) -> None:
    """Write a file under `folder` until its disk has no byte left (unbuffered: each write is the disk's answer)."""
    handle = os.open(folder / "ballast", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65_536, 4096, 1):  # then the last partial blocks
            while True:
                try:
                    os.write(handle, b"\0" * size)
                except OSError as error:
                    assert error.errno == errno.ENOSPC, error
                    break
    finally:
        os.close(handle)
