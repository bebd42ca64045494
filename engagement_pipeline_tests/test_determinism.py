"""The same data, config and seed give the same model and every logged number, on a quiet or a saturated machine.

Two real trainings (`run_training`: the LSTM, the four baselines with their
searches, the bootstrap intervals, the gate, MLflow) of the same synthetic
warehouse with the same config, the second while two processes spin on the
cores. Every metric of both runs (per-epoch curves included) must be equal,
bit for bit, and so must the test predictions and the baselines' choices.
"""

import subprocess
import sys

import numpy as np
import pytest

from engagement_pipeline.model.assets import run_training
from engagement_pipeline.model.training import TrainingConfig
from engagement_pipeline.resources import CHAMPION_ALIAS, REGISTERED_MODEL_NAME
from engagement_pipeline_tests.project import project_resources
from engagement_pipeline_tests.training_fixtures import make_warehouse, read_dataset

HOG = "import time\nend = time.time() + 600\nwhile time.time() < end:\n    pass\n"


def all_metrics(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    run = client.get_run(run_id)
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}


@pytest.mark.slow
def test_two_trainings_one_beside_a_cpu_hog_log_the_same_numbers(tmp_path, mlflow_store):
    database = make_warehouse(tmp_path / "warehouse.duckdb", n_rows=2_000, seed=3)
    dataset = read_dataset(database)
    config = TrainingConfig(
        epochs=1, hidden_size=8, window=8, max_train_examples=1_500, max_val_examples=2_000, seed=5,
        forest_max_train_rows=1_000, baseline_max_candidates=2, bootstrap_resamples=40,
    )  # fmt: skip

    tracking = project_resources()["tracking"]
    client = tracking.client()
    quiet = run_training(dataset, config, tracking)
    # the same state for the gate before both runs: no champion yet
    client.delete_registered_model_alias(REGISTERED_MODEL_NAME, CHAMPION_ALIAS)
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(2)]
    try:
        busy = run_training(dataset, config, tracking)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    first, second = all_metrics(client, quiet.run_id), all_metrics(client, busy.run_id)
    assert len(first) > 100  # test metrics of five models x three horizons with intervals, curves, the gate
    different = sorted(key for key in first.keys() | second.keys() if first.get(key) != second.get(key))
    decisions = f"quiet: {quiet.promotion.reason}; busy: {busy.promotion.reason}"
    assert not different, f"{len(different)} of {len(first)} metrics differ: {different[:10]} ({decisions})"
    assert np.array_equal(quiet.test_predictions, busy.test_predictions)
    assert quiet.chosen_parameters == busy.chosen_parameters
    assert client.get_run(quiet.run_id).data.params["paths"] == client.get_run(busy.run_id).data.params["paths"]
