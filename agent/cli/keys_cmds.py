"""`coopagent keys init|show`: the device's Ed25519 identity."""

from __future__ import annotations

from pathlib import Path

import click

from agent.cli.common import config_option, handle_errors, resolve_config
from wire.cose import kid_for
from wire.keys import generate_key_file, load_private_key, public_pem, public_raw


@click.group("keys")
def keys() -> None:
    """Make and show the device signing key."""


@keys.command("init")
@config_option
@click.option("--force", is_flag=True, help="replace an existing key (the centre must register the new one)")
@handle_errors
def keys_init(config_path: Path | None, force: bool) -> None:
    """Create the device key (Ed25519, PKCS#8 PEM, mode 0600)."""
    cfg = resolve_config(config_path)
    path = cfg.agent.key_path
    key = generate_key_file(path, force=force)
    click.echo(f"created {path} (mode 0600)")
    click.echo(f"kid {kid_for(key.public_key()).hex()}")


@keys.command("show")
@config_option
@click.option("--pem", is_flag=True, help="print only the public key PEM, for registration at the centre")
@handle_errors
def keys_show(config_path: Path | None, pem: bool) -> None:
    """Print the device id, kid and public key (never the private key)."""
    cfg = resolve_config(config_path)
    key = load_private_key(cfg.agent.key_path)
    pub = key.public_key()
    if pem:
        click.echo(public_pem(pub), nl=False)
        return
    click.echo(f"device  {cfg.agent.device}")
    click.echo(f"kid     {kid_for(pub).hex()}")
    click.echo(f"public  {public_raw(pub).hex()}")


@keys.command("rotate")
@config_option
@click.option("--keep-old", is_flag=True, help="keep the old private key as KEY.retired-KID (default: delete it)")
@handle_errors
def keys_rotate(config_path: Path | None, keep_old: bool) -> None:
    """Replace the device key without breaking the chain (run with the agent stopped).

    The last batch signed by the old key announces the new one (a key_rotated device_event);
    seq and prev continue. Give the new public key (`keys show --pem`) to the centre if it
    registers rotations (`coop-receiver device rotate`).
    """
    from agent.keyrotation import rotate

    cfg = resolve_config(config_path)
    r = rotate(cfg, keep_old=keep_old)
    if r.finished_only:
        click.echo(f"finished an interrupted rotation to kid {r.new_kid.hex()}")
    else:
        click.echo(f"rotated: kid {r.old_kid.hex()} signed up to seq {r.seq} (announcing kid {r.new_kid.hex()})")
    click.echo(f"new kid {r.new_kid.hex()}; batches from seq {r.seq + 1} are signed with it")
