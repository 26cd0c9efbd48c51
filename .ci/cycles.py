#!/usr/bin/env python3
"""Fails when the module graph of src/ has an import cycle.

Nodes are source files. An edge a -> b means a's non-test code names b by a
`crate::...` or `super::...` path. A `mod.rs` (or `lib.rs`) naming its own
descendants is how a module shows its interface (`pub use layer::X`), not a
dependency, so those edges are left out; everything else counts, `use` lines
and inline paths alike. Test code (`#[cfg(test)]` items and modules only
compiled for tests) is ignored: tests may reach anywhere.
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
SRC = os.path.normpath(SRC)


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


files = {}
for root, _, names in os.walk(SRC):
    for n in names:
        if n.endswith(".rs"):
            p = os.path.join(root, n)
            files[module_of(p)] = p

# Modules declared only under #[cfg(test)] are test code.
test_only = set()
for mod, p in files.items():
    src = open(p, encoding="utf-8").read()
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", src):
        test_only.add(mod + (m.group(1),))


def strip_tests(src):
    """Drops `#[cfg(test)]` items: inline modules (brace-matched) and single items."""
    out = []
    i = 0
    for m in re.finditer(r"#\[cfg\(test\)\]", src):
        if m.start() < i:
            continue
        out.append(src[i:m.start()])
        j = m.end()
        # Skip to the end of the item: a `;` before any `{`, or the matching `}`.
        depth = 0
        while j < len(src):
            c = src[j]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    j += 1
                    break
            elif c == ";" and depth == 0:
                j += 1
                break
            j += 1
        i = j
    out.append(src[i:])
    return "".join(out)


def strip_comments(src):
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    return re.sub(r"//[^\n]*", "", src)


def resolve(mod, path):
    """The longest known module a path starts with (None outside the crate)."""
    for k in range(len(path), 0, -1):
        if tuple(path[:k]) in files:
            return tuple(path[:k])
    return None


PATH = re.compile(r"\b(crate|super)((?:::\w+)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super)((?:::\w+)*)::\{([^;]*)\};", re.S)

edges = {m: set() for m in files}
for mod, p in files.items():
    if mod in test_only or any(mod[:k] in test_only for k in range(1, len(mod))):
        continue
    src = strip_comments(strip_tests(open(p, encoding="utf-8").read()))
    is_dir_root = os.path.basename(p) in ("mod.rs", "lib.rs", "main.rs")
    # The parent a `super::` starts from: a mod.rs is its module, a file is its parent's child.
    here = mod if is_dir_root else mod[:-1]

    def base(kind):
        return () if kind == "crate" else here[:-1] if is_dir_root else here

    targets = []
    for m in USE_GROUP.finditer(src):
        prefix = list(base(m.group(1))) + [s for s in m.group(2).split("::") if s]
        for item in re.split(r",", re.sub(r"\{[^{}]*\}", "", m.group(3))):
            item = item.strip().split(" as ")[0]
            parts = [s for s in item.split("::") if s and s != "self"]
            targets.append(prefix + parts)
    for m in PATH.finditer(src):
        targets.append(list(base(m.group(1))) + [s for s in m.group(2).split("::") if s])
    for t in targets:
        r = resolve(mod, t)
        if r is None or r == mod:
            continue
        if r in test_only:
            continue
        if is_dir_root and r[: len(mod)] == mod:
            continue  # a module's root naming its own parts
        edges[mod].add(r)

# Tarjan's strongly connected components.
index, low, stack, on, sccs = {}, {}, [], set(), []
counter = [0]
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
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(comp)


for v in sorted(files):
    if v not in index:
        visit(v)

name = lambda m: "::".join(m) or "crate"
if sccs:
    for comp in sccs:
        comp = sorted(comp)
        print(f"import cycle among {len(comp)} modules:")
        for m in comp:
            inside = sorted(name(w) for w in edges[m] if w in comp)
            print(f"  {name(m)} -> {', '.join(inside)}")
    sys.exit(1)
print(f"module graph acyclic ({len(files)} modules, {sum(len(e) for e in edges.values())} edges)")
