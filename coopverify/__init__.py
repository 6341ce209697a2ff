"""coop-verify: check an evidence bundle (docs/evidence-bundle-v1.md) offline, with no access to the centre.

Installs on its own (verify/pyproject.toml: this package, wire/ and the one module of core/
that wire/ imports, and only what they need), so a court or another ministry can run it.

  verify   the checks: container, the exporter's manifest, every part's SHA-256, the devices'
           signatures on their batches, the chain segment, each clip against its signed record
  text     what a person reads: times in UTC, a record in one line
  cli      the `coop-verify BUNDLE [--centre-key PEM]` command (exit 0 verified, 1 not, 2 usage)
"""
