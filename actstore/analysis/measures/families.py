"""Imports every family module so that its measures are registered (order = listing order):
platonic-representation's measures first (svcca, its last, opens the CCA family), then ReSi's."""

# ruff: noqa: I001 - the order of these imports is the order measures are listed in
from . import knn  # noqa: F401  mutual_knn, cycle_knn, lcs_knn, edit_distance_knn, cknna
from . import kernels  # noqa: F401  cka, unbiased_cka
from . import cca  # noqa: F401  svcca, pwcca
from . import alignment  # noqa: F401  Procrustes, aligned cosine, regression, correlation matching
from . import spectral  # noqa: F401  eigenspace overlap, GULP
from . import rsm  # noqa: F401  rsa, rsm_norm_difference, distance_correlation
from . import neighborhoods  # noqa: F401  Jaccard, rank, joint rank-Jaccard, second-order cosine
from . import statistics  # noqa: F401  magnitude, concentricity, uniformity differences
