"""The configuration reference: every key of the schema with its type, default and description.

``config/README.md`` carries this table between two marker lines; ``fmvae config-reference`` renders
it from the schema (``--write`` rewrites the file's generated section), and a test checks that the
file and the schema agree, so the reference cannot drift from what is validated.
"""

from __future__ import annotations

import json
from pathlib import Path

BEGIN = "<!-- BEGIN GENERATED: fmvae config-reference (do not edit by hand) -->"
END = "<!-- END GENERATED -->"
MAX_DEFAULT_CHARS = 60  # longer defaults (the real data sets' URLs, the experiment list) are shown as "see schema"


def _type(schema: dict) -> str:
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "oneOf" in schema or "anyOf" in schema:
        return " or ".join(_type(s) for s in schema.get("oneOf", schema.get("anyOf")))
    kind = schema.get("type", "")
    if kind == "array" and isinstance(schema.get("items"), dict):
        inner = _type(schema["items"])
        return f"list of {inner}" if inner else "list"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict) and not schema.get("properties"):
        inner = _type(schema["additionalProperties"])
        return f"map to {inner}" if inner else "map"
    return kind if isinstance(kind, str) else " or ".join(kind)


def _default(schema: dict) -> str:
    if "default" not in schema:
        return ""
    text = json.dumps(schema["default"], ensure_ascii=False)
    if text in ("{}", "[]") and schema.get("type") == "object":
        return ""
    return f"`{text}`" if len(text) <= MAX_DEFAULT_CHARS else "(see schema)"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def rows(schema: dict, path: str = "") -> list[tuple[str, str, str, str]]:
    """(key path, type, default, description) for every key, depth first in the schema's order.
    A key under ``patternProperties`` or an object-valued ``additionalProperties`` is written
    ``<name>``; an object with its own keys gets a row only where it has a description."""
    out = []
    children = list(schema.get("properties", {}).items())
    children += [("<name>", sub) for sub in schema.get("patternProperties", {}).values()]
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and (extra.get("properties") or extra.get("additionalProperties") or extra.get("patternProperties")):
        children.append(("<name>", extra))
    # sibling keys with the same schema (the synthetic sets' size entries) share their rows
    grouped: dict[str, tuple[list[str], dict]] = {}
    for key, sub in children:
        grouped.setdefault(json.dumps(sub, sort_keys=True, default=str), ([], sub))[0].append(key)
    children = [(keys[0] if len(keys) == 1 else "{" + ",".join(keys) + "}", sub) for keys, sub in grouped.values()]
    for key, sub in children:
        where = f"{path}.{key}" if path else key
        nested = bool(sub.get("properties") or sub.get("patternProperties")
                      or (isinstance(sub.get("additionalProperties"), dict) and sub["additionalProperties"].get("type") == "object"))
        if not nested or sub.get("description"):
            out.append((where, _type(sub) if not nested else "object", _default(sub), _cell(sub.get("description", ""))))
        if nested:
            out.extend(rows(sub, where))
    # one row per <name> path: patternProperties of the same object may repeat a path
    seen, unique = set(), []
    for row in out:
        if row[0] not in seen:
            seen.add(row[0])
            unique.append(row)
    return unique


def render(schema: dict) -> str:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    lines += [f"| `{key}` | {kind} | {default} | {text} |" for key, kind, default, text in rows(schema)]
    return "\n".join(lines) + "\n"


def generated_section(text: str) -> str:
    """The part of a file between the markers (exclusive)."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"the file has no generated section (markers {BEGIN!r} ... {END!r})")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write(path: Path, schema: dict) -> bool:
    """Replace the generated section of ``path`` with the schema's table; True if the file changed."""
    text = Path(path).read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new = f"{head}{BEGIN}\n{render(schema)}{END}{tail}"
    if new != text:
        Path(path).write_text(new)
    return new != text
