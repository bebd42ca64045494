"""State under the home is its owner's alone, and a killed run's DuckDB spill files do not outlive it."""

import stat

import pytest

from engagement_pipeline.cli import main
from engagement_pipeline.resources import Warehouse


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_home_and_its_warehouse_are_private(tmp_path):
    home = tmp_path / "fresh-home"
    with Warehouse(home=str(home)).connect() as con:
        con.execute("create table t as select 1 as x")
    assert mode(home) == 0o700
    assert mode(home / "warehouse.duckdb") == 0o600


def test_spill_files_left_by_a_killed_run_are_removed_before_the_next_connection(tmp_path):
    home = tmp_path / "home"
    spill = home / "duckdb_tmp"
    spill.mkdir(parents=True)
    leftover = spill / "duckdb_temp_storage-0.tmp"
    leftover.write_bytes(b"raw rows of a killed ingest: a user_name before hashing")
    with Warehouse(home=str(home)).connect() as con:
        assert not leftover.exists()
        con.execute("select 1").fetchall()
    assert spill.is_dir()


@pytest.mark.parametrize("name", ["home?x", "home#1"])
def test_a_home_sqlite_cannot_live_in_is_refused_before_anything_is_created(tmp_path, monkeypatch, name):
    home = tmp_path / name
    monkeypatch.setenv("ENGAGEMENT_HOME", str(home))
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--date", "2025-01-01"])
    assert "contains '?' or '#'" in str(exit_info.value.code)
    assert not home.exists()


def not_private(root) -> list[str]:
    """Everything under `root` that anyone but its owner may read: folders not 0700, files not 0600."""
    wrong = [] if mode(root) == 0o700 else [str(root)]
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        if mode(path) & 0o077:
            wrong.append(f"{path.relative_to(root)} {oct(mode(path))}")
    return wrong


@pytest.mark.slow
def test_a_fresh_home_s_dagster_instance_and_mlflow_store_are_created_private(tmp_path):
    """Issue 23: the home was created 0755, mlflow.db and Dagster's runs.db 0644 (under the usual umask 022)."""
    import os

    from engagement_pipeline.cli.instance import open_dagster_instance
    from engagement_pipeline.resources import Tracking
    from engagement_pipeline.settings import Settings

    previous = os.umask(0o022)
    try:
        home = tmp_path / "fresh-home"
        open_dagster_instance(Settings(home=home)).dispose()
        Tracking(home=str(home)).client()
    finally:
        os.umask(previous)
    assert (home / "dagster" / "history" / "runs.db").exists() and (home / "mlflow.db").exists()
    assert not_private(home) == []


@pytest.mark.slow
def test_four_first_runs_on_a_fresh_home_all_set_up_the_dagster_instance(tmp_path):
    """Issue 23: two first runs started together raced in Dagster's sqlite schema creation (2 of 4 tries)."""
    import subprocess
    import sys

    home = tmp_path / "fresh-home"
    code = (
        "import sys; from pathlib import Path;"
        "from engagement_pipeline.cli.instance import open_dagster_instance; from engagement_pipeline.settings import Settings;"
        "i = open_dagster_instance(Settings(home=Path(sys.argv[1]))); print(len(i.get_runs()))"
    )
    children = [
        subprocess.Popen([sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    results = [(child.wait(timeout=300), *child.communicate()) for child in children]
    assert [(rc, out.strip()) for rc, out, _ in results] == [(0, b"0")] * 4, [err[-800:] for _, _, err in results]
