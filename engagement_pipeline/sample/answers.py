"""What each classification records beside its times: the answer (annotation template or drawn
box), the subject, the workflow version, gold standard and flags, the front end's revision, and
the classification id."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from engagement_pipeline.sample.arrays import hex_strings
from engagement_pipeline.sample.vocabulary import (
    CALENDAR_DAYS,
    DAY_MS,
    FIRST_CLASSIFICATION_ID,
    WF_KIND,
    WORKFLOWS,
    annotation_templates,
)


@dataclass
class Answers:
    kind: np.ndarray  # workflow kind (2: drawing, assembled from the box in SQL)
    templates: list[str]
    ann_idx: np.ndarray  # index into templates, -1 for drawings
    no_box: np.ndarray
    box: np.ndarray  # (n, 4) x, y, width, height in hundredths of a pixel
    subject: np.ndarray
    version_idx: np.ndarray  # index into the flattened workflow versions
    gold: np.ndarray
    flagged: np.ndarray
    revisions: pa.Array
    rev_idx: np.ndarray
    cid: np.ndarray


def answers(rng: np.random.Generator, wf: np.ndarray, expert: np.ndarray, rows: dict[str, np.ndarray]) -> Answers:
    """Per-row details, for rows of workflow `wf` by volunteers who are `expert` (per row)."""
    n = len(wf)
    kind = WF_KIND[wf]
    templates, t_first, t_count = annotation_templates()
    ann_idx = t_first[kind] + (rng.random(n) * t_count[kind]).astype(np.int64)
    ann_idx = np.where(kind == 2, -1, ann_idx)
    box = rng.integers(0, 1_000_000, size=(n, 4)) % np.array([150_000, 60_000, 40_000, 30_000]) + np.array(
        [5_000, 5_000, 2_000, 2_000]
    )
    no_box = rng.random(n) < 0.08
    pool = max(400, n // 25)
    subject = np.array([w.subject_base for w in WORKFLOWS])[wf] + rng.integers(0, pool, n)
    version_idx = 2 * wf + (rows["created"] >= np.array([w.bump_day for w in WORKFLOWS])[wf] * DAY_MS)
    gold = expert & (rng.random(n) < 0.6)
    flagged = rng.random(n) < 0.0015
    revisions = hex_strings(rng, CALENDAR_DAYS // 5 + 2, 40)  # a deploy every 5 days
    rev_idx = rows["started"] // (5 * DAY_MS) + 1
    rev_idx = np.clip(rev_idx - (rng.random(n) < 0.05), 0, len(revisions) - 1)  # stale tabs
    # classification ids grow with time (Zooniverse-wide, ~1M a day) and are unique
    cid = FIRST_CLASSIFICATION_ID + rows["created"] // 86 + np.arange(n, dtype=np.int64)
    return Answers(kind, templates, ann_idx, no_box, box, subject, version_idx, gold, flagged, revisions, rev_idx, cid)
