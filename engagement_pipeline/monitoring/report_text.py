"""The morning report's words: the sentences a project team reads first, each naming the day it is about.

Four answers, in this order: how many volunteers were active; who is most
likely to drift away, by a rule relative to the project (the lowest tenth of
P(still working) over the project's recent scored days); whether the model
did as well on the latest day with known outcomes as it did in testing; and
whether the day's inputs look like the training data. Numbers with intervals
and metric names belong to the page's details section, not here.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

HASHED_PREFIX = "h:"  # keys of volunteers who were not logged in, or of an export without user_id


@dataclass(frozen=True)
class DriftAwayRule:
    """Who counts as likely to drift away: P(continue) at `horizon` at or below `threshold`.

    `threshold` is the `quantile` of that probability over every volunteer-day
    scored from `first_day` to the report's day (`volunteer_days` of them),
    so a volunteer is flagged relative to the project's usual, not to 0.5.
    """

    horizon: int
    threshold: float
    quantile: float
    volunteer_days: int
    first_day: str
    day: str

    def words(self) -> str:
        share = "tenth" if abs(self.quantile - 0.1) < 1e-9 else f"{self.quantile:.0%}"
        period = f"{self.first_day} to {self.day}" if self.first_day != self.day else self.day
        return (
            f"the lowest {share} of P(still working {self.horizon} minutes after their last classification) among the "
            f"{self.volunteer_days:,} volunteer-days scored from {period}: at or below {self.threshold:.3f}"
        )


def contactable(user_keys: list[str]) -> np.ndarray:
    """Which keys a project can reach: Zooniverse user ids. `h:` keys are salted hashes of names."""
    return np.array([not str(key).startswith(HASHED_PREFIX) for key in user_keys], dtype=bool)


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def activity_sentence(day: str, active: int, classifications: int) -> str:
    if not active:
        return f"On {day} no volunteer classified."
    return (
        f"On {day}, {plural(active, 'volunteer was', 'volunteers were')} active ({classifications:,} classifications)."
    )


def drift_away_sentence(day: str, rule: DriftAwayRule, flagged: int, reachable: int) -> str:
    if not flagged:
        return f"On {day} no volunteer was unusually likely to drift away (rule: {rule.words()})."
    hashed = flagged - reachable
    if not hashed:
        who = "all have a Zooniverse user id and are listed below" if flagged > 1 else "listed below"
    elif reachable:
        who = (
            f"{reachable:,} with a Zooniverse user id {'is' if reachable == 1 else 'are'} listed below; "
            f"{plural(hashed, 'was', 'were')} not logged in (or the export has no user_id), and this export gives "
            "no way to contact them"
        )
    else:
        who = (
            f"none has a Zooniverse user id: {'it was' if hashed == 1 else 'they were'} not logged in (or the "
            "export has no user_id), and this export gives no way to contact them"
        )
    return (
        f"{plural(flagged, 'volunteer')} active on {day} {'is' if flagged == 1 else 'are'} the most likely to drift "
        f"away: {who}. Rule: {rule.words()}."
    )


def join_minutes(horizons: list[int]) -> str:
    names = [f"{w}" for w in horizons]
    return (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]) + " minutes"


def quality_sentence(realized) -> str:
    """Did the model do as well as tested on the latest day whose outcomes are known? In words."""
    if realized.day is None or realized.note:
        return f"How well the model did is not known yet: {realized.note or 'no day has known outcomes'}."
    judged = [w for w in realized.horizons if realized.judged(w)]
    day = f"On {realized.day}, the latest day whose outcomes are all known"
    if not judged:
        return f"{day}, too few volunteers stopped or went on to judge the model."
    worse = [w for w in realized.below_test if w in judged]
    better = [
        w
        for w in judged
        if w in realized.test and np.isfinite(realized.test[w][2]) and realized.realized[w][1] > realized.test[w][2]
    ]
    unjudged = [w for w in realized.horizons if w not in judged]
    tail = f" (not judged at {join_minutes(unjudged)}: too few known outcomes)" if unjudged else ""
    if worse:
        rest = [w for w in judged if w not in worse]
        also = f"; as tested at {join_minutes(rest)}" if rest else ""
        return (
            f"{day}, the model did worse than tested at {join_minutes(worse)}{also}{tail}. Its warnings "
            "about who will stop were less reliable that day."
        )
    if better:
        return f"{day}, the model did as well as tested, better at {join_minutes(better)}{tail}."
    return f"{day}, the model did as well as tested{tail}."


def inputs_sentence(day: str, drift, reference_note: str) -> str:
    """Do the day's inputs look like the training data? In words."""
    if drift is None:
        return f"Whether the inputs of {day} look like the training data is not known: {reference_note}"
    if not drift.enough_rows:
        return (
            f"The inputs of {day} were not compared with the training data: {drift.n_rows:,} classifications, "
            f"fewer than the {drift.min_rows:,} needed."
        )
    moved = drift.offending
    if not moved:
        return f"The inputs of {day} look like the training data."
    names = ", ".join(d.name for d in moved[:4]) + (" ..." if len(moved) > 4 else "")
    return (
        f"The inputs of {day} differ from the training data in {plural(len(moved), 'input')} ({names}): the "
        "predictions of that day may be less reliable."
    )


def interval_text(estimate: float, low: float, high: float) -> str:
    """'0.48 (0.35 to 0.60)', or 'none' when not computed."""
    if not np.isfinite(estimate):
        return "none"
    if not (np.isfinite(low) and np.isfinite(high)) or (low == estimate == high):
        return f"{estimate:.2f}"
    return f"{estimate:.2f} ({low:.2f} to {high:.2f})"


def table_html(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def details_html(details: dict) -> str:
    """Numbers, intervals and metric names: for whoever wants to check the sentences above."""
    numbers = "".join(
        f"<span>{html.escape(k)}<br><b>{html.escape(v)}</b></span>" for k, v in details["numbers"].items()
    )
    realized = details["realized"]
    realized_rows = [
        [f"{w} min", interval_text(*realized.realized.get(w, (np.nan,) * 3)),
         interval_text(*realized.test.get(w, (np.nan,) * 3)), f"{realized.known_outcomes.get(w, 0):,}"]
        for w in realized.horizons
    ]  # fmt: skip
    drift = details["drift"]
    drift_rows = [
        [d.name, f"{d.psi:.3f}", f"{d.limit:.3f}", "moved" if d.drifted else ("yes" if d.judged else d.why_not_judged)]
        for d in (drift.inputs if drift is not None else [])
    ]
    hashed = details["hashed"]
    parts = [
        f'<div class="numbers">{numbers}</div>',
        f"<h3>Realized quality on {html.escape(str(realized.day or 'no day yet'))}</h3>",
        table_html(["horizon", "ROC-AUC that day (95% interval)", "ROC-AUC in testing (interval)", "known outcomes"],
                   realized_rows),
        f'<p class="note">{html.escape(details["quality_note"])}</p>',
    ]  # fmt: skip
    if drift_rows:
        parts += [
            "<h3>Input drift (population stability index)</h3>",
            table_html(["input", "PSI", "limit", "judged"], drift_rows),
        ]
    if hashed:
        parts += [
            f"<h3>Likely to drift away, not contactable from this export ({len(hashed):,})</h3>",
            f'<p class="note">{html.escape(", ".join(hashed))}</p>',
        ]
    return "".join(parts)
