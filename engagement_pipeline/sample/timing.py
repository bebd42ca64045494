"""Steps every shape of volunteer shares: when volunteers arrive and like to work, how long a task and
the pause after it take, how sessions are placed so they never overlap, and when a task is uploaded.

Times are int64 ms from the calendar start (see `vocabulary`)."""

from __future__ import annotations

import numpy as np

from engagement_pipeline.sample.arrays import ar1, categorical, segment_starts, segmented_cumsum, segments
from engagement_pipeline.sample.vocabulary import CALENDAR_DAYS, DEVICE_WEIGHT, END_MS, TZ_WEIGHT, WF_WEIGHT


def local_hour_mixture(rng: np.random.Generator, n: int) -> np.ndarray:
    """Preferred local start hour: evening peak, afternoon and morning modes, some night."""
    mode = categorical(rng, np.array([0.47, 0.24, 0.18, 0.11]), n)
    centre = np.array([20.5, 14.5, 9.5, 12.0])[mode]
    spread = np.array([1.6, 2.0, 1.4, 0.0])[mode]
    hours = centre + spread * rng.standard_normal(n)
    hours = np.where(mode == 3, rng.uniform(0.0, 24.0, n), hours)
    return np.mod(hours, 24.0)


def arrival_day_weights() -> np.ndarray:
    """Chance that a new volunteer arrives on each calendar day: launch, two newsletters, weekends."""
    day = np.arange(CALENDAR_DAYS, dtype=np.float64)
    weekday = (day + 6) % 7  # 2025-06-01 is a Sunday: Monday = 0
    w = np.where(weekday >= 5, 1.25, 1.0)
    w = w + 6.0 * np.exp(-day / 4.0)  # launch
    for newsletter in (37, 78):
        after = day - newsletter
        w = w + np.where(after >= 0, 3.5 * np.exp(-np.maximum(after, 0) / 1.8), 0.0)
    return w / w.sum()


def task_durations_ms(rng: np.random.Generator, log_dur_s: np.ndarray) -> np.ndarray:
    """Task durations from log seconds; now and then a tab is left open for minutes."""
    n = len(log_dur_s)
    dur_s = np.exp(log_dur_s)
    dur_s = dur_s + np.where(rng.random(n) < 0.002, rng.uniform(60.0, 600.0, n), 0.0)
    return np.clip(dur_s * 1000.0, 800.0, 1_800_000.0).astype(np.int64)


def pauses_ms(rng: np.random.Generator, tiredness: np.ndarray, last_rows: np.ndarray) -> np.ndarray:
    """The pause after each task: loading the next subject (a second or two), breaks of ~15 s to
    5 min, occasional 5-15 minute breaks; all longer and likelier as `tiredness` (0 .. ~1.4) grows.
    Nothing follows a session's last task (`last_rows`)."""
    n = len(tiredness)
    pause_s = 0.25 + rng.lognormal(0.0, 0.5, n) * np.exp(1.2 * tiredness)
    u = rng.random(n)
    p_long = 0.004 + 0.012 * tiredness
    p_break = 0.025 + 0.05 * tiredness
    pause_s = np.where(u < p_long, rng.uniform(300.0, 900.0, n), pause_s)
    pause_s = np.where(
        (u >= p_long) & (u < p_long + p_break),
        np.clip(rng.lognormal(np.log(45.0), 0.7, n), 12.0, 300.0),
        pause_s,
    )
    pause_ms = (pause_s * 1000.0).astype(np.int64)
    pause_ms[last_rows] = 0
    return pause_ms


def no_overlap_starts(
    wanted: np.ndarray, gap: np.ndarray, session_ms: np.ndarray, s_k: np.ndarray, n_sessions: np.ndarray
) -> np.ndarray:
    """Session starts: each at its wanted time, or `gap` after the previous one ends if that is later.

    start_k = max(wanted_k, start_{k-1} + session_{k-1} + gap_k): a running max of (wanted_j - S_j)
    plus S_k, with S the cumulative session + gap, per volunteer (their sessions are consecutive, in
    order; s_k numbers them from 0)."""
    s_user = np.repeat(np.arange(len(n_sessions)), n_sessions).astype(np.int64)
    prev_len = np.concatenate([[0], session_ms[:-1]])
    inc = np.where(s_k > 0, prev_len + gap, 0)
    cum = segmented_cumsum(inc, n_sessions)
    big = np.int64(1) << np.int64(38)
    shifted = (wanted - cum) + s_user * big
    return np.maximum.accumulate(shifted) - s_user * big + cum


def uploaded_rows(
    rng: np.random.Generator, start: np.ndarray, r_sess: np.ndarray, offset: np.ndarray, dur_ms: np.ndarray
) -> dict[str, np.ndarray]:
    """Row times from session starts and each task's offset in its session; `created_at` is the
    finish plus a short upload delay. Rows outside the calendar are dropped, as in a snapshot."""
    started = start[r_sess] + offset
    finished = started + dur_ms
    created = finished + 150 + (rng.lognormal(np.log(350.0), 0.6, len(finished))).astype(np.int64)
    keep = (started >= 0) & (created < END_MS)
    return {"session": r_sess[keep], "started": started[keep], "finished": finished[keep], "created": created[keep]}


def main_habits(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(anonymous, time zone, main device, main workflow) of n volunteers, as in the default shape."""
    anon = rng.random(n) < 0.20
    tz = categorical(rng, TZ_WEIGHT, n)
    return anon, tz, categorical(rng, DEVICE_WEIGHT, n), categorical(rng, WF_WEIGHT, n)


def usually(rng: np.random.Generator, habit: np.ndarray, share: float, weights: np.ndarray) -> np.ndarray:
    """Per session: the volunteer's habitual category (`habit`, per session) with chance `share`,
    else a category drawn from `weights`."""
    n = len(habit)
    return np.where(rng.random(n) < share, habit, categorical(rng, weights, n))


def task_log_seconds(
    rng: np.random.Generator, base_s: np.ndarray, s_k: np.ndarray, length: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Log seconds of each task of sessions of `length` tasks, without fatigue: the session's
    typical task (`base_s`: workflow, device, pace), a warm-up, experience (`s_k`: the volunteer's
    session number), wandering attention and noise. Returns (row's session, first row, position, log s)."""
    r_sess, r_first, pos = segments(length)
    log_s = (
        np.log(base_s)[r_sess]
        + np.where(s_k == 0, 0.7, 0.2)[r_sess] * np.exp(-pos / 3.0)
        - 0.06 * np.log1p(s_k)[r_sess]
        + ar1(rng, len(r_sess), length, 0.93, 0.07)
        + rng.normal(0.0, 0.42, len(r_sess))
    )
    return r_sess, r_first, pos, log_s


def kept_prefix(
    keep: np.ndarray, r_sess: np.ndarray, r_first: np.ndarray, offset: np.ndarray, dur_ms: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut each session after its last kept task (`keep` is True on a prefix of each session's
    candidate tasks; the first task is always kept). Returns (row's session, offset, duration,
    session duration) of the kept rows."""
    keep = keep.copy()
    keep[r_first] = True
    length = np.bincount(r_sess[keep], minlength=len(r_first))
    offset, dur_ms = offset[keep], dur_ms[keep]
    last = segment_starts(length) + length - 1
    return r_sess[keep], offset, dur_ms, offset[last] + dur_ms[last]
