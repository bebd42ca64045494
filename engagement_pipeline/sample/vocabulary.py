"""The project the sample pretends to be: its calendar, workflows, devices, browsers, time zones,
languages, user names and annotation answers. Constant tables only; the behaviour is elsewhere."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np

# The calendar: fixed, independent of today's date. Times inside the simulation are
# int64 ms since its start.
CALENDAR_START = "2025-06-01"
CALENDAR_DAYS = 106  # up to 2025-09-15 00:00 UTC (exclusive)
DAY_MS = 86_400_000
START_EPOCH_MS = int(dt.datetime.fromisoformat(CALENDAR_START).replace(tzinfo=dt.UTC).timestamp()) * 1000
END_MS = CALENDAR_DAYS * DAY_MS
MIN_SESSION_GAP_MS = 35 * 60_000  # > the largest label horizon (30 min)
FIRST_CLASSIFICATION_ID = 640_000_000


@dataclass(frozen=True)
class Workflow:
    workflow_id: int
    name: str
    kind: int  # 0 question, 1 survey, 2 drawing, 3 transcription
    median_s: float  # median task duration for an average volunteer on a desktop
    weight: float  # share of volunteers whose main workflow it is
    versions: tuple[str, str]  # before / after the version bump
    bump_day: int  # day (from the calendar start) of the bump
    subject_base: int


WORKFLOWS = (
    Workflow(24113, "Animal or no animal?", 0, 5.5, 0.33, ("3.12", "4.1"), 41, 104_210_000),
    Workflow(24114, "Identify the species", 1, 21.0, 0.40, ("18.47", "19.2"), 63, 104_290_000),
    Workflow(25890, "Draw boxes around the animals", 2, 36.0, 0.16, ("6.9", "6.11"), 22, 104_370_000),
    Workflow(26021, "Transcribe the camera labels", 3, 68.0, 0.11, ("2.30", "2.30"), 999, 104_450_000),
)
WF_MEDIAN_S = np.array([w.median_s for w in WORKFLOWS])
WF_WEIGHT = np.array([w.weight for w in WORKFLOWS])
WF_KIND = np.array([w.kind for w in WORKFLOWS])

# device classes: 0 desktop, 1 mobile, 2 tablet
DEVICE_WEIGHT = np.array([0.55, 0.35, 0.10])
# duration factor [device, workflow kind]: drawing and typing are slow on a phone
DEVICE_SPEED = np.array(
    [
        [1.00, 1.00, 1.00, 1.00],
        [0.90, 1.10, 1.35, 1.50],
        [0.95, 1.05, 1.15, 1.30],
    ]
)
DEVICE_SESSION_MU = np.array([0.0, -0.25, -0.10])

USER_AGENTS = (
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
VIEWPORTS = (
    ((1920, 953), (1536, 730), (1440, 789), (1715, 1064), (1280, 632), (2560, 1305), (1366, 641)),
    ((390, 664), (393, 727), (412, 781), (375, 629), (360, 668), (430, 740)),
    ((820, 1080), (1024, 1242), (768, 954), (800, 1181)),
)

# Time zones in summer: (local - UTC in minutes, weight, languages, language weights)
TIME_ZONES = (
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
TZ_LOCAL_MINUS_UTC_MIN = np.array([tz[0] for tz in TIME_ZONES], dtype=np.int64)
TZ_WEIGHT = np.array([tz[1] for tz in TIME_ZONES])
LANGUAGES = tuple(sorted({lang for tz in TIME_ZONES for lang in tz[2]}))

NAME_HEADS = tuple(
    (
        "amber arctic autumn blue bright cedar clever coral crimson dusty eager ember fern forest gentle "
        "golden granite hazel honey indigo ivy jade juniper kestrel lunar maple marsh meadow misty moss night "
        "north ocean olive pebble pine prairie quiet rainy river rowan rusty sage savanna silver sky snowy "
        "solar spruce star stone storm sunny swift thistle tidal willow winter wild zephyr anna ben carla "
        "dave elena farid greta hiro ines jonas kate liam maya nils omar priya rosa sam tomas yuki"
    ).split()
)
NAME_TAILS = tuple(
    (
        "badger bat bear beetle birder crane deer eagle falcon finch fox gazelle gecko hare hawk heron ibis "
        "impala jackal kudu lark lemur lion lynx marten mole moth newt otter owl panda pika puffin quail "
        "raven robin seal shrike sloth spotter stoat stork swan tern tiger toad vole walker watcher wren "
        "smith jones garcia muller rossi tanaka kumar silva novak berg"
    ).split()
)
NAME_JOINERS = ("", "", "_", ".", "-")

# months a camera-trap date can show in the transcription workflow
TRANSCRIBED_MONTHS = ("May", "Jun", "Jul", "Aug", "Sep", "Oct")
SURVEY_CHOICES = tuple(
    (
        "ZEBRA WILDEBEEST IMPALA GAZELLETHOMSONS ELEPHANT GIRAFFE BUFFALO WARTHOG LIONFEMALE HYENASPOTTED "
        "BABOON HARTEBEEST TOPI HUMAN"
    ).split()
)
SURVEY_COUNTS = ("1", "2", "3", "4", "5", "610", "MANY")


def annotation_templates() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Finished annotation JSON for the question, survey and transcription
    workflows (drawings are assembled from coordinates in SQL).

    Returns (templates, first index per kind, count per kind).
    """
    per_kind: list[list[str]] = [[], [], [], []]
    q = '[{"task":"T0","task_label":"Is there an animal in this image?","value":"%s"}]'
    per_kind[0] = [q % "Yes", q % "Yes", q % "Yes", q % "No", q % "No"]
    for choice in SURVEY_CHOICES:
        for count in SURVEY_COUNTS:
            for young in ("NO", "NO", "YES"):
                answer = {"choice": choice, "answers": {"HOWMANY": count, "YOUNGPRESENT": young}, "filters": {}}
                per_kind[1].append(json.dumps([{"task": "T0", "value": [answer]}], separators=(",", ":")))
    per_kind[1].append('[{"task":"T0","value":[{"choice":"NOTHINGHERE","answers":{},"filters":{}}]}]')
    t = (
        '[{"task":"T0","task_label":"Transcribe the date and time printed on the image.","value":"%s"},'
        '{"task":"T1","task_label":"Which camera is it? (the code after CAM)","value":"%s"}]'
    )
    for day in range(1, 29):
        for month in TRANSCRIBED_MONTHS:
            for camera in ("A03", "B11", "C07", "D14", "E02", "F09"):
                per_kind[3].append(t % (f"{day:02d} {month} 2024 {6 + day % 13:02d}:{(day * 7) % 60:02d}", camera))
    templates = [s for kind in per_kind for s in kind]
    counts = np.array([len(k) for k in per_kind], dtype=np.int64)
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return templates, firsts, counts
