"""The promotion gate, driven through the real `promote()` on a real MLflow sqlite store, branch by branch.

The champion is a real network (its linear path fitted on the synthetic
data's train rows) logged and registered in MLflow; `promote()` loads it
through pyfunc and scores it on the same test rows as the newcomer. No
version here is crowned by hand: every alias is moved by the gate.
"""

import socket

import mlflow
import numpy as np
import pytest

from engagement_pipeline.model.registry import (
    DECISION_TAG,
    PROMOTED_TAG,
    NoChampionError,
    champion_predictions,
    compatibility_tags,
    find_champion,
    promote,
)
from engagement_pipeline.model.training import time_split
from engagement_pipeline.resources import CHAMPION_ALIAS, REGISTERED_MODEL_NAME
from engagement_pipeline_tests.project import project_resources
from engagement_pipeline_tests.training_fixtures import make_warehouse, read_dataset

pytestmark = pytest.mark.slow  # an MLflow store and models loaded through pyfunc: seconds, not milliseconds


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(dataset, split, a network with its linear path fitted on the train rows), once for the module."""
    import torch

    from engagement_pipeline.model.lstm import EngagementLSTM, fit_scaling, fit_wide

    database = make_warehouse(tmp_path_factory.mktemp("promotion") / "warehouse.duckdb", n_rows=3_000, seed=1)
    dataset = read_dataset(database)
    split = time_split(dataset.matrix.created_at, dataset.labels, dataset.horizons, 0.7, 0.15)
    X = dataset.matrix.X
    model = EngagementLSTM(X.shape[1], len(dataset.horizons), fit_scaling(X[split.train]), hidden_size=8)
    fit_wide(model, torch.from_numpy(X[split.train]), torch.from_numpy(split.labels[split.train]))
    return dataset, split, model.eval()


@pytest.fixture
def world(fitted, mlflow_store):
    """(tracking, client, dataset, split, the fitted network) on a fresh store with nothing registered."""
    tracking = project_resources()["tracking"]
    return tracking, tracking.client(), *fitted


def register(world, model=None, tags=None) -> str:
    tracking, client, dataset, _, fitted = world
    with mlflow.start_run() as run:
        info = mlflow.pytorch.log_model(
            model or fitted, name="model", serialization_format="pickle", pip_requirements=["torch"]
        )  # requirements given: inferring them would load the model again
    if tags is None:
        tags = compatibility_tags(dataset.horizons, 8, dataset.matrix.feature_names, run.info.run_id)
    return str(mlflow.register_model(info.model_uri, REGISTERED_MODEL_NAME, tags=tags).version)


def gate(world, version: str, p_new: np.ndarray, client=None):
    _, own_client, dataset, split, _ = world
    rows = split.test
    return promote(
        client or own_client, REGISTERED_MODEL_NAME, version, dataset.matrix, rows, split.labels[rows], p_new,
        dataset.horizons, n_resamples=100,
    )  # fmt: skip


def champion_p(world) -> np.ndarray:
    _, client, dataset, split, _ = world
    _, p, _, _ = champion_predictions(client, REGISTERED_MODEL_NAME, dataset.matrix, split.test, dataset.horizons)
    return p


def alias_version(client) -> str:
    return str(client.get_model_version_by_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS).version)


def crown_first(world) -> str:
    version = register(world)
    decision = gate(world, version, first_predictions(world))
    assert decision.promoted, decision.reason
    return version


def first_predictions(world) -> np.ndarray:
    _, _, dataset, split, model = world
    import torch

    from engagement_pipeline.model.windows import gather_windows

    with torch.no_grad():
        return model(torch.from_numpy(gather_windows(dataset.matrix, split.test, 8))).numpy()


def test_the_first_model_above_chance_becomes_champion_with_its_decision_recorded(world):
    _, client, _, _, _ = world
    version = register(world)
    decision = gate(world, version, first_predictions(world))
    assert decision.promoted and decision.champion_version is None and decision.new_ci_low > 0.5
    assert "no champion yet: promoted" in decision.reason
    assert alias_version(client) == version
    tags = client.get_model_version(REGISTERED_MODEL_NAME, version).tags
    assert tags[PROMOTED_TAG] == "true" and tags[DECISION_TAG] == decision.reason
    assert find_champion(world[0]).version == int(version)


def test_a_better_model_replaces_the_champion_compared_on_the_same_rows(world):
    _, client, _, split, _ = world
    first = crown_first(world)
    p_champion = champion_p(world)
    y = split.labels[split.test]
    better = np.where(np.isnan(y), p_champion, 0.5 * p_champion + 0.5 * np.nan_to_num(y))
    version = register(world)
    decision = gate(world, version, better)
    assert decision.promoted and decision.champion_version == first
    assert decision.new_score > decision.champion_score
    assert f"vs champion v{first}" in decision.reason and decision.reason.endswith(": promoted")
    assert alias_version(client) == version


def test_a_model_above_chance_but_worse_than_the_champion_is_kept_out_by_the_comparison(world):
    _, client, _, _, _ = world
    first = crown_first(world)
    p_champion = champion_p(world)
    rng = np.random.default_rng(0)
    worse = np.clip(p_champion + rng.normal(0, 0.15, p_champion.shape), 0, 1)  # blurred: still ranks, less well
    version = register(world)
    decision = gate(world, version, worse)
    assert decision.above_chance  # so it is the comparison, not the chance rule, that says no
    assert not decision.promoted and decision.new_score < decision.champion_score
    assert f"not promoted, champion v{first} stays" in decision.reason
    assert alias_version(client) == first
    assert client.get_model_version(REGISTERED_MODEL_NAME, version).tags[PROMOTED_TAG] == "false"


def test_a_model_not_above_chance_is_not_promoted_even_without_a_champion(world):
    _, client, _, split, _ = world
    version = register(world)
    decision = gate(world, version, np.full(split.labels[split.test].shape, 0.5))
    assert not decision.promoted and not decision.above_chance
    assert "not distinguishable from chance" in decision.reason
    assert CHAMPION_ALIAS not in client.get_registered_model(REGISTERED_MODEL_NAME).aliases
    with pytest.raises(NoChampionError, match="none passed the promotion gate"):
        find_champion(world[0])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize("store", ["stopped server", "unreadable sqlite file"])
def test_an_unreachable_store_promotes_nothing_and_says_why(world, tmp_path, monkeypatch, store, mlflow_store_template):
    from mlflow import MlflowClient

    first = crown_first(world)
    version = register(world)
    if store == "stopped server":
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        stopped = f"http://127.0.0.1:{closed_port()}"
        broken = MlflowClient(tracking_uri=stopped, registry_uri=stopped)
    else:  # a copy of the store, opened, then overwritten: every read of it fails
        import shutil

        copy = tmp_path / "copy.db"
        shutil.copy(mlflow_store_template, copy)
        broken = MlflowClient(tracking_uri=f"sqlite:///{copy}", registry_uri=f"sqlite:///{copy}")
        copy.write_bytes(b"this is not an sqlite database" * 1000)
    decision = gate(world, version, first_predictions(world), client=broken)
    assert not decision.promoted and decision.failed_closed
    assert "could not be looked up or evaluated" in decision.reason and "alias did not move" in decision.reason
    assert alias_version(world[1]) == first  # the real store: untouched


def test_a_champion_without_compatibility_tags_or_scoring_nan_is_not_replaced(world):
    import torch

    _, client, dataset, _, model = world
    untagged = register(world, tags={})
    client.set_model_version_tag(REGISTERED_MODEL_NAME, untagged, PROMOTED_TAG, "true")
    client.set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, untagged)  # a champion of older code
    version = register(world)
    decision = gate(world, version, first_predictions(world))
    assert not decision.promoted and decision.failed_closed
    assert "lacks its compatibility tags" in decision.reason and "delete the `champion` alias" in decision.reason
    assert alias_version(client) == untagged

    client.delete_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)  # as the decision says: then
    assert gate(world, version, first_predictions(world)).promoted  # judged as the first model

    broken = type(model)(model.mean.shape[0], len(dataset.horizons), *scaling_of(model), hidden_size=8)
    with torch.no_grad():
        broken.linear.bias.fill_(float("nan"))  # a champion that predicts NaN
    nan_version = register(world, model=broken.eval())
    decision = gate(world, nan_version, first_predictions(world))
    assert decision.promoted  # a model above chance, the champion predicting numbers: the comparison holds
    newest = register(world)
    decision = gate(world, newest, first_predictions(world))
    assert not decision.promoted and decision.failed_closed and "NaN" in decision.reason
    assert alias_version(client) == nan_version


def scaling_of(model):
    from engagement_pipeline.model.lstm import Scaling

    return (Scaling(model.log_transform.numpy(), model.mean.numpy(), model.std.numpy()),)


def test_a_kill_between_decision_and_alias_leaves_the_old_champion_and_an_unrecorded_alias_scores_nothing(
    world, monkeypatch
):
    _, client, _, split, _ = world
    first = crown_first(world)
    y = split.labels[split.test]
    p_champion = champion_p(world)
    better = np.where(np.isnan(y), p_champion, 0.5 * p_champion + 0.5 * np.nan_to_num(y))
    version = register(world)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the alias moved")

    monkeypatch.setattr(client, "set_registered_model_alias", killed)
    with pytest.raises(KeyboardInterrupt):
        gate(world, version, better)
    monkeypatch.undo()
    assert client.get_model_version(REGISTERED_MODEL_NAME, version).tags[PROMOTED_TAG] == "true"  # decided
    assert find_champion(world[0]).version == int(first)  # the old champion, with its own decision, still scores

    # an alias moved by hand to a version whose decision is not recorded: nothing scores with it
    undecided = register(world)
    client.set_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS, undecided)
    with pytest.raises(NoChampionError, match="promotion decision is not recorded"):
        find_champion(world[0])


def test_the_report_names_the_version_that_scored_the_day_not_todays_champion(world, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engagement_pipeline.monitoring.report import version_that_scored

    tracking, client, _, split, _ = world
    first = crown_first(world)
    y = split.labels[split.test]
    p_champion = champion_p(world)
    second = register(world)
    assert gate(world, second, np.where(np.isnan(y), p_champion, 0.5 * p_champion + 0.5 * np.nan_to_num(y))).promoted
    day_file = tmp_path / "predictions.parquet"  # scored the night before the new champion: by the first
    pq.write_table(pa.table({"model_name": [REGISTERED_MODEL_NAME] * 2, "model_version": [int(first)] * 2}), day_file)
    version, note = version_that_scored(day_file, tracking)
    assert version.version == int(first) and note == ""
    assert alias_version(client) == second
