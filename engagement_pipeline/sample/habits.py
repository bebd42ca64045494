"""The `habits` shape: volunteers of routine, whose sessions end when a habit or the local clock
says so, not from fatigue (tasks never slow down towards the end):

* a habitual session length: each volunteer does about the same number of tasks every time,
  the more exactly the more often they have come (noise from 0.5 down to 0.15 in log);
* the workflow matters: the same volunteer does many more quick yes/no tasks than surveys,
  drawings or transcriptions in a session, and switches workflow in 40% of sessions;
* the local hour sets a deadline: an evening session ends at the volunteer's bedtime, an early
  morning one when they leave for work (08:30), a lunch-time one after ~45 minutes, an afternoon
  one at dinner (18:30); whichever comes first, the habit or the deadline, ends the session;
* a small constant chance (1% a task) of being called away;
* a weekly rhythm: every day, every 2 or 3 days or once a week, at the same local hour (+- 25 min),
  now and then skipping a visit.

So stopping is written in the volunteer's past sessions (their usual count per workflow) and in
the local clock (`metadata.utc_offset`), more than in the last few tasks. All vectorized.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engagement_pipeline.sample.arrays import categorical, segmented_cumsum, segments
from engagement_pipeline.sample.timing import (
    arrival_day_weights,
    kept_prefix,
    local_hour_mixture,
    main_habits,
    no_overlap_starts,
    pauses_ms,
    task_durations_ms,
    task_log_seconds,
    uploaded_rows,
    usually,
)
from engagement_pipeline.sample.vocabulary import (
    CALENDAR_DAYS,
    DAY_MS,
    DEVICE_SPEED,
    DEVICE_WEIGHT,
    END_MS,
    MIN_SESSION_GAP_MS,
    TZ_LOCAL_MINUS_UTC_MIN,
    WF_KIND,
    WF_MEDIAN_S,
    WF_WEIGHT,
)

ROWS_PER_USER_GUESS = 65.0
_TASKS_PER_KIND = np.array([2.2, 1.0, 0.55, 0.35])  # habitual count by workflow kind, relative to surveys
_RHYTHM_DAYS = np.array([1, 2, 3, 7])


@dataclass
class _Volunteers:
    anon: np.ndarray
    tz: np.ndarray
    main_device: np.ndarray
    main_wf: np.ndarray
    habit_tasks: np.ndarray  # tasks per survey session, habitually
    pace: np.ndarray
    hour: np.ndarray  # habitual local start hour
    bedtime: np.ndarray  # local hour, may pass midnight (24.5 = 00:30)
    rhythm_days: np.ndarray
    arrival_day: np.ndarray
    n_sessions: np.ndarray


def _volunteers(rng: np.random.Generator, n: int) -> _Volunteers:
    anon, tz, main_device, main_wf = main_habits(rng, n)
    habit_tasks = np.clip(rng.lognormal(np.log(18.0), 0.8, n), 1.0, 600.0)
    pace = rng.lognormal(0.0, 0.30, n)
    hour = local_hour_mixture(rng, n)
    bedtime = np.clip(rng.normal(23.2, 0.7, n), 21.5, 25.5)
    rhythm_days = _RHYTHM_DAYS[categorical(rng, np.array([0.2, 0.3, 0.25, 0.25]), n)]
    arrival_day = rng.choice(CALENDAR_DAYS, size=n, p=arrival_day_weights())
    returns = rng.random(n) < np.where(anon, 0.10, 0.45)
    visits = 1 + np.floor(rng.lognormal(1.2, 1.0, n)).astype(np.int64)
    n_sessions = 1 + np.where(returns, np.minimum(visits, CALENDAR_DAYS), 0)
    return _Volunteers(
        anon, tz, main_device, main_wf, habit_tasks, pace, hour, bedtime, rhythm_days, arrival_day, n_sessions
    )


def _deadline_h(hour: np.ndarray, bedtime: np.ndarray) -> np.ndarray:
    """Hours from a local start hour to the clock's deadline: leaving for work, end of lunch,
    dinner, or bedtime (at least 10 minutes)."""
    h = np.where(hour < 5.0, hour + 24.0, hour)
    deadline = np.select(
        [h < 8.5, (h >= 11.5) & (h < 14.0), (h >= 14.0) & (h < 18.5)],
        [np.full_like(h, 8.5), h + 0.75, np.full_like(h, 18.5)],
        default=np.maximum(bedtime, h + 0.5),
    )
    deadline = np.where((h >= 8.5) & (h < 11.5), 11.5, deadline)  # mid-morning: until lunch
    return np.maximum(deadline - h, 10 / 60)


def _tasks(rng: np.random.Generator, v: _Volunteers, s_user, s_k, wf, device, hour):
    """Each session's habitual tasks, cut at the clock's deadline or when called away."""
    n = len(s_user)
    noise = rng.normal(0.0, 1.0, n) * (0.15 + 0.35 * np.exp(-s_k / 2.0))
    habit = v.habit_tasks[s_user] * _TASKS_PER_KIND[WF_KIND[wf]] * np.exp(noise)
    base_s = WF_MEDIAN_S[wf] * DEVICE_SPEED[device, WF_KIND[wf]] * v.pace[s_user]
    length = np.clip(np.round(habit), 1, np.floor(5 * 3600 / (1.3 * (base_s + 1.5)))).astype(np.int64)
    r_sess, r_first, pos, log_s = task_log_seconds(rng, base_s, s_k, length)
    dur_ms = task_durations_ms(rng, log_s)
    step = dur_ms + pauses_ms(rng, np.zeros(len(r_sess)), r_first + length - 1)
    offset = segmented_cumsum(step, length) - step
    called_away = rng.geometric(0.01, n)  # tasks until the phone rings
    deadline_ms = (_deadline_h(hour, v.bedtime[s_user]) * 3_600_000)[r_sess]
    keep = (offset + dur_ms < deadline_ms) & (pos < called_away[r_sess])  # the task open at the deadline is abandoned
    return kept_prefix(keep, r_sess, r_first, offset, dur_ms)


def _local_days(rng: np.random.Generator, v: _Volunteers, s_first: np.ndarray) -> np.ndarray:
    """Each session's local day: the rhythm from the arrival, a visit skipped now and then."""
    n = int(v.n_sessions.sum())
    every = np.repeat(v.rhythm_days, v.n_sessions)
    days = every * rng.geometric(0.85, n)
    days[s_first] = 0
    return np.repeat(v.arrival_day, v.n_sessions) + segmented_cumsum(days, v.n_sessions)


def simulate_batch(rng: np.random.Generator, n_users: int) -> dict[str, dict[str, np.ndarray]]:
    """Simulate n_users volunteers of the `habits` shape (arrays as `volunteers.simulate_batch`)."""
    v = _volunteers(rng, n_users)
    s_user, s_first, s_k = segments(v.n_sessions)
    device = usually(rng, v.main_device[s_user], 0.90, DEVICE_WEIGHT)
    wf = usually(rng, v.main_wf[s_user], 0.60, WF_WEIGHT)
    hour = np.mod(v.hour[s_user] + rng.normal(0.0, 0.4, len(s_user)), 24.0)
    r_sess, offset, dur_ms, session_ms = _tasks(rng, v, s_user, s_k, wf, device, hour)
    day = _local_days(rng, v, s_first)
    tz_ms = TZ_LOCAL_MINUS_UTC_MIN[v.tz][s_user] * 60_000
    wanted = np.minimum(day * DAY_MS + (hour * 3_600_000).astype(np.int64) - tz_ms, END_MS + DAY_MS)
    start = no_overlap_starts(wanted, np.full(len(s_user), MIN_SESSION_GAP_MS), session_ms, s_k, v.n_sessions)
    rows = uploaded_rows(rng, start, r_sess, offset, dur_ms)
    return {
        "users": {"anon": v.anon, "tz": v.tz, "device_seed": rng.integers(0, 1 << 30, n_users)},
        "sessions": {"user": s_user, "wf": wf, "device": device},
        "rows": rows,
    }
