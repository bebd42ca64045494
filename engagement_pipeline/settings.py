"""CONTRACT.md's environment variables, read in one place, once.

    ENGAGEMENT_HOME              folder for all local state            ./.engagement
    ENGAGEMENT_EXPORTS_DIR       classification exports (recursive)    the bundled sample, under the home
    MLFLOW_TRACKING_URI          MLflow tracking store                 sqlite:///<home>/mlflow.db
    DAGSTER_HOME                 Dagster instance                      <home>/dagster (the `engagement` command)
    ENGAGEMENT_PARTITIONS_START  first day of the daily partitions     2015-01-01
    ENGAGEMENT_NIGHTLY_CRON      when the nightly refresh starts (UTC) 0 1 * * *

A deployed home (`engagement deploy up`) records its MLflow server's URI in
<home>/deploy/tracking_uri; with MLFLOW_TRACKING_URI unset, that is the store.

`Settings.from_environment()` is the only reader of the environment in the
package. It turns the variables into the environment of the child processes
the `engagement` command starts (`child_environment()`), and
`resources.resources_for(settings)` turns them into the resources that
`definitions.py` hands to Dagster: nothing else looks the variables up, and
nothing rewrites `os.environ`. This module imports nothing of the package.

A variable that is set reaches the resources as a `dg.EnvVar`, so Dagster
resolves it when a run starts and the UI shows the variable's name rather
than its value (a tracking URI may carry credentials); one that is unset
becomes its documented default.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".engagement"
DEFAULT_PARTITIONS_START = "2015-01-01"  # CONTRACT.md: the first year of Panoptes exports

HOME_VARIABLE = "ENGAGEMENT_HOME"
EXPORTS_VARIABLE = "ENGAGEMENT_EXPORTS_DIR"
TRACKING_VARIABLE = "MLFLOW_TRACKING_URI"
DAGSTER_HOME_VARIABLE = "DAGSTER_HOME"
PARTITIONS_START_VARIABLE = "ENGAGEMENT_PARTITIONS_START"
NIGHTLY_CRON_VARIABLE = "ENGAGEMENT_NIGHTLY_CRON"
DEFAULT_NIGHTLY_CRON = "0 1 * * *"
DEPLOY_FOLDER = "deploy"  # what `engagement deploy` keeps under the home
TRACKING_URI_FILE = "tracking_uri"  # <home>/deploy/tracking_uri: the deployed MLflow server


@dataclass(frozen=True)
class Settings:
    """Where the project keeps its state and reads its exports; everything derives from `home`."""

    home: Path
    exports_dir: Path | None = None  # None: the bundled sample, written once under the home
    tracking_uri: str | None = None  # None: the project's sqlite store under the home
    dagster_home: Path | None = None  # None: <home>/dagster
    partitions_start: str = DEFAULT_PARTITIONS_START
    nightly_cron: str = DEFAULT_NIGHTLY_CRON
    from_env: frozenset[str] = frozenset()  # which of the fields above came from a set variable

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        present = frozenset(name for name in (HOME_VARIABLE, EXPORTS_VARIABLE, TRACKING_VARIABLE) if environ.get(name))
        exports = environ.get(EXPORTS_VARIABLE)
        dagster_home = environ.get(DAGSTER_HOME_VARIABLE)
        home = Path(environ.get(HOME_VARIABLE) or DEFAULT_HOME).resolve()
        return cls(
            home=home,
            exports_dir=Path(exports).resolve() if exports else None,
            tracking_uri=environ.get(TRACKING_VARIABLE) or deployed_tracking_uri(home),
            dagster_home=Path(dagster_home).resolve() if dagster_home else None,
            partitions_start=environ.get(PARTITIONS_START_VARIABLE) or DEFAULT_PARTITIONS_START,
            nightly_cron=environ.get(NIGHTLY_CRON_VARIABLE) or DEFAULT_NIGHTLY_CRON,
            from_env=present,
        )

    def with_exports(self, folder: Path | None) -> Settings:
        """The same settings on another exports folder (`engagement run --exports DIR`)."""
        return dataclasses.replace(
            self,
            exports_dir=Path(folder).resolve() if folder else None,
            from_env=self.from_env - {EXPORTS_VARIABLE},
        )

    @property
    def dagster_instance_home(self) -> Path:
        return self.dagster_home or self.home / "dagster"

    def child_environment(self) -> dict[str, str]:
        """os.environ plus these settings, for a process the `engagement` command starts."""
        environment = dict(os.environ)
        environment[HOME_VARIABLE] = str(self.home)
        environment[DAGSTER_HOME_VARIABLE] = str(self.dagster_instance_home)
        environment[PARTITIONS_START_VARIABLE] = self.partitions_start
        if self.exports_dir is None:
            environment.pop(EXPORTS_VARIABLE, None)
        else:
            environment[EXPORTS_VARIABLE] = str(self.exports_dir)
        if self.tracking_uri:
            environment[TRACKING_VARIABLE] = self.tracking_uri
        return environment


def deployed_tracking_uri(home: Path) -> str | None:
    """The MLflow server a deployment of `home` recorded (`engagement deploy up`), or None."""
    try:
        return (home / DEPLOY_FOLDER / TRACKING_URI_FILE).read_text().strip() or None
    except OSError:
        return None
