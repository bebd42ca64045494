"""The SQL models: every `sql/<layer>/<model>.sql` file becomes a DuckDB-backed asset.

The logic lives in the SQL files, which anyone can read; this module only
orchestrates:

* discovery: the asset key is the file stem, the description is the file's
  leading comment, and the dependencies are the tables the SELECT reads
  (DuckDB's own parser lists them, so a dependency can never be forgotten in
  a header). Every model sits in the UI group `sessions_and_labels`, tagged
  with its layer folder (staging, intermediate, marts); its column schema
  comes from binding its SQL to the ingest's empty tables, so the UI shows
  the columns before anything is materialized and they cannot drift from
  the SQL;
* building: each file is a SELECT, wrapped as `create or replace table
  <model> as ...` in one transaction, so a reader never sees a half-built
  table and a failed build leaves the previous table in place;
* run config: `SessionRules` on `sessions` (horizons, optional fixed session
  gap) reaches the SQL as DuckDB variables (`SET VARIABLE ... = ?`), never
  pasted into a statement; `labels` reads the rules back from `sessions`, so
  a user sets them once;
* asset checks on `labels` and `features`, as pure functions of a connection
  (testable on any table) wrapped by thin `dg.asset_check`s.
"""

import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from pydantic import Field

from engagement_pipeline.ingest.load import sql_text
from engagement_pipeline.resources import Warehouse

# The models live in the repository's top-level sql/ (a contract path). A wheel carries that folder
# inside the package, as engagement_pipeline/sql (pyproject.toml's package-dir), since a wheel
# installs packages only: an installed wheel finds it there, a checkout at the top.
_PACKAGE = Path(__file__).resolve().parents[1]
SQL_DIR = _PACKAGE / "sql" if (_PACKAGE / "sql").is_dir() else _PACKAGE.parent / "sql"
GROUP_NAME = "sessions_and_labels"
OWNERS = ["team:engagement"]
LAYERS = ("staging", "intermediate", "marts")
SOURCE_TABLES = frozenset({"classifications"})  # tables written by other assets that the models read
CONFIGURED_MODEL = "sessions"  # the one model that takes run config (SessionRules)
FEATURE_KEY_COLUMNS = ("classification_id", "user_key", "created_at")
NUMERIC_TYPES = frozenset({"DOUBLE", "FLOAT", "INTEGER", "BIGINT", "BOOLEAN"})

# Model names become table names in DDL (identifiers cannot be `?` parameters),
# so they are held to plain lower-case identifiers and quoted on top of that.
_MODEL_NAME = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True)
class SqlModel:
    """One `sql/<layer>/<name>.sql` file: a SELECT and what Dagster needs to know about it."""

    name: str
    layer: str
    path: Path
    sql: str
    description: str
    deps: tuple[str, ...]
    nullable_columns: tuple[str, ...] = ()

    @property
    def code_version(self) -> str:
        """Changes whenever the SQL does, so Dagster can flag the table as stale."""
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


def _leading_comment_lines(sql: str) -> list[str]:
    """The file's opening `--` lines, dashes and surrounding blanks removed."""
    lines = []
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped.startswith("--"):
            break
        lines.append(stripped[2:].strip())
    return lines


def leading_comment(sql: str) -> str:
    """The file's opening comment block: the asset's description."""
    return "\n".join(_leading_comment_lines(sql)).strip()


def nullable_columns(sql: str) -> tuple[str, ...]:
    """Columns a model declares may be NULL, from a `-- nullable: a, b` line of its leading comment."""
    for line in _leading_comment_lines(sql):
        if line.startswith("nullable:"):
            return tuple(name.strip() for name in line.removeprefix("nullable:").split(",") if name.strip())
    return ()


def referenced_tables(sql: str) -> frozenset[str]:
    """The tables a statement reads, CTE names excluded, from DuckDB's own parse tree.

    `json_serialize_sql` only parses (no binding), so this works before any
    upstream table exists, for any syntax DuckDB accepts (ASOF joins included).
    """
    with duckdb.connect() as con:
        (tree,) = con.execute("select json_serialize_sql(?)", [sql]).fetchone()
    parsed = json.loads(tree)
    if parsed.get("error"):
        raise ValueError(f"cannot parse SQL: {parsed.get('error_message', parsed)}")
    tables: set[str] = set()
    ctes: set[str] = set()
    pending: list[Any] = [parsed["statements"]]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node.get("type") == "BASE_TABLE":
                tables.add(node["table_name"])
            for entry in node.get("cte_map", {}).get("map", []):
                ctes.add(entry["key"])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return frozenset(tables - ctes)


def read_model(path: Path, sql_dir: Path = SQL_DIR) -> SqlModel:
    """Parse one model file. Dependencies are every table its SELECT reads (CTE names excluded)."""
    name = path.stem
    if not _MODEL_NAME.fullmatch(name):
        raise ValueError(f"{path}: a model file name must be a lower-case identifier, got {name!r}")
    layer = path.relative_to(sql_dir).parts[0]
    if layer not in LAYERS:
        raise ValueError(f"{path}: models live in one of {LAYERS}, not {layer!r}")
    sql = path.read_text()
    description = leading_comment(sql)
    if not description:
        raise ValueError(f"{path}: start the model with a `--` comment saying what it holds")
    deps = tuple(sorted(referenced_tables(sql)))
    return SqlModel(name, layer, path, sql, description, deps, nullable_columns(sql))


def discover_models(sql_dir: Path = SQL_DIR) -> list[SqlModel]:
    """Every model under `sql_dir`, in dependency order (each after everything it reads).

    Fails loudly on a duplicate name, a cycle, or a table that is neither a
    model nor a known source: better a code location that does not load than
    a pipeline that reads a stale or missing table.
    """
    models: dict[str, SqlModel] = {}
    for path in sorted(sql_dir.rglob("*.sql")):
        model = read_model(path, sql_dir)
        if model.name in models:
            raise ValueError(f"two models named {model.name!r}: {models[model.name].path} and {path}")
        models[model.name] = model
    for model in models.values():
        unknown = set(model.deps) - models.keys() - SOURCE_TABLES
        if unknown:
            raise ValueError(f"{model.path} reads {sorted(unknown)}: neither a model nor a source table")
    graph = {name: [dep for dep in model.deps if dep in models] for name, model in models.items()}
    return [models[name] for name in TopologicalSorter(graph).static_order()]


def models_for(targets: Sequence[str], models: Sequence[SqlModel] | None = None) -> list[SqlModel]:
    """The models `targets` need (themselves and every model upstream), in dependency order."""
    models = list(models or project_models().values())
    by_name = {model.name: model for model in models}
    needed: set[str] = set()
    pending = list(targets)
    while pending:
        name = pending.pop()
        if name in by_name and name not in needed:
            needed.add(name)
            pending.extend(by_name[name].deps)
    return [model for model in models if model.name in needed]


def _table_schema(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return con.execute(
        "select column_name, data_type from duckdb_columns() "
        "where table_name = ? and schema_name = current_schema() order by column_index",
        [table],
    ).fetchall()


def build_model(con: duckdb.DuckDBPyConnection, model: SqlModel, variables: Mapping[str, Any] | None = None) -> int:
    """(Re)build `model`'s table in one transaction; return its row count.

    `variables` are set as DuckDB variables (`SET VARIABLE name = ?`) for the
    SQL to read with `getvariable('name')`.
    """
    for name, value in (variables or {}).items():
        if not _MODEL_NAME.fullmatch(name):
            raise ValueError(f"not a variable name: {name!r}")
        con.execute(f"set variable {name} = ?", [value])
    present = {name for (name,) in con.execute("select table_name from duckdb_tables()").fetchall()}
    missing = [dep for dep in model.deps if dep not in present]
    if missing:
        raise MissingUpstreamError(
            f"{model.name} reads {', '.join(missing)}, which the warehouse does not have yet: materialize its "
            f"upstream assets first, e.g. --select '*{model.name}' (a leading + selects one layer only)."
        )
    con.execute("begin transaction")
    try:
        con.execute(f'create or replace table "{model.name}" as\n{model.sql}')
        (rows,) = con.execute(f'select count(*) from "{model.name}"').fetchone()
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return rows


class MissingUpstreamError(RuntimeError):
    """A model was built before the tables it reads."""


class SessionRules(dg.Config):
    """How classifications form work sessions and which horizons get labels (CONTRACT.md).

    Set on `sessions`; `labels` reads the rules back from that table.
    """

    horizons: list[int] = Field(
        default=[10, 20, 30],
        description="Label horizons W in minutes: does the volunteer keep working W minutes from now?",
    )
    session_gap_minutes: int | None = Field(
        default=None,
        description="A fixed session gap for all horizons; by default a session breaks at a gap of W minutes.",
    )

    def sql_variables(self) -> dict[str, Any]:
        """The rules as DuckDB variables, after checking they make sense."""
        if not self.horizons:
            raise ValueError("horizons must name at least one horizon")
        if min(self.horizons) <= 0 or len(set(self.horizons)) != len(self.horizons):
            raise ValueError(f"horizons must be distinct positive minutes, got {self.horizons}")
        if self.session_gap_minutes is not None and self.session_gap_minutes <= 0:
            raise ValueError(f"session_gap_minutes must be positive, got {self.session_gap_minutes}")
        return {"horizons": list(self.horizons), "session_gap_minutes": self.session_gap_minutes}


def build_models(
    con: duckdb.DuckDBPyConnection,
    models: Sequence[SqlModel] | None = None,
    rules: SessionRules | None = None,
) -> dict[str, int]:
    """Build `models` (default: all, in dependency order) under `rules` (default: SessionRules()); rows by model.

    What the assets do, without Dagster: for tests, benchmarks and notebooks.
    """
    variables = (rules or SessionRules()).sql_variables()
    return {model.name: build_model(con, model, variables) for model in (models or discover_models())}


def declared_schemas(models: Sequence[SqlModel]) -> dict[str, list[tuple[str, str]]]:
    """Each model's (column, type) list, from building `models` (all, in dependency order) on empty sources.

    The SQL files are the one place the columns are written; building them in
    memory on the ingest's empty tables takes a fraction of a second, needs
    no data, and gives exactly the types a real build produces.
    """
    with duckdb.connect() as con:
        con.execute("set TimeZone = 'UTC'")
        con.execute(sql_text("schema"))  # the tables the models read, as the ingest creates them
        build_models(con, models)
        return {model.name: _table_schema(con, model.name) for model in models}


def column_schema(columns: Sequence[tuple[str, str]], nullable: Sequence[str] | None = None) -> dg.TableSchema:
    """A Dagster column schema; with `nullable` (a model's `-- nullable:` line) every other column is NOT NULL."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name,
                data_type,
                constraints=None if nullable is None else dg.TableColumnConstraints(nullable=name in nullable),
            )
            for name, data_type in columns
        ]
    )


def _nullable_or_unknown(model: SqlModel) -> tuple[str, ...] | None:
    """The model's declared nullable columns, or None when it declares none (nullability unknown)."""
    return model.nullable_columns or None


def _materialize(
    context: dg.AssetExecutionContext, warehouse: Warehouse, model: SqlModel, variables: Mapping[str, Any]
) -> dg.MaterializeResult:
    with warehouse.connect(log=context.log) as con:
        rows = build_model(con, model, variables)
        schema = _table_schema(con, model.name)
    metadata: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(rows),
        "dagster/column_schema": column_schema(schema, _nullable_or_unknown(model)),
        "sql_file": dg.MetadataValue.path(str(model.path)),
    }
    metadata.update({key: dg.MetadataValue.json(value) for key, value in variables.items()})
    return dg.MaterializeResult(metadata=metadata)


def sql_model_asset(model: SqlModel, columns: Sequence[tuple[str, str]] = ()) -> dg.AssetsDefinition:
    """The Dagster asset that builds `model`'s table; `columns` (from `declared_schemas`) become its column schema."""
    spec = dict(
        name=model.name,
        deps=[dg.AssetKey(dep) for dep in model.deps],
        group_name=GROUP_NAME,
        kinds={"duckdb"},
        owners=OWNERS,
        tags={"layer": model.layer},
        description=model.description,
        code_version=model.code_version,
        metadata={"dagster/column_schema": column_schema(columns, _nullable_or_unknown(model))} if columns else None,
    )
    if model.name == CONFIGURED_MODEL:

        @dg.asset(**spec)
        def configured_model(
            context: dg.AssetExecutionContext, config: SessionRules, warehouse: Warehouse
        ) -> dg.MaterializeResult:
            try:
                variables = config.sql_variables()
            except ValueError as error:
                raise dg.Failure(description=str(error)) from error
            return _materialize(context, warehouse, model, variables)

        return configured_model

    @dg.asset(**spec)
    def sql_model(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        return _materialize(context, warehouse, model, {})

    return sql_model


# ---------------------------------------------------------------------------
# Checks: pure functions of a connection, then thin asset checks around them.


def label_base_rates(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    """Every horizon of `sessions` has labels, and both outcomes occur (a base rate of 0 or 1 makes AUC meaningless)."""
    rows = con.execute(
        """
        with horizons as (select distinct horizon_minutes from sessions)
        select horizons.horizon_minutes, count(labels.continues), avg(labels.continues::double)
        from horizons left join labels using (horizon_minutes)
        group by horizons.horizon_minutes
        order by horizons.horizon_minutes
        """
    ).fetchall()
    rates = {f"{horizon}m": rate for horizon, _, rate in rows}
    counts = {f"{horizon}m": count for horizon, count, _ in rows}
    bad = [key for key, rate in rates.items() if rate is None or not 0 < rate < 1]
    return dg.AssetCheckResult(
        passed=bool(rows) and not bad,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "base_rates": dg.MetadataValue.json(rates),
            "labelled_rows": dg.MetadataValue.json(counts),
            "degenerate_horizons": dg.MetadataValue.json(bad),
        },
    )


def labels_unique(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    """No (classification_id, horizon_minutes) appears twice in `labels`."""
    (duplicates,) = con.execute(
        """
        select count(*) from (
            select classification_id, horizon_minutes from labels
            group by all having count(*) > 1
        )
        """
    ).fetchone()
    return dg.AssetCheckResult(passed=duplicates == 0, metadata={"duplicated_keys": duplicates})


def feature_nulls(con: duckdb.DuckDBPyConnection, nullable: Sequence[str]) -> dg.AssetCheckResult:
    """Only the features whose contract allows NULL (`-- nullable:` in features.sql) have any."""
    con.execute("set variable nullable_features = ?", [list(nullable)])
    null_counts = dict(
        con.execute(
            """
            unpivot (
                select count(*) - count(columns(lambda c: not list_contains(getvariable('nullable_features'), c)))
                from features
            ) on columns(*) into name feature value null_rows
            """
        ).fetchall()
    )
    offenders = {name: count for name, count in null_counts.items() if count}
    return dg.AssetCheckResult(
        passed=not offenders,
        metadata={
            "unexpected_nulls": dg.MetadataValue.json(offenders),
            "nullable_features": dg.MetadataValue.json(list(nullable)),
        },
    )


def features_one_row_per_classification(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    """`features` holds each classification exactly once, and nothing else."""
    feature_rows, distinct_ids, classifications, missing = con.execute(
        """
        select
            (select count(*) from features),
            (select count(distinct classification_id) from features),
            (select count(*) from classifications),
            (select count(*) from classifications anti join features using (classification_id))
        """
    ).fetchone()
    return dg.AssetCheckResult(
        passed=feature_rows == distinct_ids == classifications and missing == 0,
        metadata={
            "feature_rows": feature_rows,
            "distinct_classification_ids": distinct_ids,
            "classifications": classifications,
            "classifications_without_features": missing,
        },
    )


def feature_columns_numeric(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    """The three key columns come first, then numeric features only (training uses every later column)."""
    schema = _table_schema(con, "features")
    keys = tuple(name for name, _ in schema[: len(FEATURE_KEY_COLUMNS)])
    not_numeric = {name: kind for name, kind in schema[len(FEATURE_KEY_COLUMNS) :] if kind not in NUMERIC_TYPES}
    return dg.AssetCheckResult(
        passed=keys == FEATURE_KEY_COLUMNS and not not_numeric,
        metadata={
            "key_columns": dg.MetadataValue.json(list(keys)),
            "non_numeric_features": dg.MetadataValue.json(not_numeric),
            "n_features": len(schema) - len(FEATURE_KEY_COLUMNS),
        },
    )


@functools.cache
def project_models() -> dict[str, SqlModel]:
    """The project's models by name, discovered once on first use (importing this module reads no SQL)."""
    return {model.name: model for model in discover_models()}


# A horizon with one outcome is a fact about the data, not a broken table: the check
# warns and training decides (it trains the horizons it can, or says which one it cannot).
@dg.asset_check(asset="labels", blocking=False, description=label_base_rates.__doc__)
def labels_base_rate_per_horizon(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as con:
        return label_base_rates(con)


@dg.asset_check(asset="labels", blocking=True, description=labels_unique.__doc__)
def labels_no_duplicate_keys(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as con:
        return labels_unique(con)


@dg.asset_check(asset="features", blocking=True, description=feature_nulls.__doc__)
def features_nulls_only_where_allowed(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as con:
        return feature_nulls(con, project_models()["features"].nullable_columns)


@dg.asset_check(asset="features", blocking=True, description=features_one_row_per_classification.__doc__)
def features_exactly_one_row_per_classification(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as con:
        return features_one_row_per_classification(con)


@dg.asset_check(asset="features", blocking=True, description=feature_columns_numeric.__doc__)
def features_numeric_after_keys(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as con:
        return feature_columns_numeric(con)


@functools.cache
def sql_model_assets() -> tuple[dg.AssetsDefinition, ...]:
    """One asset per model, with the column schema of its SQL (built once, in memory, on empty source tables)."""
    models = list(project_models().values())
    schemas = declared_schemas(models)
    return tuple(sql_model_asset(model, schemas[model.name]) for model in models)


sql_model_checks: list[dg.AssetChecksDefinition] = [
    labels_base_rate_per_horizon,
    labels_no_duplicate_keys,
    features_nulls_only_where_allowed,
    features_exactly_one_row_per_classification,
    features_numeric_after_keys,
]
