"""Imports every family module so that its measures are registered (order = listing order)."""

# platonic-representation's measures first, then ReSi's
from . import knn  # noqa: F401  mutual_knn, cycle_knn, lcs_knn, edit_distance_knn, cknna
from . import kernels  # noqa: F401  cka, unbiased_cka
