"""The layers, enforced: ``ddistill`` is the core, ``synthesizers`` and ``evaluators`` are plugins on top of it, and
``ddistill.cli`` is the one core module that imports them (the application layer). No import cycle anywhere."""
from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ddistill", "synthesizers", "evaluators")
PLUGINS = ("synthesizers", "evaluators")
#: The application layer: the only core module allowed to import the plugins.
APP_LAYER = {"ddistill.cli"}


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = {name: path for pkg in PACKAGES for name, path in _modules(pkg).items()}
CORE = sorted(name for name in _modules("ddistill") if name not in APP_LAYER)


def test_core_modules_never_load_the_plugins():
    """Every core module, imported in a fresh interpreter, leaves ``synthesizers`` and ``evaluators`` unloaded."""
    code = (
        "import importlib, json, sys\n"
        f"bad = {{}}\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module(name)\n"
        f"    hit = [p for p in {PLUGINS!r} if p in sys.modules]\n"
        "    if hit:\n"
        "        bad[name] = hit\n"
        "        break\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}


def test_importing_the_plugins_does_not_load_the_app_layer():
    code = "import sys, synthesizers, evaluators; print('ddistill.cli' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _resolve(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[str]:
    """Project modules named by one import statement (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    targets = [prefix]
    targets += [f"{prefix}.{a.name}" for a in node.names]  # ``from pkg import submodule``
    return targets


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (never executed)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


@functools.lru_cache(maxsize=1)
def _import_graph() -> dict[str, set[str]]:
    """module -> project modules it imports (anywhere in the file, function bodies included). Importing ``a.b.c``
    from outside package ``a.b`` also runs ``a.b``'s ``__init__``, so that edge is added too; an ancestor package of
    the importer (``from . import sibling``, ``from pkg import sibling`` inside ``pkg``) is already initialising and
    adds no edge."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in skip:
                continue
            for target in _resolve(name, node, is_package):
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    mod = ".".join(parts[:i])
                    if mod not in MODULES or mod == name or name.startswith(mod + "."):
                        continue
                    graph[name].add(mod)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(_import_graph()) == []


def test_the_cycle_detector_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(n for n in MODULES if n.split(".")[0] == "ddistill" and n not in APP_LAYER))
def test_core_source_never_names_a_plugin(module):
    """Static form of the rule (also catches imports inside functions that the runtime test cannot reach)."""
    graph = _import_graph()
    assert not [m for m in graph[module] if m.split(".")[0] in PLUGINS]
