"""A full disk under DAGSTER_HOME or ENGAGEMENT_HOME: one clear message, and nothing stored is lost.

Each test mounts a small tmpfs of its own (skipped where mounting is not
permitted) and unmounts it afterwards. The `engagement` command refuses to
start when a state folder's disk has less than MIN_FREE_MB free; with the
check switched off (`--min-free-mb 0`) the run really starts and fails where
the disk is full, in Dagster's sqlite storage or in the predictions writer,
and the command still ends with the message rather than a traceback.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from engagement_pipeline.cli import main
from engagement_pipeline.cli.console import DISK_FULL
from engagement_pipeline.cli.instance import prepare_dagster_home
from engagement_pipeline.ops.disk_space import DiskFullError
from engagement_pipeline.resources import Warehouse
from engagement_pipeline.settings import Settings
from engagement_pipeline_tests.crash_helpers import SCORE_DAY, fill_disk, prediction_file, small_disk


def engagement(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "engagement_pipeline.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_full_dagster_home_stops_the_command_with_the_folder_and_what_to_do(tmp_path, monkeypatch, warehouse):
    from engagement_pipeline_tests.test_cli import ingest_days

    exports = tmp_path / "exports"
    exports.mkdir()
    ingest_days(exports, warehouse, [SCORE_DAY])  # a day with data, so that the command starts a run
    dagster_home = tmp_path / "dagster-on-a-full-disk"
    with small_disk(dagster_home, 16):
        monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
        prepare_dagster_home(Settings.from_environment())  # an instance set up before its disk filled
        fill_disk(dagster_home)
        env = dict(os.environ)

        # Before the run: refused, nothing created.
        with pytest.raises(SystemExit) as refused:
            main(["score", "--date", SCORE_DAY])
        message = str(refused.value.code)
        assert f"DAGSTER_HOME={dagster_home}: 0 bytes free on its disk" in message, message
        assert "at least 100 MB" in message and "Free space on that disk, or point ENGAGEMENT_HOME" in message
        assert sorted(p.name for p in dagster_home.iterdir()) == ["ballast", "dagster.yaml"]

        # The check off: the run starts and Dagster's own sqlite storage cannot write.
        result = engagement(["score", "--date", SCORE_DAY, "--min-free-mb", "0"], env)
        assert result.returncode == DISK_FULL, result.stdout + result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert f"The disk is full: DAGSTER_HOME={dagster_home}:" in result.stderr, result.stderr
        assert "database or disk is full" in result.stderr.splitlines()[-1]  # the cause, on the last line


@pytest.mark.slow  # the scored home: a pipeline run, shared with the crash and privacy tests
def test_a_full_engagement_home_fails_scoring_naming_the_file_and_keeps_what_was_stored(
    tmp_path, scored_home, monkeypatch
):
    home, env = scored_home.home, {**scored_home.env, "DAGSTER_HOME": str(tmp_path / "dagster")}
    shutil.rmtree(home, ignore_errors=True)
    with small_disk(home, 16 * 1024):
        shutil.copytree(scored_home.saved, home, dirs_exist_ok=True, ignore=shutil.ignore_patterns("dagster"))
        fill_disk(home)
        target = prediction_file(home)
        before = {path: digest(path) for path in (target, home / "warehouse.duckdb", home / "mlflow.db")}

        result = engagement(["score", "--date", SCORE_DAY, "--min-free-mb", "0"], env)
        assert result.returncode == DISK_FULL, result.stdout + result.stderr
        # The message is wrapped to the terminal's width (never inside a path): read it as one text.
        lines = result.stderr.strip().splitlines()
        message = " ".join(
            line.strip() for line in lines[next(i for i, s in enumerate(lines) if "disk is full" in s) :]
        )
        assert message.startswith(f"The disk is full: ENGAGEMENT_HOME={home}: 0 bytes free on its disk."), lines
        assert f"No space left on device to write the predictions file {target}" in message
        assert "the previous file is unchanged" in message

        # Nothing stored changed, the warehouse opens and answers, and no temporary takes up the space.
        assert {path: digest(path) for path in before} == before
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            assert con.execute("select count(*) from classifications").fetchone()[0] > 0
        assert not list(target.parent.glob(".*.tmp"))

        # And the next command is refused before it starts, naming the home.
        monkeypatch.setenv("ENGAGEMENT_HOME", str(home))
        with pytest.raises(SystemExit) as refused:
            main(["score", "--date", SCORE_DAY])
        assert f"ENGAGEMENT_HOME={home}: 0 bytes free on its disk" in str(refused.value.code)
    shutil.rmtree(home)


def test_a_warehouse_write_on_a_full_disk_fails_and_the_stored_rows_stay(tmp_path):
    folder = tmp_path / "warehouse-disk"
    with small_disk(folder, 3 * 1024):
        warehouse = Warehouse(database=str(folder / "warehouse.duckdb"), threads=1)
        with warehouse.connect() as con:
            con.execute("create table t as select range as id, md5(range::varchar) as text from range(10000)")
        with pytest.raises(DiskFullError) as failed, warehouse.connect() as con:
            con.execute("insert into t select range, repeat(md5(range::varchar), 4) from range(10000, 400000)")
        message = str(failed.value)
        assert f"No space left on device to write the warehouse {warehouse.path}: " in message, message
        assert "free on the disk of" in message and "rolled back" in message
        with warehouse.connect() as con:
            assert con.execute("select count(*), max(id) from t").fetchone() == (10000, 9999)
