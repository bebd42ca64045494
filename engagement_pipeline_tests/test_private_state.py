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
