"""A device family's panel on the status page: what it shows, without the page knowing the family.

A family registers a builder ("module:function") next to its components and doctor module
(agent/subsystems.py). The builder gets the agent context, the components the family built
and a `publish` function for live events; it returns a Panel, or None when the family has
nothing configured. The page composes panels from these fields only: plain HTML and JS text,
JSON state and named binary files (a camera's thumbnail), so no web framework leaks into the
families and the core never imports their internals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.interfaces import AgentContext, Component

Publish = Callable[[str, Mapping[str, Any]], None]
"""publish(event, data): a live event for every open page (server-sent events); any thread."""


@dataclass(frozen=True)
class Panel:
    name: str  # a short word: element ids, URLs (/page/panels/NAME/...) and event prefixes
    title: str
    html: str  # the fragment inside the panel's <section>; escape anything taken from config
    # The body of a JS function called once with (el, coop): el is the panel's <section>;
    # coop.on(event, fn) gets live events, coop.state() fetches state(), coop.file(key) is a URL.
    script: str = ""
    state: Callable[[], Mapping[str, Any]] | None = None
    files: Callable[[str], tuple[bytes, str] | None] | None = None  # key -> (bytes, content type)


PanelBuilder = Callable[[AgentContext, Sequence[Component], Publish], Panel | None]
