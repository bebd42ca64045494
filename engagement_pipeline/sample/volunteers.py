"""The default shape: volunteers with one latent "stayer" trait, a session length drawn up front,
and a fatigue stretch before they leave (the dynamics the package docstring describes).

`simulate_batch(rng, n_users)` runs the steps below in order; each draws from `rng` in a fixed
order, so a seed gives the same export byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engagement_pipeline.sample.arrays import ar1, categorical, segmented_cumsum, segments
from engagement_pipeline.sample.timing import (
    arrival_day_weights,
    local_hour_mixture,
    no_overlap_starts,
    pauses_ms,
    task_durations_ms,
    uploaded_rows,
)
from engagement_pipeline.sample.vocabulary import (
    CALENDAR_DAYS,
    DAY_MS,
    DEVICE_SESSION_MU,
    DEVICE_SPEED,
    DEVICE_WEIGHT,
    END_MS,
    MIN_SESSION_GAP_MS,
    TZ_LOCAL_MINUS_UTC_MIN,
    TZ_WEIGHT,
    WF_KIND,
    WF_MEDIAN_S,
    WF_WEIGHT,
)

ROWS_PER_USER_GUESS = 38.0  # sizes a batch: about this many classifications per volunteer


@dataclass
class _Volunteers:
    anon: np.ndarray
    stayer: np.ndarray  # the latent trait z ~ N(0, 1)
    tz: np.ndarray
    pref_hour: np.ndarray
    main_device: np.ndarray
    main_wf: np.ndarray
    speed: np.ndarray
    fatigue: np.ndarray  # size of the end-of-session slow-down (0: leaves without warning)
    fatigue_min: np.ndarray  # how long before leaving the slow-down starts
    arrival_day: np.ndarray
    n_sessions: np.ndarray


@dataclass
class _Sessions:
    user: np.ndarray
    k: np.ndarray  # 0 for a volunteer's first session
    same_day: np.ndarray  # a return a few hours after the previous session
    day: np.ndarray  # local calendar day
    hour: np.ndarray  # local start hour
    device: np.ndarray
    wf: np.ndarray


def _volunteers(rng: np.random.Generator, n: int) -> _Volunteers:
    """Who comes, and how often: the stayer trait raises both the chance of returning and the count."""
    anon = rng.random(n) < 0.20
    stayer = rng.standard_normal(n)
    tz = categorical(rng, TZ_WEIGHT, n)
    pref_hour = local_hour_mixture(rng, n)
    main_device = categorical(rng, DEVICE_WEIGHT, n)
    main_wf = categorical(rng, WF_WEIGHT, n)
    speed = rng.lognormal(0.0, 0.30, n)
    fatigue = np.where(rng.random(n) < 0.2, 0.0, np.clip(rng.normal(0.85, 0.25, n), 0.2, 1.4))
    fatigue_min = rng.uniform(8.0, 25.0, n)
    arrival_day = rng.choice(CALENDAR_DAYS, size=n, p=arrival_day_weights())
    returns = rng.random(n) < np.where(anon, 0.10, 1.0 / (1.0 + np.exp(1.0 - 0.9 * stayer)))
    extra = np.where(
        anon,
        rng.geometric(0.6, n),
        1 + np.floor(rng.lognormal(0.6 + 0.6 * stayer, 1.3)).astype(np.int64),
    )
    n_sessions = 1 + np.where(returns, np.minimum(extra, 400), 0).astype(np.int64)
    return _Volunteers(
        anon, stayer, tz, pref_hour, main_device, main_wf, speed, fatigue, fatigue_min, arrival_day, n_sessions
    )


def _days_between_sessions(rng: np.random.Generator, n: int) -> np.ndarray:
    """Local days from one session to the next: same day, 1, 2 or 3 days, 4-7, or a week or more."""
    kind = categorical(rng, np.array([0.18, 0.38, 0.16, 0.10, 0.10, 0.08]), n)
    return np.choose(
        kind,
        [
            np.zeros(n, np.int64),
            np.ones(n, np.int64),
            np.full(n, 2, np.int64),
            np.full(n, 3, np.int64),
            rng.integers(4, 8, n),
            8 + rng.geometric(1 / 14, n),
        ],
    )


def _sessions(rng: np.random.Generator, v: _Volunteers) -> _Sessions:
    """When they come: days after arrival, a local hour near the preferred one, device and workflow."""
    s_user, s_first, s_k = segments(v.n_sessions)
    n = len(s_user)
    dd = _days_between_sessions(rng, n)
    dd[s_first] = 0
    same_day = (dd == 0) & (s_k > 0)
    day = v.arrival_day[s_user] + segmented_cumsum(dd, v.n_sessions)
    habitual = rng.random(n) < 0.75
    hour = np.where(
        habitual,
        np.mod(v.pref_hour[s_user] + 1.3 * rng.standard_normal(n), 24.0),
        local_hour_mixture(rng, n),
    )
    device = np.where(rng.random(n) < 0.85, v.main_device[s_user], categorical(rng, DEVICE_WEIGHT, n))
    wf = np.where(rng.random(n) < 0.85, v.main_wf[s_user], categorical(rng, WF_WEIGHT, n))
    return _Sessions(s_user, s_k, same_day, day, hour, device, wf)


def _step_s(v: _Volunteers, s: _Sessions) -> np.ndarray:
    """Typical seconds per task of each session: workflow, device and the volunteer's speed."""
    return WF_MEDIAN_S[s.wf] * DEVICE_SPEED[s.device, WF_KIND[s.wf]] * v.speed[s.user] + 1.5


def _session_lengths(rng: np.random.Generator, v: _Volunteers, s: _Sessions) -> tuple[np.ndarray, np.ndarray]:
    """Classifications per session (lognormal around the stayer trait; shorter on phones, late at
    night and when anonymous; never much over 5 hours) and the length of its fatigue stretch."""
    late = (s.hour >= 23.0) | (s.hour < 5.0)
    mu = (
        2.1
        + 0.75 * v.stayer[s.user]
        + DEVICE_SESSION_MU[s.device]
        - 0.35 * late
        - 0.30 * v.anon[s.user]
        + 0.80 * rng.standard_normal(len(s.user))
    )
    step_s = _step_s(v, s)
    length = 1 + np.minimum(np.floor(np.exp(mu)), np.floor(5 * 3600 / (1.3 * step_s))).astype(np.int64)
    stretch = np.clip(np.round(v.fatigue_min[s.user] * 60.0 / step_s), 4, 80)
    stretch = np.maximum(np.minimum(stretch, np.round(0.5 * length)), 4)
    return length, stretch


def _task_times(
    rng: np.random.Generator, v: _Volunteers, s: _Sessions, length: np.ndarray, stretch: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What a session looks like: each task's duration and its start offset in the session.

    Returns (row's session, offset, duration, session duration), all ms."""
    r_sess, r_first, pos = segments(length)
    remaining = length[r_sess] - 1 - pos
    ramp = np.clip(1.0 - remaining / stretch[r_sess], 0.0, 1.0)  # 0 .. 1 over the last stretch
    tiredness = (v.fatigue[s.user] * np.clip((length - 3) / 15.0, 0.0, 1.0))[r_sess] * ramp
    log_dur = (
        np.log(WF_MEDIAN_S[s.wf] * DEVICE_SPEED[s.device, WF_KIND[s.wf]])[r_sess]
        + np.log(v.speed[s.user[r_sess]])
        + np.where(s.k == 0, 0.7, 0.2)[r_sess] * np.exp(-pos / 3.0)  # warm-up
        - 0.06 * np.log1p(s.k)[r_sess]  # experience
        + tiredness
        + ar1(rng, len(r_sess), length, 0.93, 0.07)  # wandering attention
        + rng.normal(0.0, 0.42, len(r_sess))
    )
    dur_ms = task_durations_ms(rng, log_dur)
    last = r_first + length - 1
    step = dur_ms + pauses_ms(rng, tiredness, last)
    offset = segmented_cumsum(step, length) - step  # started_at - session start
    return r_sess, offset, dur_ms, offset[last] + dur_ms[last]


def _session_starts(rng: np.random.Generator, v: _Volunteers, s: _Sessions, session_ms: np.ndarray) -> np.ndarray:
    """Wanted start (local day + hour, in UTC), or for same-day returns a few hours after the last."""
    tz_ms = TZ_LOCAL_MINUS_UTC_MIN[v.tz][s.user] * 60_000
    wanted = s.day * DAY_MS + (s.hour * 3_600_000).astype(np.int64) - tz_ms
    wanted = np.minimum(wanted, END_MS + DAY_MS)
    wanted = np.where(s.same_day, -100_000_000_000, wanted)
    later_ms = (rng.lognormal(np.log(1.5), 0.8, len(s.user)) * 3_600_000).astype(np.int64)
    gap = np.where(s.same_day, MIN_SESSION_GAP_MS + later_ms, MIN_SESSION_GAP_MS)
    gap = np.minimum(gap, 7 * DAY_MS)
    return no_overlap_starts(wanted, gap, session_ms, s.k, v.n_sessions)


def simulate_batch(rng: np.random.Generator, n_users: int) -> dict[str, dict[str, np.ndarray]]:
    """Simulate n_users volunteers; return user-, session- and row-level arrays.

    Rows come grouped by user, then session, then time; rows outside the calendar are dropped."""
    v = _volunteers(rng, n_users)
    s = _sessions(rng, v)
    length, stretch = _session_lengths(rng, v, s)
    r_sess, offset, dur_ms, session_ms = _task_times(rng, v, s, length, stretch)
    start = _session_starts(rng, v, s, session_ms)
    rows = uploaded_rows(rng, start, r_sess, offset, dur_ms)
    return {
        "users": {"anon": v.anon, "tz": v.tz, "device_seed": rng.integers(0, 1 << 30, n_users)},
        "sessions": {"user": s.user, "wf": s.wf, "device": s.device},
        "rows": rows,
    }
