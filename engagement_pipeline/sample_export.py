"""The bundled sample: a synthetic Zooniverse classification export.

`write_export()` writes a CSV in the exact format of a current Panoptes
classification export (the 14 columns, quoting only where needed, `created_at`
as ``YYYY-MM-DD HH:MM:SS UTC``, `metadata` / `annotations` / `subject_data` as
JSON), so that the ingest, the SQL models and the model can be exercised without
real data. `generate_export_table()` returns the same rows as a pyarrow Table of
strings (what the CSV holds, with empty fields as nulls), for benchmarks.

The volunteers are simulated so that engagement is learnable the way it is in
real projects, and so that the demo teaches something:

Who comes, and how often
    * ~20% of volunteers are not logged in (`user_name` ``not-logged-in-<hex>``
      equal to their hashed `user_ip`, empty `user_id`); nearly all of them come
      once.
    * Activity is heavy tailed: about three quarters of volunteers have a
      single work session; the ones who return do so a lognormal number of
      times, so a few come back for weeks or months (until the export's end).
    * Each volunteer has a latent "stayer" trait z ~ N(0, 1). It raises both the
      chance of returning and the length of every session, so habits persist:
      some volunteers always stay long, some always leave fast. A model can learn
      it from a volunteer's history (earlier session lengths).

When they come
    * Each volunteer lives in a time zone (mostly the Americas and Europe, in
      summer time, some Asia/Oceania); `metadata.utc_offset` encodes it the way
      browsers do (JavaScript ``getTimezoneOffset() * 60``: seconds, sign
      reversed, so UTC-5 local is ``"18000"`` and UTC+2 is ``"-7200"``).
    * Sessions start at a local time of day drawn around a personal preferred
      hour; preferred hours cluster in the evening (with afternoon and morning
      modes and a little night owling).
    * Between sessions: long gaps. A return is the same day a few hours later,
      or 1, 2 or 3 days later at about the same local time (so gaps cluster near
      24, 48 and 72 hours), or after a week or more. Gaps are always >= 35
      minutes, longer than the largest label horizon.
    * New volunteers arrive all through the calendar, more at the launch, after
      two newsletters and at weekends. The calendar is fixed (2025-06-01 to
      2025-09-15 UTC) whatever today's date is; activity after its end is cut,
      as in a real export snapshot.

What a session looks like
    * Session length (classifications) is lognormal with a per-volunteer mean
      (the stayer trait), shorter on phones, late at night and for anonymous
      volunteers: heavy tailed (median ~10, a few sessions of several hundred,
      never much over 5 hours).
    * Task duration (``finished_at - started_at``) depends on the workflow (a
      yes/no question takes seconds, transcription a minute or more), on the
      volunteer's own speed, on the device (drawing on a phone is slow), on a
      warm-up (the first tasks of a volunteer's first session are slow), on
      experience, on a slowly wandering attention level (an AR(1) process, which
      also makes spurious slow-downs that do not end the session) and on noise.
    * Inside a session, between tasks, there are short pauses (a second or two
      to load the next subject), breaks of ~15 s to 5 min, and occasional 5-15
      minute breaks (some of which split the session under a 10-minute rule).
    * Fatigue: over the last stretch of a session (the last 8-25 minutes, a
      personal habit; 4 to 80 classifications and at most half the session) the
      volunteer slows down: task durations grow, pauses lengthen and breaks
      become more likely. The effect is a trend over several events, of the
      size of the per-event noise at its end and much smaller before, and it
      differs by person (about a fifth of volunteers just leave, with no
      warning). This is what a sequence model over the last K events can pick
      up better than tabular features of the last event; by design, whether a
      volunteer is still working 10, 20 or 30 minutes later stays only
      moderately predictable (ROC-AUC ~0.7-0.8 with simple features).
    * `created_at` is `finished_at` plus a short upload delay, truncated to the
      second. `classification_id` increases with `created_at`.

Everything is generated as numpy arrays (users, then sessions, then
classifications; no Python loop over volunteers or rows), deterministic for a
seed (numpy Generator), and turned into text by DuckDB in parallel: one SQL
definition of the columns gives both the Table and finished CSV lines, whose
bytes go straight to the file. Only the JSON columns need CSV quotes; the tests
check that the file is byte for byte what DuckDB's ``COPY ... TO`` (which quotes
only when needed) writes for the same Table. About 11 s and 0.95 GB per million
rows on 2 cores.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_SEED = 7
DEFAULT_CLASSIFICATIONS = 150_000
SAMPLE_FILE_NAME = "sample-classifications.csv"

EXPORT_COLUMNS = (
    "classification_id",
    "user_name",
    "user_id",
    "user_ip",
    "workflow_id",
    "workflow_name",
    "workflow_version",
    "created_at",
    "gold_standard",
    "expert",
    "metadata",
    "annotations",
    "subject_data",
    "subject_ids",
)

# The calendar: fixed, independent of today's date.
CALENDAR_START = "2025-06-01"
CALENDAR_DAYS = 106  # up to 2025-09-15 00:00 UTC (exclusive)
_START_EPOCH_MS = 1_748_736_000_000  # 2025-06-01T00:00:00Z
_END_MS = CALENDAR_DAYS * 86_400_000  # times are ms since the calendar start
_MIN_SESSION_GAP_MS = 35 * 60_000  # > the largest label horizon (30 min)
_FIRST_CLASSIFICATION_ID = 640_000_000


# --------------------------------------------------------------------------
# The project: workflows, devices, time zones, names
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Workflow:
    workflow_id: int
    name: str
    kind: int  # 0 question, 1 survey, 2 drawing, 3 transcription
    median_s: float  # median task duration for an average volunteer on a desktop
    weight: float  # share of volunteers whose main workflow it is
    versions: tuple[str, str]  # before / after the version bump
    bump_day: int  # day (from the calendar start) of the bump
    subject_base: int


_WORKFLOWS = (
    _Workflow(24113, "Animal or no animal?", 0, 5.5, 0.33, ("3.12", "4.1"), 41, 104_210_000),
    _Workflow(24114, "Identify the species", 1, 21.0, 0.40, ("18.47", "19.2"), 63, 104_290_000),
    _Workflow(25890, "Draw boxes around the animals", 2, 36.0, 0.16, ("6.9", "6.11"), 22, 104_370_000),
    _Workflow(26021, "Transcribe the camera labels", 3, 68.0, 0.11, ("2.30", "2.30"), 999, 104_450_000),
)
_WF_MEDIAN_S = np.array([w.median_s for w in _WORKFLOWS])
_WF_WEIGHT = np.array([w.weight for w in _WORKFLOWS])
_WF_KIND = np.array([w.kind for w in _WORKFLOWS])

# device classes: 0 desktop, 1 mobile, 2 tablet
_DEVICE_WEIGHT = np.array([0.55, 0.35, 0.10])
# duration factor [device, workflow kind]: drawing and typing are slow on a phone
_DEVICE_SPEED = np.array(
    [
        [1.00, 1.00, 1.00, 1.00],
        [0.90, 1.10, 1.35, 1.50],
        [0.95, 1.05, 1.15, 1.30],
    ]
)
_DEVICE_SESSION_MU = np.array([0.0, -0.25, -0.10])

_USER_AGENTS = (
    (  # desktop
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/137.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/138.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/137.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Safari/605.1.15",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:139.0) Gecko/20100101 Firefox/139.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:140.0) Gecko/20100101 Firefox/140.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/137.0.0.0 Safari/537.36 Edg/137.0.0.0",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/136.0.0.0 Safari/537.36",
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:139.0) Gecko/20100101 Firefox/139.0",
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/137.0.0.0 Safari/537.36",
    ),
    (  # mobile
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/137.0.7151.79 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/137.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/136.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Android 14; Mobile; rv:139.0) Gecko/139.0 Firefox/139.0",
    ),
    (  # tablet
        "Mozilla/5.0 (iPad; CPU OS 18_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (iPad; CPU OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.7 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/137.0.0.0 Safari/537.36",
    ),
)
_VIEWPORTS = (
    ((1920, 953), (1536, 730), (1440, 789), (1715, 1064), (1280, 632), (2560, 1305), (1366, 641)),
    ((390, 664), (393, 727), (412, 781), (375, 629), (360, 668), (430, 740)),
    ((820, 1080), (1024, 1242), (768, 954), (800, 1181)),
)

# Time zones in summer: (local - UTC in minutes, weight, languages, language weights)
_TIME_ZONES = (
    (-240, 0.17, ("en", "es"), (0.93, 0.07)),  # US/Canada Eastern (EDT)
    (-300, 0.08, ("en", "es"), (0.92, 0.08)),  # Central (CDT)
    (-360, 0.03, ("en",), (1.0,)),  # Mountain (MDT)
    (-420, 0.08, ("en", "es"), (0.9, 0.1)),  # Pacific (PDT) / Arizona
    (-180, 0.03, ("pt", "en", "es"), (0.6, 0.25, 0.15)),  # Brazil / Argentina
    (0, 0.03, ("en",), (1.0,)),  # UTC (Iceland, West Africa, privacy settings)
    (60, 0.15, ("en",), (1.0,)),  # UK, Ireland (BST)
    (120, 0.22, ("de", "fr", "nl", "es", "it", "en", "pl"), (0.27, 0.2, 0.12, 0.12, 0.1, 0.12, 0.07)),  # CEST
    (180, 0.04, ("fi", "el", "en", "uk"), (0.3, 0.25, 0.3, 0.15)),  # EEST
    (330, 0.04, ("en",), (1.0,)),  # India
    (480, 0.03, ("zh-cn", "en"), (0.6, 0.4)),  # China, Singapore, Perth
    (540, 0.02, ("ja", "en"), (0.7, 0.3)),  # Japan
    (600, 0.06, ("en",), (1.0,)),  # Australia East (AEST, winter)
    (720, 0.02, ("en",), (1.0,)),  # New Zealand (NZST)
)
_TZ_LOCAL_MINUS_UTC_MIN = np.array([tz[0] for tz in _TIME_ZONES], dtype=np.int64)
_TZ_WEIGHT = np.array([tz[1] for tz in _TIME_ZONES])
_LANGUAGES = tuple(sorted({lang for tz in _TIME_ZONES for lang in tz[2]}))

_NAME_HEADS = (
    "amber",
    "arctic",
    "autumn",
    "blue",
    "bright",
    "cedar",
    "clever",
    "coral",
    "crimson",
    "dusty",
    "eager",
    "ember",
    "fern",
    "forest",
    "gentle",
    "golden",
    "granite",
    "hazel",
    "honey",
    "indigo",
    "ivy",
    "jade",
    "juniper",
    "kestrel",
    "lunar",
    "maple",
    "marsh",
    "meadow",
    "misty",
    "moss",
    "night",
    "north",
    "ocean",
    "olive",
    "pebble",
    "pine",
    "prairie",
    "quiet",
    "rainy",
    "river",
    "rowan",
    "rusty",
    "sage",
    "savanna",
    "silver",
    "sky",
    "snowy",
    "solar",
    "spruce",
    "star",
    "stone",
    "storm",
    "sunny",
    "swift",
    "thistle",
    "tidal",
    "willow",
    "winter",
    "wild",
    "zephyr",
    "anna",
    "ben",
    "carla",
    "dave",
    "elena",
    "farid",
    "greta",
    "hiro",
    "ines",
    "jonas",
    "kate",
    "liam",
    "maya",
    "nils",
    "omar",
    "priya",
    "rosa",
    "sam",
    "tomas",
    "yuki",
)
_NAME_TAILS = (
    "badger",
    "bat",
    "bear",
    "beetle",
    "birder",
    "crane",
    "deer",
    "eagle",
    "falcon",
    "finch",
    "fox",
    "gazelle",
    "gecko",
    "hare",
    "hawk",
    "heron",
    "ibis",
    "impala",
    "jackal",
    "kudu",
    "lark",
    "lemur",
    "lion",
    "lynx",
    "marten",
    "mole",
    "moth",
    "newt",
    "otter",
    "owl",
    "panda",
    "pika",
    "puffin",
    "quail",
    "raven",
    "robin",
    "seal",
    "shrike",
    "sloth",
    "spotter",
    "stoat",
    "stork",
    "swan",
    "tern",
    "tiger",
    "toad",
    "vole",
    "walker",
    "watcher",
    "wren",
    "smith",
    "jones",
    "garcia",
    "muller",
    "rossi",
    "tanaka",
    "kumar",
    "silva",
    "novak",
    "berg",
)
_NAME_JOINERS = ("", "", "_", ".", "-")

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SURVEY_CHOICES = (
    "ZEBRA",
    "WILDEBEEST",
    "IMPALA",
    "GAZELLETHOMSONS",
    "ELEPHANT",
    "GIRAFFE",
    "BUFFALO",
    "WARTHOG",
    "LIONFEMALE",
    "HYENASPOTTED",
    "BABOON",
    "HARTEBEEST",
    "TOPI",
    "HUMAN",
)
_SURVEY_COUNTS = ("1", "2", "3", "4", "5", "610", "MANY")


def _annotation_templates() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Finished annotation JSON for the question, survey and transcription
    workflows (drawings are assembled from coordinates in SQL).

    Returns (templates, first index per kind, count per kind).
    """
    per_kind: list[list[str]] = [[], [], [], []]
    q = '[{"task":"T0","task_label":"Is there an animal in this image?","value":"%s"}]'
    per_kind[0] = [q % "Yes", q % "Yes", q % "Yes", q % "No", q % "No"]
    for choice in _SURVEY_CHOICES:
        for count in _SURVEY_COUNTS:
            for young in ("NO", "NO", "YES"):
                answer = {"choice": choice, "answers": {"HOWMANY": count, "YOUNGPRESENT": young}, "filters": {}}
                per_kind[1].append(json.dumps([{"task": "T0", "value": [answer]}], separators=(",", ":")))
    per_kind[1].append('[{"task":"T0","value":[{"choice":"NOTHINGHERE","answers":{},"filters":{}}]}]')
    t = (
        '[{"task":"T0","task_label":"Transcribe the date and time printed on the image.","value":"%s"},'
        '{"task":"T1","task_label":"Which camera is it? (the code after CAM)","value":"%s"}]'
    )
    for day in range(1, 29):
        for month in _MONTHS[4:10]:
            for camera in ("A03", "B11", "C07", "D14", "E02", "F09"):
                per_kind[3].append(t % (f"{day:02d} {month} 2024 {6 + day % 13:02d}:{(day * 7) % 60:02d}", camera))
    templates = [s for kind in per_kind for s in kind]
    counts = np.array([len(k) for k in per_kind], dtype=np.int64)
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return templates, firsts, counts


# --------------------------------------------------------------------------
# Small vectorized helpers
# --------------------------------------------------------------------------

_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex_strings(rng: np.random.Generator, n: int, width: int) -> pa.Array:
    """n random lowercase hex strings of `width` characters."""
    digits = _HEX_DIGITS[rng.integers(0, 16, size=(n, width), dtype=np.uint8)]
    return pa.array(np.ascontiguousarray(digits).view(f"S{width}").ravel(), pa.binary()).cast(pa.string())


def _segment_starts(lengths: np.ndarray) -> np.ndarray:
    """Index of the first element of each segment of a flat array."""
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return starts


def _segmented_cumsum(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum restarting at each segment."""
    cs = np.cumsum(values)
    starts = _segment_starts(lengths)
    base = np.repeat(cs[starts] - values[starts], lengths)
    return cs - base


def _ar1(rng: np.random.Generator, n: int, lengths: np.ndarray, rho: float, sd: float) -> np.ndarray:
    """An AR(1) series per segment (restarting at 0 before each segment's start)."""
    y = rng.normal(0.0, sd, n)
    # y_t = sum_j rho^j e_{t-j}, by doubling: after each step y sums twice as many lags
    shift, coef = 1, rho
    while shift < n and coef > 1e-9:
        y[shift:] += coef * y[:-shift]
        shift, coef = 2 * shift, coef * coef
    # y runs through segment boundaries; remove what the previous segment carries in.
    starts = _segment_starts(lengths)
    carry = np.where(starts > 0, y[np.maximum(starts - 1, 0)], 0.0)
    pos = np.arange(n) - np.repeat(starts, lengths)
    return y - np.repeat(carry, lengths) * rho ** (pos + 1.0)


def _categorical(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    cdf = np.cumsum(weights / weights.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(weights) - 1)


def _local_hour_mixture(rng: np.random.Generator, n: int) -> np.ndarray:
    """Preferred local start hour: evening peak, afternoon and morning modes, some night."""
    mode = _categorical(rng, np.array([0.47, 0.24, 0.18, 0.11]), n)
    centre = np.array([20.5, 14.5, 9.5, 12.0])[mode]
    spread = np.array([1.6, 2.0, 1.4, 0.0])[mode]
    hours = centre + spread * rng.standard_normal(n)
    hours = np.where(mode == 3, rng.uniform(0.0, 24.0, n), hours)
    return np.mod(hours, 24.0)


def _arrival_day_weights() -> np.ndarray:
    day = np.arange(CALENDAR_DAYS, dtype=np.float64)
    weekday = (day + 6) % 7  # 2025-06-01 is a Sunday: Monday = 0
    w = np.where(weekday >= 5, 1.25, 1.0)
    w = w + 6.0 * np.exp(-day / 4.0)  # launch
    for newsletter in (37, 78):
        after = day - newsletter
        w = w + np.where(after >= 0, 3.5 * np.exp(-np.maximum(after, 0) / 1.8), 0.0)
    return w / w.sum()


# --------------------------------------------------------------------------
# The simulation
# --------------------------------------------------------------------------

_ROWS_PER_USER_GUESS = 38.0


def _simulate_batch(rng: np.random.Generator, n_users: int) -> dict[str, np.ndarray]:
    """Simulate n_users volunteers; return user-, session- and row-level arrays.

    Rows come grouped by user, then session, then time; times are int64 ms from
    the calendar start, and rows outside the calendar are already dropped.
    """
    U = n_users
    # ---- volunteers
    anon = rng.random(U) < 0.20
    stayer = rng.standard_normal(U)
    tz = _categorical(rng, _TZ_WEIGHT, U)
    pref_hour = _local_hour_mixture(rng, U)
    main_device = _categorical(rng, _DEVICE_WEIGHT, U)
    main_wf = _categorical(rng, _WF_WEIGHT, U)
    speed = rng.lognormal(0.0, 0.30, U)
    fatigue = np.where(rng.random(U) < 0.2, 0.0, np.clip(rng.normal(0.85, 0.25, U), 0.2, 1.4))
    fatigue_min = rng.uniform(8.0, 25.0, U)  # how long before leaving the slow-down starts
    arrival_day = rng.choice(CALENDAR_DAYS, size=U, p=_arrival_day_weights())
    returns = rng.random(U) < np.where(anon, 0.10, 1.0 / (1.0 + np.exp(1.0 - 0.9 * stayer)))
    extra = np.where(
        anon,
        rng.geometric(0.6, U),
        1 + np.floor(rng.lognormal(0.6 + 0.6 * stayer, 1.3)).astype(np.int64),
    )
    n_sessions = 1 + np.where(returns, np.minimum(extra, 400), 0).astype(np.int64)

    # ---- sessions
    S = int(n_sessions.sum())
    s_user = np.repeat(np.arange(U), n_sessions)
    s_first = _segment_starts(n_sessions)
    s_k = np.arange(S) - np.repeat(s_first, n_sessions)
    # days until this session (local calendar days), from the previous one
    kind = _categorical(rng, np.array([0.18, 0.38, 0.16, 0.10, 0.10, 0.08]), S)
    dd = np.choose(
        kind,
        [
            np.zeros(S, np.int64),
            np.ones(S, np.int64),
            np.full(S, 2, np.int64),
            np.full(S, 3, np.int64),
            rng.integers(4, 8, S),
            8 + rng.geometric(1 / 14, S),
        ],
    )
    dd[s_first] = 0
    same_day = (dd == 0) & (s_k > 0)
    day = arrival_day[s_user] + _segmented_cumsum(dd, n_sessions)
    habitual = rng.random(S) < 0.75
    hour = np.where(
        habitual,
        np.mod(pref_hour[s_user] + 1.3 * rng.standard_normal(S), 24.0),
        _local_hour_mixture(rng, S),
    )
    late = (hour >= 23.0) | (hour < 5.0)
    device = np.where(rng.random(S) < 0.85, main_device[s_user], _categorical(rng, _DEVICE_WEIGHT, S))
    wf = np.where(rng.random(S) < 0.85, main_wf[s_user], _categorical(rng, _WF_WEIGHT, S))
    mu = (
        2.1
        + 0.75 * stayer[s_user]
        + _DEVICE_SESSION_MU[device]
        - 0.35 * late
        - 0.30 * anon[s_user]
        + 0.80 * rng.standard_normal(S)
    )
    step_s = _WF_MEDIAN_S[wf] * _DEVICE_SPEED[device, _WF_KIND[wf]] * speed[s_user] + 1.5
    # nobody works much longer than ~5 hours at a stretch
    length = 1 + np.minimum(np.floor(np.exp(mu)), np.floor(5 * 3600 / (1.3 * step_s))).astype(np.int64)
    stretch_s = np.clip(np.round(fatigue_min[s_user] * 60.0 / step_s), 4, 80)
    stretch_s = np.maximum(np.minimum(stretch_s, np.round(0.5 * length)), 4)

    # ---- classifications (relative times within their session)
    R = int(length.sum())
    r_sess = np.repeat(np.arange(S), length)
    r_first = _segment_starts(length)
    pos = np.arange(R) - np.repeat(r_first, length)
    L = length[r_sess]
    remaining = L - 1 - pos
    stretch = stretch_s[r_sess]
    ramp = np.clip(1.0 - remaining / stretch, 0.0, 1.0)  # 0 .. 1 over the last stretch
    amp = (fatigue[s_user] * np.clip((length - 3) / 15.0, 0.0, 1.0))[r_sess] * ramp
    r_user = s_user[r_sess]
    log_dur = (
        np.log(_WF_MEDIAN_S[wf] * _DEVICE_SPEED[device, _WF_KIND[wf]])[r_sess]
        + np.log(speed[r_user])
        + np.where(s_k == 0, 0.7, 0.2)[r_sess] * np.exp(-pos / 3.0)  # warm-up
        - 0.06 * np.log1p(s_k)[r_sess]  # experience
        + amp  # fatigue
        + _ar1(rng, R, length, 0.93, 0.07)  # wandering attention
        + rng.normal(0.0, 0.42, R)
    )
    dur_s = np.exp(log_dur)
    dur_s = dur_s + np.where(rng.random(R) < 0.002, rng.uniform(60.0, 600.0, R), 0.0)  # tab left open
    dur_ms = np.clip(dur_s * 1000.0, 800.0, 1_800_000.0).astype(np.int64)
    pause_s = 0.25 + rng.lognormal(0.0, 0.5, R) * np.exp(1.2 * amp)
    u = rng.random(R)
    p_long = 0.004 + 0.012 * amp
    p_break = 0.025 + 0.05 * amp
    pause_s = np.where(u < p_long, rng.uniform(300.0, 900.0, R), pause_s)
    pause_s = np.where(
        (u >= p_long) & (u < p_long + p_break),
        np.clip(rng.lognormal(np.log(45.0), 0.7, R), 12.0, 300.0),
        pause_s,
    )
    pause_ms = (pause_s * 1000.0).astype(np.int64)
    pause_ms[r_first + length - 1] = 0  # nothing after a session's last task
    step = dur_ms + pause_ms
    offset = _segmented_cumsum(step, length) - step  # started_at - session start
    session_ms = offset[r_first + length - 1] + dur_ms[r_first + length - 1]

    # ---- session start times
    # wanted start: local day + hour, converted to UTC; same-day returns instead
    # come a few hours after the previous session ends.
    tz_ms = _TZ_LOCAL_MINUS_UTC_MIN[tz][s_user] * 60_000
    wanted = day * 86_400_000 + (hour * 3_600_000).astype(np.int64) - tz_ms
    wanted = np.minimum(wanted, _END_MS + 86_400_000)
    wanted = np.where(same_day, -100_000_000_000, wanted)
    gap = np.where(
        same_day,
        _MIN_SESSION_GAP_MS + (rng.lognormal(np.log(1.5), 0.8, S) * 3_600_000).astype(np.int64),
        _MIN_SESSION_GAP_MS,
    )
    gap = np.minimum(gap, 7 * 86_400_000)
    # start_k = max(wanted_k, start_{k-1} + session_{k-1} + gap_k): a running max
    # of (wanted_j - S_j) plus S_k, with S the cumulative session+gap, per user.
    prev_len = np.concatenate([[0], session_ms[:-1]])
    inc = np.where(s_k > 0, prev_len + gap, 0)
    cum = _segmented_cumsum(inc, n_sessions)
    big = np.int64(1) << np.int64(38)
    shifted = (wanted - cum) + s_user.astype(np.int64) * big
    start = np.maximum.accumulate(shifted) - s_user.astype(np.int64) * big + cum

    started = start[r_sess] + offset
    finished = started + dur_ms
    created = finished + 150 + (rng.lognormal(np.log(350.0), 0.6, R)).astype(np.int64)
    keep = (started >= 0) & (created < _END_MS)
    return {
        "users": {
            "anon": anon,
            "tz": tz,
            "device_seed": rng.integers(0, 1 << 30, U),
        },
        "sessions": {"user": s_user, "wf": wf, "device": device},
        "rows": {
            "session": r_sess[keep],
            "started": started[keep],
            "finished": finished[keep],
            "created": created[keep],
        },
    }


@dataclass
class _Simulation:
    table: pa.Table  # numeric/dictionary columns, one row per classification, sorted
    n_users: int
    n_anonymous: int
    n_sessions: int


def _simulate(n_classifications: int, seed: int) -> _Simulation:
    if n_classifications < 1:
        raise ValueError("n_classifications must be at least 1")
    rng = np.random.default_rng(seed)
    batches = []
    have = 0
    while have < n_classifications:
        need = n_classifications - have
        batch = _simulate_batch(rng, int(np.ceil(need / _ROWS_PER_USER_GUESS * 1.15)) + 20)
        batches.append(batch)
        have += len(batch["rows"]["created"])

    # Concatenate batches (user and session indices made global), then keep the
    # first n rows in user order: the last user's last session is cut short.
    users: dict[str, list] = {k: [] for k in batches[0]["users"]}
    sessions: dict[str, list] = {k: [] for k in batches[0]["sessions"]}
    rows: dict[str, list] = {k: [] for k in batches[0]["rows"]}
    u_off = s_off = 0
    for b in batches:
        for k, v in b["users"].items():
            users[k].append(v)
        for k, v in b["sessions"].items():
            sessions[k].append(v + u_off if k == "user" else v)
        for k, v in b["rows"].items():
            rows[k].append(v + s_off if k == "session" else v)
        u_off += len(b["users"]["anon"])
        s_off += len(b["sessions"]["user"])
    U = {k: np.concatenate(v) for k, v in users.items()}
    Ss = {k: np.concatenate(v) for k, v in sessions.items()}
    Rr = {k: np.concatenate(v)[:n_classifications] for k, v in rows.items()}
    del batches, users, sessions, rows

    # sort by created_at (stable: ties keep user/session order)
    order = np.argsort(Rr["created"], kind="stable")
    Rr = {k: v[order] for k, v in Rr.items()}
    n = n_classifications

    # compact the sessions and users actually present
    used_s = np.zeros(len(Ss["user"]), dtype=bool)
    used_s[Rr["session"]] = True
    s_new = np.cumsum(used_s) - 1
    row_session = s_new[Rr["session"]]
    Ss = {k: v[used_s] for k, v in Ss.items()}
    used_u = np.zeros(len(U["anon"]), dtype=bool)
    used_u[Ss["user"]] = True
    u_new = np.cumsum(used_u) - 1
    Ss["user"] = u_new[Ss["user"]]
    U = {k: v[used_u] for k, v in U.items()}
    n_users = len(U["anon"])
    n_sessions = len(Ss["user"])
    anon = U["anon"]

    # ---- per-user strings: ids, names, ips, languages
    user_ip = _hex_strings(rng, n_users, 20)
    n_named = int((~anon).sum())
    user_id = np.full(n_users, -1, dtype=np.int64)
    # accounts: older ones anywhere below 3.0M, new sign-ups (this summer) above
    new_account = rng.random(n_named) < 0.45
    ids = rng.choice(np.arange(1_000, 3_300_000), size=n_named, replace=False)
    ids = np.where(new_account, 3_000_000 + ids % 300_000, ids % 3_000_000)
    ids = np.unique(ids)  # collisions between the two ranges are rare; make sure
    if len(ids) < n_named:
        pool = np.setdiff1d(np.arange(1_000, 1_000 + 4 * n_named), ids)
        ids = np.concatenate([ids, pool[: n_named - len(ids)]])
    user_id[~anon] = rng.permutation(ids)
    A, B = len(_NAME_HEADS), len(_NAME_TAILS)
    p = rng.choice(A * B * 1000, size=n_named, replace=False)
    num = p // (A * B)
    named = pc.binary_join_element_wise(
        pa.array(np.array(_NAME_HEADS, dtype=object)[p % A], pa.string()),
        pa.array(np.array(_NAME_JOINERS, dtype=object)[rng.integers(0, len(_NAME_JOINERS), n_named)], pa.string()),
        pa.array(np.array(_NAME_TAILS, dtype=object)[(p // A) % B], pa.string()),
        pa.array(np.where(num > 0, num.astype(str), ""), pa.string()),
        "",
    )
    anon_names = pc.binary_join_element_wise("not-logged-in-", user_ip, "")
    name_idx = np.where(anon, np.arange(n_users), n_users + np.cumsum(~anon) - 1)
    user_names = pa.concat_arrays([anon_names, named.cast(pa.string())]).take(pa.array(name_idx))
    lang = np.zeros(n_users, dtype=np.int64)
    for t, (_, _, langs, lw) in enumerate(_TIME_ZONES):  # loop over 14 time zones, not users
        sel = U["tz"] == t
        pick = _categorical(rng, np.array(lw), int(sel.sum()))
        lang[sel] = np.searchsorted(_LANGUAGES, np.array(langs))[pick]
    expert_user = (~anon) & (rng.random(n_users) < 0.002)
    if n_users > 50 and not expert_user.any():
        expert_user[np.flatnonzero(~anon)[:1]] = True

    # ---- per-session strings: browser session, user agent, viewport
    session_hex = _hex_strings(rng, n_sessions, 64)
    dev = Ss["device"]
    seed_u = U["device_seed"][Ss["user"]]
    ua_counts = np.array([len(x) for x in _USER_AGENTS])
    ua_first = np.concatenate([[0], np.cumsum(ua_counts)[:-1]])
    ua_idx = ua_first[dev] + (seed_u + 3 * dev) % ua_counts[dev]
    vp_counts = np.array([len(x) for x in _VIEWPORTS])
    vp_first = np.concatenate([[0], np.cumsum(vp_counts)[:-1]])
    vp_idx = vp_first[dev] + (seed_u // 7) % vp_counts[dev]
    vp_all = np.array([v for dv in _VIEWPORTS for v in dv], dtype=np.int64)
    # an occasional resized window
    vp_h = vp_all[vp_idx, 1] - np.where(rng.random(n_sessions) < 0.2, rng.integers(1, 120, n_sessions), 0)

    # ---- per-row details
    s_of = row_session
    u_of = Ss["user"][s_of]
    wf = Ss["wf"][s_of]
    kind = _WF_KIND[wf]
    templates, t_first, t_count = _annotation_templates()
    ann_idx = t_first[kind] + (rng.random(n) * t_count[kind]).astype(np.int64)
    ann_idx = np.where(kind == 2, -1, ann_idx)
    box = rng.integers(0, 1_000_000, size=(n, 4)) % np.array([150_000, 60_000, 40_000, 30_000]) + np.array(
        [5_000, 5_000, 2_000, 2_000]
    )
    no_box = rng.random(n) < 0.08
    pool = max(400, n // 25)
    subject = np.array([w.subject_base for w in _WORKFLOWS])[wf] + rng.integers(0, pool, n)
    version_idx = 2 * wf + (Rr["created"] >= np.array([w.bump_day for w in _WORKFLOWS])[wf] * 86_400_000)
    gold = expert_user[u_of] & (rng.random(n) < 0.6)
    flagged = rng.random(n) < 0.0015
    revisions = _hex_strings(rng, CALENDAR_DAYS // 5 + 2, 40)
    rev_idx = Rr["started"] // (5 * 86_400_000) + 1
    rev_idx = np.clip(rev_idx - (rng.random(n) < 0.05), 0, len(revisions) - 1)  # stale tabs

    # classification ids grow with time (Zooniverse-wide, ~1M a day) and are unique
    cid = _FIRST_CLASSIFICATION_ID + Rr["created"] // 86 + np.arange(n, dtype=np.int64)

    def dictionary(indices: np.ndarray, values) -> pa.DictionaryArray:
        if not isinstance(values, pa.Array):
            values = pa.array(list(values), pa.string())
        return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32)), values)

    ann_indices = pa.array(ann_idx.astype(np.int32), mask=ann_idx < 0)
    tz_strings = [str(-m * 60) for m in _TZ_LOCAL_MINUS_UTC_MIN]
    versions = [v for w in _WORKFLOWS for v in w.versions]
    ts = pa.timestamp("ms", tz="UTC")
    table = pa.table(
        {
            "cid": pa.array(cid),
            "user_name": dictionary(u_of, user_names),
            "user_id": pa.array(user_id[u_of], mask=anon[u_of]),
            "user_ip": dictionary(u_of, user_ip),
            "wf_id": dictionary(wf, [str(w.workflow_id) for w in _WORKFLOWS]),
            "wf_name": dictionary(wf, [w.name for w in _WORKFLOWS]),
            "wf_version": dictionary(version_idx, versions),
            "created": pa.array(Rr["created"] + _START_EPOCH_MS, ts),
            "started": pa.array(Rr["started"] + _START_EPOCH_MS, ts),
            "finished": pa.array(Rr["finished"] + _START_EPOCH_MS, ts),
            "gold": pa.array(gold),
            "session": dictionary(s_of, session_hex),
            "revision": dictionary(rev_idx, revisions),
            "vp_w": pa.array(vp_all[vp_idx, 0][s_of]),
            "vp_h": pa.array(vp_h[s_of]),
            "ua": dictionary(ua_idx[s_of], [a for dv in _USER_AGENTS for a in dv]),
            "utc_offset": dictionary(U["tz"][u_of], tz_strings),
            "lang": dictionary(lang[u_of], _LANGUAGES),
            "flagged": pa.array(flagged),
            "kind": pa.array(kind.astype(np.int8)),
            "ann": pa.DictionaryArray.from_arrays(ann_indices, pa.array(templates, pa.string())),
            "ann_csv": pa.DictionaryArray.from_arrays(
                ann_indices, pa.array([t.replace('"', '""') for t in templates], pa.string())
            ),
            "no_box": pa.array(no_box),
            "box_x": pa.array(box[:, 0]),
            "box_y": pa.array(box[:, 1]),
            "box_w": pa.array(box[:, 2]),
            "box_h": pa.array(box[:, 3]),
            "subject": pa.array(subject),
        }
    )
    return _Simulation(table, n_users, int(anon.sum()), n_sessions)


# --------------------------------------------------------------------------
# Strings and files
# --------------------------------------------------------------------------


class _Sql(str):
    """A SQL expression (as opposed to literal text) inside a column's parts."""


def _cents(col: str) -> _Sql:
    """An integer number of hundredths as a JSON number with two decimals."""
    return _Sql(f"({col} // 100)::VARCHAR || '.' || lpad(({col} % 100)::VARCHAR, 2, '0')")


def _ts(col: str, fmt: str) -> _Sql:
    return _Sql(f"strftime({col}, '{fmt}')")


_ISO = "%Y-%m-%dT%H:%M:%S.%gZ"
_CAMERA = _Sql("lpad((subject % 37 + 1)::VARCHAR, 2, '0')")

# Each export column: (name, parts, json). Parts are literal text and _Sql
# expressions, concatenated. Plain columns never hold a quote, comma or line
# break (checked below); JSON columns always hold quotes, so the CSV quotes them.
_COLUMNS: tuple[tuple[str, tuple, bool], ...] = (
    ("classification_id", (_Sql("cid::VARCHAR"),), False),
    ("user_name", (_Sql("user_name::VARCHAR"),), False),
    ("user_id", (_Sql("user_id::VARCHAR"),), False),
    ("user_ip", (_Sql("user_ip::VARCHAR"),), False),
    ("workflow_id", (_Sql("wf_id::VARCHAR"),), False),
    ("workflow_name", (_Sql("wf_name::VARCHAR"),), False),
    ("workflow_version", (_Sql("wf_version::VARCHAR"),), False),
    ("created_at", (_ts("created", "%Y-%m-%d %H:%M:%S UTC"),), False),
    ("gold_standard", (_Sql("CASE WHEN gold THEN 'true' END"),), False),
    ("expert", (_Sql("CASE WHEN gold THEN 'expert' END"),), False),
    (
        "metadata",
        (
            '{"source":"api","session":"',
            _Sql("session::VARCHAR"),
            '","feedback":{},"revision":"',
            _Sql("revision::VARCHAR"),
            '","viewport":{"width":',
            _Sql("vp_w::VARCHAR"),
            ',"height":',
            _Sql("vp_h::VARCHAR"),
            '},"started_at":"',
            _ts("started", _ISO),
            '","user_agent":"',
            _Sql("ua::VARCHAR"),
            '","utc_offset":"',
            _Sql("utc_offset::VARCHAR"),
            '","finished_at":"',
            _ts("finished", _ISO),
            '","live_project":true,"user_language":"',
            _Sql("lang::VARCHAR"),
            '","user_group_ids":[],"subject_flagged":',
            _Sql("CASE WHEN flagged THEN 'true' ELSE 'false' END"),
            ',"classifier_version":"2.0"}',
        ),
        True,
    ),
    ("annotations", (_Sql("{annotations}"),), True),
    (
        "subject_data",
        (
            '{"',
            _Sql("subject::VARCHAR"),
            '":{"retired":null,"#camera":"CAM',
            _CAMERA,
            '","Filename":"CAM',
            _CAMERA,
            "_IMG_",
            _Sql("lpad((subject % 10000)::VARCHAR, 4, '0')"),
            '.JPG"}}',
        ),
        True,
    ),
    ("subject_ids", (_Sql("subject::VARCHAR"),), False),
)
assert tuple(c[0] for c in _COLUMNS) == EXPORT_COLUMNS

_DRAW_LABEL = '[{"task":"T0","task_label":"Draw a box around each animal.","value":['
_ANNOTATION_BRANCHES = (
    ("kind <> 2", (_Sql("{ann}"),)),
    ("no_box", (_DRAW_LABEL + "]}]",)),
    (
        None,
        (
            _DRAW_LABEL + '{"x":',
            _cents("box_x"),
            ',"y":',
            _cents("box_y"),
            ',"tool":0,"frame":0,"width":',
            _cents("box_w"),
            ',"height":',
            _cents("box_h"),
            ',"details":[],"tool_label":"Animal"}]}]',
        ),
    ),
)

_PLAIN_VALUES = (
    [w.name for w in _WORKFLOWS]
    + [v for w in _WORKFLOWS for v in w.versions]
    + list(_NAME_HEADS)
    + list(_NAME_TAILS)
    + list(_NAME_JOINERS)
    + list(_LANGUAGES)
)
assert not any(ch in v for v in _PLAIN_VALUES for ch in '",\n\r'), "a plain field would need CSV quoting"
assert not any('"' in a or "\\" in a for dv in _USER_AGENTS for a in dv)


def _concat(parts, csv: bool) -> list[str]:
    """SQL arguments of concat() for `parts`; in CSV form literal quotes are doubled."""
    out = []
    for part in parts:
        if isinstance(part, _Sql):
            out.append(str(part))
        else:
            text = part.replace('"', '""') if csv else part
            out.append("'" + text.replace("'", "''") + "'")
    return out


def _annotations_sql(csv: bool) -> str:
    ann = "ann_csv::VARCHAR" if csv else "ann::VARCHAR"
    branches = []
    for cond, parts in _ANNOTATION_BRANCHES:
        parts = tuple(_Sql(p.replace("{ann}", ann)) if isinstance(p, _Sql) else p for p in parts)
        expr = "concat(" + ", ".join(_concat(parts, csv)) + ")"
        branches.append(f"WHEN {cond} THEN {expr}" if cond else f"ELSE {expr}")
    return "CASE " + " ".join(branches) + " END"


def _table_sql() -> str:
    """SELECT of the 14 columns as plain strings (nulls for empty fields)."""
    cols = []
    for name, parts, _ in _COLUMNS:
        args = _concat(parts, csv=False)
        expr = args[0] if len(args) == 1 else "concat(" + ", ".join(args) + ")"
        cols.append(expr.replace("{annotations}", _annotations_sql(False)) + f" AS {name}")
    return "SELECT " + ",\n    ".join(cols) + " FROM raw"


def _lines_sql() -> str:
    """SELECT of one finished CSV line per row (quoted where needed, newline-terminated)."""
    args: list[str] = []
    for i, (_, parts, is_json) in enumerate(_COLUMNS):
        if i:
            args.append("','")
        if is_json:
            args += ["'\"'"] + _concat(parts, csv=True) + ["'\"'"]
        else:
            (expr,) = _concat(parts, csv=True)
            args.append(f"coalesce({expr}, '')")
    args.append("chr(10)")
    line = "concat(" + ", ".join(args) + ")"
    return "SELECT " + line.replace("{annotations}", _annotations_sql(True)) + " AS line FROM raw"


def _connect(raw: pa.Table):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = true")
    con.execute("SET enable_progress_bar = false")
    con.register("raw", raw)
    return con


def generate_export_table(n_classifications: int, seed: int = DEFAULT_SEED) -> pa.Table:
    """The export as a pyarrow Table: the 14 columns as the CSV's strings
    (empty fields are nulls), exactly n_classifications rows sorted by created_at."""
    sim = _simulate(n_classifications, seed)
    con = _connect(sim.table)
    try:
        return con.sql(_table_sql()).to_arrow_table()
    finally:
        con.close()


def _string_bytes(array: pa.Array) -> memoryview:
    """The concatenated bytes of a (large_)string array without nulls."""
    offsets_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype=offsets_type)[array.offset : array.offset + len(array) + 1]
    return memoryview(array.buffers()[2])[int(offsets[0]) : int(offsets[-1])]


def _write(path: Path, n_classifications: int, seed: int) -> tuple[Path, _Simulation]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sim = _simulate(n_classifications, seed)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    con = _connect(sim.table)
    try:
        with open(tmp, "wb") as raw_file:
            if path.name.endswith(".gz"):
                out = gzip.GzipFile(filename="", mode="wb", fileobj=raw_file, compresslevel=6, mtime=0)
            else:
                out = raw_file
            out.write((",".join(EXPORT_COLUMNS) + "\n").encode())
            # DuckDB assembles the lines in parallel; their bytes go straight to the file
            for batch in con.sql(_lines_sql()).to_arrow_reader(65_536):
                out.write(_string_bytes(batch.column(0)))
            if out is not raw_file:
                out.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        con.close()
    return path, sim


def write_export(path: Path, n_classifications: int = DEFAULT_CLASSIFICATIONS, seed: int = DEFAULT_SEED) -> Path:
    """Write a classification export CSV (gzip when the name ends with .gz), atomically."""
    return _write(path, n_classifications, seed)[0]


def _has_export(folder: Path) -> bool:
    return any(p.is_file() and (p.name.endswith(".csv") or p.name.endswith(".csv.gz")) for p in folder.rglob("*"))


def ensure_sample_exports(folder: Path) -> Path:
    """Write the default sample export into `folder` unless it already holds an export."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not _has_export(folder):
        write_export(folder / SAMPLE_FILE_NAME)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="engagement generate",
        description="Write a synthetic Zooniverse classification export (Panoptes CSV format).",
    )
    parser.add_argument("--rows", type=int, default=DEFAULT_CLASSIFICATIONS, help="classifications to write")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument(
        "--out", type=Path, default=Path(SAMPLE_FILE_NAME), help="output file (.csv, or .csv.gz for gzip)"
    )
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    t0 = time.perf_counter()
    path, sim = _write(args.out, args.rows, args.seed)
    size = path.stat().st_size
    print(
        f"wrote {path}: {args.rows:,} classifications, {sim.n_users:,} volunteers "
        f"({sim.n_anonymous:,} not logged in), {sim.n_sessions:,} browser sessions, "
        f"{size / 1e6:,.1f} MB in {time.perf_counter() - t0:.1f}s (seed {args.seed})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
