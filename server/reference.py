"""The reference tables of docs/protocol.md, rendered from /v1/openapi.json and
/v1/asyncapi.json (so from the same declarations), and the metrics table of
docs/operations.md, rendered from the metrics registry. `ours contract --write` puts them
between the `<!-- generated: NAME ... -->` and `<!-- end generated -->` markers;
tests/test_docs.py fails when a file differs from what the code renders.
"""

from __future__ import annotations

import json
import re
from typing import Any

from server.errors import HTTP_STATUS, Code

BEGIN = "<!-- generated: {name} (ours contract --write; do not edit) -->"
END = "<!-- end generated -->"
_BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[\w-]+) \(ours contract --write; do not edit\) -->\n)"
    r"(?:.*?\n)??(<!-- end generated -->)",
    re.S,
)


def _resolve(schema: Any, components: dict[str, Any]) -> dict[str, Any]:
    while isinstance(schema, dict) and "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    return schema if isinstance(schema, dict) else {}


def _type(schema: Any, components: dict[str, Any], depth: int = 0) -> str:
    if not isinstance(schema, dict):
        return "any"
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return " \\| ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            parts = [_type(s, components, depth) for s in schema[key]]
            return " \\| ".join(dict.fromkeys(parts))
    t = schema.get("type")
    if t == "array":
        return f"{_type(schema.get('items'), components, depth)}[]"
    if t == "object" and "additionalProperties" in schema and not schema.get("properties"):
        return f"{{str: {_type(schema['additionalProperties'], components, depth)}}}"
    if isinstance(t, list):
        return " \\| ".join(t)
    return str(t or "any")


def fields(schema: Any, components: dict[str, Any]) -> str:
    """`name` type, … of an object schema; a required field is marked with *."""
    target = _resolve(schema, components)
    props = target.get("properties")
    if not props:
        if not target or target.get("title") == "NoPayload":
            return "—"
        return _type(schema, components)
    required = set(target.get("required", []))
    return ", ".join(
        f"`{name}`{'*' if name in required else ''} {_type(prop, components)}"
        for name, prop in props.items()
    )


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|").replace("\\\\|", "\\|")


def error_codes() -> str:
    rows = ["| code | HTTP status |", "|---|---|"]
    rows += [f"| `{c.value}` | {HTTP_STATUS[c]} |" for c in Code]
    return "\n".join(rows)


def http_routes(openapi: dict[str, Any]) -> str:
    components = openapi["components"]["schemas"]
    rows = [
        "| route | auth | takes | answers `data` | errors | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for path, methods in openapi["paths"].items():
        for method, op in methods.items():
            takes = []
            for p in op.get("parameters", []):
                if p["in"] in ("query", "header"):
                    star = "*" if p.get("required") else ""
                    takes.append(f"{p['in']} `{p['name']}`{star}")
            body = op.get("requestBody")
            if body:
                schema = body["content"]["application/json"]["schema"]
                takes.append("body: " + fields(schema, components))
            status, success = next(
                (s, r) for s, r in op["responses"].items() if s.startswith(("2", "3"))
            )
            content = next(iter(success.get("content", {}).items()), None)
            if content is None:
                answer = "—"
            elif content[0] != "application/json" or "data" not in content[1]["schema"].get(
                "properties", {}
            ):
                answer = f"{content[0]}"
            else:
                answer = fields(content[1]["schema"]["properties"]["data"], components)
            errors = sorted(
                {
                    code
                    for status, r in op["responses"].items()
                    if status[0] in "45"
                    for code in re.findall(r"`(\w+)`", r["description"])
                }
                - _HTTP_COMMON
            )
            auth = ", ".join(next(iter(s)) for s in op.get("security", [])) or "public"
            rows.append(
                "| "
                + " | ".join(
                    _cell(x)
                    for x in (
                        f"`{method.upper()} {path}`",
                        auth,
                        "; ".join(takes) or "—",
                        f"{status}: {answer}",
                        ", ".join(errors),
                        op["summary"],
                    )
                )
                + " |"
            )
    return "\n".join(rows)


def _messages(asyncapi: dict[str, Any], channel: str, action: str) -> list[tuple[str, Any]]:
    out = []
    msgs = asyncapi["components"]["messages"]
    for op_id, op in asyncapi["operations"].items():
        if op["action"] != action or op["channel"]["$ref"] != f"#/channels/{channel}":
            continue
        if op_id.endswith((".connect",)):
            continue
        ref = asyncapi["channels"][channel]["messages"][op["messages"][0]["$ref"].rsplit("/", 1)[1]]
        message = msgs[ref["$ref"].rsplit("/", 1)[1]]
        reply = None
        if "reply" in op:
            rref = op["reply"]["messages"][0]["$ref"].rsplit("/", 1)[1]
            reply = msgs[asyncapi["channels"][channel]["messages"][rref]["$ref"].rsplit("/", 1)[1]]
        out.append((message["name"], (message, reply)))
    return sorted(out)


def socket_events(asyncapi: dict[str, Any]) -> str:
    components = asyncapi["components"]["schemas"]
    parts = []
    for channel, ch in asyncapi["channels"].items():
        parts.append(f"#### `{ch['address']}` — client events (emit with an ack)\n")
        parts.append("| event | payload | ack `data` | errors | what it does |")
        parts.append("|---|---|---|---|---|")
        for name, (message, reply) in _messages(asyncapi, channel, "receive"):
            ok = reply["payload"]["oneOf"][0]["properties"]["data"]
            own = [c for c in reply["x-error-codes"] if c not in _COMMON]
            parts.append(
                "| "
                + " | ".join(
                    _cell(x)
                    for x in (
                        f"`{name}`",
                        fields(message["payload"], components),
                        fields(ok, components) if ok else "null",
                        ", ".join(own) or "—",
                        message.get("summary", ""),
                    )
                )
                + " |"
            )
        parts.append(f"\n#### `{ch['address']}` — server events\n")
        parts.append("| event | payload | when |")
        parts.append("|---|---|---|")
        for name, (message, _reply) in _messages(asyncapi, channel, "send"):
            if "." in name:  # domain events: one row, their payloads are in "Event types"
                continue
            parts.append(
                "| "
                + " | ".join(
                    _cell(x)
                    for x in (
                        f"`{name}`",
                        fields(message["payload"], components),
                        message.get("summary", ""),
                    )
                )
                + " |"
            )
        domain = [n for n, _ in _messages(asyncapi, channel, "send") if "." in n]
        if domain:
            parts.append(
                "| domain events | the envelope `{id, type, actor, subjects, payload, ts}` | "
                + ", ".join(f"`{n}`" for n in domain)
                + " |"
            )
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


_COMMON = {"bad_request", "payload_too_large", "rate_limited", "unavailable", "internal"}
_HTTP_COMMON = {"rate_limited", "unavailable", "internal"}


def metrics_table(registry: Any) -> str:
    """Every metric the process registers (every feature imported): name, type, labels."""
    rows = ["| metric | type | labels | what it counts |", "|---|---|---|---|"]
    found = []
    for collector in list(registry._collector_to_names):  # prometheus-client keeps no other list
        name = getattr(collector, "_name", None)
        if name is None:
            continue
        kind = getattr(collector, "_type", "")
        shown = f"{name}_total" if kind == "counter" else name
        labels = ", ".join(f"`{x}`" for x in getattr(collector, "_labelnames", ())) or "—"
        found.append((shown, kind, labels, getattr(collector, "_documentation", "")))
    for shown, kind, labels, doc in sorted(found):
        rows.append(f"| `{shown}` | {kind} | {labels} | {_cell(doc)} |")
    return "\n".join(rows)


def blocks_by_doc(openapi: dict[str, Any], asyncapi: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The generated blocks of each file in docs/, by name."""
    from server.metrics import REGISTRY

    return {
        "protocol.md": {
            "error-codes": error_codes(),
            "http-routes": http_routes(openapi),
            "socket-events": socket_events(asyncapi),
        },
        "operations.md": {"metrics": metrics_table(REGISTRY)},
    }


def rewrite(text: str, blocks: dict[str, str], doc: str = "the document") -> str:
    """`text` with each generated block replaced by its rendering; every block must be there."""
    seen = set()

    def sub(m: re.Match[str]) -> str:
        name = m.group("name")
        seen.add(name)
        return m.group(1) + blocks[name].rstrip("\n") + "\n" + m.group(3)

    out = _BLOCK.sub(sub, text)
    missing = set(blocks) - seen
    if missing:
        raise ValueError(
            f"docs/{doc} lacks the generated blocks "
            + ", ".join(sorted(missing))
            + "; add\n"
            + "\n".join(BEGIN.format(name=n) + "\n" + END for n in sorted(missing))
        )
    return out
