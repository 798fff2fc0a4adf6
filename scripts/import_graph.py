"""The Python package's import graph: files in import circles and imports written inside functions.

Usage: python3 scripts/import_graph.py [--list]   (prints the counts; --list names the files and imports)
"""
import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "python"


MODULES = set()


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve(module, node, is_package):
    """The vlmzoo modules one import statement names (relative imports made absolute)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[:len(base) - node.level + 1]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    # `from X import y` imports the module X.y where there is one, else X itself (grimp's reading)
    return [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix for a in node.names]


def graph():
    files = {module_name(p): p for p in ROOT.joinpath("vlmzoo").rglob("*.py")}
    MODULES.update(files)
    MODULES.add("vlmzoo._C")
    edges, inner = {m: set() for m in files}, []
    for module, path in files.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        nested = {id(n) for f in functions for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = resolve(module, node, is_package)
            if id(node) in nested:
                inner.append((module, node.lineno, names[0]))
            for name in names:
                if name in files and name != module:
                    edges[module].add(name)
    return files, edges, inner


def cycles(edges):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def main():
    files, edges, inner = graph()
    circles = cycles(edges)
    vlmzoo_inner = [i for i in inner if i[2].startswith("vlmzoo") or i[2].startswith(".")]
    print(f"files: {len(files)}")
    print(f"files in import circles: {sum(len(c) for c in circles)} ({len(circles)} circles)")
    print(f"imports inside functions: {len(inner)} (of vlmzoo modules: {len(vlmzoo_inner)})")
    if "--list" in sys.argv:
        for c in circles:
            print("circle:", " ".join(c))
        for module, line, name in inner:
            print(f"inner: {module}:{line} {name}")


if __name__ == "__main__":
    main()
