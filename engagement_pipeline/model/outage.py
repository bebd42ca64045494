"""The MLflow tracking server gone while a model trains or a day is scored: one plain sentence, and nothing
promoted or written.

MLflow's own error for a server that went away is a chain of five exceptions ending in
"HTTPConnectionPool(...): Max retries exceeded ... Connection refused", raised by whichever call came
next (an epoch's metrics, the model upload, the alias), and often hidden behind a second one from
`mlflow.start_run`'s exit, which cannot mark the run FAILED on a server that is not there. Training
records how far it got (`progress`: the version it registered, the gate's decision), and a failure
whose cause is a connection to the server is told as what happened to the champion:

    The MLflow server http://127.0.0.1:5000 did not answer (connection refused) while `engagement_model`
    trained, before a version was registered: nothing was promoted, the `champion` alias did not move. ...

The MLflow run it leaves RUNNING on the server is marked FAILED by the next training
(ops/stalled_runs.fail_stalled_mlflow_runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from engagement_pipeline.resources import CHAMPION_ALIAS

# The exception classes (by name: requests, urllib3 and http.client need not be imported) that mean no
# answer came from the server at all, as opposed to an answer saying something went wrong.
NO_ANSWER = {
    "ConnectionRefusedError": "connection refused",
    "ConnectionResetError": "connection reset",
    "RemoteDisconnected": "the server closed the connection",
    "NewConnectionError": "no connection",
    "ConnectTimeoutError": "connection timed out",
    "ConnectTimeout": "connection timed out",
    "ReadTimeoutError": "no answer in time",
    "ReadTimeout": "no answer in time",
    "ProtocolError": "the connection broke",
    "MaxRetryError": "no connection",
    "ConnectionError": "no connection",
}


class TrackingServerUnavailable(RuntimeError):
    """The MLflow tracking server did not answer while a model trained (nothing was promoted after that) or a
    day was scored (nothing was written)."""


def no_answer(error: BaseException | None) -> str | None:
    """What went wrong with the connection behind `error` ("connection refused"), or None if it was not that."""
    found, seen = None, set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        words = NO_ANSWER.get(type(error).__name__)
        if words is not None and (found is None or found == "no connection"):
            found = words  # the innermost precise words win over the wrappers' "no connection"
        error = error.__cause__ or error.__context__
    return found


def outage_message(uri: str, why: str, progress: dict) -> str:
    """What happened to the champion, from how far training got (`progress`: version, promotion)."""
    version, promotion = progress.get("version"), progress.get("promotion")
    head = f"The MLflow server {uri} did not answer ({why}) while `engagement_model` trained"
    again = "Start it again (`engagement deploy up`, or however it is run) and materialize `engagement_model` again."
    if version is None:
        return f"{head}, before a version was registered: nothing was promoted, the `{CHAMPION_ALIAS}` alias did not move. {again}"  # noqa: E501
    if promotion is None:
        return (
            f"{head}, after it registered v{version} and before the promotion gate decided: v{version} is not "
            f"promoted (it has no recorded decision, so nothing scores with it), the `{CHAMPION_ALIAS}` alias did "
            f"not move. {again}"
        )
    return f"{head}, after the promotion gate decided ({promotion.reason}); the run's last records are missing. {again}"


def scoring_outage_message(uri: str, why: str, day: str) -> str:
    """What a scoring run that could not reach the server left: the day's file as it was."""
    return (
        f"The MLflow server {uri} did not answer ({why}) while `user_predictions` looked up or loaded the "
        f"`{CHAMPION_ALIAS}` for {day}: nothing was scored, the predictions of {day} are as they were. Start it "
        "again (`engagement deploy up`, or however it is run) and run the scoring again."
    )


@contextmanager
def said_plainly(tracking, log, message: Callable[[str, str], str]) -> Iterator[None]:
    """Turn a lost connection to a tracking server into TrackingServerUnavailable, said in the run's log too.

    `message(uri, why)` says what the interruption left (outage_message, scoring_outage_message)."""
    try:
        yield
    except Exception as error:
        uri, why = tracking.uri(), no_answer(error)
        if why is None or not uri.startswith(("http://", "https://")):
            raise
        message = message(uri, why)
        if log is not None:
            log.error(message)
        raise TrackingServerUnavailable(message) from error
