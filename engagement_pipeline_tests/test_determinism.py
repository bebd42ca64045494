"""The same data, config and seed give the same model and every logged number, on a quiet or a saturated machine.

Two real trainings (`run_training`: the LSTM, the four baselines with their
searches, the bootstrap intervals, the gate, MLflow) of the same synthetic
warehouse with the same config, the second while two processes spin on the
cores. Every metric of both runs (per-epoch curves included) must be equal,
bit for bit, and so must the test predictions and the baselines' choices.
"""

import subprocess
import sys

import duckdb
import numpy as np
import pytest

from engagement_pipeline.model.assets import run_training
from engagement_pipeline.model.training import TrainingConfig, load_dataset
from engagement_pipeline_tests.project import project_resources
from engagement_pipeline_tests.shared_homes import new_mlflow_store
from engagement_pipeline_tests.training_fixtures import make_warehouse

HOG = "import time\nend = time.time() + 600\nwhile time.time() < end:\n    pass\n"


def all_metrics(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    run = client.get_run(run_id)
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}


@pytest.mark.slow
def test_two_trainings_one_beside_a_cpu_hog_log_the_same_numbers(tmp_path, mlflow_store_template, monkeypatch):
    database = make_warehouse(tmp_path / "warehouse.duckdb", n_rows=2_000, seed=3)
    with duckdb.connect(str(database), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        dataset = load_dataset(con)
    config = TrainingConfig(
        epochs=1, hidden_size=8, window=8, max_train_examples=1_500, max_val_examples=2_000, seed=5,
        forest_max_train_rows=1_000, baseline_max_candidates=2, bootstrap_resamples=40,
    )  # fmt: skip

    def train(home):  # each in a store of its own: the same state before both, the gate included
        new_mlflow_store(mlflow_store_template, home)
        monkeypatch.setenv("ENGAGEMENT_HOME", str(home))
        tracking = project_resources()["tracking"]
        return run_training(dataset, config, tracking), tracking.client()

    quiet, quiet_client = train(tmp_path / "quiet")
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(2)]
    try:
        busy, busy_client = train(tmp_path / "busy")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    first, second = all_metrics(quiet_client, quiet.run_id), all_metrics(busy_client, busy.run_id)
    assert len(first) > 100  # test metrics of five models x three horizons with intervals, curves, the gate
    different = sorted(key for key in first.keys() | second.keys() if first.get(key) != second.get(key))
    assert not different, f"{len(different)} of {len(first)} metrics differ: {different[:10]}"
    assert np.array_equal(quiet.test_predictions, busy.test_predictions)
    assert quiet.chosen_parameters == busy.chosen_parameters
    paths = [c.get_run(r.run_id).data.params["paths"] for c, r in ((quiet_client, quiet), (busy_client, busy))]
    assert paths[0] == paths[1]
