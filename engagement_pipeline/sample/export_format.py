"""The export's 14 columns as one SQL definition over the simulation's table: the same parts give
`table_sql()` (the columns as plain strings, nulls for empty fields) and `lines_sql()` (finished CSV
lines). Only the JSON columns need CSV quotes: they always hold quotes, plain columns never hold a
quote, comma or line break (checked at import)."""

from __future__ import annotations

from engagement_pipeline.sample.vocabulary import (
    LANGUAGES,
    NAME_HEADS,
    NAME_JOINERS,
    NAME_TAILS,
    USER_AGENTS,
    WORKFLOWS,
)

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
    [w.name for w in WORKFLOWS]
    + [v for w in WORKFLOWS for v in w.versions]
    + list(NAME_HEADS)
    + list(NAME_TAILS)
    + list(NAME_JOINERS)
    + list(LANGUAGES)
)
assert not any(ch in v for v in _PLAIN_VALUES for ch in '",\n\r'), "a plain field would need CSV quoting"
assert not any('"' in a or "\\" in a for dv in USER_AGENTS for a in dv)


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


def table_sql() -> str:
    """SELECT of the 14 columns as plain strings (nulls for empty fields)."""
    cols = []
    for name, parts, _ in _COLUMNS:
        args = _concat(parts, csv=False)
        expr = args[0] if len(args) == 1 else "concat(" + ", ".join(args) + ")"
        cols.append(expr.replace("{annotations}", _annotations_sql(False)) + f" AS {name}")
    return "SELECT " + ",\n    ".join(cols) + " FROM raw"


def lines_sql() -> str:
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
