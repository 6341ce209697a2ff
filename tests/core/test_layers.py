"""The layering of docs/architecture.md, checked on the code's own imports (AST, every import,
including those inside functions and under TYPE_CHECKING):

  floor 1  core/      imports nothing of ours
  floor 2  wire/      the spec: core/ only;  drivers/: core/ and wire/ (see ALLOWED_BACK)
  floor 3  buffer/    core/, wire/;          receiver/: core/ and wire/ only (the centre installs alone);
                      coopverify/: core/ and wire/ only (the offline verifier installs alone)
  floor 4  agent/     anything

and the record kinds written once (wire/kinds.py), and the centre's and the verifier's
distributions declaring exactly what their packages import.
"""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
OURS = {"core", "wire", "buffer", "drivers", "receiver", "agent", "coopverify"}
MAY_IMPORT = {
    "core": {"core"},
    "wire": {"wire", "core"},
    "drivers": {"drivers", "wire", "core"},
    "buffer": {"buffer", "wire", "core"},
    "receiver": {"receiver", "wire", "core"},
    "coopverify": {"coopverify", "wire", "core"},
}
# Imports that still run back up, each to be removed (docs/architecture.md says which remain).
ALLOWED_BACK: set[tuple[str, str]] = set()
# What the agent's device families need and the centre must never install or import.
DEVICE_LIBS = {"cv2", "onvif", "wsdiscovery", "ifaddr", "serial", "reportlab", "numpy", "biip", "rlPyCairo", "uuid6"}
# fastapi, uvicorn and uvloop are the centre's too since its evidence view (receiver/web, issue 11).
DEVICE_DISTS = {"opencv-python-headless", "opencv-python", "onvif-zeep-async", "wsdiscovery", "ifaddr", "pyserial",
                "reportlab", "rlpycairo", "numpy", "biip", "uuid6"}


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Dotted names of everything `path` imports (the code uses absolute imports only)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, f"{path}:{node.lineno}: a relative import; use an absolute one"
            out.add(node.module)
    return out


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_imports_run_only_downward(package: str) -> None:
    wrong = []
    for path in modules(package):
        mod = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for name in imported(path):
            top = name.split(".")[0]
            if top in OURS and top not in MAY_IMPORT[package] and (mod, name) not in ALLOWED_BACK:
                wrong.append(f"{mod} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_allowed_back_references_are_still_real() -> None:
    """An entry of ALLOWED_BACK that no longer occurs must go (the list only shrinks)."""
    for mod, name in ALLOWED_BACK:
        assert name in imported(ROOT / (mod.replace(".", "/") + ".py")), (mod, name)


def test_the_receiver_imports_no_agent_and_no_device_library() -> None:
    """Importing the whole centre (as `coop-receiver run` does) loads none of the agent."""
    forbidden = sorted(DEVICE_LIBS | OURS - MAY_IMPORT["receiver"])
    code = (
        "import sys\n"
        "import receiver.cli, receiver.server, receiver.mqtt, receiver.verifier, receiver.status, wire.records\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- the record kinds, once


def test_record_kinds_are_listed_only_in_wire_kinds() -> None:
    """No tuple, list, set or Literal of three or more kind names anywhere but wire/kinds.py."""
    from wire.kinds import KINDS

    found = []
    for package in ("agent", "buffer", "drivers", "receiver", "wire", "core"):
        for path in modules(package):
            if path == ROOT / "wire" / "kinds.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                elts = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else []
                names = {e.value for e in elts if isinstance(e, ast.Constant) and e.value in KINDS}
                if len(names) >= 3:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {sorted(names)}")
    assert not found, "list the kinds in wire/kinds.py only:\n" + "\n".join(found)


def test_every_kind_has_its_check() -> None:
    from wire.kinds import KINDS
    from wire.records import ADAPTERS

    assert tuple(ADAPTERS) == KINDS


# ---------------------------------------------------------------- the centre's distribution


def centre_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "centre" / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def closure(reqs: list[Requirement]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions that `reqs` need, transitively (extras and other platforms left out)."""
    out: dict[str, importlib.metadata.Distribution] = {}
    todo = list(reqs)
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in out:
            continue
        dist = importlib.metadata.distribution(req.name)
        assert req.specifier.contains(dist.version, prereleases=True), (req, dist.version)
        out[name] = dist
        todo += [Requirement(r) for r in dist.requires or []]
    return out


def test_centre_declares_no_device_library() -> None:
    names = {canonicalize_name(r.name) for r in centre_requirements()}
    assert not names & {canonicalize_name(d) for d in DEVICE_DISTS}
    assert not set(closure(centre_requirements())) & {canonicalize_name(d) for d in DEVICE_DISTS}


def test_centre_declares_what_its_packages_import() -> None:
    """Every third-party module that core/, wire/ or receiver/ imports comes from a declared
    requirement of coop-centre (or one they pull in); the standard library needs nothing."""
    by_module = importlib.metadata.packages_distributions()
    have = set(closure(centre_requirements()))
    missing = []
    for package in ("core", "wire", "receiver"):
        for path in modules(package):
            for name in imported(path):
                top = name.split(".")[0]
                if top in OURS or top in sys.stdlib_module_names or top == "__future__":
                    continue
                dists = {canonicalize_name(d) for d in by_module.get(top, [])}
                if not dists & have:
                    missing.append(f"{path.relative_to(ROOT)} imports {top} ({', '.join(sorted(dists)) or '?'})")
    assert not missing, "\n".join(missing)


def test_centre_ships_every_package_of_its_code() -> None:
    """A subpackage missing from centre/pyproject.toml installs without its folder: `coop-receiver export`
    (receiver/evidence) would fail only on the installed centre."""
    listed = set(tomllib.loads((ROOT / "centre" / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("core", "wire", "receiver")
             for p in (ROOT / top).rglob("__init__.py") if "__pycache__" not in p.parts}
    assert found == listed


def test_centre_version_is_the_trees() -> None:
    from agent import __version__

    assert tomllib.loads((ROOT / "centre" / "pyproject.toml").read_text())["project"]["version"] == __version__


# ---------------------------------------------------------------- the verifier's distribution


def verify_project() -> dict[str, object]:
    return dict(tomllib.loads((ROOT / "verify" / "pyproject.toml").read_text()))


def verify_requirements() -> list[Requirement]:
    return [Requirement(r) for r in verify_project()["project"]["dependencies"]]  # type: ignore[index]


def shipped_by_verify() -> list[Path]:
    """The files coop-verify installs: coopverify/ and wire/ whole, and core's modules it names."""
    tool = verify_project()["tool"]["setuptools"]  # type: ignore[index]
    files = [p for pkg in tool["packages"] for p in modules(pkg) if p.parent == ROOT / pkg]
    for mod in tool.get("py-modules", []):
        files.append(ROOT / (mod.replace(".", "/") + ".py"))
        files.append(ROOT / mod.split(".")[0] / "__init__.py")
    return sorted(set(files))


def test_verify_ships_what_its_code_imports_of_ours() -> None:
    """Every module of ours that a shipped module imports is shipped too (else coop-verify breaks installed)."""
    shipped = {".".join(p.relative_to(ROOT).with_suffix("").parts) for p in shipped_by_verify()}
    shipped |= {m.removesuffix(".__init__") for m in shipped}
    missing = []
    for path in shipped_by_verify():
        for name in imported(path):
            if name.split(".")[0] in OURS and name not in shipped:
                missing.append(f"{path.relative_to(ROOT)} imports {name}, which verify/pyproject.toml does not ship")
    assert not missing, "\n".join(missing)


def test_verify_declares_what_it_imports_and_no_more() -> None:
    """coop-verify needs wire's requirements and nothing else: no click, no paho, no psycopg, no device library."""
    by_module = importlib.metadata.packages_distributions()
    have = set(closure(verify_requirements()))
    missing = []
    for path in shipped_by_verify():
        for name in imported(path):
            top = name.split(".")[0]
            if top in OURS or top in sys.stdlib_module_names or top == "__future__":
                continue
            dists = {canonicalize_name(d) for d in by_module.get(top, [])}
            if not dists & have:
                missing.append(f"{path.relative_to(ROOT)} imports {top} ({', '.join(sorted(dists)) or '?'})")
    assert not missing, "\n".join(missing)
    declared = {canonicalize_name(r.name) for r in verify_requirements()}
    assert not declared & {canonicalize_name(d) for d in DEVICE_DISTS | {"click", "paho-mqtt", "psycopg"}}
    assert declared <= {canonicalize_name(r.name) for r in centre_requirements()}  # wire's, all of them


def test_verify_version_is_the_trees() -> None:
    from agent import __version__

    assert verify_project()["project"]["version"] == __version__  # type: ignore[index]
