"""Builds this family's supervised components from the config (placeholder until its drivers land)."""

from __future__ import annotations

from agent.interfaces import AgentContext, Component


def build_components(ctx: AgentContext) -> list[Component]:
    return []
