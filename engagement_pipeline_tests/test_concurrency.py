"""Two runs at once queue on the warehouse lock and both complete; readers only ever see whole states.

Real processes: two `dagster asset materialize` commands started together
(an ingest and the SQL models), a reader in this process taking the same lock
as a notebook would (`Warehouse().connect()`), and a reader polling a
predictions file while another process keeps replacing it with the scoring
asset's own atomic write.
"""

import subprocess
import sys
import textwrap
import threading

import pyarrow as pa
import pyarrow.parquet as pq

from engagement_pipeline import ingest
from engagement_pipeline.resources import Warehouse
from engagement_pipeline.sample import write_export
from engagement_pipeline.transform.sql_models import discover_models
from engagement_pipeline_tests.conftest import copy_real_exports
from engagement_pipeline_tests.crash_helpers import (
    Run,
    assert_ingest_consistent,
    lock_is_held,
    materialize_argv,
    pipeline_env,
    read_warehouse,
    wait_until,
)

MODELS = ",".join(model.name for model in discover_models())


def test_a_run_that_finds_the_warehouse_busy_waits_for_it_then_completes(tmp_path):
    """Deterministic: this test holds the warehouse (as a long run or a notebook would) until
    the second process says it is waiting, then lets go; the run completes instead of dying."""
    home, exports = tmp_path / "home", tmp_path / "exports"
    exports.mkdir()
    copy_real_exports(exports)
    env = pipeline_env(home, exports)
    warehouse = Warehouse(database=str(home / "warehouse.duckdb"), threads=1)
    with warehouse.connect():
        run = Run.start(materialize_argv("classifications"), env, tmp_path / "ingest.log")
        run.wait_for("Waiting for another process to release", timeout_s=180)
        assert run.process.poll() is None  # still alive, queued
    log = run.finish()
    assert "RUN_SUCCESS" in log
    assert read_warehouse(home, "select count(*) from classifications") == [(2153,)]


def test_an_ingest_and_the_models_started_together_both_complete_one_after_the_other(tmp_path):
    home, exports = tmp_path / "home", tmp_path / "exports"
    exports.mkdir()
    copy_real_exports(exports)
    env = pipeline_env(home, exports)
    warehouse = Warehouse(database=str(home / "warehouse.duckdb"), threads=1, lock_timeout_s=300)
    with warehouse.connect() as con:
        ingest.ingest_exports(
            con, ingest.find_exports(exports), ingest.load_salt(home / "user_name_salt"), home / "tmp"
        )
        (before,) = con.execute("select count(*) from classifications").fetchone()
    write_export(exports / "new.csv", 100_000, seed=4)

    # A notebook reading all along: it queues on the same lock and must only see whole files.
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def notebook() -> None:
        while not stop.is_set():
            with warehouse.connect() as con:
                seen.append(con.execute(
                    "select (select count(*) from classifications), (select sum(rows_inserted) from ingested_files)"
                ).fetchone())  # fmt: skip
            stop.wait(0.05)

    reader = threading.Thread(target=notebook)
    reader.start()
    try:
        ingest_run = Run.start(materialize_argv("classifications"), env, tmp_path / "ingest.log")
        wait_until(lambda: lock_is_held(home / "warehouse.duckdb.lock") and "STEP_START" in ingest_run.log(),
                   what="the ingest holding the warehouse")  # fmt: skip
        models_run = Run.start(materialize_argv(MODELS), env, tmp_path / "models.log")
        ingest_run.finish()
        models_log = models_run.finish()
    finally:
        stop.set()
        reader.join()

    total = assert_ingest_consistent(home)["rows"]
    assert "RUN_SUCCESS" in models_log
    # The models ran after the ingest committed: they saw every new row.
    assert read_warehouse(home, "select count(*) from features") == [(total,)]
    assert seen and all(stored == recorded for stored, recorded in seen), seen
    assert {stored for stored, _ in seen} <= {before, total} and seen[-1][0] == total  # before, or after: never between


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import pyarrow as pa

    from engagement_pipeline.scoring.assets import write_atomically

    target = Path(sys.argv[1])
    for i in range(40):
        n = 10 if i % 2 else 50_000
        write_atomically(pa.table({"user_key": [f"u{j}" for j in range(n)], "p_continue_10m": [0.5] * n}), target)
    """
)


def test_a_reader_polling_a_predictions_file_during_rewrites_only_sees_whole_files(tmp_path):
    target = tmp_path / "predictions" / "date=2017-01-13" / "predictions.parquet"
    target.parent.mkdir(parents=True)
    pq.write_table(pa.table({"user_key": ["u0"] * 10, "p_continue_10m": [0.5] * 10}), target)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
    reads = []
    try:
        while writer.poll() is None:
            # One open per read, as pq.ParquetFile and DuckDB's read_parquet do. (pq.read_table(path)
            # takes the size from a stat and then opens the path again, so it can pair the old size
            # with the new file and fail: a reader-side race no atomic write can prevent.)
            table = pq.ParquetFile(target).read()  # must never raise on a half-written file
            assert table.column_names == ["user_key", "p_continue_10m"]
            reads.append(table.num_rows)
    finally:
        writer.wait()
    assert writer.returncode == 0
    assert reads and set(reads) <= {10, 50_000}
    assert len(set(reads)) == 2, "the reader should have seen both versions while they were replaced"
    assert sorted(p.name for p in target.parent.iterdir()) == ["predictions.parquet"]  # no temporary left
