"""Generate config/REFERENCE.md from the models, so the reference can never drift from the code.

Run `python -m agent.config.reference > config/REFERENCE.md`; a test fails when the committed
file differs from what the models say.
"""

from __future__ import annotations

import types
import typing
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agent.config.model import AgentConfig


def _inner_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        m = _inner_model(arg)
        if m is not None:
            return m
    return None


def _all_models(ann: Any) -> list[type[BaseModel]]:
    """Every model in an annotation: one for a plain section, several for a tagged union."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(ann):
        out += [m for m in _all_models(arg) if m not in out]
    return out


def _tag(model: type[BaseModel]) -> str:
    """The discriminator of a union variant, e.g. protocol = 'mt-sics'."""
    for name, f in model.model_fields.items():
        if typing.get_origin(f.annotation) is typing.Literal and len(typing.get_args(f.annotation)) == 1:
            return f" ({name} = {typing.get_args(f.annotation)[0]!r})"
    return ""


def _type_name(ann: Any) -> str:
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(ann))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(ann) if a is not type(None)) + " (optional)"
    if origin is typing.Annotated:
        return _type_name(typing.get_args(ann)[0])
    if origin is list:
        return f"list of {_type_name(typing.get_args(ann)[0])}"
    if ann is type(None):
        return "none"
    return getattr(ann, "__name__", str(ann))


def _bounds(f: FieldInfo) -> str:
    out = []
    for m in f.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym} {v}")
    return ", ".join(out)


def _default(f: FieldInfo) -> str:
    if f.default is not PydanticUndefined:
        if f.default is None:
            return "unset"
        shown = str(f.default) if isinstance(f.default, PurePath) else repr(f.default)
        return f"`{shown}`"
    if f.default_factory is not None:
        return "see section"
    return "required"


def section_rows(model: type[BaseModel], prefix: str) -> list[str]:
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    lines = [f"\n## `{prefix}`\n", *([doc, ""] if doc else []),
             "| key | type | default | allowed | what it is |", "|---|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, f in model.model_fields.items():
        sub = _inner_model(f.annotation)
        if sub is not None and name not in ("",):
            nested.append((name, sub))
            continue
        desc = (f.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {_type_name(f.annotation)} | {_default(f)} | {_bounds(f)} | {desc} |")
    for name, sub in nested:
        lines += section_rows(sub, f"{prefix}.{name}")
    return lines


def render() -> str:
    out = ["# Agent configuration reference", "",
           "Generated from the typed models by `python -m agent.config.reference`; do not edit by hand.",
           "Every key has a default unless marked required; unknown keys are errors.",
           "See `agent.example.toml` for a commented example."]
    for name, f in AgentConfig.model_fields.items():
        models = _all_models(f.annotation)
        assert models, name
        is_list = typing.get_origin(f.annotation) is list
        for sub in models:
            title = (f"[[{name}]]" if is_list else f"[{name}]") + (_tag(sub) if len(models) > 1 else "")
            out += section_rows(sub, title)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
