"""Imports every family module so that its measures are registered (order = listing order)."""

# platonic-representation's measures first, then ReSi's
