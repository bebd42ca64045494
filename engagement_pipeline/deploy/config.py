"""The deployed Dagster instance (dagster.yaml) and the workspace its daemon and webserver load."""

from __future__ import annotations

from pathlib import Path

MAX_RUNTIME_S = 6 * 3600  # a run still going after six hours is failed by Dagster's run monitoring

DEPLOYED_DAGSTER_YAML = """\
# Written by `engagement deploy up` (engagement_pipeline/deploy/config.py); rewritten at each `up`.
# Runs, event logs and schedule/sensor ticks live in the home's PostgreSQL cluster.
storage:
  postgres:
    postgres_url: "{postgres_url}"
# One run at a time: every run uses the one DuckDB file.
run_queue:
  max_concurrent_runs: 1
# A run that never starts fails after 3 minutes; one that runs longer than max_runtime_seconds
# (or its `dagster/max_runtime` tag) is terminated and marked failed. A run whose process died is
# marked failed by the `stalled_runs_sensor` (ops/stalled_runs.py), for runs of this host only.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  max_runtime_seconds: {max_runtime_s}
  poll_interval_seconds: {poll_interval_s}
# Ticks of schedules and sensors are kept 30 days (skipped sensor ticks 7), runs and their logs forever.
retention:
  schedule:
    purge_after_days: 30
  sensor:
    purge_after_days:
      skipped: 7
      failure: 30
      success: 30
telemetry:
  enabled: false
"""

WORKSPACE_YAML = """\
# Written by `engagement deploy up`: the installed package's code location.
load_from:
  - python_module:
      module_name: engagement_pipeline.definitions
      location_name: engagement_pipeline
"""


def dagster_yaml(postgres_url: str, poll_interval_s: int = 60, max_runtime_s: int = MAX_RUNTIME_S) -> str:
    return DEPLOYED_DAGSTER_YAML.format(
        postgres_url=postgres_url, poll_interval_s=poll_interval_s, max_runtime_s=max_runtime_s
    )


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text)
    temporary.chmod(0o600)
    temporary.replace(path)
