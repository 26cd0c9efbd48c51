#!/usr/bin/env python3
"""Fails when a relative link in the repository's Markdown points nowhere.

Checks every tracked Markdown file (`git ls-files '*.md'`):
- each relative link target (inline links and images, reference
  definitions, HTML href/src) resolves to a tracked file or directory
  inside the repository;
- each `#fragment` aimed at a Markdown file (the same file for a bare
  `#fragment`) matches one of its headings, slugged as GitHub does, or an
  explicit `<a id>`/`<a name>` anchor.
Links with a scheme (https:, mailto:, ...) are not fetched. Code spans and
fenced code blocks are skipped. The `runbook_url` fields of the Grafana
alert rules are paths into the repository too, and are checked the same way.

Usage: python3 .ci/links.py   (exit 0 when every link resolves, 1 otherwise)
"""
import json
import os
import re
import subprocess
import sys
import unicodedata
from urllib.parse import unquote

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.S)
# [text](target "title") and ![alt](target); the text may hold brackets one level deep.
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
REFDEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_LINK = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']*)["']""", re.I)
HTML_ANCHOR = re.compile(r"""<a\b[^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.I)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def tracked(pattern=None):
    args = ["git", "-C", ROOT, "ls-files", "-z"]
    if pattern:
        args.append(pattern)
    out = subprocess.run(args, check=True, capture_output=True).stdout
    return [p for p in out.decode("utf-8").split("\0") if p]


def prose_lines(text):
    """(line number, line) outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if m:
            fence = m.group(1)
            continue
        yield number, line


def heading_text(raw):
    """The text GitHub renders for a heading's Markdown."""
    text = CODE_SPAN.sub(lambda m: m.group(2).strip(), raw)
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"(\*\*|__|\*|(?<!\w)_|_(?!\w)|~~)", "", text)
    return text.strip()


def slug(text):
    """GitHub's heading anchor: lowercase, punctuation dropped, spaces to '-'."""
    out = []
    for ch in text.lower():
        cat = unicodedata.category(ch)
        if ch in " -_" or cat[0] in "LN" or cat == "Mn":
            out.append("-" if ch == " " else ch)
    return "".join(out)


def anchors(path, cache={}):
    if path not in cache:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        seen = {}
        found = set()
        previous = ""
        for _, line in prose_lines(text):
            title = None
            m = ATX.match(line)
            if m:
                title = m.group(2) or ""
            elif SETEXT.match(line) and previous.strip() and not previous.lstrip().startswith(("|", "-", "*", ">", "#")):
                title = previous.strip()
            if title is not None:
                base = slug(heading_text(title))
                n = seen.get(base, 0)
                seen[base] = n + 1
                found.add(base if n == 0 else f"{base}-{n}")
            for a in HTML_ANCHOR.findall(line):
                found.add(a)
            previous = line
        cache[path] = found
    return cache[path]


def targets(text):
    """(line number, target) of every link in the prose of a Markdown text."""
    for number, line in prose_lines(text):
        m = REFDEF.match(line)
        if m:
            yield number, m.group(1)
            continue
        bare = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        for m in INLINE.finditer(bare):
            yield number, m.group(1)
        for m in HTML_LINK.finditer(bare):
            yield number, m.group(1)


def check_target(source, target, files, dirs):
    """None when `target`, written in `source`, resolves; else why not."""
    target = target.strip()
    if target.startswith("<") and target.endswith(">"):
        target = target[1:-1]
    if not target or SCHEME.match(target) or target.startswith("//"):
        return None
    path, _, fragment = target.partition("#")
    path = unquote(path.split("?", 1)[0])
    if path.startswith("/"):
        resolved = os.path.normpath(path.lstrip("/"))
    elif path:
        resolved = os.path.normpath(os.path.join(os.path.dirname(source), path))
    else:
        resolved = source
    if resolved == ".." or resolved.startswith(".." + os.sep) or os.path.isabs(resolved):
        return f"{target}: leaves the repository"
    resolved = "" if resolved == "." else resolved
    if resolved not in files and resolved not in dirs:
        return f"{target}: no such file or directory in the repository"
    if fragment and resolved.lower().endswith(".md") and resolved in files:
        if unquote(fragment) not in anchors(os.path.join(ROOT, resolved)):
            return f"{target}: no heading #{fragment} in {resolved}"
    return None


def main():
    files = set(tracked())
    dirs = {""}
    for f in files:
        d = os.path.dirname(f)
        while d and d not in dirs:
            dirs.add(d)
            d = os.path.dirname(d)
    problems = []
    checked = 0
    for source in sorted(tracked("*.md")):
        with open(os.path.join(ROOT, source), encoding="utf-8") as f:
            text = f.read()
        for number, target in targets(text):
            checked += 1
            why = check_target(source, target, files, dirs)
            if why:
                problems.append(f"{source}:{number}: {why}")
    for source in sorted(tracked("config/grafana/*.json")):
        with open(os.path.join(ROOT, source), encoding="utf-8") as f:
            doc = json.load(f)
        stack = [doc]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                url = node.get("runbook_url")
                if isinstance(url, str):
                    checked += 1
                    # `${RUNBOOK_URL}` is substituted at deploy with the
                    # address where docs/runbook.md is published.
                    url = url.replace("${RUNBOOK_URL}", "docs/runbook.md", 1)
                    # Written relative to the repository's root, not to the JSON file.
                    why = check_target("README.md", url, files, dirs)
                    if why:
                        problems.append(f"{source}: runbook_url {why}")
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    for p in problems:
        print(p)
    print(f"links: {checked} checked, {len(problems)} broken")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
