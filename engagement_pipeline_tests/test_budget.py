"""budget.py and the training budget: examples per epoch, progress lines, the estimate, the device choice.

Pure and fast: no warehouse, no MLflow; the one torch calibration runs a few tiny batches.
"""

import numpy as np
import pytest

from engagement_pipeline.model.budget import (
    DEFAULT_MAX_TRAIN_EXAMPLES,
    Progress,
    budget_text,
    budget_words,
    calibrate_examples_per_second,
    duration,
    estimate_training,
    export_rows_estimate,
    scaling_rows,
    training_budget,
    up_front_estimate,
)
from engagement_pipeline.model.training import TrainingConfig, epoch_rows, pick_device


def test_a_small_export_uses_every_row_and_a_big_one_the_cap():
    config = TrainingConfig()
    assert config.max_train_examples == DEFAULT_MAX_TRAIN_EXAMPLES == 2_000_000
    small = training_budget(700_000, config)
    assert small["examples_per_epoch"] == 700_000 and small["every_row_each_epoch"]
    big = training_budget(27_000_000, config)
    assert big["examples_per_epoch"] == 2_000_000 and not big["every_row_each_epoch"]
    assert big["max_windows"] == 2_000_000 * config.epochs
    assert training_budget(27_000_000, TrainingConfig(max_train_examples=None))["examples_per_epoch"] == 27_000_000


def test_each_epoch_draws_a_fresh_sample_deterministically_from_the_seed():
    train = np.arange(10, 1010)
    draws = [epoch_rows(np.random.default_rng(3), train, 300) for _ in range(2)]
    np.testing.assert_array_equal(draws[0], draws[1])  # same seed, same rows in the same order
    rng = np.random.default_rng(3)
    first, second = epoch_rows(rng, train, 300), epoch_rows(rng, train, 300)
    for rows in (first, second):
        assert len(rows) == 300 and len(np.unique(rows)) == 300 and np.isin(rows, train).all()
    assert len(np.intersect1d(first, second)) < 150  # a new sample, not the same one again (expected overlap 90)
    # a cap at or above the training rows: every row once, reshuffled
    whole = epoch_rows(rng, train, 5_000)
    np.testing.assert_array_equal(np.sort(whole), train)
    assert not np.array_equal(whole, train)


def test_scaling_uses_every_row_up_to_its_cap_then_a_seeded_sample():
    train = np.arange(0, 3_000, 3)
    np.testing.assert_array_equal(scaling_rows(train, 0, cap=1_000), train)
    sample = scaling_rows(train, 0, cap=100)
    assert len(sample) == 100 and len(np.unique(sample)) == 100 and np.isin(sample, train).all()
    assert (np.diff(sample) > 0).all()
    np.testing.assert_array_equal(sample, scaling_rows(train, 0, cap=100))
    assert not np.array_equal(sample, scaling_rows(train, 1, cap=100))


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_speaks_every_30_seconds_with_what_remains():
    lines, clock = [], Clock()
    progress = Progress(lines.append, "epoch 1/3", 1_000, after=2_000, clock=clock)
    clock.now = 10.0
    progress.update(100)
    assert lines == []  # not yet 30 s
    clock.now = 30.0
    progress.update(250)  # 250 in 30 s: 750 left = 90 s; the 2 later epochs 2,000 = 240 s
    assert lines == ["epoch 1/3: 250/1,000 (25%), 30 s, about 2 min left, then up to 4 min for the later epochs"]
    clock.now = 45.0
    progress.update(400)
    assert len(lines) == 1  # 15 s since the last line
    clock.now = 61.0
    progress.update(1_000)  # done: the epoch's own line follows, no progress line
    assert len(lines) == 1
    progress.update(900)
    assert lines[-1].startswith("epoch 1/3: 900/1,000 (90%), 61 s, about 7 s left")


def test_the_early_estimate_comes_once_with_the_measured_rate():
    rates, clock = [], Clock()
    progress = Progress(lambda line: None, "epoch 1/6", 10_000, clock=clock).estimate_after(500, rates.append)
    clock.now = 2.0
    progress.update(256)
    assert rates == []
    progress.update(512)
    progress.update(768)
    assert rates == [256.0]


def test_durations_read_as_a_person_says_them():
    assert [duration(s) for s in (0, 44.6, 89, 95, 3_000, 5_400, 7_260)] == [
        "0 s", "45 s", "89 s", "2 min", "50 min", "1 h 30 min", "2 h 01 min",
    ]  # fmt: skip


def test_the_estimate_grows_with_rows_until_the_cap_then_stays():
    config = TrainingConfig()
    small, medium = estimate_training(100_000, config, 10_000.0), estimate_training(200_000, config, 10_000.0)
    assert medium["seconds"] == pytest.approx(2 * small["seconds"], rel=0.05)
    big, huge = estimate_training(10_000_000, config, 10_000.0), estimate_training(40_000_000, config, 10_000.0)
    assert big["examples_per_epoch"] == huge["examples_per_epoch"] == 2_000_000
    # past the cap only the test period's predictions still grow with the rows
    assert huge["seconds"] < 1.5 * big["seconds"]
    assert estimate_training(10_000_000, config, 20_000.0)["seconds"] == pytest.approx(big["seconds"] / 2)
    words = budget_words(big, 10_000.0)
    assert "2,000,000 examples an epoch (a new sample of the 7,000,000 each epoch)" in words
    assert "about 3 min an epoch, up to 20 min for 6 epochs" in words and "max_train_examples" in words


def test_the_budget_in_words_says_what_was_used():
    config = TrainingConfig(max_train_examples=1_000, max_val_examples=500)
    assert budget_text(5_000, 800, config, 3) == (
        "1,000 of 5,000 training examples an epoch (a new seeded sample each); 3 epochs after the linear start; "
        "validation on 500 of 800; test on every example"
    )
    assert budget_text(900, 400, config, 1).startswith("900 of 900 training examples an epoch (every one, reshuffled)")


def test_calibration_measures_a_positive_rate_on_this_machine():
    rate = calibrate_examples_per_second(TrainingConfig(batch_size=32, window=4, hidden_size=8), 5, 3, batches=2)
    assert 10 < rate < 1e8


def test_device_selection_without_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == "cpu"
    assert pick_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="no CUDA device"):
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda"
    assert pick_device("cuda:1") == "cuda:1"


@pytest.mark.parametrize("name", ["export.csv", "export.csv.gz"])
def test_the_export_size_gives_its_rows_roughly(tmp_path, name):
    import gzip

    rng = np.random.default_rng(0)
    lines = ["classification_id,user_name,annotations"] + [
        f'{i},volunteer{i % 97},"{"x" * int(rng.integers(20, 400))}"' for i in range(40_000)
    ]
    path = tmp_path / name
    text = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    assert export_rows_estimate(path) == pytest.approx(40_000, rel=0.05)
    assert up_front_estimate([path], TrainingConfig()) == ""  # small: no estimate, no calibration
    (tmp_path / "empty.csv").write_bytes(b"classification_id\n")
    assert export_rows_estimate(tmp_path / "empty.csv") == 0


def test_run_accepts_training_settings_and_names_a_wrong_one():
    from engagement_pipeline.cli import training_overrides

    def error(message):
        raise SystemExit(message)

    assert training_overrides(["max_train_examples=500000", "epochs=3"], error) == {
        "max_train_examples": 500_000, "epochs": 3,
    }  # fmt: skip
    assert training_overrides(["max_train_examples=null"], error) == {"max_train_examples": None}
    with pytest.raises(SystemExit, match="--train epoch=3: expected KEY=VALUE with KEY one of window, epochs"):
        training_overrides(["epoch=3"], error)
    with pytest.raises(SystemExit, match="--train: epochs: Input should be a valid integer"):
        training_overrides(["epochs=many"], error)
