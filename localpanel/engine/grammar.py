"""Compile a ballot's JSON schema into a decoding plan: fixed text, choices among alternatives, bounded strings.

This is the grammar localpanel decodes under. It covers exactly what ballots need (objects with fixed keys,
enums, nullable enums, bounded strings) and rejects any other schema loudly rather than decoding without a
constraint. Output is compact JSON with ", " and ": " separators, keys in schema order.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

# Schema extension: {"x-null-when": {"field": "vote", "equals": "Yes"}} forces a nullable choice to null
# when an earlier field decoded to that value (a debater who keeps its vote was persuaded by no one).
NULL_WHEN = "x-null-when"
# Schema extension: {"x-phrase": true} on a string makes it a phrase (see Text.phrase).
PHRASE = "x-phrase"
# The only pattern free text may carry: what the decoder enforces anyway (no quote, backslash or control character).
TEXT_PATTERN = r'^[^"\\\x00-\x1f\x7f]*$'


class SchemaError(ValueError):
    pass


@dataclass(frozen=True)
class Literal:
    text: str


@dataclass(frozen=True)
class Choice:
    """One of several JSON values, chosen by the model's probability of each complete alternative."""

    field: str
    values: tuple[Any, ...]
    null_when: tuple[str, Any] | None = None

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(json_text(v) for v in self.values)


@dataclass(frozen=True)
class Text:
    """The inside of a JSON string of free text: no quote, backslash or control character, bounded length.

    The quotes around it are literals, so the model ends the text by writing the closing quote itself.
    """

    field: str
    min_chars: int
    max_chars: int
    # The scripts its letters may be written in besides Latin (see scripts.py); None: any.
    scripts: tuple[str, ...] | None = None
    # A phrase (an open question's answer, schema extension "x-phrase"): it ends where the model closes it on a
    # finished word, not at a sentence end, and the decoder never closes it by itself.
    phrase: bool = False


@dataclass(frozen=True)
class Integer:
    """A JSON integer the model writes digit by digit: an optional minus, no leading zero, at most ``max_digits``.

    The model ends it by writing what follows it (the literal after), as it ends free text with a quote.
    """

    field: str
    max_digits: int = 12


Segment = Literal | Choice | Text | Integer


@dataclass
class Plan:
    segments: list[Segment] = field(default_factory=list)

    def add(self, seg: Segment) -> None:
        if isinstance(seg, Literal) and self.segments and isinstance(self.segments[-1], Literal):
            self.segments[-1] = Literal(self.segments[-1].text + seg.text)
        else:
            self.segments.append(seg)

    def keeping_to(self, scripts: tuple[str, ...] | None) -> "Plan":
        """The same plan with its free text kept to ``scripts`` (None: unchanged)."""
        if scripts is None:
            return self
        return Plan([dataclasses.replace(s, scripts=tuple(scripts)) if isinstance(s, Text) else s for s in self.segments])

    def literal_after(self, i: int) -> str:
        """The fixed text right after segment i (empty if another free segment follows at once)."""
        nxt = self.segments[i + 1] if i + 1 < len(self.segments) else None
        return nxt.text if isinstance(nxt, Literal) else ""


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def compile_schema(schema: dict) -> Plan:
    """Build the decoding plan for a JSON schema as pydantic emits it for a ballot model."""
    plan = Plan()
    _object(schema, schema, plan, path="")
    return plan


def _resolve(node: dict, root: dict) -> dict:
    ref = node.get("$ref")
    if ref is None:
        return node
    if not ref.startswith("#/$defs/"):
        raise SchemaError(f"unsupported $ref {ref!r}")
    return root["$defs"][ref.split("/")[-1]]


def _object(node: dict, root: dict, plan: Plan, path: str) -> None:
    node = _resolve(node, root)
    props = node.get("properties")
    if node.get("type") != "object" or not props:
        raise SchemaError(f"{path or 'schema'}: expected an object with properties")
    required = set(node.get("required", []))
    if set(props) - required:
        raise SchemaError(f"{path or 'schema'}: every property must be required ({sorted(set(props) - required)})")
    plan.add(Literal("{"))
    for n, (key, sub) in enumerate(props.items()):
        plan.add(Literal(("" if n == 0 else ", ") + json_text(key) + ": "))
        _value(sub, root, plan, f"{path}.{key}" if path else key)
    plan.add(Literal("}"))


def _value(node: dict, root: dict, plan: Plan, path: str) -> None:
    node = _resolve(node, root)
    null_when = None
    if NULL_WHEN in node:
        rule = node[NULL_WHEN]
        null_when = (rule["field"], rule["equals"])
    if "enum" in node or "const" in node:
        plan.add(Choice(path, _enum_values(node, path), null_when))
        return
    if "anyOf" in node:
        values: list[Any] = []
        for alt in node["anyOf"]:
            alt = _resolve(alt, root)
            if alt.get("type") == "null":
                values.append(None)
            elif "enum" in alt or "const" in alt:
                values.extend(_enum_values(alt, path))
            else:
                raise SchemaError(f"{path}: anyOf may only combine enums and null")
        if null_when and None not in values:
            raise SchemaError(f"{path}: {NULL_WHEN} needs null among the alternatives")
        plan.add(Choice(path, tuple(dict.fromkeys(values)), null_when))
        return
    if node.get("type") == "string":
        if node.get("pattern", TEXT_PATTERN) != TEXT_PATTERN:
            raise SchemaError(f"{path}: free text may only use the pattern {TEXT_PATTERN!r}")
        if "maxLength" not in node:
            raise SchemaError(f"{path}: free text must have a maxLength")
        plan.add(Literal('"'))
        plan.add(Text(path, int(node.get("minLength", 0)), int(node["maxLength"]), phrase=bool(node.get(PHRASE))))
        plan.add(Literal('"'))
        return
    if node.get("type") == "null":  # e.g. attributed_to when nobody else is on the panel
        plan.add(Choice(path, (None,), null_when))
        return
    if node.get("type") == "integer":
        bound = max(abs(int(node.get("minimum", -(10**12) + 1))), abs(int(node.get("maximum", 10**12 - 1))))
        plan.add(Integer(path, max(1, len(str(bound)))))
        return
    if node.get("type") == "object":
        _object(node, root, plan, path)
        return
    raise SchemaError(f"{path}: unsupported schema {node!r}")


def _enum_values(node: dict, path: str) -> tuple[Any, ...]:
    values = tuple(node["enum"]) if "enum" in node else (node["const"],)
    if not values or len(set(map(json_text, values))) != len(values):
        raise SchemaError(f"{path}: an enum needs distinct values")
    return values
