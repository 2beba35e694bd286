"""The layer rule of docs/CONVENTIONS.md holds for every import in ``src/jam_flow``.

The allowed edges are read from the layer table of docs/CONVENTIONS.md (``may import`` column), so the page and
the test cannot drift apart. Every ``import`` / ``from ... import`` counts, function-local and ``TYPE_CHECKING``
ones included: an upward or same-layer edge between packages, or any cycle between modules, fails.
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


def imported_modules(name: str, modules: dict[str, Path] = MODULES) -> set[str]:
    """jam_flow modules that module ``name`` imports anywhere (a ``from pkg import sub`` names the submodule)."""
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
            while target and target not in modules:  # a name inside a module -> that module
                target = target.rpartition(".")[0]
            if target.startswith("jam_flow") and target != name:
                found.add(target)
    return found


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
    bad = []
    for name, targets in sorted(GRAPH.items()):
        src = package_of(name)
        for target in sorted(targets):
            dst = package_of(target)
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
    assert not bad, "imports against docs/CONVENTIONS.md:\n" + "\n".join(bad)


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
