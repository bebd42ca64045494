"""The `traits` shape: every volunteer carries traits that persist across all their sessions (a
usual session length in minutes, a pace, a return rate, a mean gap between visits) and one cause
of stopping, which the export never names:

* tires (40%): fatigue grows with the work done in the session (tasks x their nominal time, over a
  personal stamina); tasks and pauses get slower as it grows, and the chance of stopping rises
  with it (cumulative hazard (fatigue)^3), so a volunteer slows down before leaving;
* clock (35%): a hazard that rises with the session's wall-clock length (Weibull, shape 2.5,
  scale the usual length): no slow-down, but long sessions are near their end;
* interrupted (25%): a constant hazard in time (around the usual length): memoryless, no warning.

Unlike the default shape there is no single latent trait tying return and session length, no
day-multiple return rhythm (gaps between visits are continuous, exponential around the volunteer's
mean) and no hour effect after the first visit. Each session's stopping point is drawn in closed
form (an Exp(1) draw against the cumulative hazard), candidate tasks are generated past it and
the session is cut there: all vectorized.
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
    MIN_SESSION_GAP_MS,
    TZ_LOCAL_MINUS_UTC_MIN,
    WF_KIND,
    WF_MEDIAN_S,
    WF_WEIGHT,
)

ROWS_PER_USER_GUESS = 80.0
TIRES, CLOCK, INTERRUPTED = 0, 1, 2
_MAX_SESSION_MIN = 300.0


@dataclass
class _Volunteers:
    anon: np.ndarray
    tz: np.ndarray
    main_device: np.ndarray
    main_wf: np.ndarray
    usual_min: np.ndarray  # usual session length, minutes
    pace: np.ndarray  # task duration factor
    cause: np.ndarray  # TIRES, CLOCK or INTERRUPTED
    first_ms: np.ndarray  # wanted start of the first visit
    mean_gap_h: np.ndarray  # mean hours between visits
    n_sessions: np.ndarray


def _volunteers(rng: np.random.Generator, n: int) -> _Volunteers:
    anon, tz, main_device, main_wf = main_habits(rng, n)
    usual_min = np.clip(rng.lognormal(np.log(8.0), 0.8, n), 1.5, 150.0)
    pace = rng.lognormal(0.0, 0.40, n)
    cause = categorical(rng, np.array([0.40, 0.35, 0.25]), n)  # TIRES, CLOCK, INTERRUPTED
    day = rng.choice(CALENDAR_DAYS, size=n, p=arrival_day_weights())
    hour = local_hour_mixture(rng, n)
    first_ms = day * DAY_MS + (hour * 3_600_000).astype(np.int64) - TZ_LOCAL_MINUS_UTC_MIN[tz] * 60_000
    mean_gap_h = rng.lognormal(np.log(60.0), 0.9, n)
    propensity = rng.standard_normal(n)
    returns = rng.random(n) < np.where(anon, 0.10, 1.0 / (1.0 + np.exp(0.8 - propensity)))
    extra = 1 + np.floor(rng.lognormal(0.7 + 0.5 * propensity, 1.1)).astype(np.int64)
    n_sessions = 1 + np.where(returns, np.minimum(extra, 300), 0)
    return _Volunteers(anon, tz, main_device, main_wf, usual_min, pace, cause, first_ms, mean_gap_h, n_sessions)


def _stop_minutes(rng: np.random.Generator, v: _Volunteers, s_user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per session: its scale (the usual length times this session's energy) and where its cause
    stops it, in minutes of nominal work (tires) or of wall clock (clock, interrupted)."""
    n = len(s_user)
    scale = v.usual_min[s_user] * np.exp(rng.normal(0.0, 0.3, n))
    e = rng.exponential(1.0, n)
    cause = v.cause[s_user]
    stop = np.select(
        [cause == TIRES, cause == CLOCK, cause == INTERRUPTED],
        [scale * e ** (1 / 3), scale * 1.13 * e ** (1 / 2.5), scale * e],  # (fatigue)^3, Weibull 2.5, exponential
    )
    return scale, np.minimum(stop, _MAX_SESSION_MIN)


def _tasks(rng: np.random.Generator, v: _Volunteers, s_user, s_k, wf, device, scale_min, stop_min):
    """Candidate tasks past each session's stop, slowed by fatigue (nominal work over the session's
    scale) for the volunteers who tire; then cut where the session stops."""
    base_s = WF_MEDIAN_S[wf] * DEVICE_SPEED[device, WF_KIND[wf]] * v.pace[s_user]
    step_s = base_s + 1.5
    n_cand = (np.ceil(2.0 * stop_min * 60.0 / step_s) + 5).astype(np.int64)
    r_sess, r_first, pos, log_s = task_log_seconds(rng, base_s, s_k, n_cand)
    work_min = pos * step_s[r_sess] / 60.0  # nominal work done before this task
    tires = v.cause[s_user][r_sess] == TIRES
    fatigue = np.where(tires, np.minimum(work_min / scale_min[r_sess], 1.5), 0.0)
    dur_ms = task_durations_ms(rng, log_s + 0.5 * fatigue**2)
    step = dur_ms + pauses_ms(rng, np.minimum(0.8 * fatigue**2, 1.4), r_first + n_cand - 1)
    offset = segmented_cumsum(step, n_cand) - step
    # a task still open when the clock stops the session is abandoned, never uploaded
    keep = np.where(tires, work_min < stop_min[r_sess], offset + dur_ms < stop_min[r_sess] * 60_000.0)
    return kept_prefix(keep, r_sess, r_first, offset, dur_ms)


def simulate_batch(rng: np.random.Generator, n_users: int) -> dict[str, dict[str, np.ndarray]]:
    """Simulate n_users volunteers of the `traits` shape (arrays as `volunteers.simulate_batch`)."""
    v = _volunteers(rng, n_users)
    s_user, _, s_k = segments(v.n_sessions)
    n = len(s_user)
    device = usually(rng, v.main_device[s_user], 0.90, DEVICE_WEIGHT)
    wf = usually(rng, v.main_wf[s_user], 0.85, WF_WEIGHT)
    scale_min, stop_min = _stop_minutes(rng, v, s_user)
    r_sess, offset, dur_ms, session_ms = _tasks(rng, v, s_user, s_k, wf, device, scale_min, stop_min)
    wanted = np.where(s_k == 0, v.first_ms[s_user], -100_000_000_000)
    gap_ms = (rng.exponential(1.0, n) * v.mean_gap_h[s_user] * 3_600_000).astype(np.int64)
    start = no_overlap_starts(wanted, MIN_SESSION_GAP_MS + gap_ms, session_ms, s_k, v.n_sessions)
    rows = uploaded_rows(rng, start, r_sess, offset, dur_ms)
    return {
        "users": {"anon": v.anon, "tz": v.tz, "device_seed": rng.integers(0, 1 << 30, n_users)},
        "sessions": {"user": s_user, "wf": wf, "device": device},
        "rows": rows,
    }
