"""The online road to `features` (online_features.OnlineFeatures) against the batch road, on real exports.

Two warehouses from the bundled Zooniverse fixtures: (A) the Michigan sample
without its latest quarter, snapshotted; (AB) everything, the cat project's
export included, with the SQL models built. The held-out rows, sent as raw
export rows (strings, NA fields, user_ip, shuffled, mixed with rows already
in A's history), must get exactly AB's features and user keys: no second
definition of any feature exists to drift. Both roads through the models are
held to that: the plan a connection keeps (a small request's rows as its
parameter) and the statement planned for a large request over the tables.
"""

import json
import random
from concurrent.futures import ThreadPoolExecutor

import duckdb
import numpy as np
import pytest

from engagement_pipeline.ingest.load import ingest_exports, load_salt
from engagement_pipeline.model.windows import load_feature_matrix
from engagement_pipeline.serving.history_snapshot import snapshot_path, write_snapshot
from engagement_pipeline.serving.online_features import BadRequest, OnlineFeatures
from engagement_pipeline.transform.sql_models import build_models, models_for
from engagement_pipeline_tests.conftest import CAT_EXPORT, MICHIGAN_EXPORT, csv_text, read_rows


def _warehouse(path, files, salt, scratch):
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    ingest_exports(con, files, salt, scratch)
    return con


@pytest.fixture
def online_and_batch(tmp_path):
    salt = load_salt(tmp_path / "salt")
    header, rows = read_rows(MICHIGAN_EXPORT)
    created = header.index("created_at")
    cutoff = sorted(r[created] for r in rows)[int(len(rows) * 0.75)]
    history = [r for r in rows if r[created] < cutoff]
    held = [r for r in rows if r[created] >= cutoff]
    (tmp_path / "a.csv").write_text(csv_text(header, history))
    (tmp_path / "b.csv").write_text(csv_text(header, held))
    with _warehouse(tmp_path / "a.duckdb", [tmp_path / "a.csv"], salt, tmp_path / "scratch") as con:
        write_snapshot(con, tmp_path / "serving")
    files = [tmp_path / "a.csv", tmp_path / "b.csv", CAT_EXPORT]
    with _warehouse(tmp_path / "ab.duckdb", files, salt, tmp_path / "scratch") as con:
        build_models(con, models_for(["features"]))
        reference = load_feature_matrix(con)
    cat_header, cat_rows = read_rows(CAT_EXPORT)
    records = [dict(zip(header, r)) for r in held + history[-30:]] + [dict(zip(cat_header, r)) for r in cat_rows]
    random.Random(0).shuffle(records)
    online = OnlineFeatures(snapshot_path(tmp_path / "serving"), salt)
    return online, records, reference


def _assert_batch_features(batch, records, reference) -> None:
    ids = batch.matrix.classification_id[batch.rows]
    assert ids.tolist() == [int(r["classification_id"]) for r in records]
    where = {c: i for i, c in enumerate(reference.classification_id.tolist())}
    expected = np.array([where[c] for c in ids])
    assert batch.matrix.feature_names == reference.feature_names
    assert (batch.matrix.user_key[batch.rows] == reference.user_key[expected]).all()
    got, want = batch.matrix.X[batch.rows], reference.X[expected]
    assert (np.isnan(got) == np.isnan(want)).all()
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(want), rtol=0, atol=1e-6)


def by_volunteer(records: list[dict]) -> dict[str, list[dict]]:
    """The records grouped by volunteer (user_id, else user_name), in order of first appearance."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(record.get("user_id") or record.get("user_name"), []).append(record)
    return groups


@pytest.mark.parametrize("kept_plan", [False, True], ids=["planned-over-the-tables", "kept-plan"])
def test_online_features_equal_the_batch_features_for_new_and_stored_rows(online_and_batch, kept_plan):
    online, records, reference = online_and_batch
    online.kept_plan_max_rows = 10**9 if kept_plan else 0  # this request of ~700 rows on either road
    batch = online.build(json.dumps({"dataframe_records": records}))
    assert batch.kept_plan is kept_plan
    _assert_batch_features(batch, records, reference)
    assert any(k.startswith("h:") for k in batch.matrix.user_key[batch.rows])  # hashed like the ingest hashes


def test_the_kept_plan_takes_a_request_up_to_its_limit_of_rows_and_the_planned_road_the_rest(online_and_batch):
    online, records, reference = online_and_batch
    rows = next(iter(by_volunteer(records).values()))  # records[0]'s volunteer
    body = json.dumps({"dataframe_records": rows})
    first = online.build(body)
    key = first.matrix.user_key[first.rows[0]]
    with duckdb.connect() as con:
        sql = "select count(*) from read_parquet(?) where user_key = ?"
        ((stored,),) = con.execute(sql, [str(online.snapshot), key]).fetchall()
    # the rows the models read: the volunteer's stored ones and the request's (a re-sent stored row counted twice)
    for limit, kept in ((stored + len(rows), True), (stored + len(rows) - 1, False)):
        online.kept_plan_max_rows = limit
        batch = online.build(body)
        assert batch.kept_plan is kept, limit
        _assert_batch_features(batch, rows, reference)


def test_one_volunteers_request_runs_the_models_on_the_connections_kept_plan(online_and_batch, tmp_path):
    online, records, reference = online_and_batch
    roads = []
    for rows in by_volunteer(records).values():  # as a caller scores one volunteer at a time: the default road
        batch = online.build(json.dumps({"dataframe_records": rows}))
        _assert_batch_features(batch, rows, reference)
        roads.append(batch.kept_plan)
    assert len(roads) > 10 and all(roads)

    # The kept plan is run, not planned again: DuckDB's profile of the EXECUTE shows no optimizer pass,
    # where the same models planned over the tables go through them all (so the check can fail).
    history = online._current()
    con = history._connect()
    profile = tmp_path / "profile.json"
    con.execute("PRAGMA enable_profiling = 'json'")
    con.execute(f"PRAGMA profiling_output = '{profile}'")
    history._pool.put(con)  # the next request's connection: the pool is last in, first out
    optimizers = []
    for limit in (online.kept_plan_max_rows, 0):  # the default road, then the tables' road
        online.kept_plan_max_rows = limit
        online.build(json.dumps({"dataframe_records": rows}))
        profiled = json.loads(profile.read_text())
        assert profiled["query"]["sql"].startswith("execute online_matrix")
        optimizers.append(set(profiled.get("optimizer", {})))
    kept, planned = optimizers
    assert {"join_order", "filter_pushdown"} <= planned
    assert not {"join_order", "filter_pushdown"} & kept


def test_the_snapshot_holds_no_raw_identity(online_and_batch, tmp_path):
    header, rows = read_rows(MICHIGAN_EXPORT)
    secrets = {r[header.index(c)] for r in rows for c in ("user_name", "user_ip")} - {"", "NA"}
    path = snapshot_path(tmp_path / "serving")
    with duckdb.connect() as con:
        columns = [name for (name, *_) in con.execute("describe select * from read_parquet(?)", [str(path)]).fetchall()]
        decoded = " ".join(
            str(v) for row in con.execute("select * from read_parquet(?)", [str(path)]).fetchall() for v in row
        )
    assert "user_name" not in columns and "user_ip" not in columns
    raw = path.read_bytes().decode("latin-1")
    assert not [s for s in secrets if s in decoded or s in raw]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left beside it


def test_a_request_changes_nothing_stored_and_bad_records_are_named(online_and_batch, tmp_path):
    online, records, _ = online_and_batch
    before = snapshot_path(tmp_path / "serving").read_bytes()
    online.build(json.dumps({"dataframe_records": records[:50]}))
    assert snapshot_path(tmp_path / "serving").read_bytes() == before

    broken = [dict(records[0], classification_id="x1"), dict(records[1], created_at="NA"), records[2]]
    with pytest.raises(BadRequest, match="2 of 3 record.*record 0: missing or non-numeric classification_id"):
        online.build(json.dumps({"dataframe_records": broken}))
    with pytest.raises(BadRequest, match="dataframe_records"):
        online.build(json.dumps({"inputs": records[:2]}))
    with pytest.raises(BadRequest, match="empty"):
        online.build(json.dumps({"dataframe_records": []}))
    with pytest.raises(BadRequest, match="not JSON"):
        online.build(b"{not json")


def test_concurrent_requests_never_see_each_others_rows_and_a_replaced_snapshot_is_used_next(
    online_and_batch, tmp_path
):
    online, records, reference = online_and_batch
    bodies = [json.dumps({"dataframe_records": records[i::4]}) for i in range(4)]
    alone = [online.build(body) for body in bodies]

    def features(batch):
        return batch.matrix.classification_id[batch.rows], np.nan_to_num(batch.matrix.X[batch.rows], nan=-1.0)

    with ThreadPoolExecutor(max_workers=4) as pool:  # DuckDB releases the GIL: these really overlap
        together = list(pool.map(online.build, bodies * 3))
    for i, batch in enumerate(together):
        ids, X = features(batch)
        want_ids, want_X = features(alone[i % 4])
        assert (ids == want_ids).all() and (X == want_X).all()

    # A new snapshot (the whole of AB, renamed into place as the asset writes it) is used from the next request:
    # a held-out row of a volunteer becomes part of the history a request about that volunteer reads.
    stored = {i for (i,) in duckdb.sql(f"select classification_id from '{online.snapshot}'").fetchall()}
    volunteer = lambda r: r.get("user_id") or r.get("user_name")
    held = next(r for r in records if int(r["classification_id"]) not in stored)
    other = next(r for r in records if volunteer(r) == volunteer(held) and r is not held)
    request = json.dumps({"dataframe_records": [other]})
    assert int(held["classification_id"]) not in online.build(request).matrix.classification_id
    with duckdb.connect(str(tmp_path / "ab.duckdb")) as con:
        write_snapshot(con, tmp_path / "serving")
    assert int(held["classification_id"]) in online.build(request).matrix.classification_id
