"""Scale protocols, selected by `protocol = "..."` in a [[scales]] entry (a discriminated union)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, Tag

from drivers.serial.scales import cas, line_regex, mt_sics, toledo_8217, toledo_continuous
from drivers.serial.scales.base import Reading, ScaleConfigBase, ScaleProtocol

_MODULES = (mt_sics, toledo_8217, toledo_continuous, cas, line_regex)
PROTOCOLS: dict[str, type[ScaleProtocol]] = {m.Protocol.name: m.Protocol for m in _MODULES}


def _protocol_of(value: Any) -> str | None:
    """The tag for pydantic; None (an error naming every protocol) when missing or unknown."""
    p = value.get("protocol") if isinstance(value, dict) else getattr(value, "protocol", None)
    return p if p in PROTOCOLS else None


ScaleConfig = Annotated[
    Annotated[mt_sics.Config, Tag("mt-sics")]
    | Annotated[toledo_8217.Config, Tag("toledo-8217")]
    | Annotated[toledo_continuous.Config, Tag("toledo-continuous")]
    | Annotated[cas.Config, Tag("cas")]
    | Annotated[line_regex.Config, Tag("line-regex")],
    Discriminator(
        _protocol_of,
        custom_error_type="scale_protocol",
        custom_error_message="protocol is missing or unknown; use one of: " + ", ".join(PROTOCOLS),
    ),
]


def make_protocol(config: ScaleConfigBase) -> ScaleProtocol:
    return PROTOCOLS[config.protocol](config)


__all__ = ["PROTOCOLS", "Reading", "ScaleConfig", "ScaleConfigBase", "ScaleProtocol", "make_protocol"]
