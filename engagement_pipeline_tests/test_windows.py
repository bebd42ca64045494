"""model/windows.py: the feature matrix read from DuckDB and the windows gathered from it."""

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engagement_pipeline.model.windows import (
    FeatureMatrix,
    feature_names,
    gather_windows,
    load_feature_matrix,
    user_starts,
)


def matrix_from_lengths(lengths: list[int], n_features: int = 3, seed: int = 0) -> FeatureMatrix:
    """Users with the given numbers of classifications, contiguous, with random features and some NaN."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    users = np.repeat([f"user{i}" for i in range(len(lengths))], lengths).astype(object)
    X = rng.normal(size=(n, n_features)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    return FeatureMatrix(
        classification_id=np.arange(n, dtype=np.int64),
        user_key=users,
        created_at=np.arange(n, dtype=np.int64),
        X=X,
        feature_names=[f"f{j}" for j in range(n_features)],
        user_start=user_starts(users),
    )


def naive_window(matrix: FeatureMatrix, row: int, window: int) -> np.ndarray:
    """The reference: walk back through the same user's rows one at a time."""
    out = np.full((window, matrix.X.shape[1]), np.nan, dtype=np.float32)
    position, source = window - 1, row
    while position >= 0 and source >= 0 and matrix.user_key[source] == matrix.user_key[row]:
        out[position] = matrix.X[source]
        position, source = position - 1, source - 1
    return out


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    window=st.integers(1, 15),
    seed=st.integers(0, 1000),
)
def test_gather_windows_equals_the_naive_reference(lengths, window, seed):
    matrix = matrix_from_lengths(lengths, seed=seed)
    rows = np.random.default_rng(seed).permutation(len(matrix))
    got = gather_windows(matrix, rows, window)
    expected = np.stack([naive_window(matrix, r, window) for r in rows])
    assert got.shape == (len(rows), window, matrix.X.shape[1])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)  # NaN compare equal in assert_array_equal


def test_windows_pad_on_the_left_and_stop_at_the_user_boundary():
    matrix = matrix_from_lengths([2, 4])
    matrix.X[:] = np.arange(len(matrix), dtype=np.float32)[:, None]  # row i holds i, no NaN
    windows = gather_windows(matrix, np.array([1, 2, 5]), window=3)
    # the first user's second row: one padding row, then rows 0 and 1
    assert np.isnan(windows[0, 0]).all()
    np.testing.assert_array_equal(windows[0, 1:, 0], [0, 1])
    # the second user's first row (row 2) must not see the first user's rows 0 and 1
    assert np.isnan(windows[1, :2]).all()
    np.testing.assert_array_equal(windows[1, 2, 0], 2)
    # the last row of a long enough history: no padding, current row last
    np.testing.assert_array_equal(windows[2, :, 0], [3, 4, 5])


def test_gather_windows_does_not_modify_the_matrix():
    matrix = matrix_from_lengths([1, 3])
    before = matrix.X.copy()
    gather_windows(matrix, np.arange(len(matrix)), window=5)
    np.testing.assert_array_equal(matrix.X, before)


def test_user_starts_and_position_in_user():
    matrix = matrix_from_lengths([3, 1, 2])
    np.testing.assert_array_equal(matrix.user_start, [0, 0, 0, 3, 4, 4])
    np.testing.assert_array_equal(matrix.position_in_user, [0, 1, 2, 0, 0, 1])


@pytest.fixture
def features_db(tmp_path):
    """A tiny `features` table, rows inserted out of order, with NULLs, booleans and integers."""
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        """
        create table features as select * from (values
            (30, 'b', timestamptz '2024-01-01 10:00:00+00', 1.5, true, 7),
            (11, 'a', timestamptz '2024-01-01 09:00:00+00', null, false, 1),
            (10, 'a', timestamptz '2024-01-01 09:00:00+00', 2.0, null, 2),
            (12, 'a', timestamptz '2024-01-01 08:00:00+00', -1.0, true, null)
        ) t(classification_id, user_key, created_at, gap, is_mobile, n_so_far)
        """
    )
    yield con
    con.close()


def test_load_feature_matrix_orders_by_user_time_and_id(features_db):
    matrix = load_feature_matrix(features_db)
    # user a: 08:00 first, then the two 09:00 rows by classification_id; then user b
    np.testing.assert_array_equal(matrix.classification_id, [12, 10, 11, 30])
    assert list(matrix.user_key) == ["a", "a", "a", "b"]
    np.testing.assert_array_equal(matrix.user_start, [0, 0, 0, 3])
    expected_us = np.array(
        ["2024-01-01T08:00", "2024-01-01T09:00", "2024-01-01T09:00", "2024-01-01T10:00"], dtype="datetime64[us]"
    ).astype(np.int64)
    np.testing.assert_array_equal(matrix.created_at, expected_us)
    assert matrix.feature_names == ["gap", "is_mobile", "n_so_far"]
    assert matrix.X.dtype == np.float32
    np.testing.assert_array_equal(
        matrix.X, np.array([[-1, 1, np.nan], [2, np.nan, 2], [np.nan, 0, 1], [1.5, 1, 7]], dtype=np.float32)
    )


def test_load_feature_matrix_restricts_with_parameters(features_db):
    matrix = load_feature_matrix(features_db, "user_key = ? and created_at >= ?", ["a", "2024-01-01 09:00:00+00"])
    np.testing.assert_array_equal(matrix.classification_id, [10, 11])
    np.testing.assert_array_equal(matrix.user_start, [0, 0])


def test_feature_names_require_the_key_columns_first(tmp_path):
    con = duckdb.connect()
    con.execute("create table features as select 1 as user_key, 2 as classification_id, now() as created_at, 3 as x")
    with pytest.raises(ValueError, match="must start with"):
        feature_names(con)
    con.execute("drop table features")
    with pytest.raises(LookupError, match="materialize"):
        feature_names(con)


@pytest.fixture
def many_users_db():
    """5,000 rows of 400 users with 1-40 classifications each, in random insertion order, some NULL features."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        """
        create table features as
        select i as classification_id, 'u' || lpad((hash(i // 7) % 400)::varchar, 3, '0') as user_key,
               timestamptz '2024-01-01 00:00:00+00' + to_seconds(i * 37 % 5000) as created_at,
               case when i % 11 = 0 then null else (i % 97) / 3.0 end as gap, i % 2 = 0 as flag
        from range(5000) t(i) order by hash(i)
        """
    )
    yield con
    con.close()


def test_chunked_load_equals_one_read_and_keeps_users_across_chunks(many_users_db):
    whole = load_feature_matrix(many_users_db, chunk_rows=1 << 20)
    # the reader really hands back small batches, so users span chunk boundaries
    sql = "select * from features"
    assert max(b.num_rows for b in many_users_db.sql(sql).to_arrow_reader(7)) <= 7
    for chunk_rows in (1, 7, 64, 2048):
        chunked = load_feature_matrix(many_users_db, chunk_rows=chunk_rows)
        for name in ("classification_id", "created_at", "X", "user_start"):
            np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name), err_msg=name)
        assert (chunked.user_key == whole.user_key).all()
    np.testing.assert_array_equal(whole.user_start, user_starts(whole.user_key))
    # the whole table is read in two passes (keys sorted, values put in place); a restricted read in one
    # sorted stream: both give the same matrix
    streamed = load_feature_matrix(many_users_db, "true", chunk_rows=100)
    for name in ("classification_id", "created_at", "X", "user_start"):
        np.testing.assert_array_equal(getattr(streamed, name), getattr(whole, name), err_msg=name)
    assert (streamed.user_key == whole.user_key).all()
    assert np.isnan(whole.X[:, 0]).sum() == 5000 // 11 + 1


def test_the_matrix_order_does_not_depend_on_the_salt_of_the_user_keys(many_users_db):
    """Two homes hash the same volunteers with different random salts: the rows must come in the same order, or
    every seeded draw over rows (epochs, baseline samples, bootstraps) would differ between them."""
    many_users_db.execute("create table features_plain as select * from features")
    orders = []
    for salt in ("first home's salt", "second home's salt"):
        many_users_db.execute(
            "create or replace table features as select classification_id, md5(? || user_key) as user_key, "
            "created_at, gap, flag from features_plain",
            [salt],
        )
        for where in ("", "true"):  # the training read (two passes) and a restricted read (one sorted stream)
            matrix = load_feature_matrix(many_users_db, where)
            orders.append((matrix.classification_id, matrix.user_start))
    for classification_id, user_start in orders[1:]:
        np.testing.assert_array_equal(classification_id, orders[0][0])
        np.testing.assert_array_equal(user_start, orders[0][1])


def test_training_load_keeps_no_user_keys_but_the_same_starts(many_users_db):
    with_keys = load_feature_matrix(many_users_db)
    without = load_feature_matrix(many_users_db, with_user_key=False, chunk_rows=100)
    assert without.user_key is None
    np.testing.assert_array_equal(without.user_start, with_keys.user_start)
    np.testing.assert_array_equal(without.X, with_keys.X)


def test_user_starts_carry_a_user_over_a_chunk_boundary():
    keys = np.array(["a", "a", "b", "b", "b", "c"], dtype=object)
    first, second = user_starts(keys[:3]), user_starts(keys[3:], 3, keys[2], int(user_starts(keys[:3])[-1]))
    np.testing.assert_array_equal(np.concatenate([first, second]), [0, 0, 2, 2, 2, 5])
    # a chunk that starts with a new user starts it at its own offset
    np.testing.assert_array_equal(user_starts(keys[5:], 5, keys[4], 2), [5])
