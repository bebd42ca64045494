"""The package's shape: a folder per domain, no import circles, and a wheel that carries what the code reads.

The import graph is read from the source (every `import` and `from ... import`,
inside functions too, and the parent package that importing a submodule runs),
so a circle that only a lazy import closes is caught as well. `.ci/run` builds
the wheel and runs the pipeline from it; these tests keep pyproject.toml's
package list and SQL data in step with the tree, which is what the wheel is
built from.
"""

import ast
import graphlib
import tomllib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "engagement_pipeline"
REPO = PACKAGE.parent
DOMAINS = {"ingest", "transform", "model", "scoring", "serving", "monitoring", "ops", "sample"}
SHARED = {"settings", "resources", "partitions", "ops"}  # what every domain may import
AGGREGATORS = {"engagement_pipeline.definitions", "engagement_pipeline.cli"}  # they assemble the domains


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that importing `path` (or calling its functions) imports.

    Importing a.b.c runs a.b's __init__ first, so a.b counts too, unless the importer is inside a.b
    (then a.b is already being imported: Python's own order, not a circle).
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engagement_pipeline"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("engagement_pipeline"))
    with_parents = set()
    for name in found:
        parts = name.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return {m for m in with_parents if m in modules and not name.startswith(m + ".")}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) - {name} for name, path in modules.items()}


def domain_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in DOMAINS) else None


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        raise AssertionError(f"import circle: {' -> '.join(error.args[1])}") from None


def test_a_domain_never_imports_another_domains_definitions():
    crossings = []
    for module, imported in import_graph().items():
        if module in AGGREGATORS:
            continue
        own = domain_of(module)
        for target in imported:
            other = domain_of(target)
            leaf = target.rsplit(".", 1)[-1]
            if other and other != own and other not in SHARED and leaf in {"assets", "definitions"}:
                crossings.append(f"{module} imports {target}")
    assert not crossings, crossings


def test_the_shared_layer_imports_no_domain():
    graph = import_graph()
    for name in ("settings", "resources", "partitions"):
        module = f"engagement_pipeline.{name}"
        domains = {domain_of(target) for target in graph[module]} - {None} - SHARED
        assert not domains, f"{module} imports {domains}"
    assert not graph["engagement_pipeline.settings"], "settings.py imports nothing of the package"


def test_every_domain_has_its_definitions():
    for domain in DOMAINS - {"sample"}:
        assert (PACKAGE / domain / "definitions.py").is_file(), domain


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_the_wheel_lists_every_package_and_its_sql():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in PACKAGE.rglob("__init__.py")}
    assert set(setuptools["packages"]) == on_disk | {"engagement_pipeline.sql"}
    assert setuptools["package-dir"] == {"engagement_pipeline.sql": "sql"}  # the contract's sql/ stays at the top
    data = setuptools["package-data"]
    assert "sql/*.sql" in data["*"]  # ingest/sql and monitoring/sql
    models = {p.relative_to(REPO / "sql") for p in (REPO / "sql").rglob("*.sql")}
    assert models and all(len(m.parts) == 2 for m in models), "sql/ holds one folder level, as package-data says"
    assert "*/*.sql" in data["engagement_pipeline.sql"]
