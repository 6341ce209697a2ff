"""Serial devices: barcode scanners and scales (issue 3)."""
