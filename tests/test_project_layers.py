"""The layer rule of docs/CONVENTIONS.md holds for every import in ``src/jam_flow``.

The allowed edges are read from the layer table of docs/CONVENTIONS.md (``may import`` column), so the page and
the test cannot drift apart. Every ``import`` / ``from ... import`` counts, function-local and ``TYPE_CHECKING``
ones included: an upward or same-layer edge between packages, or any cycle between modules, fails. Imports by
name count too: ``importlib.import_module("jam_flow...")`` / ``__import__("jam_flow...")`` with a literal name, an
f-string name (its literal ``jam_flow...`` prefix, for the layer check), and the module names in the tables of the
modules that import by a computed name (:data:`NAME_TABLES`, e.g. the ``jam-flow`` command table); a computed name
anywhere else fails.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "jam_flow"


def read_layer_table() -> tuple[dict[str, int], dict[str, set[str]]]:
    """``(layer of each package, packages each may import)``; names without the ``jam_flow.`` prefix, root = ``""``."""
    text = (ROOT / "docs" / "CONVENTIONS.md").read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            rows.append(cells)
    assert rows, "docs/CONVENTIONS.md: no layer table under '## Layers'"

    def short(name: str) -> str:
        return "" if name == "jam_flow" else name.removeprefix("jam_flow.")

    layer = {short(cells[1].strip("`")): int(cells[0]) for cells in rows}
    allowed: dict[str, set[str]] = {}
    for cells in rows:
        names = {short(n) for n in re.findall(r"`([a-z_.]+)`", cells[2])}
        for lo, hi in re.findall(r"layers (\d+)-(\d+)", cells[2]):
            names |= {p for p, lay in layer.items() if int(lo) <= lay <= int(hi)}
        allowed[short(cells[1].strip("`"))] = names
    return layer, allowed


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


# modules that import jam_flow modules by a computed name; each string constant in them that names a module (or an
# f-string prefix) counts as an import: the table they import from
NAME_TABLES = {
    "jam_flow.cli": "SUBCOMMANDS (the command table)",
    "jam_flow.nn.attention.registry": "IMPLEMENTATIONS (the attention implementations)",
}
IMPORT_CALLS = ("import_module", "__import__")
MODULE_NAME = re.compile(r"jam_flow(\.\w+)*")


def _resolve(target: str, modules: dict[str, Path]) -> str:
    while target and target not in modules:  # a name inside a module -> that module
        target = target.rpartition(".")[0]
    return target


def _import_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) in IMPORT_CALLS


def _named(node: ast.AST | None) -> tuple[str | None, str | None]:
    """``(module name, f-string prefix)`` a string expression gives (both None when it is computed otherwise)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value, None
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return None, str(node.values[0].value)
    return None, None


def string_imports(name: str, modules: dict[str, Path] = MODULES) -> tuple[set[str], set[str], list[str]]:
    """Imports of module ``name`` by a string: ``(modules named in full, modules an f-string prefix lands in (for
    the layer check), computed names that no table shows)``."""
    path = modules[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    full: set[str] = set()
    prefixes: set[str] = set()
    hidden: list[str] = []

    def add(text: str | None, prefix: str | None) -> None:
        if text is not None and MODULE_NAME.fullmatch(text):
            full.add(_resolve(text, modules))
        if prefix is not None and prefix.startswith("jam_flow"):
            prefixes.add(_resolve(prefix.rstrip("."), modules))

    for node in ast.walk(tree):
        if _import_call(node):
            text, prefix = _named(node.args[0] if node.args else None)
            if text is None and prefix is None and name not in NAME_TABLES:
                hidden.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
            add(text, prefix)
        elif name in NAME_TABLES and isinstance(node, (ast.Constant, ast.JoinedStr)):
            if not (isinstance(node, ast.Constant) and node.value == ""):
                add(*_named(node))
    full.discard(name)
    prefixes.discard(name)
    return {t for t in full if t}, {t for t in prefixes if t}, hidden


def imported_modules(name: str, modules: dict[str, Path] = MODULES) -> set[str]:
    """jam_flow modules that module ``name`` imports anywhere (a ``from pkg import sub`` names the submodule), by
    an import statement or by a name written in full (:func:`string_imports`)."""
    path = modules[name]
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                stem = here[: len(here) - node.level + 1]
                base = ".".join(stem + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            target = _resolve(target, modules)
            if target.startswith("jam_flow") and target != name:
                found.add(target)
    return found | string_imports(name, modules)[0]


def package_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


GRAPH = {name: imported_modules(name) for name in MODULES}
# f-string import prefixes: package edges for the layer check (too coarse for the module cycle check)
PREFIX_EDGES = {name: string_imports(name)[1] for name in MODULES}

# the package root exports ``JamFlow`` lazily (``from jam_flow import JamFlow``): importing jam_flow.api inside the
# root's module-level ``__getattr__`` is the one upward edge accepted (docs/CONVENTIONS.md, the root's row)
LAZY_ROOT_EDGES = {"jam_flow.api"}


def lazy_root_imports() -> set[str]:
    """jam_flow modules the package root imports inside its module-level ``__getattr__``."""
    tree = ast.parse(MODULES["jam_flow"].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom) and sub.module and sub.module.startswith("jam_flow"):
                    found.add(sub.module)
                elif isinstance(sub, ast.Import):
                    found |= {a.name for a in sub.names if a.name.startswith("jam_flow")}
    return found


def layer_violations(
    graph: dict[str, set[str]], layer: dict[str, int], allowed: dict[str, set[str]]
) -> list[str]:
    """Every edge of ``graph`` between packages that the layer table does not allow."""
    bad = []
    for name, targets in sorted(graph.items()):
        src = package_of(name)
        for target in sorted(targets):
            dst = package_of(target)
            if name == "jam_flow" and target in LAZY_ROOT_EDGES and target in lazy_root_imports():
                continue
            if dst != src and dst not in allowed[src]:
                kind = (
                    "same-layer"
                    if layer[dst] == layer[src]
                    else "upward"
                    if layer[dst] > layer[src]
                    else "unlisted"
                )
                bad.append(
                    f"{name} -> {target} ({kind}: {src or 'jam_flow'} L{layer[src]} -> {dst} L{layer[dst]})"
                )
    return bad


def test_layer_table_is_well_formed():
    layer, allowed = read_layer_table()
    missing = sorted({package_of(n) for n in MODULES} - set(layer))
    assert not missing, f"docs/CONVENTIONS.md 'Layers': add a row (layer, may import) for jam_flow.{missing}"
    for pkg, targets in allowed.items():
        assert targets <= set(layer), f"{pkg or 'jam_flow'}: unknown package(s) {targets - set(layer)}"
        up = sorted(t for t in targets if layer[t] >= layer[pkg])
        assert not up, f"{pkg or 'jam_flow'} (layer {layer[pkg]}) may not import same/upper layer: {up}"


def test_every_import_follows_the_layer_table():
    layer, allowed = read_layer_table()
    edges = {name: GRAPH[name] | PREFIX_EDGES[name] for name in GRAPH}
    bad = layer_violations(edges, layer, allowed)
    assert not bad, "imports against docs/CONVENTIONS.md:\n" + "\n".join(bad)


def test_no_import_by_a_hidden_name():
    """An import by a computed name is only allowed in a module whose table of names the walker reads."""
    hidden = [h for name in MODULES for h in string_imports(name)[2]]
    assert not hidden, (
        "imports by a computed name (use a literal, or list the module in NAME_TABLES):\n" + "\n".join(hidden)
    )


def test_the_root_imports_only_the_api_and_only_lazily():
    """The root's imports: exactly the lazy ``JamFlow`` export, inside ``__getattr__``; ``import jam_flow`` alone
    loads nothing else of ours, and ``from jam_flow import JamFlow`` gives the API class."""
    import subprocess
    import sys

    assert GRAPH["jam_flow"] == LAZY_ROOT_EDGES == lazy_root_imports()
    code = (
        "import sys, jam_flow\n"
        "assert sorted(m for m in sys.modules if m.startswith('jam_flow')) == ['jam_flow'], sys.modules\n"
        "from jam_flow import JamFlow\n"
        "from jam_flow.api import JamFlow as API\n"
        "assert JamFlow is API\n"
        "try:\n    jam_flow.NotThere\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit('no error')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**__import__("os").environ}
    )
    assert run.returncode == 0, run.stderr


def test_no_import_cycles():
    found = cycles(GRAPH)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_walker_sees_function_local_and_relative_imports(tmp_path):
    """The walker itself: a lazy upward import and a relative one are found (the check cannot pass vacuously)."""
    pkg = tmp_path / "jam_flow"
    (pkg / "models").mkdir(parents=True)
    (pkg / "data").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "text.py").write_text("X = 1\n")
    (pkg / "models" / "__init__.py").write_text("from . import cfg\n")
    (pkg / "models" / "cfg.py").write_text("def f():\n    from jam_flow.data.text import X\n    return X\n")
    mods = {module_name(p, tmp_path): p for p in sorted(pkg.rglob("*.py"))}
    assert imported_modules("jam_flow.models", mods) == {"jam_flow.models.cfg"}
    assert imported_modules("jam_flow.models.cfg", mods) == {"jam_flow.data.text"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_walker_sees_imports_by_name(tmp_path):
    """The walker itself: imports by a literal name, by an f-string and by a computed name are found, and an upward
    one fails the layer check."""
    pkg = tmp_path / "jam_flow"
    for sub in ("models", "data", "render"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "text.py").write_text("X = 1\n")
    (pkg / "render" / "animate.py").write_text("X = 1\n")
    (pkg / "models" / "lazy.py").write_text(
        "import importlib\n"
        "def f(kind):\n"
        "    a = importlib.import_module('jam_flow.render.animate')\n"
        "    b = __import__('jam_flow.data.text', fromlist=['X'])\n"
        "    c = importlib.import_module(f'jam_flow.render.{kind}')\n"
        "    return a, b, c, importlib.import_module(kind)\n"
    )
    mods = {module_name(p, tmp_path): p for p in sorted(pkg.rglob("*.py"))}
    full, prefixes, hidden = string_imports("jam_flow.models.lazy", mods)
    assert full == {"jam_flow.render.animate", "jam_flow.data.text"}
    assert prefixes == {"jam_flow.render"}
    assert len(hidden) == 1 and "import_module(kind)" in hidden[0]
    assert imported_modules("jam_flow.models.lazy", mods) == full
    layer = {"": 0, "data": 1, "models": 2, "render": 3}
    allowed = {"": set(), "data": set(), "models": {"data"}, "render": {"data", "models"}}
    bad = layer_violations({"jam_flow.models.lazy": full | prefixes}, layer, allowed)
    assert bad == [
        "jam_flow.models.lazy -> jam_flow.render (upward: models L2 -> render L3)",
        "jam_flow.models.lazy -> jam_flow.render.animate (upward: models L2 -> render L3)",
    ]


def test_cli_dispatch_table_names_real_modules():
    """The dispatcher imports its commands by name: every named module exists (so the table stays the edge list)."""
    tree = ast.parse(MODULES["jam_flow.cli"].read_text(encoding="utf-8"))
    named = {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant)
        and isinstance(n.value, str)
        and re.fullmatch(r"jam_flow(\.\w+)+", n.value)
    }
    assert named, "no module names in the SUBCOMMANDS table"
    assert named <= set(MODULES), f"unknown modules: {named - set(MODULES)}"


def test_concept_map_names_existing_files():
    """Every owner in the concept map of docs/CONVENTIONS.md exists (a bare name is inside the cell's last folder)."""
    text = (ROOT / "docs" / "CONVENTIONS.md").read_text(encoding="utf-8")
    section = text.split("## Where each concept lives", 1)[1].split("\n## ", 1)[0]
    missing, owners = [], 0
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("concept", "---"):
            continue
        folder = PACKAGE
        for token in re.findall(r"`([\w./]+)`", cells[1]):
            if not (token.endswith((".py", "/")) or "/" in token):
                continue
            path = PACKAGE / token if "/" in token or (PACKAGE / token).exists() else folder / token
            owners += 1
            if not path.exists():
                missing.append(f"{cells[0]}: {path.relative_to(SRC)}")
            if token.endswith("/"):
                folder = path
    assert owners > 20, "no concept map found"
    assert not missing, "concept map names files that do not exist:\n" + "\n".join(missing)
