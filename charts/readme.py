#!/usr/bin/python3
"""Writes charts/hatchway/README.md from Chart.yaml and the `# --` comments
of values.yaml, in helm-docs' format (https://github.com/norwoodj/helm-docs):
one table row per documented value — its dotted key, type, default (JSON)
and description.

    charts/readme.py                   # rewrite the README
    charts/readme.py --check           # fail if it is stale (make test)

A comment documents the key right below it when it starts with `# --`;
its following `#` lines continue it. Other comments (section headings)
stay in values.yaml only. Every key with no documented key below it must
be documented itself: an undocumented value fails here.
"""

import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent / "hatchway"
README = CHART / "README.md"

KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(.*)$")
DOC_START = re.compile(r"^\s*# -- ?(.*)$")
DOC_MORE = re.compile(r"^\s*#(?: (.*))?$")


def documented(lines):
    """(dotted key, description) of every `# --` comment, in file order."""
    docs = []
    stack = []  # (indent, key) of the mappings the line is in
    comment = None
    for line in lines:
        start = DOC_START.match(line)
        if start:
            comment = [start.group(1)]
            continue
        if comment is not None and DOC_MORE.match(line):
            comment.append(DOC_MORE.match(line).group(1) or "")
            continue
        key = KEY.match(line)
        if not key or line.lstrip().startswith("- "):
            comment = None if not line.strip() else comment
            continue
        indent = len(key.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key.group(2)])
        if comment is not None:
            docs.append((path, " ".join(c for c in comment if c).strip()))
            comment = None
        stack.append((indent, key.group(2)))
    return docs


def lookup(values, path):
    node = values
    for part in path.split("."):
        node = node[part]
    return node


def type_of(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if value is None:
        return "string"
    return "object"


def leaves(values, prefix=""):
    """Dotted keys of every value that is not a non-empty mapping."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaves(value, path + ".")
        else:
            yield path


def render():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    docs = documented(text.splitlines())
    paths = [p for p, _ in docs]
    missing = [
        leaf
        for leaf in leaves(values)
        if not any(leaf == p or leaf.startswith(p + ".") for p in paths)
    ]
    if missing:
        sys.exit(f"values.yaml: no `# --` comment documents {', '.join(missing)}")
    rows = []
    for path, description in sorted(docs, key=lambda d: d[0]):
        value = lookup(values, path)
        default = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        # A table cell: no bare `|`, and `<fullname>` is text, not a tag.
        cell = lambda s: s.replace("|", "\\|")
        text = cell(description).replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f"| {path} | {type_of(value)} | `{cell(default)}` | {text} |")
    maintainers = "\n".join(
        f"| {m['name']} | {m.get('email', '')} | <{m['url']}> |" for m in chart.get("maintainers", [])
    )
    sources = "\n".join(f"* <{s}>" for s in chart.get("sources", []))
    return f"""# {chart['name']}

![Version: {chart['version']}](https://img.shields.io/badge/Version-{chart['version'].replace('-', '--')}-informational?style=flat-square) ![Type: {chart['type']}](https://img.shields.io/badge/Type-{chart['type']}-informational?style=flat-square) ![AppVersion: {chart['appVersion']}](https://img.shields.io/badge/AppVersion-{chart['appVersion'].replace('-', '--')}-informational?style=flat-square)

{chart['description']}

**Homepage:** <{chart['home']}>

This file is generated from `Chart.yaml` and the `# --` comments of
`values.yaml` by `charts/readme.py` (helm-docs' format); `make test` fails
when it is stale. Installing and upgrading: `docs/install.md`; how the
chart is built and checked: `docs/chart.md`.

## Installing

```console
helm install hatchway hatchway-{chart['version']}.tgz \\
  --namespace hatchway-system --create-namespace \\
  --set global.imageRegistry=registry.example.com/platform
```

(`make release` packages the chart and the images, docs/install.md.)

## Maintainers

| Name | Email | Url |
| ---- | ------ | --- |
{maintainers}

## Source Code

{sources}

## Requirements

Kubernetes: `{chart['kubeVersion']}`

## Values

| Key | Type | Default | Description |
|-----|------|---------|-------------|
{chr(10).join(rows)}
"""


def main():
    text = render()
    if sys.argv[1:] == ["--check"]:
        if README.read_text() != text:
            sys.exit("charts/hatchway/README.md is stale: run `make chart-readme` and commit it")
        print(f"charts/hatchway/README.md is current ({text.count(chr(10) + '| ') - 1} values)")
    elif sys.argv[1:]:
        sys.exit(__doc__)
    else:
        README.write_text(text)


if __name__ == "__main__":
    main()
