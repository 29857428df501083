"""The house's import layers: each package imports only from its own layer or those below, and no module imports
itself back through others (no circle). Read from the source (ast), so an import inside a function counts too.

    run (pipelines.run, sweep, validate, bench) -> stages -> dpo and baselines -> tasks, judge -> lm -> infra ->
    numerics;  analysis -> numerics, infra (it reads files; it never trains or samples).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipelines", "baselines", "analysis")
# (module prefix, layer); the longest matching prefix wins. Higher layers may import lower ones.
LAYERS = [("pipelines.numerics", 0), ("pipelines.infra", 1), ("pipelines.lm", 2), ("pipelines.tasks", 3),
          ("pipelines.judge", 3), ("pipelines.dpo", 4), ("baselines", 4), ("pipelines.stages", 5),
          ("pipelines", 6)]
ANALYSIS_MAY_IMPORT = ("pipelines.numerics", "pipelines.infra")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules `name` imports (from x import y resolves to x.y where that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] in PACKAGES:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
    return {m for m in found if m != name and m in known}


def layer(module: str) -> int | None:
    best = [(len(p), lvl) for p, lvl in LAYERS if module == p or module.startswith(p + ".")]
    return max(best)[1] if best else None


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    # a package's __init__ is where its submodules are imported through; it is not an edge of its own
    return {m: {d for d in imports(p, m, known) if not m.startswith(d + ".")} for m, p in mods.items()}


def test_no_upward_import():
    upward = []
    for mod, deps in graph().items():
        if mod.startswith("analysis"):
            upward += [f"{mod} -> {d}" for d in deps
                       if not d.startswith("analysis") and not d.startswith(ANALYSIS_MAY_IMPORT)]
            continue
        for d in deps:
            if d.startswith("analysis") or (layer(d) is not None and layer(d) > layer(mod)):
                upward.append(f"{mod} (layer {layer(mod)}) -> {d} (layer {layer(d)})")
    assert not upward, "imports against the layers:\n  " + "\n  ".join(sorted(upward))


def test_no_import_circle():
    g = graph()
    circles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles:\n  " + "\n  ".join(circles)


def test_the_layer_test_sees_an_upward_import(tmp_path):
    """The walk finds imports inside functions (where circles used to hide)."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from pipelines.run import METHODS\n    return METHODS\n")
    assert imports(src, "pipelines.lm.m", {"pipelines.run", "pipelines.lm.m"}) == {"pipelines.run"}
    assert layer("pipelines.run") > layer("pipelines.lm.sampling")
