"""The whole agent config: core sections plus the device families' own models."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from agent.config.core import (
    AgentSection,
    ApiSection,
    BufferSection,
    ClockSection,
    DiskSection,
    MediaSection,
    StatusPageSection,
    SupervisorSection,
    UplinkSection,
)
from core.cli import DEFAULT_CONFIG_PATH as CORE_DEFAULT_CONFIG_PATH
from core.config.base import Section
from drivers.camera.config import CameraConfig, ClipRuleConfig, RecordingConfig
from drivers.serial.config import ScaleConfig, ScannerConfig, WorkflowConfig

DEFAULT_CONFIG_PATH = CORE_DEFAULT_CONFIG_PATH  # core.cli names it for every command's --config


class AgentConfig(Section):
    agent: AgentSection = Field(default_factory=AgentSection)
    uplink: UplinkSection = Field(default_factory=UplinkSection)
    api: ApiSection = Field(default_factory=ApiSection)
    buffer: BufferSection = Field(default_factory=BufferSection)
    media: MediaSection = Field(default_factory=MediaSection)
    disk: DiskSection = Field(default_factory=DiskSection)
    supervisor: SupervisorSection = Field(default_factory=SupervisorSection)
    clock: ClockSection = Field(default_factory=ClockSection)
    status_page: StatusPageSection = Field(default_factory=StatusPageSection)
    scanners: list[ScannerConfig] = Field(default_factory=list)
    scales: list[ScaleConfig] = Field(default_factory=list)
    workflow: WorkflowConfig = Field(default_factory=WorkflowConfig)
    cameras: list[CameraConfig] = Field(default_factory=list)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    clip_rules: list[ClipRuleConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> AgentConfig:
        for key, items in (("scanners", self.scanners), ("scales", self.scales), ("cameras", self.cameras)):
            seen: set[str] = set()
            for item in items:
                if item.name in seen:
                    raise ValueError(f"[[{key}]] name {item.name!r} is used twice; names must be unique")
                seen.add(item.name)
        return self

    @model_validator(mode="after")
    def _status_page_lan(self) -> AgentConfig:
        if self.status_page.allow_lan and not self.api.allow_non_loopback:
            raise ValueError("[status_page] allow_lan = true needs [api] allow_non_loopback = true and a LAN "
                             "[api] listen address; set both, or leave allow_lan false (reach the page "
                             "with ssh -L instead)")
        return self

    @model_validator(mode="after")
    def _serial_refs(self) -> AgentConfig:
        """A scanner paired to a scale that does not exist, or two devices on one port, is a
        config error (caught by `config check`), not a surprise at start."""
        from drivers.serial.config import cross_check

        problems = cross_check(self.scanners, self.scales)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _clip_rule_cameras(self) -> AgentConfig:
        from drivers.camera.config import check_rules

        check_rules(self)
        return self

    @property
    def media_dir(self) -> Path:
        return self.media.dir if self.media.dir is not None else self.agent.data_dir / "media"

    @property
    def db_path(self) -> Path:
        return self.agent.data_dir / "buffer.sqlite3"
