"""The layout rules, read from the source with `ast`: no import cycle among lens_steer modules (module-level
imports), no private name imported from a lens_steer module anywhere in the tree, no lens_steer module over 600
lines, and no line over 120 characters nor a `fmt: skip` / `fmt: off` comment in the tree's Python files."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lens_steer"
MAX_LINES = 600
MAX_LINE_CHARS = 120  # ruff.toml's line-length: what ruff cannot split is wrapped by hand, never skipped
LINE_CHECKED_FOLDERS = ("lens_steer", "tests", "benchmarks", "analyses")
FORMAT_OPT_OUT = re.compile(r"#\s*fmt:\s*(skip|off)\b")  # a comment ruff obeys: it leaves the line (or block) as is


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_only(node: ast.stmt) -> bool:
    """`if TYPE_CHECKING:` (imports for type checkers only)."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(
    tree: ast.Module, importer: str, is_package: bool, *, top_level_only: bool
) -> Iterator[tuple[str, ast.AST]]:
    """(lens_steer module, import node) for each import; `top_level_only` skips imports inside functions and classes."""

    def walk(nodes: list[ast.stmt]) -> Iterator[ast.stmt]:
        for n in nodes:
            yield n
            if top_level_only and (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) or _type_checking_only(n)):
                continue  # runs later (or never), not while the module is imported
            for child in ast.iter_child_nodes(n):
                if isinstance(child, ast.stmt):
                    yield from walk([child])
                elif isinstance(child, ast.ExceptHandler):
                    yield from walk(child.body)

    for n in walk(tree.body):
        if isinstance(n, ast.Import):
            for alias in n.names:
                if alias.name.startswith("lens_steer"):
                    yield alias.name, n
        elif isinstance(n, ast.ImportFrom):
            mod = _absolute(n, importer, is_package)
            if not mod.startswith("lens_steer"):
                continue
            for alias in n.names:
                sub = f"{mod}.{alias.name}"
                yield (sub if sub in MODULES else mod), n


def import_graph() -> dict[str, set[str]]:
    """Module-level import edges among lens_steer modules; importing a.b.c also runs packages a and a.b."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for target, _ in imported_modules(tree, name, path.name == "__init__.py", top_level_only=True):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                dep = ".".join(parts[:i])
                if (
                    dep in MODULES and dep != name and not name.startswith(dep + ".")
                ):  # its own packages are already running
                    graph[name].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_lens_steer_modules() -> None:
    graph = import_graph()
    assert graph["lens_steer.forward.scoring"] >= {
        "lens_steer.forward.residual_cache",
        "lens_steer.forward.engine",
    }  # the graph sees real imports
    assert cycles(graph) == []


def private_names(tree: ast.Module, importer: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, name) of each private name imported from lens_steer in `tree`, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = _absolute(node, importer, is_package) if importer.startswith("lens_steer") or not node.level else ""
            if mod.startswith("lens_steer"):
                found += [
                    (node.lineno, a.name) for a in node.names if a.name.startswith("_") and not a.name.startswith("__")
                ]
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name)
                for a in node.names
                if a.name.startswith("lens_steer")
                and any(p.startswith("_") and not p.startswith("__") for p in a.name.split("."))
            ]
    return found


def private_imports() -> list[str]:
    """`from lens_steer.x import _name` (and `import lens_steer.x._name`) anywhere in the tree, as "file:line name"."""
    found = []
    for folder in ("lens_steer", "analyses", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = module_name(path) if folder == "lens_steer" else path.stem
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found += [
                f"{path.relative_to(ROOT)}:{line} {n}"
                for line, n in private_names(tree, name, path.name == "__init__.py")
            ]
    return found


def test_private_names_are_found_at_any_depth() -> None:
    tree = ast.parse(
        "from lens_steer.forward.scoring import _Row, Question\nimport lens_steer.cli._x\n"
        "def f():\n    from .store import _index\n"
    )
    assert private_names(tree, "lens_steer.methods.ensemble", False) == [
        (1, "_Row"),
        (2, "lens_steer.cli._x"),
        (4, "_index"),
    ]
    assert (
        private_names(
            ast.parse("from _tiny_models import _private\nfrom lens_steer.version import __version__\n"),
            "test_x",
            False,
        )
        == []
    )


def test_no_private_name_imported_from_lens_steer() -> None:
    assert private_imports() == []


def test_no_lens_steer_module_over_600_lines() -> None:
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


# ---- packages by concern: each package's docstring says what it may import ----------------------
BASE = {"axes", "errors", "files", "progress", "specs", "stats", "version"}  # the base modules under every package
PACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def allowed_imports(docstring: str) -> set[str]:
    """The packages and base modules a package's docstring allows, from its "May import:" sentence (names before
    a ";"; "the base modules" stands for BASE; "every package" for all)."""
    match = re.search(r"May import:(.*?)(?:;|\.\s|\.$|$)", docstring, re.S)
    assert match, "a package docstring needs a 'May import:' sentence"
    text = match.group(1)
    if "every package" in text:
        return set(PACKAGES) | BASE
    names = set(re.findall(r"[a-z_]+", text)) & (set(PACKAGES) | BASE)
    return names | (BASE if "base modules" in text else set())


def top_name(module: str) -> str:
    """The package or base module under lens_steer that `module` is (or is in)."""
    return module.split(".")[1] if module.count(".") >= 1 else module


def package_import_breaches() -> list[str]:
    """Every import (any depth, type-checking ones too) from a package's modules to a package or base module its
    docstring does not allow, and from a base module to any package, as "module -> target"."""
    rules = {
        pkg: allowed_imports(ast.get_docstring(ast.parse((PACKAGE / pkg / "__init__.py").read_text())) or "")
        for pkg in PACKAGES
    }
    out = []
    for name, path in MODULES.items():
        if name == "lens_steer":
            continue
        own = top_name(name)
        allowed = rules[own] if own in rules else BASE
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for target, _ in imported_modules(tree, name, path.name == "__init__.py", top_level_only=False):
            dest = top_name(target) if target != "lens_steer" else "lens_steer"
            if dest != own and dest not in allowed:
                out.append(f"{name} -> {target}")
    return sorted(set(out))


def test_allowed_imports_read_from_a_docstring() -> None:
    assert (
        allowed_imports("Holds x.\n\nMay import: model, data and the base modules; never cli.")
        == {"model", "data"} | BASE
    )
    assert allowed_imports("May import: the base modules.") == BASE
    assert "cli" in allowed_imports("May import: every package; prints.")


def test_every_package_imports_only_what_its_docstring_allows() -> None:
    assert set(PACKAGES) >= {
        "model",
        "data",
        "steering",
        "forward",
        "extract",
        "tasks",
        "methods",
        "pipeline",
        "report",
        "cli",
    }
    assert package_import_breaches() == []


def test_the_breach_finder_sees_a_climb(tmp_path: Path) -> None:
    tree = ast.parse("from lens_steer.report.html import write_report\n")
    targets = [t for t, _ in imported_modules(tree, "lens_steer.pipeline.x", False, top_level_only=False)]
    assert [top_name(t) for t in targets] == ["report"]
    assert "report" not in allowed_imports(
        ast.get_docstring(ast.parse((PACKAGE / "pipeline" / "__init__.py").read_text())) or ""
    )


# ---- line length: every line fits ruff's 120 columns, and no `fmt: skip` / `fmt: off` opts a line out --------------
def line_breaches(root: Path, folders: Sequence[str]) -> list[str]:
    """Each line over MAX_LINE_CHARS characters and each `fmt: skip` / `fmt: off` comment in the .py files under
    `folders` of `root`, as "file:line what"."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            text = path.read_text(encoding="utf-8")
            lines = text.splitlines()
            hits = [(n, f"has {len(line)} characters") for n, line in enumerate(lines, 1) if len(line) > MAX_LINE_CHARS]
            hits += [
                (tok.start[0], f"has {tok.string.strip()!r}")
                for tok in tokenize.generate_tokens(io.StringIO(text).readline)
                if tok.type == tokenize.COMMENT and FORMAT_OPT_OUT.search(tok.string)
            ]
            found += [f"{rel}:{n} {what}" for n, what in sorted(hits)]
    return found


def test_the_line_checker_finds_long_lines_and_format_opt_outs(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    fits = "x = " + "1" * (MAX_LINE_CHARS - 4)
    (pkg / "a.py").write_text(
        f"{fits}\n{fits}2\ny = [1,2]  # fmt: skip\n"
        "z = '# fmt: skip'  # a string; fmt: skip named in prose\n# fmt:off\n",
        encoding="utf-8",
    )
    (pkg / "b.py").write_text(f"{fits}3\n", encoding="utf-8")
    assert line_breaches(tmp_path, ["pkg"]) == [
        f"pkg/a.py:2 has {MAX_LINE_CHARS + 1} characters",
        "pkg/a.py:3 has '# fmt: skip'",
        "pkg/a.py:5 has '# fmt:off'",
        f"pkg/b.py:1 has {MAX_LINE_CHARS + 1} characters",
    ]


def test_no_line_over_120_characters_and_no_format_opt_out() -> None:
    found = line_breaches(ROOT, LINE_CHECKED_FOLDERS)
    assert found == [], "wrap these by hand (split strings, move comments above): " + "; ".join(found)
