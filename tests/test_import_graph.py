"""The package's import graph: no cycles, and train/ and eval/ never import each other.

Every ``import`` statement counts, including those inside functions (a cycle hidden in a
function-level import is still a cycle). ``from pkg import name`` points at the submodule
``pkg.name`` when there is one, else at ``pkg``; importing a submodule is not counted as
importing its parent package (Python initialises a package before its submodules, and that
edge exists for every submodule).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("tokendrift_jax", "convert")


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for pkg in PACKAGES:
    for path in sorted((ROOT / pkg).rglob("*.py")):
      parts = list(path.relative_to(ROOT).with_suffix("").parts)
      if parts[-1] == "__init__":
        parts = parts[:-1]
      out[".".join(parts)] = path
  return out


def _edges(name: str, path: pathlib.Path, modules) -> set[str]:
  is_pkg = path.name == "__init__.py"
  targets = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      targets.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        mod = ".".join(base + ([node.module] if node.module else []))
      else:
        mod = node.module
      for a in node.names:
        sub = f"{mod}.{a.name}"
        targets.add(sub if sub in modules else mod)
  return {t for t in targets if t in modules and t != name}


def import_graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _edges(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of ``graph`` as a list of nodes (first == last), or None."""
  state: dict[str, int] = {}   # 1 = on the stack, 2 = done
  stack: list[str] = []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_cycle_finder_finds_a_planted_cycle():
  # The checker itself: a cycle through a function-level import is found.
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  tree = ast.parse("def f():\n  from tokendrift_jax.train import trainer\n")
  assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))


def test_package_import_graph_has_no_cycle():
  graph = import_graph()
  assert "tokendrift_jax.train.trainer" in graph and "tokendrift_jax.eval.hook" in graph
  cycle = find_cycle(graph)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("a,b", [("train", "eval"), ("eval", "train")])
def test_train_and_eval_do_not_import_each_other(a, b):
  graph = import_graph()
  bad = sorted((m, t) for m, ts in graph.items() for t in ts
               if m.startswith(f"tokendrift_jax.{a}") and t.startswith(f"tokendrift_jax.{b}"))
  assert not bad, f"{a}/ imports {b}/: {bad}"
