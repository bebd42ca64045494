"""The labels are the science: sessions and `continues` exactly as CONTRACT.md states them.

Three independent witnesses: a hand-worked example, a plain pandas
implementation of the rule on generated data (both gap modes), and a
hypothesis search against a brute-force walk over each user's history.
"""

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engagement_pipeline.transform.sql_models import (
    SessionRules,
    build_models,
    label_base_rates,
    labels_unique,
    models_for,
)
from engagement_pipeline_tests.sql_fixtures import (
    connect,
    generate_classifications,
    load_classifications,
    minimal_classifications,
)

LABEL_MODELS = models_for(["labels"])


def sql_labels(con, frame: pd.DataFrame, horizons: list[int], gap: int | None) -> set[tuple[int, int, bool]]:
    load_classifications(con, frame)
    build_models(con, LABEL_MODELS, SessionRules(horizons=horizons, session_gap_minutes=gap))
    rows = con.execute("select classification_id, horizon_minutes, continues from labels").fetchall()
    assert len(rows) == len(set(rows)), "duplicate label rows"
    return set(rows)


@pytest.fixture
def con(tmp_path):
    with connect(tmp_path / "labels.duckdb") as connection:
        yield connection


# ---------------------------------------------------------------------------
# A hand-worked example (times are minutes after 12:00 UTC).
#   user a: 0, 0 (a tie: ids 1 and 2), 5, 15 (a gap of exactly 10), 20, 25
#   user b: 40, alone, 20 minutes before data_end
#   user c: 50, 58: ends 2 minutes before data_end
#   user d: 60, alone, the last classification: data_end = 12:60
HAND = [
    (1, "a", 0), (2, "a", 0), (3, "a", 5), (4, "a", 15), (5, "a", 20), (6, "a", 25),
    (10, "b", 40),
    (20, "c", 50), (21, "c", 58),
    (30, "d", 60),
]  # fmt: skip


def hand_frame() -> pd.DataFrame:
    base = pd.Timestamp("2024-05-01 12:00:00", tz="UTC")
    return minimal_classifications([(cid, user, base + pd.Timedelta(minutes=m)) for cid, user, m in HAND])


def test_hand_worked_labels_gap_equals_horizon(con):
    # W = 10: a's gap of exactly 10 breaks the session: {1,2,3} ends at 5, {4,5,6} ends at 25.
    #   1, 2, 3: e - t < 10, data_end - e = 55 -> false
    #   4: e - t = 10 exactly -> true; 5, 6: e - t < 10, data_end - e = 35 -> false
    #   10: alone, data_end - e = 20 -> false
    #   20, 21: data_end - e = 2 -> censored; 30: censored
    # W = 20: a is one session ending at 25.
    #   1, 2: 25 -> true; 3: exactly 20 -> true; 4, 5, 6: < 20, data_end - e = 35 -> false
    #   10: data_end - e = 20 exactly -> false (known); 20, 21, 30: censored
    expected = {
        (1, 10, False), (2, 10, False), (3, 10, False), (4, 10, True), (5, 10, False), (6, 10, False),
        (10, 10, False),
        (1, 20, True), (2, 20, True), (3, 20, True), (4, 20, False), (5, 20, False), (6, 20, False),
        (10, 20, False),
    }  # fmt: skip
    assert sql_labels(con, hand_frame(), [10, 20], None) == expected


def test_hand_worked_labels_fixed_gap(con):
    # A fixed 30-minute gap: a is one session ending at 25 for both horizons.
    #   W = 10: 1, 2 (25), 3 (20), 4 (exactly 10) -> true; 5, 6 -> false
    #   W = 20: as before. c: data_end - e = 2 -> censored under both.
    expected = {
        (1, 10, True), (2, 10, True), (3, 10, True), (4, 10, True), (5, 10, False), (6, 10, False),
        (10, 10, False),
        (1, 20, True), (2, 20, True), (3, 20, True), (4, 20, False), (5, 20, False), (6, 20, False),
        (10, 20, False),
    }  # fmt: skip
    assert sql_labels(con, hand_frame(), [10, 20], 30) == expected


def test_hand_worked_sessions(con):
    sql_labels(con, hand_frame(), [10], None)
    sessions = con.execute(
        """
        select user_key, session_number, first_user_seq, last_user_seq, n_classifications, duration_minutes
        from sessions order by user_key, session_number
        """
    ).fetchall()
    assert sessions == [
        ("a", 1, 1, 3, 3, 5.0),
        ("a", 2, 4, 6, 3, 10.0),
        ("b", 1, 1, 1, 1, 0.0),
        ("c", 1, 1, 2, 2, 8.0),
        ("d", 1, 1, 1, 1, 0.0),
    ]


# ---------------------------------------------------------------------------
# The rule as a notebook would write it, on generated data.


def pandas_labels(frame: pd.DataFrame, horizons: list[int], gap: int | None) -> set[tuple[int, int, bool]]:
    """CONTRACT.md's rule, spelled out in pandas for clarity rather than speed."""
    frame = frame.sort_values(["user_key", "created_at", "classification_id"], ignore_index=True)
    data_end = frame["created_at"].max()
    since_previous = frame.groupby("user_key")["created_at"].diff()
    labels = set()
    for horizon in horizons:
        window = pd.Timedelta(minutes=horizon)
        session_gap = pd.Timedelta(minutes=gap if gap is not None else horizon)
        new_session = since_previous.isna() | (since_previous >= session_gap)
        session_id = new_session.cumsum()
        session_end = frame.groupby(session_id)["created_at"].transform("max")
        time_left = session_end - frame["created_at"]
        continues = time_left >= window
        known = continues | (data_end - session_end >= window)
        labels |= set(
            zip(
                frame.loc[known, "classification_id"].tolist(),
                [horizon] * int(known.sum()),
                continues[known].tolist(),
            )
        )
    return labels


@pytest.mark.parametrize("gap", [None, 15, 45])
def test_labels_match_pandas_reference(con, gap):
    frame = generate_classifications(3000, 40, seed=7)
    horizons = [10, 20, 30]
    got = sql_labels(con, frame, horizons, gap)
    expected = pandas_labels(frame, horizons, gap)
    assert got == expected
    # the comparison means something: both outcomes and censoring all occur
    assert {c for _, _, c in got} == {True, False}
    assert len(got) < len(frame) * len(horizons)


def test_label_checks_pass_on_generated_data(con):
    sql_labels(con, generate_classifications(2000, 30, seed=3), [10, 20, 30], None)
    assert label_base_rates(con).passed
    assert labels_unique(con).passed


def test_label_checks_fail_on_broken_tables(con):
    sql_labels(con, generate_classifications(2000, 30, seed=3), [10, 20, 30], None)
    con.execute("insert into labels select * from labels limit 1")
    assert not labels_unique(con).passed

    con.execute("update labels set continues = true where horizon_minutes = 20")
    result = label_base_rates(con)
    assert not result.passed
    assert result.metadata["degenerate_horizons"].data == ["20m"]

    con.execute("delete from labels where horizon_minutes = 30")
    assert "30m" in label_base_rates(con).metadata["degenerate_horizons"].data


def test_session_rules_are_validated():
    for bad in (SessionRules(horizons=[]), SessionRules(horizons=[10, 10]), SessionRules(horizons=[0])):
        with pytest.raises(ValueError):
            bad.sql_variables()
    with pytest.raises(ValueError):
        SessionRules(session_gap_minutes=0).sql_variables()
    assert SessionRules().sql_variables() == {"horizons": [10, 20, 30], "session_gap_minutes": None}


# ---------------------------------------------------------------------------
# Property: any small history, against a brute-force walk.


def brute_force_labels(events: list[tuple[int, int, int]], horizons, gap) -> set[tuple[int, int, bool]]:
    """events: (classification_id, user, minute). Walk each user's sorted history by hand."""
    data_end = max(minute for _, _, minute in events)
    labels = set()
    for user in {u for _, u, _ in events}:
        history = sorted((minute, cid) for cid, u, minute in events if u == user)
        for horizon in horizons:
            session_gap = gap if gap is not None else horizon
            for i, (t, cid) in enumerate(history):
                j = i
                while j + 1 < len(history) and history[j + 1][0] - history[j][0] < session_gap:
                    j += 1
                end = history[j][0]
                if end - t >= horizon:
                    labels.add((cid, horizon, True))
                elif data_end - end >= horizon:
                    labels.add((cid, horizon, False))
    return labels


events_strategy = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 90)), min_size=1, max_size=25).map(
    lambda pairs: [(cid, user, minute) for cid, (user, minute) in enumerate(pairs, start=100)]
)


@settings(max_examples=50, deadline=None)
@given(
    events=events_strategy,
    horizons=st.lists(st.integers(1, 40), min_size=1, max_size=3, unique=True),
    gap=st.one_of(st.none(), st.integers(1, 40)),
)
def test_labels_match_brute_force(events, horizons, gap):
    base = pd.Timestamp("2024-05-01", tz="UTC")
    frame = minimal_classifications(
        [(cid, f"user-{user}", base + pd.Timedelta(minutes=minute)) for cid, user, minute in events]
    )
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        assert sql_labels(con, frame, horizons, gap) == brute_force_labels(events, horizons, gap)


def test_generated_data_has_ties_and_exact_horizon_gaps():
    """The generator exercises the edge cases the rule is most likely to get wrong."""
    frame = generate_classifications(3000, 40, seed=7).sort_values(["user_key", "created_at"])
    gaps = frame.groupby("user_key")["created_at"].diff().dt.total_seconds().dropna().to_numpy()
    assert (gaps == 0).any()
    assert np.isin([600, 1200, 1800], gaps).all()


def test_a_model_built_before_its_upstream_says_what_to_select():
    import duckdb

    from engagement_pipeline.transform.sql_models import MissingUpstreamError, build_model, discover_models

    labels = next(model for model in discover_models() if model.name == "labels")
    with duckdb.connect() as con:
        with pytest.raises(MissingUpstreamError, match=r"--select '\*labels'"):
            build_model(con, labels)
        assert con.execute("select count(*) from duckdb_tables() where table_name = 'labels'").fetchone() == (0,)
