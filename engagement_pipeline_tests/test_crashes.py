"""SIGKILL in the middle of the ingest, the SQL models, training and scoring loses nothing.

Each test runs the stage as a real `dagster asset materialize` process, kills
it (SIGKILL: no cleanup code runs) at a point observed from outside, then
checks what a crash must never do: a half-loaded file or half-built table in
the warehouse, a damaged predictions file, a moved `champion` alias; and that
the same command run again completes.
"""

import os
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engagement_pipeline import ingest
from engagement_pipeline.resources import Warehouse
from engagement_pipeline.sample import write_export
from engagement_pipeline.transform.sql_models import build_models, discover_models
from engagement_pipeline_tests.conftest import copy_real_exports
from engagement_pipeline_tests.crash_helpers import (
    SCORE_DAY,
    TINY_TRAINING,
    Run,
    assert_ingest_consistent,
    champion,
    lock_is_held,
    materialize_argv,
    pipeline_env,
    prediction_file,
    read_warehouse,
    run_to_end,
)

BIG_ROWS = 300_000  # a few seconds of loading on 2 cores: room to kill it in the middle
MODELS = [model.name for model in discover_models()]


@pytest.fixture(scope="module")
def big_export(tmp_path_factory) -> Path:
    return write_export(tmp_path_factory.mktemp("big") / "big.csv", BIG_ROWS, seed=5)


def ingest_in_process(home: Path, exports: Path) -> None:
    warehouse = Warehouse(database=str(home / "warehouse.duckdb"), threads=2)
    with warehouse.connect() as con:
        ingest.ingest_exports(
            con, ingest.find_exports(exports), ingest.load_salt(home / "user_name_salt"), home / "ingest_tmp"
        )


def test_killed_ingest_leaves_whole_files_only_and_a_rerun_completes(tmp_path, big_export):
    home, exports = tmp_path / "home", tmp_path / "exports"
    exports.mkdir()
    copy_real_exports(exports)
    env = pipeline_env(home, exports)
    ingest_in_process(home, exports)
    before = assert_ingest_consistent(home)

    # Two new files: a small one that commits first (its log line is the signal), then the big one.
    small = exports / "a-small.csv"
    write_export(small, 500, seed=9)
    (exports / "b-big.csv").symlink_to(big_export)
    run = Run.start(materialize_argv("classifications"), env, tmp_path / "ingest.log")
    run.wait_for(r"a-small\.csv: 500 rows read")
    assert lock_is_held(home / "warehouse.duckdb.lock")  # the big file is loading
    run.kill()

    after_kill = assert_ingest_consistent(home)
    stored = dict(
        read_warehouse(home, "select parse_filename(source_file), count(*) from classifications group by all")
    )
    assert stored["a-small.csv"] == 500 and "b-big.csv" not in stored
    assert after_kill["rows"] == before["rows"] + 500
    assert read_warehouse(home, "select count(*) from ingested_files where source_file like '%b-big%'") == [(0,)]

    run_to_end(materialize_argv("classifications"), env, tmp_path / "rerun.log")
    final = assert_ingest_consistent(home)
    read, inserted, duplicate = read_warehouse(
        home, "select rows_read, rows_inserted, rows_duplicate from ingested_files where source_file like '%b-big%'"
    )[0]
    assert read == BIG_ROWS and inserted + duplicate == BIG_ROWS  # (the generator may reuse a few ids)
    assert final["rows"] == after_kill["rows"] + inserted
    assert read_warehouse(home, "select count(*) from rejected_rows") == [(0,)]
    assert not list((home / "ingest_tmp").glob("*")), "the killed run's scratch files are still there"


def model_fingerprints(home: Path) -> dict[str, tuple]:
    """(rows, a content hash) of every model table."""
    return {
        name: read_warehouse(home, f"select count(*), sum(hash(columns(*))::hugeint) from {name}")[
            0
        ]  # our own model names
        for name in MODELS
    }


def test_killed_sql_models_leave_each_table_old_or_new_never_half(tmp_path, big_export):
    home, exports = tmp_path / "home", tmp_path / "exports"
    exports.mkdir()
    copy_real_exports(exports)
    env = pipeline_env(home, exports)
    ingest_in_process(home, exports)
    with Warehouse(database=str(home / "warehouse.duckdb"), threads=2).connect() as con:
        build_models(con)
    old = model_fingerprints(home)

    (exports / "big.csv").symlink_to(big_export)
    ingest_in_process(home, exports)
    models = ",".join(MODELS)
    run = Run.start(materialize_argv(models), env, tmp_path / "models.log")
    run.wait_for(r'Started execution of step "features"')
    run.kill()
    killed = model_fingerprints(home)

    run_to_end(materialize_argv(models), env, tmp_path / "rerun.log")
    new = model_fingerprints(home)
    # Every table is exactly its old or its new self; those finished before the kill are new.
    assert all(killed[name] in (old[name], new[name]) for name in MODELS), (old, killed, new)
    finished = MODELS[: MODELS.index("features")]
    assert {name: killed[name] for name in finished} == {name: new[name] for name in finished}
    assert old["features"] != new["features"] and new["features"][0] == assert_ingest_consistent(home)["rows"]


def test_killed_training_moves_no_alias_and_a_rerun_registers_a_model(tmp_path, scored_home):
    home, env = scored_home()
    predictions_before = prediction_file(home).read_bytes()
    assert champion(home) == ("1", 1)

    run = Run.start(materialize_argv("engagement_model", training=TINY_TRAINING), env, tmp_path / "train.log")
    run.wait_for(r"fitting baselines")  # inside the MLflow run, after the LSTM trained, before registering
    run.kill()

    assert champion(home) == ("1", 1)
    assert prediction_file(home).read_bytes() == predictions_before
    assert_ingest_consistent(home)
    assert read_warehouse(home, "select count(*) > 0 from labels") == [(True,)]

    run_to_end(materialize_argv("engagement_model", training=TINY_TRAINING), env, tmp_path / "rerun.log")
    version, versions = champion(home)
    assert versions == 2 and version in ("1", "2")


def test_killed_scoring_keeps_the_previous_file_and_a_rerun_replaces_it(tmp_path, scored_home):
    home, env = scored_home()
    target = prediction_file(home)
    before = target.read_bytes()
    old = pq.read_table(target)

    run = Run.start(materialize_argv("user_predictions", partition=SCORE_DAY), env, tmp_path / "score.log")
    run.wait_for(rf"Scoring {SCORE_DAY} with")  # the champion is loaded; reading, predicting, writing follow
    run.kill()

    assert target.read_bytes() == before
    assert champion(home) == ("1", 1)
    assert_ingest_consistent(home)

    # Temporaries of writers killed mid-write, of this day and another, and one of a writer still writing.
    other_day = home / "predictions" / "date=2017-01-12"
    other_day.mkdir()
    killed = [start_leftover_writer(folder, tmp_path) for folder in (target.parent, other_day)]
    for writer, _ in killed:
        writer.kill()
    live, live_temporary = start_leftover_writer(target.parent, tmp_path)
    try:
        # no reader takes a temporary for a day's file (pyarrow's dataset discovery here)
        assert pq.read_table(home / "predictions").num_rows == old.num_rows

        run_to_end(materialize_argv("user_predictions", partition=SCORE_DAY), env, tmp_path / "rerun.log")
        assert temporaries(home) == [live_temporary]  # the killed writers' are gone, the live writer's is not
    finally:
        live.kill()
    new = pq.read_table(target)
    assert new.schema == old.schema and new.num_rows == old.num_rows
    assert new.column("scored_at")[0].as_py() > old.column("scored_at")[0].as_py()
    # Only the one file is visible to readers of the partition folder.
    assert [p.name for p in target.parent.iterdir() if not p.name.startswith(".")] == ["predictions.parquet"]


# A writer's part of atomic_files.replacing, on its own: a locked temporary, half written, then it hangs.
LEFTOVER_WRITER = """
import fcntl, os, sys, time
handle = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
fcntl.flock(handle, fcntl.LOCK_EX)
os.write(handle, b"PAR1 half of a parquet file")
print("writing", flush=True)
time.sleep(600)
"""


def start_leftover_writer(folder: Path, logs: Path, name: str = "predictions.parquet") -> tuple[Run, Path]:
    temporary = folder / f".{name}.{uuid.uuid4().hex}.tmp"
    run = Run.start([sys.executable, "-c", LEFTOVER_WRITER, str(temporary)], {}, logs / f"{temporary.name}.log")
    run.wait_for("writing", timeout_s=30)
    return run, temporary


def temporaries(home: Path) -> list[Path]:
    return sorted(home.glob("predictions/*/.*.tmp"))


def test_the_snapshot_writer_removes_a_killed_writers_temporary_too(tmp_path):
    import duckdb

    from engagement_pipeline.ops import atomic_files
    from engagement_pipeline.serving.history_snapshot import SNAPSHOT_FILE, write_snapshot

    folder = tmp_path / "serving"
    folder.mkdir()
    writer, dead = start_leftover_writer(folder, tmp_path, name=SNAPSHOT_FILE)
    writer.kill()
    earlier = atomic_files.STARTED_AT - 60  # as if killed before this process started, as a real leftover is
    os.utime(dead, (earlier, earlier))
    # unlocked but younger than this process: perhaps a writer that created it and is about to lock it
    unlocked_new = folder / f".{SNAPSHOT_FILE}.{uuid.uuid4().hex}.tmp"
    unlocked_new.write_bytes(b"")
    with duckdb.connect() as con:
        con.execute(
            "create table classifications as select 1::bigint as classification_id, 'u1' as user_key,"
            " now() as created_at, 'export.csv' as source_file, 2 as source_line, now() as ingested_at"
        )
        assert write_snapshot(con, folder)["rows"] == 1
    assert not dead.exists() and unlocked_new.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted([SNAPSHOT_FILE, unlocked_new.name])
