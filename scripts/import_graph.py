"""The package's internal import graph: levels, cycles and a picture.

Reads every module of ``fna_zoo`` with :mod:`ast` (nothing is imported) and draws an edge ``a -> b`` for each
``import``/``from ... import`` in ``a`` that names a module ``b`` of the package. Imports inside functions count too
(they are dependencies all the same; a cycle hidden behind a lazy import is still a cycle; `--eager-only` counts
only what runs at import time). A package
``__init__`` counts as its own module.

Level: 0 for a module importing nothing of the package, else 1 + the highest level among what it imports (a cycle
is one node for this). Cycles: strongly connected components with more than one module.

Usage::

    python scripts/import_graph.py [--package fna_zoo] [--png docs/import_graph.png] [--json out.json]
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import defaultdict
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix('')
    parts = list(rel.parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def _nodes(tree: ast.AST, eager_only: bool) -> list[ast.AST]:
    """Every node, or (eager_only) those not inside a function body: what runs at import time."""
    if not eager_only:
        return list(ast.walk(tree))
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        todo.extend(c for c in ast.iter_child_nodes(node)
                    if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
    return out


def imports_of(path: Path, name: str, modules: set[str], eager_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == '__init__.py'
    package = name if is_pkg else name.rpartition('.')[0]
    found = set()

    def add(target: str) -> None:
        # the deepest module of the package that the dotted name falls in
        while target and target not in modules:
            target = target.rpartition('.')[0]
        if target and target != name:
            found.add(target)

    for node in _nodes(tree, eager_only):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                mod = '.'.join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ''
            for alias in node.names:
                sub = f'{mod}.{alias.name}'
                add(sub if sub in modules else mod)
    return found


def graph(root: Path, eager_only: bool = False) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted(root.rglob('*.py'))}
    modules = set(files)
    return {name: imports_of(path, name, modules, eager_only) for name, path in files.items()}


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                out.append(sorted(comp))
    return out


def levels(edges: dict[str, set[str]]) -> tuple[dict[str, int], list[list[str]]]:
    comps = strongly_connected(edges)
    comp_of = {m: i for i, c in enumerate(comps) for m in c}
    comp_level: dict[int, int] = {}
    # Tarjan emits components in reverse topological order: dependencies first
    for i, comp in enumerate(comps):
        deps = {comp_of[d] for m in comp for d in edges[m]} - {i}
        comp_level[i] = 1 + max((comp_level[d] for d in deps), default=-1)
    return {m: comp_level[comp_of[m]] for m in edges}, [c for c in comps if len(c) > 1]


def _group(module: str) -> str:
    """The subpackage a module belongs to (modules directly in the package: 'ground')."""
    parts = module.split('.')
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in _PACKAGES) else 'ground'


_PACKAGES: set[str] = set()


def draw(edges: dict[str, set[str]], level: dict[str, int], cycles: list[list[str]], png: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    by_level = defaultdict(list)
    for m, lv in level.items():
        by_level[lv].append(m)
    width = max(len(v) for v in by_level.values())
    pos = {}
    for lv, mods in by_level.items():
        for i, m in enumerate(sorted(mods)):
            pos[m] = ((i + 0.5) * width / len(mods), lv)
    in_cycle = {m for c in cycles for m in c}
    _PACKAGES.update(m.split('.')[1] for m in edges if m.count('.') >= 2)
    fig, ax = plt.subplots(figsize=(max(12, width * 1.3), 0.8 * (max(level.values()) + 1) + 1.5))
    for a, targets in edges.items():
        for b in targets:
            (x0, y0), (x1, y1) = pos[a], pos[b]
            back = level[b] >= level[a]
            ax.annotate('', xy=(x1, y1), xytext=(x0, y0),
                        arrowprops=dict(arrowstyle='->', lw=0.5, alpha=0.8 if back else 0.25,
                                        color='tab:red' if back else 'gray'))
    groups = sorted({_group(m) for m in pos})
    palette = dict(zip(groups, matplotlib.colormaps['tab20'].colors))
    for m, (x, y) in pos.items():
        short = m.removeprefix('fna_zoo.') or 'fna_zoo'
        ax.text(x, y, short, ha='center', va='center', fontsize=7,
                bbox=dict(boxstyle='round', fc='mistyrose' if m in in_cycle else palette[_group(m)],
                          ec='tab:red' if m in in_cycle else 'gray'))
    ax.set_yticks(range(max(level.values()) + 1))
    ax.set_ylabel('import level (0 = imports nothing of the package)')
    ax.set_xticks([])
    ax.set_xlim(-0.5, width + 0.5)
    ax.set_title(title)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=60)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--package', default='fna_zoo')
    p.add_argument('--png', type=Path, help='write the picture here')
    p.add_argument('--json', type=Path, help='write levels and cycles here')
    p.add_argument('--title', default='')
    p.add_argument('--eager-only', action='store_true', help='only imports that run at import time (not those '
                   'inside functions)')
    args = p.parse_args(argv)
    root = Path(args.package).resolve()
    edges = graph(root, args.eager_only)
    level, cycles = levels(edges)
    depth = max(level.values()) + 1
    n_edges = sum(len(v) for v in edges.values())
    print(f'{len(edges)} modules, {n_edges} import edges, {depth} levels, {len(cycles)} cycles')
    for c in cycles:
        print('  cycle: ' + ' <-> '.join(c))
    top = max(level.values())
    print('  deepest: ' + ', '.join(sorted(m for m, lv in level.items() if lv == top)))
    if args.json:
        args.json.write_text(json.dumps({'levels': depth, 'cycles': cycles, 'level': level,
                                         'edges': {k: sorted(v) for k, v in edges.items()}}, indent=1))
    if args.png:
        draw(edges, level, cycles, args.png,
             args.title or f'{args.package}: {len(edges)} modules, {depth} levels, {len(cycles)} cycles')
    return 0


if __name__ == '__main__':
    sys.exit(main())
