"""Ed25519 key files: made on the device, PKCS#8 PEM, mode 0600, never logged."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.interfaces import UserError
from wire.cose import kid_for


class KeyError_(UserError):
    """A key file that is missing, unreadable, of the wrong type or too widely readable."""


def generate_key_file(path: Path, force: bool = False) -> Ed25519PrivateKey:
    """Create the key with O_EXCL and mode 0600 from the first byte, so it is never readable by others."""
    if path.exists() and not force:
        raise KeyError_(f"{path} exists; refusing to overwrite a device key (use --force to replace it)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return key


def load_private_key(path: Path, check_mode: bool = True) -> Ed25519PrivateKey:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise KeyError_(f"device key {path} does not exist; run 'coopagent keys init'") from exc
    if check_mode and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyError_(
            f"device key {path} has mode {stat.S_IMODE(st.st_mode):04o}; it must not be group- or "
            f"world-accessible (chmod 600 {path})")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"device key {path} is not an unencrypted PKCS#8 PEM key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"device key {path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"cannot read public key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyError_(f"{path} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyError_(f"{path} is not an Ed25519 public key")
    return key


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


__all__ = ["KeyError_", "generate_key_file", "load_private_key", "load_public_key", "public_pem",
           "public_raw", "kid_for"]
