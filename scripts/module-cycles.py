#!/usr/bin/env python3
"""Lists the import circles between the files of a crate.

Usage: scripts/module-cycles.py CRATE_SRC_DIR  (e.g. worker/src)

A file depends on another when it names an item of that file's module: a `use`
line or an inline path (`crate::a::b`, `super::x`, `self::y`), resolved to the
longest module prefix that is a file. Declaring a child module (`mod x;`) is not a
dependency, and neither is a parent naming its children by a relative path
(`use child::X`): that is the module tree, not a circle. Prints each strongly
connected component of more than one file with its edges, and exits 1 if there is
any. Test modules count like the rest. Then it folds the edges by top-level module
(`api/`, `executor/`, `state.rs`...) and reports circles between those the same way:
a folder that names an item of another which names one of its own is a circle too,
even when no two files close it. Test files (`tests.rs`, `*_tests.rs`) are left out
of that fold: a unit test of the scheduler may drive the reconciler above it.
"""
import os
import re
import sys


def modules(src):
    """Module path (tuple) -> file, for every .rs file below src."""
    out = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            out[tuple(rel)] = os.path.join(root, f)
    return out


PATH = re.compile(r"\b(crate|super|self)((?:::\w+)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::\w+)*)::\{([^;]*)\};", re.S)


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def deps(mod, text, mods):
    found = set()
    paths = [(m.group(1), m.group(2)) for m in PATH.finditer(text)]
    for g in USE_GROUP.finditer(text):
        for item in re.split(r"[,\s]+", g.group(3)):
            item = item.split("::{")[0].strip("{} ")
            if item:
                paths.append((g.group(1), g.group(2) + "::" + item))
    for head, rest in paths:
        parts = [p for p in rest.split("::") if p]
        base = {"crate": (), "self": mod, "super": mod[:-1]}[head]
        while parts and parts[0] == "super":
            base, parts = base[:-1], parts[1:]
        full = base + tuple(parts)
        for n in range(len(full), -1, -1):
            if full[:n] in mods:
                if full[:n] != mod:
                    found.add(full[:n])
                break
    return found


def sccs(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    mods = modules(src)
    graph = {m: deps(m, strip(open(f).read()), mods) for m, f in mods.items()}
    circles = [sorted(c) for c in sccs(graph) if len(c) > 1]
    for c in circles:
        print("circle: " + " <-> ".join(mods[m] for m in c))
        for m in c:
            for d in sorted(graph[m] & set(c)):
                print(f"  {mods[m]} -> {mods[d]}")
    top = {m: m[:1] for m in mods}
    folded = {}
    def test(m):
        return os.path.basename(mods[m]) == "tests.rs" or mods[m].endswith("_tests.rs")

    for m, ds in graph.items():
        if not top[m] or test(m):
            continue
        folded.setdefault(top[m], set())
        for d in ds:
            if top[d] and top[d] != top[m]:
                folded[top[m]].add(top[d])
    for m in list(folded.values()):
        for d in m:
            folded.setdefault(d, set())
    groups = [sorted(c) for c in sccs(folded) if len(c) > 1]
    for c in groups:
        print("circle between top-level modules: " + " <-> ".join("::".join(m) for m in c))
        for m, ds in sorted(graph.items()):
            for d in sorted(ds):
                if top[m] in c and top[d] in c and top[m] != top[d] and not test(m):
                    print(f"  {mods[m]} -> {mods[d]}")
    if not circles and not groups:
        print(f"no import circles in {src}")
    return 1 if circles or groups else 0


if __name__ == "__main__":
    sys.exit(main())
