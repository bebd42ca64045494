"""Who the volunteers appear to be in the export: hashed IPs, account ids and user names, languages,
the rare expert; and per browser session its id, user agent and viewport."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engagement_pipeline.sample.arrays import categorical, hex_strings
from engagement_pipeline.sample.vocabulary import (
    LANGUAGES,
    NAME_HEADS,
    NAME_JOINERS,
    NAME_TAILS,
    TIME_ZONES,
    USER_AGENTS,
    VIEWPORTS,
)


@dataclass
class Identities:
    user_ip: pa.Array  # 20 hex characters, as Zooniverse hashes it
    user_id: np.ndarray  # -1 where not logged in
    user_name: pa.Array  # "not-logged-in-<user_ip>" where not logged in
    lang: np.ndarray  # index into LANGUAGES
    expert: np.ndarray


@dataclass
class Browsers:
    session_hex: pa.Array
    ua_idx: np.ndarray  # index into the flattened USER_AGENTS
    vp_w: np.ndarray
    vp_h: np.ndarray


def _account_ids(rng: np.random.Generator, n_named: int) -> np.ndarray:
    """Unique account ids: older ones anywhere below 3.0M, new sign-ups (this summer) above."""
    new_account = rng.random(n_named) < 0.45
    ids = rng.choice(np.arange(1_000, 3_300_000), size=n_named, replace=False)
    ids = np.where(new_account, 3_000_000 + ids % 300_000, ids % 3_000_000)
    ids = np.unique(ids)  # collisions between the two ranges are rare; make sure
    if len(ids) < n_named:
        pool = np.setdiff1d(np.arange(1_000, 1_000 + 4 * n_named), ids)
        ids = np.concatenate([ids, pool[: n_named - len(ids)]])
    return rng.permutation(ids)


def _user_names(rng: np.random.Generator, n_named: int) -> pa.Array:
    """Distinct names like "amber_fox", "mossowl12": head, joiner, tail, optional number."""
    heads, tails = len(NAME_HEADS), len(NAME_TAILS)
    p = rng.choice(heads * tails * 1000, size=n_named, replace=False)
    num = p // (heads * tails)
    return pc.binary_join_element_wise(
        pa.array(np.array(NAME_HEADS, dtype=object)[p % heads], pa.string()),
        pa.array(np.array(NAME_JOINERS, dtype=object)[rng.integers(0, len(NAME_JOINERS), n_named)], pa.string()),
        pa.array(np.array(NAME_TAILS, dtype=object)[(p // heads) % tails], pa.string()),
        pa.array(np.where(num > 0, num.astype(str), ""), pa.string()),
        "",
    ).cast(pa.string())


def _languages(rng: np.random.Generator, tz: np.ndarray) -> np.ndarray:
    """Each volunteer's browser language, drawn from their time zone's languages."""
    lang = np.zeros(len(tz), dtype=np.int64)
    for t, (_, _, langs, lw) in enumerate(TIME_ZONES):  # loop over 14 time zones, not users
        sel = tz == t
        pick = categorical(rng, np.array(lw), int(sel.sum()))
        lang[sel] = np.searchsorted(LANGUAGES, np.array(langs))[pick]
    return lang


def identities(rng: np.random.Generator, anon: np.ndarray, tz: np.ndarray) -> Identities:
    n_users = len(anon)
    user_ip = hex_strings(rng, n_users, 20)
    user_id = np.full(n_users, -1, dtype=np.int64)
    user_id[~anon] = _account_ids(rng, int((~anon).sum()))
    named = _user_names(rng, int((~anon).sum()))
    anon_names = pc.binary_join_element_wise("not-logged-in-", user_ip, "")
    name_idx = np.where(anon, np.arange(n_users), n_users + np.cumsum(~anon) - 1)
    user_names = pa.concat_arrays([anon_names, named]).take(pa.array(name_idx))
    lang = _languages(rng, tz)
    expert = (~anon) & (rng.random(n_users) < 0.002)
    if n_users > 50 and not expert.any():
        expert[np.flatnonzero(~anon)[:1]] = True
    return Identities(user_ip, user_id, user_names, lang, expert)


def _flat_index(groups, group: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """Index into the flattened `groups` of item `pick % len(group)` of each row's group."""
    counts = np.array([len(g) for g in groups])
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return firsts[group] + pick % counts[group]


def browsers(rng: np.random.Generator, device: np.ndarray, device_seed: np.ndarray) -> Browsers:
    """Per browser session: a random id, and a user agent and viewport that suit the device and
    stay the same for a volunteer on that device (`device_seed`); now and then a resized window."""
    n = len(device)
    session_hex = hex_strings(rng, n, 64)
    ua_idx = _flat_index(USER_AGENTS, device, device_seed + 3 * device)
    vp_idx = _flat_index(VIEWPORTS, device, device_seed // 7)
    vp_all = np.array([v for dv in VIEWPORTS for v in dv], dtype=np.int64)
    vp_h = vp_all[vp_idx, 1] - np.where(rng.random(n) < 0.2, rng.integers(1, 120, n), 0)
    return Browsers(session_hex, ua_idx, vp_all[vp_idx, 0], vp_h)
