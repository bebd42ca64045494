"""The Dagster instance the `engagement` command runs on: its folder, dagster.yaml and the UI's workspace file."""

import os
from pathlib import Path

from engagement_pipeline.settings import Settings

DAGSTER_YAML = """\
# Written by `engagement`: one run at a time, because every run uses the one DuckDB file.
# A run whose process dies is marked failed within a minute by `stalled_runs_sensor`
# (engagement_pipeline/ops/stalled_runs.py), so the queue never waits behind it.
run_queue:
  max_concurrent_runs: 1
run_monitoring:
  enabled: true
  # a run that never starts (its process died while launching) fails after 3 minutes
  start_timeout_seconds: 180
  poll_interval_seconds: 60
telemetry:
  enabled: false
"""

# The code location by module name, so the same file serves a checkout and an installed wheel.
WORKSPACE_YAML = """\
# Written by `engagement`: the code location of engagement_pipeline, by module.
load_from:
  - python_module:
      module_name: engagement_pipeline.definitions
"""


def prepare_dagster_home(settings: Settings) -> Path:
    """The Dagster instance folder (DAGSTER_HOME, default <home>/dagster), with a dagster.yaml; owner-only."""
    from engagement_pipeline.resources import private_folder

    home = settings.dagster_instance_home
    private_folder(settings.home)
    private_folder(home)
    config = home / "dagster.yaml"
    if not config.exists():
        previous = os.umask(0o077)
        try:
            config.write_text(DAGSTER_YAML)
        finally:
            os.umask(previous)
    return home


def open_dagster_instance(settings: Settings):
    """The Dagster instance, its sqlite storage created owner-only (0600) and under a file lock: two
    first runs started together on a fresh home raced to create its schemas ("table run_tags already
    exists", alembic's "more than one head")."""
    import dagster as dg

    from engagement_pipeline.resources import exclusive_lock

    home = prepare_dagster_home(settings)
    previous = os.umask(0o077)
    try:
        with exclusive_lock(home / ".instance.lock", timeout_s=600):
            return dg.DagsterInstance.from_config(str(home))
    finally:
        os.umask(previous)
