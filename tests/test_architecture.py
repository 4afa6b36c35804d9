"""The architecture, checked: no import cycle at run time, the import contract
(`[tool.importlinter]` in pyproject.toml) kept and covering every package, and the module table
of docs/architecture.md naming exactly the modules in the tree.

First-party code is `app.py` and every top-level package (a directory with `__init__.py`) except
tests/ and bench/, found on disk, so a new feature package is picked up without editing this file.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_FIRST_PARTY = {"tests", "bench"}
#: the roots that are not features: every other top-level package is one
NOT_FEATURES = {"app", "config", "server", "namespaces"}
DOC = ROOT / "docs" / "architecture.md"
MODULE_TABLE_HEADING = "## Modules"


# -- the first-party modules ------------------------------------------------------------------


def first_party_roots() -> list[str]:
    """`app` (the composition root, one module) and every top-level package but tests/, bench/."""
    roots = ["app"] if (ROOT / "app.py").is_file() else []
    for d in sorted(ROOT.iterdir()):
        if (
            d.is_dir()
            and not d.name.startswith(".")
            and d.name not in NOT_FIRST_PARTY
            and (d / "__init__.py").is_file()
        ):
            roots.append(d.name)
    return roots


def module_files() -> dict[str, Path]:
    """Every first-party module by dotted name (a package by its `__init__.py`)."""
    modules: dict[str, Path] = {}
    for root in first_party_roots():
        if root == "app":
            modules["app"] = ROOT / "app.py"
            continue
        for path in sorted((ROOT / root).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if any(
                p == "__pycache__" or p == "node_modules" or p.startswith(".") for p in rel.parts
            ):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


# -- the run-time import graph ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Edge:
    importer: str
    imported: str
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """The first-party imports of one module, wherever they are (module level, functions,
    `try`), except under `if TYPE_CHECKING:` (its `else:` branch does run)."""

    def __init__(self, module: str, path: Path, known: set[str]) -> None:
        self.module = module
        self.path = path
        self.known = known
        self.package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        self.edges: list[Edge] = []

    def _add(self, name: str, line: int) -> None:
        # `import a.b.c` runs a.b.c; when a.b.c is not a module (an attribute), its nearest module
        while name and name not in self.known:
            name = name.rpartition(".")[0]
        if name and name != self.module:
            self.edges.append(Edge(self.module, name, self.path, line))

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for stmt in node.orelse:
                self.visit(stmt)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            # `from pkg import name`: the submodule when `name` is one, else pkg itself
            self._add(sub if alias.name != "*" and sub in self.known else base, node.lineno)


def import_graph() -> dict[str, list[Edge]]:
    """Module -> its run-time first-party imports (one edge per imported module, first line)."""
    files = module_files()
    known = set(files)
    graph: dict[str, list[Edge]] = {}
    for module, path in files.items():
        visitor = _Imports(module, path, known)
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        first: dict[str, Edge] = {}
        for edge in visitor.edges:
            first.setdefault(edge.imported, edge)
        graph[module] = sorted(first.values(), key=lambda e: e.imported)
    return graph


def strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for edge in graph[v]:
            w = edge.imported
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def cycles_in(component: list[str], graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """The shortest cycle through each module of a component (deduplicated)."""
    members = set(component)
    seen: set[tuple[str, ...]] = set()
    cycles: list[list[Edge]] = []
    for start in component:
        previous: dict[str, Edge] = {}
        queue = deque([start])
        while queue:
            v = queue.popleft()
            closing = next((e for e in graph[v] if e.imported == start), None)
            if closing is not None:
                path = [closing]
                while path[0].importer != start:
                    path.insert(0, previous[path[0].importer])
                names = [e.importer for e in path]
                key = min(tuple(names[i:] + names[:i]) for i in range(len(names)))
                if key not in seen:
                    seen.add(key)
                    cycles.append(path)
                break
            for e in graph[v]:
                if e.imported in members and e.imported not in previous and e.imported != start:
                    previous[e.imported] = e
                    queue.append(e.imported)
    return cycles


def test_no_import_cycles_at_run_time() -> None:
    graph = import_graph()
    report = []
    for component in strongly_connected(graph):
        report.append(f"cycle among {len(component)} modules: {', '.join(component)}")
        for path in cycles_in(component, graph):
            chain = " -> ".join([e.importer for e in path] + [path[0].importer])
            report.append(f"  {chain}    ({', '.join(e.where() for e in path)})")
    assert not report, "run-time import cycles (TYPE_CHECKING imports excluded):\n" + "\n".join(
        report
    )


# -- the import contract ----------------------------------------------------------------------


def _lint_imports() -> list[str]:
    # importlinter.cli has no `__main__` guard, so `python -m importlinter.cli` would check
    # nothing and exit 0: run the console script, or its entry point
    script = Path(sys.executable).parent / "lint-imports"
    if script.is_file():
        return [str(script)]
    entry = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    return [sys.executable, "-c", entry]


def test_import_contract_is_kept() -> None:
    proc = subprocess.run(
        [*_lint_imports(), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    status = proc.returncode
    assert status == 0, f"lint-imports failed:\n{proc.stdout}\n{proc.stderr}"


def test_import_contract_covers_every_package() -> None:
    """A new top-level package is a feature: it must be in every contract, or nothing checks it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = {c["id"]: c for c in config["contracts"]}
    packages = set(first_party_roots()) - {"app"}
    features = packages - NOT_FEATURES
    problems = []

    def compare(where: str, declared: set[str], wanted: set[str]) -> None:
        if declared != wanted:
            problems.append(
                f"{where}: add {sorted(wanted - declared)}, remove {sorted(declared - wanted)}"
            )

    compare("root_packages", set(config["root_packages"]), packages)
    compare(
        "contract composition-root: source_modules",
        set(contracts["composition-root"]["source_modules"]),
        packages,
    )
    layers = contracts["layers"]["layers"]
    compare("contract layers: first layer", {layers[0]}, {"namespaces"})
    compare(
        "contract layers: middle layer (the features, ' : '-separated)",
        {name.strip() for name in layers[1].split(":")},
        features,
    )
    compare("contract layers: last layers", set(layers[2:]), {"server", "config"})
    compare(
        "contract features-independent: modules",
        set(contracts["features-independent"]["modules"]),
        features,
    )
    assert not problems, "pyproject.toml [tool.importlinter]:\n" + "\n".join(problems)


# -- the module table of docs/architecture.md -------------------------------------------------

ROW_PATH = re.compile(r"^`([\w./]+\.py)`$")


def _only_docstring(path: Path) -> bool:
    """A module with nothing but a docstring (and `from __future__` imports)."""
    body = ast.parse(path.read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return all(isinstance(s, ast.ImportFrom) and s.module == "__future__" for s in body)


def documented_modules() -> tuple[list[str], list[str]]:
    """The paths in the first cell of the rows of the tables under the module heading (up to
    the next `## ` heading; `###` sub-headings and prose between tables are fine), and the rows
    that are not one backticked `.py` path with a description."""
    lines = DOC.read_text().splitlines()
    start = lines.index(MODULE_TABLE_HEADING)
    paths: list[str] = []
    malformed: list[str] = []
    row = 0  # row number within the current table
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            row = 0
            continue
        row += 1
        if row <= 2:
            continue  # header and separator
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = ROW_PATH.match(cells[0])
        if match is None or len(cells) < 2 or not cells[1]:
            malformed.append(line)
        else:
            paths.append(match.group(1))
    return paths, malformed


def _summary(path: Path) -> str:
    """A draft description for a missing row: the first sentence of the module's docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or "…"
    paragraph = " ".join(doc.split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".")


def test_module_table_names_every_module() -> None:
    """Rule: every first-party `.py` file has one row, except an `__init__.py` holding nothing
    but a docstring (a package marker), which may be left out (listing it is not an error)."""
    files = {str(p.relative_to(ROOT)): p for p in module_files().values()}
    required = {
        rel for rel, p in files.items() if not (p.name == "__init__.py" and _only_docstring(p))
    }
    listed, malformed = documented_modules()
    duplicates = sorted({p for p in listed if listed.count(p) > 1})
    missing = sorted(required - set(listed))
    stale = sorted(set(listed) - set(files))
    report = []
    if missing:
        report.append("add rows (draft text from the docstrings):")
        report += [f"| `{rel}` | {_summary(files[rel])} |" for rel in missing]
    if stale:
        report.append("remove rows (no such module):")
        report += [f"| `{rel}` |" for rel in stale]
    if duplicates:
        report.append(f"rows listed twice: {duplicates}")
    if malformed:
        report.append("rows that are not `| `path.py` | description |`:")
        report += malformed
    assert not report, f"docs/architecture.md, table under {MODULE_TABLE_HEADING!r}:\n" + "\n".join(
        report
    )


# -- the consumer groups, jobs and periodic jobs named in docs/architecture.md are the ones the
# -- composed node really has (the doc is checked against the code's behaviour, both ways)


def doc_table_keys(heading: str, nth: int = 0) -> set[str]:
    """The backticked first cells of the `nth` table under `heading` in docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    section = text[start : end if end != -1 else len(text)]
    tables: list[set[str]] = []
    in_table = False
    for line in section.splitlines():
        if line.startswith("|"):
            if not in_table:
                tables.append(set())
                in_table = True
            first = line.split("|")[1]
            tables[-1].update(re.findall(r"`([^`]+)`", first))
        else:
            in_table = False
    return tables[nth]


def composed(tmp_path: Path, **overrides: object) -> object:
    from app import compose
    from tests.conftest import make_settings

    # a bot token: the bot's consumer groups and job exist only with one
    settings = make_settings(tmp_path, telegram_bot_token="123456:docs-check-token", **overrides)
    return compose(settings).node


def test_consumer_groups_in_the_doc_are_the_nodes(tmp_path: Path) -> None:
    embedded = composed(tmp_path)
    with_redis = composed(tmp_path, redis_url="redis://127.0.0.1:6379/0")
    groups = set(embedded.bus.consumers) | set(with_redis.bus.consumers)  # type: ignore[attr-defined]
    documented = doc_table_keys("## Consumer groups")
    assert groups == documented, (
        f"docs/architecture.md, consumer groups: add {sorted(groups - documented)},"
        f" remove {sorted(documented - groups)}"
    )


def test_scheduler_jobs_in_the_doc_are_the_nodes(tmp_path: Path) -> None:
    kinds = set(composed(tmp_path).scheduler.handlers)  # type: ignore[attr-defined]
    documented = doc_table_keys("## Jobs", 0)
    assert kinds == documented, (
        f"docs/architecture.md, scheduler jobs: add {sorted(kinds - documented)},"
        f" remove {sorted(documented - kinds)}"
    )


def test_periodic_jobs_in_the_doc_are_the_codes() -> None:
    names: set[str] = set()
    for path in module_files().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "every"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                names.add(str(node.args[1].value))
    documented = doc_table_keys("## Jobs", 1)
    assert names and names == documented, (
        f"docs/architecture.md, periodic jobs: add {sorted(names - documented)},"
        f" remove {sorted(documented - names)}"
    )
