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
