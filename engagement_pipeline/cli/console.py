"""What the `engagement` command prints while Dagster runs, and how it ends.

A run's console shows the assets' own INFO lines (progress) as
"  <asset>: <message>", a `done:` line for each asset the moment it is
materialized, and nothing of Dagster's event stream (no run ids, no
timestamps, no repeated stack traces). Lines are wrapped under LINE_WIDTH.

An expected condition (a missing exports folder, no champion, a full disk)
ends the command with one short message and its own exit code (EXIT_CODES,
also in README's "Exit codes"); anything else is a bug, and its stack trace
is printed once.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Callable

LINE_WIDTH = 118

OK = 0
BUG = 1
USAGE = 2
EXPORTS_PROBLEM = 3
NO_CHAMPION = 4
DISK_FULL = 5
NOTHING_TO_SCORE = 6
PORT_IN_USE = 7
BUILD_FIRST = 8
SERVICE_DOWN = 9

EXIT_CODES = {
    OK: "the pipeline did its job (a model that was trained but not promoted included)",
    BUG: "an unexpected error: a bug, printed with its stack trace",
    USAGE: "the command line itself is wrong (unknown option, bad date)",
    EXPORTS_PROBLEM: "the exports folder is missing, empty, not classification exports, or another home's",
    NO_CHAMPION: "no model has passed the promotion gate yet, so nothing can be scored",
    DISK_FULL: "not enough free disk space (before or during the run)",
    NOTHING_TO_SCORE: "the day(s) asked for lie outside the data, or nothing was ingested yet",
    PORT_IN_USE: "the UI's port is taken by another process",
    BUILD_FIRST: "a table the step reads was never built: materialize the asset named first",
    SERVICE_DOWN: "the MLflow tracking server did not answer (nothing was promoted or scored): start it and run again",
}

# The root cause's exception class -> exit code, for a step that failed on an expected condition.
EXPECTED_ERRORS = {
    "NoChampionError": NO_CHAMPION,
    "ExportFormatError": EXPORTS_PROBLEM,
    "MixedExportsError": EXPORTS_PROBLEM,
    "FileNotFoundError": EXPORTS_PROBLEM,
    "MissingUpstreamError": BUILD_FIRST,
    "DiskFullError": DISK_FULL,
    "TrackingServerUnavailable": SERVICE_DOWN,
}


class CommandFailed(SystemExit):
    """Ends the command with `message` on stderr and a documented exit code (no stack trace)."""

    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code


def wrapped(text: str, indent: str = "  ", more: str = "    ") -> str:
    """`text` as lines under LINE_WIDTH: the first indented by `indent`, the rest by `more`."""
    lines = []
    for i, paragraph in enumerate(text.splitlines() or [""]):
        lines += textwrap.wrap(
            paragraph,
            LINE_WIDTH,
            initial_indent=indent if i == 0 else more,
            subsequent_indent=more,
            break_on_hyphens=False,
            break_long_words=False,
        ) or [""]
    return "\n".join(lines)


def say(text: str, indent: str = "", more: str = "  ", file=None) -> None:
    print(wrapped(text, indent, more), file=file or sys.stdout, flush=True)


SKIPPED_STEP = "Dependencies for step"


class ConsoleHandler(logging.Handler):
    """Prints an asset's own log lines, and `on_materialized(asset, metadata)` for each materialization."""

    def __init__(self, on_materialized: Callable[[str, dict], None]):
        super().__init__(logging.DEBUG)  # Dagster logs its events at DEBUG
        self.on_materialized = on_materialized

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        if event is not None:  # Dagster's own event stream: only materializations are shown, as `done:` lines
            if event.event_type_value == "ASSET_MATERIALIZATION":
                materialization = event.step_materialization_data.materialization
                self.on_materialized(materialization.asset_key.to_user_string(), materialization.metadata)
            return
        message = meta.get("orig_message", record.getMessage())
        if record.levelno < logging.INFO or message.startswith(SKIPPED_STEP):
            return  # a step skipped after another failed: the failure itself is what the command ends with
        step = meta.get("step_key") or "run"
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        say(f"{step}: {level}{message}", indent="  ", more="      ")


def console_logger_def(on_materialized: Callable[[str, dict], None]):
    """A Dagster logger that prints through ConsoleHandler (replaces the colored console logger)."""
    import dagster as dg

    @dg.logger(description="The engagement command's console: asset progress and done lines.")
    def engagement_console(init_context) -> logging.Logger:
        logger = logging.Logger("engagement_console", level=logging.DEBUG)
        logger.addHandler(ConsoleHandler(on_materialized))
        return logger

    return engagement_console


def error_chain(error) -> list:
    """A Dagster SerializableErrorInfo and its causes, outermost first."""
    chain = []
    while error is not None:
        chain.append(error)
        error = error.cause
    return chain


def classify_failure(step: str, error) -> tuple[int, str, str]:
    """(exit code, the root cause's message, its stack trace when it is a bug, else '') of a failed step."""
    if error is None:
        return BUG, "unknown error", ""
    chain = error_chain(error)
    root = chain[-1]
    for cause in chain:
        expected = EXPECTED_ERRORS.get(cause.cls_name)
        if expected == EXPORTS_PROBLEM and not step.startswith("ingest"):
            continue  # a missing file elsewhere is not the exports folder's fault
        if expected is not None:
            return expected, message_of(cause), ""
    return BUG, root.message.strip(), "".join(root.stack)


def message_of(error) -> str:
    """The exception's own words, without the "module.ClassName: " Dagster puts in front."""
    text = error.message.strip()
    head, _, rest = text.partition(": ")
    return rest if rest and " " not in head and head.endswith(error.cls_name or "?") else text


def silence_library_noise(environment: dict | None = None) -> None:
    """Quiet what helps no user, in this process's environment and `environment` (a child's): MLflow's
    "Downloading artifacts" progress bars and its INFO lines about creating its own tables."""
    import os

    for env in (os.environ, environment) if environment is not None else (os.environ,):
        env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        env.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
