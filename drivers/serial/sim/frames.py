"""Encoders of what real devices send, from their protocol documents (the inverse of the parsers)."""

from __future__ import annotations

from decimal import Decimal


def mt_sics_weight(grams: int, stable: bool = True, reply_id: str = "S", unit: str = "g") -> bytes:
    """`S S      100.00 g` style: id, status, value right-aligned in 10 columns, unit."""
    value = f"{grams}" if unit == "g" else f"{Decimal(grams) / 1000:.3f}"
    return f"{reply_id} {'S' if stable else 'D'} {value:>10} {unit}\r\n".encode()


def toledo_status_byte(
    motion: bool = False,
    over: bool = False,
    under: bool = False,
    outside_zero: bool = False,
    center_zero: bool = False,
) -> int:
    """Bits 0-4 as the 8213 demand status record; bits 5 and 6 always 1."""
    return (
        (0x01 * motion) | (0x02 * over) | (0x04 * under) | (0x08 * outside_zero) | (0x10 * center_zero) | 0x60
    )


def toledo_8217_weight(grams: int) -> bytes:
    """STX kg with three decimals (e.g. `01.234`) CR."""
    return b"\x02" + f"{Decimal(grams) / 1000:06.3f}".encode() + b"\r"


def toledo_8217_status(**flags: bool) -> bytes:
    return b"\x02?" + bytes([toledo_status_byte(**flags)]) + b"\r"


def toledo_continuous(
    grams: int,
    tare_g: int = 0,
    motion: bool = False,
    net: bool = False,
    out_of_range: bool = False,
    checksum: bool = True,
    tare_field: bool = True,
    negative: bool | None = None,
) -> bytes:
    """kg with 3 decimals (SWA decimal code 5), SWB kg bit set. Out of range below zero is
    `out_of_range` with the sign bit (`negative`, else the sign of grams)."""
    neg = grams < 0 if negative is None else negative
    swa = 0x20 | 0x08 | 5  # bit 5 always 1; increment x1; XXX.XXX
    swb = 0x20 | 0x10 | (0x01 * net) | (0x02 * neg) | (0x04 * out_of_range) | (0x08 * motion)
    swc = 0x20
    body = bytes([0x02, swa, swb, swc]) + f"{abs(grams):06d}".encode()
    if tare_field:
        body += f"{tare_g:06d}".encode()
    body += b"\r"
    if checksum:
        body += bytes([(-sum(b & 0x7F for b in body)) & 0x7F])
    return body


def cas_22(
    grams: int, stable: bool = True, overload: bool = False, net: bool = False, device_id: int = 1
) -> bytes:
    """`ST,GS,` id lamp `,` 8-byte data ` ` unit CR LF = 22 bytes."""
    head = b"OL" if overload else (b"ST" if stable else b"US")
    lamp = 0x80 | (0x40 * stable) | (0x04 * (not net))
    data = (
        f"{Decimal(grams) / 1000:08.3f}".encode()
        if grams >= 0
        else f"-{Decimal(-grams) / 1000:07.3f}".encode()
    )
    frame = (
        head + b"," + (b"NT" if net else b"GS") + b"," + bytes([device_id, lamp]) + b"," + data + b" kg\r\n"
    )
    assert len(frame) == 22, frame
    return frame
