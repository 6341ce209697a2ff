"""The printable command barcode sheet (Code 128, drawn by reportlab), as PDF or PNG.

A stock room has a scanner and no screen: technicians print this sheet and tape it to the
wall. Code 128 carries the ':' and letters of the commands and every scanner reads it.
"""

from __future__ import annotations

from pathlib import Path

from reportlab.graphics import renderPDF, renderPM
from reportlab.graphics.barcode import createBarcodeDrawing
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen.canvas import Canvas

from drivers.serial.workflows.commands import sheet_commands

COLS, ROWS = 2, 6
MARGIN = 36.0


def sheet_rows(prefix: str = "CMD:", locations: list[str] | None = None) -> list[tuple[str, str]]:
    rows = sheet_commands(prefix)
    for loc in locations or []:
        rows += [
            (f"{prefix}COUNT:OPEN:{loc}", f"Open count at {loc}"),
            (f"{prefix}COUNT:RECOUNT:{loc}", f"Recount {loc}"),
            (f"{prefix}LOC:{loc}", f"Location {loc}"),
        ]
    return rows


def pages(rows: list[tuple[str, str]], title: str) -> list[Drawing]:
    w, h = A4
    cell_w, cell_h = (w - 2 * MARGIN) / COLS, (h - 2 * MARGIN - 30) / ROWS
    out: list[Drawing] = []
    per_page = COLS * ROWS
    for p in range(0, max(len(rows), 1), per_page):
        d = Drawing(w, h)
        d.add(String(MARGIN, h - MARGIN - 10, f"{title}  (page {p // per_page + 1})", fontSize=12))
        for i, (value, label) in enumerate(rows[p : p + per_page]):
            col, row = i % COLS, i // COLS
            x = MARGIN + col * cell_w + 10
            y = h - MARGIN - 30 - (row + 1) * cell_h + 20
            bc = createBarcodeDrawing("Code128", value=value, barHeight=45, barWidth=1.1, humanReadable=True)
            scale = min(1.0, (cell_w - 20) / bc.width)
            bc.scale(scale, 1.0)
            bc.translate(x / scale, y + 16)
            d.add(bc)
            d.add(String(x, y, label, fontSize=11))
        out.append(d)
    return out


def write_sheet(
    out: Path, rows: list[tuple[str, str]], title: str = "coopagent command barcodes"
) -> list[Path]:
    """Write the sheet; a PNG gets one file per page (sheet.png, sheet-2.png, ...). Returns the files."""
    drawings = pages(rows, title)
    suffix = out.suffix.lower()
    if suffix == ".pdf":
        c = Canvas(str(out), pagesize=A4)
        for d in drawings:
            renderPDF.draw(d, c, 0, 0)
            c.showPage()
        c.save()
        return [out]
    if suffix == ".png":
        files = []
        for i, d in enumerate(drawings):
            path = out if i == 0 else out.with_name(f"{out.stem}-{i + 1}{out.suffix}")
            renderPM.drawToFile(d, str(path), fmt="PNG", dpi=150)
            files.append(path)
        return files
    raise ValueError(f"--out {out}: use a .pdf or .png file name")
