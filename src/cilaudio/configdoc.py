"""Write config/README.md from the config schema, so the key reference never drifts from it.

    python -m cilaudio.configdoc workflow/schemas/config.schema.yaml > config/README.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

import yaml

HEADER = """# Configuration keys

Generated from `workflow/schemas/config.schema.yaml` by
`python -m cilaudio.configdoc workflow/schemas/config.schema.yaml > config/README.md`
(a test checks that it is current). The schema validates the config at start-up: an unknown
key or a value outside the allowed ones stops the run with a message that names it.

`config/config.yaml` is the default run on the built-in benchmark. `<name>` stands for a
name you choose (a dataset or a method).

| key | default | description |
|---|---|---|
"""


def _resolve(node: dict, root: dict) -> dict:
    ref = node.get("$ref")
    if ref:
        target = root
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        merged = dict(target)
        merged.update({k: v for k, v in node.items() if k != "$ref"})
        return merged
    return node


def _rows(node: dict, root: dict, prefix: str) -> Iterator[tuple[str, Any, str]]:
    node = _resolve(node, root)
    for key, child in (node.get("properties") or {}).items():
        child = _resolve(child, root)
        path = f"{prefix}.{key}" if prefix else key
        text = " ".join(str(child.get("description", "")).split())
        enum = child.get("enum") or (child.get("items") or {}).get("enum")
        if enum:
            text += " Allowed: " + ", ".join(f"`{v}`" for v in enum) + "."
        yield path, child.get("default"), text
        yield from _rows(child, root, path)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _rows(extra, root, f"{prefix}.<name>")


def render(schema_path: str | Path) -> str:
    from .methods import method_schema

    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    # a method's settings are declared by the mechanism modules, not in the schema file
    schema["$defs"]["method"].update(method_schema())
    lines = [HEADER]
    for path, default, description in _rows(schema, schema, ""):
        lines.append(f"| `{path}` | `{json.dumps(default)}` | {description} |\n")
    return "".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render(sys.argv[1]))
