"""The central `clip` and `snapshot` commands (spec: Acks and commands). Each returns the detail
of the answering device_event or raises CommandFailed with a message for the centre."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from core.interfaces import Command, CommandFailed
from drivers.camera.clipper import ClipRequest
from drivers.camera.clips import ClipFailed, ClipUnavailable

if TYPE_CHECKING:
    from drivers.camera.system import CameraSystem


def _int(args: Mapping[str, Any], key: str) -> int:
    v = args.get(key)
    if not isinstance(v, int) or isinstance(v, bool):
        raise CommandFailed(f"args.{key} must be epoch milliseconds (an integer), got {v!r}")
    return v


class CameraCommands:
    def __init__(self, system: CameraSystem):
        self.system = system

    def _camera(self, args: Mapping[str, Any], known: Mapping[str, Any]) -> str:
        cam = args.get("camera")
        if not isinstance(cam, str) or cam not in known:
            raise CommandFailed(f"args.camera = {cam!r} is not one of: {', '.join(sorted(known)) or 'none'}")
        return cam

    def clip(self, cmd: Command) -> Mapping[str, Any]:
        cam = self._camera(cmd.args, self.system.rings)
        start, end = _int(cmd.args, "start"), _int(cmd.args, "end")
        limit = self.system.rec_cfg.clip_max_s
        if end <= start or (end - start) / 1000 > limit:
            raise CommandFailed(f"clip span must be positive and at most {limit:g} s; got {start}..{end}")
        req = ClipRequest(cam, start, end, {"command": cmd.id})
        try:
            media_id = self.system.clipper.wait_and_cut(req)
        except (ClipUnavailable, ClipFailed, ValueError) as exc:
            raise CommandFailed(str(exc)) from None
        return {"media": media_id, "camera": cam, "start": start, "end": end}

    def snapshot(self, cmd: Command) -> Mapping[str, Any]:
        cam = self._camera(cmd.args, self.system.grabbers)
        try:
            media_id = self.system.snapshot(cam, {"command": cmd.id}, full=True)
        except LookupError as exc:
            raise CommandFailed(str(exc)) from None
        return {"media": media_id, "camera": cam}
