"""Branch workflows: what scans and weights mean (receiving, issues, transfers, waste, stock-take)."""
