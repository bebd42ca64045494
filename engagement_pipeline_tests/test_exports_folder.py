"""One home, one exports folder: after a run on one folder, another folder is refused whole, with the fix."""

import shutil

import dagster as dg
import duckdb

from engagement_pipeline.ingest.assets import ingest_assets
from engagement_pipeline.resources import Exports, Warehouse
from engagement_pipeline_tests.conftest import CAT_EXPORT, MICHIGAN_EXPORT
from engagement_pipeline_tests.project import project_resources


def ingest(warehouse, folder) -> dg.ExecuteInProcessResult:
    resources = project_resources(warehouse=warehouse, exports=Exports(folder=str(folder)))
    return dg.materialize(ingest_assets, resources=resources, raise_on_error=False)


def stored(warehouse) -> list[tuple]:
    with duckdb.connect(str(warehouse.path), read_only=True) as con:
        return con.execute("select count(*), count(distinct source_file) from classifications").fetchall()


def test_a_second_exports_folder_is_refused_and_nothing_of_it_is_stored(tmp_path, warehouse, engagement_home):
    first, second = tmp_path / "project-a", tmp_path / "project-b"
    first.mkdir(), second.mkdir()
    shutil.copy(CAT_EXPORT, first / CAT_EXPORT.name)
    shutil.copy(MICHIGAN_EXPORT, second / MICHIGAN_EXPORT.name)
    assert ingest(warehouse, first).success
    before = stored(warehouse)

    result = ingest(warehouse, second)
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    message = failure.step_failure_data.error.cause.message
    for needed in (str(second), str(first), MICHIGAN_EXPORT.name, "ENGAGEMENT_HOME=", str(engagement_home)):
        assert needed in message, f"{needed!r} missing from: {message}"
    assert stored(warehouse) == before  # nothing mixed in

    # the same folder again is fine, and another home takes the second folder
    assert ingest(warehouse, first).success
    other = Warehouse(database=str(tmp_path / "other-home" / "warehouse.duckdb"), threads=2)
    assert ingest(other, second).success


def test_a_home_whose_first_folder_stored_nothing_follows_the_next_folder(tmp_path, warehouse):
    first, second = tmp_path / "nothing-here", tmp_path / "project-b"
    first.mkdir(), second.mkdir()
    (first / "not-an-export.csv").write_text("a,b\n1,2\n")
    shutil.copy(MICHIGAN_EXPORT, second / MICHIGAN_EXPORT.name)
    assert not ingest(warehouse, first).success  # refused as not an export: nothing stored
    assert ingest(warehouse, second).success
    assert stored(warehouse)[0][0] > 0
