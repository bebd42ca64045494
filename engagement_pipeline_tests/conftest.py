"""Shared fixtures: every test gets its own ENGAGEMENT_HOME, DAGSTER_HOME and MLflow store."""

import csv
import io
import os
import shutil
from pathlib import Path

# One OpenMP thread for the suite and the pipeline processes it starts (they inherit the environment),
# set before anything loads an OpenMP runtime. The gbdt baseline (sklearn's HistGradientBoosting) runs
# many tiny OpenMP regions on the tests' few-thousand-row data; on 2 cores shared with any other process
# its two threads spin-wait on each other: one fit took 2.3-6.8 s instead of 0.3 s, and the whole-pipeline
# training tests over twice as long. Thread counts change no result the tests assert. CI may override it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from engagement_pipeline.resources import Warehouse
from engagement_pipeline.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "zooniverse"
CAT_EXPORT = FIXTURES / "cat-project-classifications.csv"
MICHIGAN_EXPORT = FIXTURES / "michigan-sample.csv"
# `engagement_model` run config that trains a real (tiny, poor) model in seconds.
QUICK_TRAINING = {
    "epochs": 1,
    "patience": 1,
    "max_train_examples": 2_000,
    "max_val_examples": 2_000,
    "max_wide_examples": 5_000,
    "forest_max_train_rows": 2_000,
    "hidden_size": 8,
    # the search and the intervals run for real, on a smaller budget: the tests judge the plumbing
    "baseline_search_seconds": 1.0,
    "bootstrap_resamples": 50,
}


@pytest.fixture(autouse=True)
def engagement_home(tmp_path, monkeypatch) -> Path:
    """A fresh ENGAGEMENT_HOME (and everything derived from it) for each test."""
    home = tmp_path / "engagement_home"
    monkeypatch.setenv("ENGAGEMENT_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    (home / "dagster").mkdir(parents=True)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ENGAGEMENT_EXPORTS_DIR", raising=False)
    return home


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store, migrated once per session (shared_homes.make_mlflow_store_template)."""
    from engagement_pipeline_tests.shared_homes import make_mlflow_store_template

    return make_mlflow_store_template(tmp_path_factory.mktemp("mlflow_template") / "mlflow.db")


@pytest.fixture
def mlflow_store(mlflow_store_template, engagement_home) -> Path:
    """This test's home starts with an empty, migrated MLflow store (for tests that train or log to MLflow)."""
    from engagement_pipeline_tests.shared_homes import new_mlflow_store

    return new_mlflow_store(mlflow_store_template, engagement_home)


@pytest.fixture(scope="session")
def scored_home(tmp_path_factory, mlflow_store_template):
    """A home with a champion and one scored day, built once per session (a few minutes), saved.

    `scored_home()` restores it (same path: MLflow records absolute artifact locations) and returns
    (home, env of the pipeline processes); `.home`, `.saved` and `.env` for tests that restore it elsewhere.
    """
    from engagement_pipeline_tests.crash_helpers import ScoredHome, build_scored_home, snapshot

    root = tmp_path_factory.mktemp("scored")
    home, saved = root / "home", root / "saved"
    env = build_scored_home(home, root / "exports", root / "logs", mlflow_store_template)
    snapshot(home, saved)
    return ScoredHome(home, saved, env)


@pytest.fixture
def settings(engagement_home) -> Settings:
    return Settings.from_environment()


@pytest.fixture
def warehouse(engagement_home) -> Warehouse:
    return Warehouse(database=str(engagement_home / "warehouse.duckdb"), memory_limit="1GB", threads=2)


@pytest.fixture
def exports_dir(tmp_path, monkeypatch) -> Path:
    """An empty exports folder that ENGAGEMENT_EXPORTS_DIR points at."""
    folder = tmp_path / "exports"
    folder.mkdir()
    monkeypatch.setenv("ENGAGEMENT_EXPORTS_DIR", str(folder))
    return folder


def copy_real_exports(folder: Path) -> list[Path]:
    return [Path(shutil.copy(p, folder / p.name)) for p in (CAT_EXPORT, MICHIGAN_EXPORT)]


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a (small) fixture export, read with Python's csv module."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def csv_text(header: list[str], rows: list[list[str]], line_ending: str = "\n") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=line_ending)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def monitoring_world(tmp_path_factory, mlflow_store_template) -> Path:
    """The grown project with its champion (monitoring_fixtures.build_world), shared by test_monitoring and test_report."""
    from engagement_pipeline_tests.monitoring_fixtures import build_world

    return build_world(tmp_path_factory.getbasetemp(), mlflow_store_template)


@pytest.fixture
def world_home(monitoring_world, engagement_home) -> Path:
    """A private copy of the monitoring world as this test's ENGAGEMENT_HOME."""
    from engagement_pipeline_tests.shared_homes import copy_home

    return copy_home(monitoring_world, engagement_home)


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory, mlflow_store_template) -> tuple[Path, dict]:
    """(home, what training reported) of the small trained pipeline test_scoring and test_servers share.

    Built once per session (shared_homes.build_trained_home); read it, or take a copy (shared_homes.copy_home).
    """
    from engagement_pipeline_tests.shared_homes import build_trained_home

    home = tmp_path_factory.mktemp("trained") / "home"
    return home, build_trained_home(home, mlflow_store_template)


# Modules whose every test starts real servers or pipeline subprocesses, or trains a model
# through Dagster: `pytest -m "not slow"` leaves them out for a fast everyday loop. Single slow
# tests elsewhere carry @pytest.mark.slow themselves.
SLOW_MODULES = frozenset(
    {
        "test_servers",
        "test_crashes",
        "test_concurrency",
        "test_scoring",
        "test_serving",
        "test_training",
        "test_monitoring",
        "test_report",
        "test_privacy",
    }
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


# The online scorer's pipeline and servers, one of each for test_serving.py and test_serving_http.py.
from engagement_pipeline_tests.serving_fixtures import fresh_server, reading_server, serving_pipeline  # noqa: E402, F401
