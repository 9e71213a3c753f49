"""Imports every family module so that its measures are registered (order = listing order)."""

# platonic-representation's measures first, then ReSi's

# ReSi part A: CCA, alignment / regression / matching, spectral
from . import cca  # noqa: F401, I001
from . import alignment  # noqa: F401
from . import spectral  # noqa: F401
