"""The in-process executor, plus one thing: each run records the host it runs on, when it starts.

`stalled_runs_sensor` judges a run by its process (a pid), which means something only on the host
that runs it. The tag is written by the run itself, in its own process, before its first step, so it
names the right host whichever launcher started it (the default one, a container, another machine),
and a run without the tag is never judged. `engagement` commands set the same tag on the runs they
execute in their own process.
"""

from __future__ import annotations

import socket

import dagster as dg
from dagster._core.definitions.executor_definition import IN_PROC_CONFIG, _core_in_process_executor_creation
from dagster._core.executor.in_process import InProcessExecutor

HOST_TAG = "engagement/host"


def this_host() -> str:
    return socket.gethostname()


class HostRecordingExecutor(InProcessExecutor):
    def execute(self, plan_context, execution_plan):
        plan_context.instance.add_run_tags(plan_context.run_id, {HOST_TAG: this_host()})
        yield from super().execute(plan_context, execution_plan)


@dg.executor(name="in_process", config_schema=IN_PROC_CONFIG)
def host_recording_in_process_executor(init_context) -> HostRecordingExecutor:
    """Dagster's in-process executor (same name and config); the run records its host first (engagement/host)."""
    plain = _core_in_process_executor_creation(init_context.executor_config)
    return HostRecordingExecutor(
        retries=plain.retries,
        step_dependency_config=plain.step_dependency_config,
        marker_to_close=plain.marker_to_close,
    )
