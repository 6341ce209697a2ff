"""`coop-verify BUNDLE [--centre-key PEM]`: the verdict on stdout; exit 0 verified, 1 not, 2 usage.

argparse, not click: the verifier installs with wire's requirements and nothing else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coopverify.verify import Report, public_key, verify_bundle
from wire.bundle import BundleError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def render(path: Path, report: Report) -> str:
    out = [f"Evidence bundle {path}"]
    out += report.lines
    for w in report.warnings:
        out.append(f"WARNING: {w}")
    if report.ok:
        out.append("VERIFIED: every part matches the signed manifest, every batch carries its device's valid "
                   "signature, the chain segments are continuous and every clip is the one its record signs")
    else:
        out.append(f"NOT VERIFIED: {len(report.failures)} problem{'s' if len(report.failures) > 1 else ''}")
        out += [f"  FAILED: {f}" for f in report.failures]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="coop-verify",
        description="Verify an evidence bundle (docs/evidence-bundle-v1.md) offline: who sealed what and when, "
        "whether the chain is continuous, which clip shows which record.",
    )
    ap.add_argument("bundle", type=Path, help="the bundle file (.zip)")
    ap.add_argument("--centre-key", type=Path, metavar="PEM",
                    help="the exporting centre's public key (PEM); without it the bundle's own key is used, "
                    "and the verdict says so")
    args = ap.parse_args(argv)
    if not args.bundle.is_file():
        print(f"coop-verify: {args.bundle}: no such file", file=sys.stderr)
        return EXIT_USAGE
    pinned = None
    if args.centre_key is not None:
        try:
            pinned = public_key(args.centre_key.read_bytes(), str(args.centre_key))
        except (OSError, BundleError) as exc:
            print(f"coop-verify: --centre-key {args.centre_key}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    report = verify_bundle(args.bundle, pinned)
    sys.stdout.write(render(args.bundle, report))
    return EXIT_OK if report.ok else EXIT_FAILED


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
