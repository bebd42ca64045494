"""From a seed to one table of classifications: simulate volunteers in batches until there are
enough rows, keep the first n, sort them by `created_at`, and add who, where and what to each row.

The result is numeric and dictionary columns (one row per classification); `export_format` turns
them into the export's text."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from engagement_pipeline.sample.answers import Answers, answers
from engagement_pipeline.sample.identities import Browsers, Identities, browsers, identities
from engagement_pipeline.sample.shapes import DEFAULT_SHAPE, Batch, Shape, shape_named
from engagement_pipeline.sample.vocabulary import (
    LANGUAGES,
    START_EPOCH_MS,
    TZ_LOCAL_MINUS_UTC_MIN,
    USER_AGENTS,
    WORKFLOWS,
)


@dataclass
class Simulation:
    table: pa.Table  # numeric/dictionary columns, one row per classification, sorted
    n_users: int
    n_anonymous: int
    n_sessions: int


def _batches(rng: np.random.Generator, n: int, shape: Shape) -> list[Batch]:
    batches, have = [], 0
    while have < n:
        need = n - have
        batch = shape.simulate_batch(rng, int(np.ceil(need / shape.rows_per_user * 1.15)) + 20)
        batches.append(batch)
        have += len(batch["rows"]["created"])
    return batches


def _concatenate(batches: list[Batch], n: int) -> tuple[dict, dict, dict]:
    """Concatenate batches (user and session indices made global), then keep the first n rows in
    user order: the last user's last session is cut short."""
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
    u = {k: np.concatenate(v) for k, v in users.items()}
    s = {k: np.concatenate(v) for k, v in sessions.items()}
    r = {k: np.concatenate(v)[:n] for k, v in rows.items()}
    return u, s, r


def _sort_and_compact(u: dict, s: dict, r: dict) -> tuple[dict, dict, dict]:
    """Rows by created_at (stable: ties keep user/session order); only sessions and users present."""
    order = np.argsort(r["created"], kind="stable")
    r = {k: v[order] for k, v in r.items()}
    used_s = np.zeros(len(s["user"]), dtype=bool)
    used_s[r["session"]] = True
    r["session"] = (np.cumsum(used_s) - 1)[r["session"]]
    s = {k: v[used_s] for k, v in s.items()}
    used_u = np.zeros(len(u["anon"]), dtype=bool)
    used_u[s["user"]] = True
    s["user"] = (np.cumsum(used_u) - 1)[s["user"]]
    u = {k: v[used_u] for k, v in u.items()}
    return u, s, r


def _dictionary(indices: np.ndarray, values) -> pa.DictionaryArray:
    if not isinstance(values, pa.Array):
        values = pa.array(list(values), pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32)), values)


def _table(u: dict, s: dict, r: dict, who: Identities, browser: Browsers, what: Answers) -> pa.Table:
    """The columns `export_format` renders, one row per classification."""
    s_of = r["session"]
    u_of = s["user"][s_of]
    wf = s["wf"][s_of]
    ann_indices = pa.array(what.ann_idx.astype(np.int32), mask=what.ann_idx < 0)
    ts = pa.timestamp("ms", tz="UTC")
    columns = {
        "cid": pa.array(what.cid),
        "user_name": _dictionary(u_of, who.user_name),
        "user_id": pa.array(who.user_id[u_of], mask=u["anon"][u_of]),
        "user_ip": _dictionary(u_of, who.user_ip),
        "wf_id": _dictionary(wf, [str(w.workflow_id) for w in WORKFLOWS]),
        "wf_name": _dictionary(wf, [w.name for w in WORKFLOWS]),
        "wf_version": _dictionary(what.version_idx, [v for w in WORKFLOWS for v in w.versions]),
        "created": pa.array(r["created"] + START_EPOCH_MS, ts),
        "started": pa.array(r["started"] + START_EPOCH_MS, ts),
        "finished": pa.array(r["finished"] + START_EPOCH_MS, ts),
        "gold": pa.array(what.gold),
        "session": _dictionary(s_of, browser.session_hex),
        "revision": _dictionary(what.rev_idx, what.revisions),
        "vp_w": pa.array(browser.vp_w[s_of]),
        "vp_h": pa.array(browser.vp_h[s_of]),
        "ua": _dictionary(browser.ua_idx[s_of], [a for dv in USER_AGENTS for a in dv]),
        "utc_offset": _dictionary(u["tz"][u_of], [str(-m * 60) for m in TZ_LOCAL_MINUS_UTC_MIN]),
        "lang": _dictionary(who.lang[u_of], LANGUAGES),
        "flagged": pa.array(what.flagged),
        "kind": pa.array(what.kind.astype(np.int8)),
        "ann": pa.DictionaryArray.from_arrays(ann_indices, pa.array(what.templates, pa.string())),
        "ann_csv": pa.DictionaryArray.from_arrays(
            ann_indices, pa.array([t.replace('"', '""') for t in what.templates], pa.string())
        ),
        "no_box": pa.array(what.no_box),
        **{f"box_{c}": pa.array(what.box[:, i]) for i, c in enumerate("xywh")},
        "subject": pa.array(what.subject),
    }
    return pa.table(columns)


def simulate(n_classifications: int, seed: int, shape: str = DEFAULT_SHAPE) -> Simulation:
    """Exactly n_classifications rows from volunteers of the named shape, deterministic for `seed`."""
    if n_classifications < 1:
        raise ValueError("n_classifications must be at least 1")
    rng = np.random.default_rng(seed)
    u, s, r = _concatenate(_batches(rng, n_classifications, shape_named(shape)), n_classifications)
    u, s, r = _sort_and_compact(u, s, r)
    who = identities(rng, u["anon"], u["tz"])
    browser = browsers(rng, s["device"], u["device_seed"][s["user"]])
    u_of = s["user"][r["session"]]
    what = answers(rng, s["wf"][r["session"]], who.expert[u_of], r)
    table = _table(u, s, r, who, browser, what)
    return Simulation(table, len(u["anon"]), int(u["anon"].sum()), len(s["user"]))
