"""The package's shape: module-level imports form no cycle, and every module imports on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ssl_bench"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def top_level_imports(name: str, path: Path) -> set[str]:
    """ssl_bench modules imported at module level (function-local imports are deliberate deferrals)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in MODULES and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), or None."""
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, trail + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name, [name])):
            return cycle
    return None


def test_find_cycle_finds_a_hand_made_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_module_level_imports_form_no_cycle():
    graph = {name: top_level_imports(name, path) for name, path in MODULES.items()}
    assert graph["ssl_bench.cli"], "the import scan found nothing: it is broken"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_every_module_imports_on_its_own():
    """Each module imported with no other ssl_bench module loaded (third-party modules stay, for speed)."""
    code = (
        "import importlib, sys\n"
        "for m in sys.argv[1:]:\n"
        "    for loaded in [k for k in sys.modules if k.startswith('ssl_bench')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(m)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, *MODULES], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
