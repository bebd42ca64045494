"""Monitoring: PSI and its reference, the volunteer-level AUC interval, and the two asset checks for real (slow).

The pure tests of the statistics are fast; the ones on the world carry @pytest.mark.slow.

The checks run in Dagster on a real small world (monitoring_fixtures.py): a
champion trained on a generated export, then days after its training period
scored with `user_predictions` and its checks. `feature_drift` must stay
quiet on ordinary days of the same generator and speak up on a day whose
tasks take 5x longer; `realized_quality` must pass on an ordinary day and
warn when the day's outcomes turn against the model.
"""

import datetime as dt
import json

import dagster as dg
import mlflow
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from engagement_pipeline.model.evaluation import auc_with_interval, weighted_roc_auc
from engagement_pipeline.model.registry import find_champion
from engagement_pipeline.monitoring.checks import (
    RealizedQuality,
    day_drift_for_champion,
    monitoring_checks,
    realized_words,
)
from engagement_pipeline.monitoring.drift import (
    NOT_JUDGED,
    PSI_THRESHOLD,
    NoDriftReferenceError,
    bin_counts,
    drift_reference,
    effective_size,
    load_drift_reference,
    log_drift_reference,
    psi,
)
from engagement_pipeline.scoring.assets import user_predictions
from engagement_pipeline_tests.monitoring_fixtures import (
    ORDINARY_DAYS,
    SHIFTED_DAY,
    shift_task_durations,
)
from engagement_pipeline_tests.project import project_resources

# --------------------------------------------------------------------------- the statistics


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(20_000, 1))
    reference = drift_reference(train, ["x"])
    entry = reference["inputs"]["x"]
    edges = np.array(entry["edges"])
    same = bin_counts(rng.normal(size=2_000), edges)
    shifted = bin_counts(rng.normal(loc=1.0, size=2_000), edges)
    assert psi(entry["shares"], same, 20_000, 2_000) < 0.02
    assert psi(entry["shares"], shifted, 20_000, 2_000) > 0.5


def test_reference_bins_a_binary_input_once_and_missing_values_apart_and_is_json():
    rng = np.random.default_rng(1)
    X = np.stack([rng.random(1_000) < 0.3, rng.normal(size=1_000)], axis=1).astype(np.float64)
    X[:100, 1] = np.nan
    reference = drift_reference(X, ["flag", "value"], train_period_us=(0, 10))
    flag, value = reference["inputs"]["flag"], reference["inputs"]["value"]
    assert flag["edges"] == [0.0] or flag["edges"] == [0.0, 1.0]  # one boundary between the two values
    assert value["shares"][-1] == pytest.approx(0.1)  # the NaN bin
    assert sum(value["shares"]) == pytest.approx(1.0)
    assert len(value["edges"]) == 9
    assert json.loads(json.dumps(reference)) == reference
    assert reference["train_period_us"] == [0, 10]


def test_effective_size_counts_rows_for_independent_rows_and_groups_for_identical_ones():
    sizes = np.array([10, 10, 10])
    assert effective_size(sizes, 0.0) == pytest.approx(30)
    assert effective_size(sizes, 1.0) == pytest.approx(3)
    # one volunteer with most of the rows weighs like far fewer rows than it has
    assert effective_size(np.array([100, 1, 1, 1]), 0.5) < effective_size(np.array([26, 26, 26, 25]), 0.5)


def test_weighted_auc_equals_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(2)
    y = rng.random(300) < 0.4
    p = np.round(rng.random(300) * 0.5 + 0.3 * y, 1)  # rounded: many ties
    weights = rng.integers(0, 4, size=300).astype(np.float64)
    ours = weighted_roc_auc(y.astype(float), p, weights[None, :])[0]
    assert ours == pytest.approx(roc_auc_score(y, p, sample_weight=weights))
    estimate, low, high = auc_with_interval(y.astype(float), p, np.arange(300) // 10)
    assert estimate == pytest.approx(roc_auc_score(y, p))
    assert low < estimate < high


@pytest.mark.slow
def test_a_version_without_a_reference_is_named_with_what_to_do(engagement_home, mlflow_store):
    tracking = project_resources()["tracking"]
    client = tracking.client()
    with mlflow.start_run() as run:
        mlflow.log_param("note", "trained before drift references")
    client.create_registered_model("old-model")
    old = client.create_model_version("old-model", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    with pytest.raises(NoDriftReferenceError, match="Materialize `engagement_model`"):
        load_drift_reference(client, "old-model", old.version)

    reference = drift_reference(np.random.default_rng(3).normal(size=(50, 2)), ["a", "b"])
    with mlflow.start_run() as run:
        log_drift_reference(reference)
    new = client.create_model_version("old-model", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    assert load_drift_reference(client, "old-model", new.version) == reference


# --------------------------------------------------------------------------- the checks, for real


@pytest.fixture
def home(world_home):
    return world_home


def score(day: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [user_predictions, *monitoring_checks],
        partition_key=day,
        resources=project_resources(),
    )


def check(result: dg.ExecuteInProcessResult, name: str):
    (evaluation,) = [c for c in result.get_asset_check_evaluations() if c.check_name == name]
    return evaluation


@pytest.mark.slow
def test_training_stores_the_reference_with_the_champion(home):
    tracking = project_resources()["tracking"]
    champion = find_champion(tracking)
    reference = load_drift_reference(tracking.client(), champion.name, champion.version)
    assert list(reference["inputs"]) == champion.feature_names
    start, end = reference["train_period_us"]
    assert dt.datetime.fromtimestamp(end / 1e6, dt.UTC) < dt.datetime.fromisoformat(ORDINARY_DAYS[0] + "T00:00Z")
    assert 0 < start < end
    assert all(0 <= entry["icc"] <= 1 for entry in reference["inputs"].values())


@pytest.mark.slow
def test_feature_drift_stays_quiet_on_ordinary_days_after_training(home, capsys):
    tracking = project_resources()["tracking"]
    printed = []
    for day in ORDINARY_DAYS:
        with project_resources()["warehouse"].connect() as con:
            result, model, why = day_drift_for_champion(con, tracking, dt.date.fromisoformat(day))
        assert result is not None, why
        assert result.enough_rows and result.n_volunteer_days >= 30
        judged = [d for d in result.inputs if d.judged]
        printed.append(f"{day}: {result.n_volunteer_days} volunteers, max judged PSI {judged[0].name} "
                       f"{judged[0].psi:.2f} (limit {judged[0].limit:.2f}); offending {[d.name for d in result.offending]}")  # fmt: skip
        assert result.offending == [], printed[-1]
        # the inputs set aside really do move every day: the reason they are not judged
        assert max(d.psi for d in result.inputs if d.name in NOT_JUDGED) > PSI_THRESHOLD
    with capsys.disabled():
        print("\nfeature_drift on ordinary days:\n  " + "\n  ".join(printed))

    run = score(ORDINARY_DAYS[0])
    drift = check(run, "feature_drift")
    assert drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
    assert drift.metadata["drifted_inputs"].value == []
    assert 0 < drift.metadata["max_psi"].value


@pytest.mark.slow
def test_feature_drift_fires_on_a_day_of_5x_longer_tasks_and_the_scoring_still_succeeds(home, capsys):
    tracking = project_resources()["tracking"]
    with project_resources()["warehouse"].connect() as con:
        before, _, _ = day_drift_for_champion(con, tracking, dt.date.fromisoformat(SHIFTED_DAY))
    assert before.offending == []  # the same day, unshifted: quiet

    shift_task_durations(SHIFTED_DAY, factor=5)
    run = score(SHIFTED_DAY)
    assert run.success  # WARN: the predictions are written all the same
    assert run.asset_materializations_for_node("user_predictions")
    drift = check(run, "feature_drift")
    with capsys.disabled():
        print(f"\nfeature_drift on {SHIFTED_DAY}, unshifted: max judged PSI {before.max_psi:.2f}, quiet")
        print(f"feature_drift on {SHIFTED_DAY} with 5x task durations: {drift.description}")
    assert not drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
    offending = drift.metadata["drifted_inputs"].value
    assert offending[0] == "log_task_seconds"
    assert "log_task_seconds" in drift.description
    with project_resources()["warehouse"].connect() as con:
        after, _, _ = day_drift_for_champion(con, tracking, dt.date.fromisoformat(SHIFTED_DAY))
    assert [d.name for d in after.offending] == offending
    psis = [d.psi for d in after.offending]
    assert psis == sorted(psis, reverse=True)
    assert after.offending[0].psi > after.offending[0].limit >= PSI_THRESHOLD


@pytest.mark.slow
def test_realized_quality_passes_then_warns_when_outcomes_turn_against_the_model(home, capsys):
    day = ORDINARY_DAYS[2]
    ordinary = check(score(day), "realized_quality")
    assert ordinary.passed and ordinary.severity == dg.AssetCheckSeverity.WARN
    assert ordinary.metadata["labelled_day"].value == day  # outcomes of that day are long known
    auc = ordinary.metadata["realized_roc_auc_10m"].value
    assert 0.55 < auc < 1.0

    # the world changes: whoever the model expected to stay, left, and the other way round
    start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    with project_resources()["warehouse"].connect() as con:
        con.execute(
            "update labels set continues = not continues where classification_id in "
            "(select classification_id from features where created_at >= ? and created_at < ?)",
            [start, start + dt.timedelta(days=1)],
        )
    turned = check(score(day), "realized_quality")
    with capsys.disabled():
        print(f"\nrealized_quality on {day}: {ordinary.description}")
        print(f"realized_quality on {day}, outcomes reversed: {turned.description}")
    assert not turned.passed and turned.severity == dg.AssetCheckSeverity.WARN
    assert "below the test interval" in turned.description
    assert turned.metadata["realized_roc_auc_10m"].value == pytest.approx(1 - auc, abs=1e-6)


@pytest.mark.slow
def test_feature_drift_without_a_reference_warns_saying_what_to_do(home):
    """A champion trained before references were stored: a version of the same model, from a run without one."""
    tracking = project_resources()["tracking"]
    client = tracking.client()
    champion = find_champion(tracking)
    current = client.get_model_version(champion.name, str(champion.version))
    with mlflow.start_run() as run:
        mlflow.log_param("note", "trained before drift references were stored")
    old = client.create_model_version(champion.name, current.source, run_id=run.info.run_id, tags=current.tags)
    client.set_registered_model_alias(champion.name, "champion", old.version)

    drift = check(score(ORDINARY_DAYS[0]), "feature_drift")
    assert not drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
    assert f"v{old.version}" in drift.description and "has no drift_reference.json" in drift.description
    assert "Materialize `engagement_model`" in drift.description


def test_realized_quality_reads_as_rounded_figures_in_the_log():
    result = RealizedQuality(
        dt.date(2025, 9, 13),
        "engagement-lstm v1",
        [10, 20],
        realized={10: (0.5759751007484168, 0.4665353644868698, 0.7911126731065614)},
        known_outcomes={10: 1204},
    )
    assert realized_words(result) == (
        "ROC-AUC 10m 0.576 [0.467, 0.791] (1,204 known outcomes), 20m none (0 known outcomes)"
    )
