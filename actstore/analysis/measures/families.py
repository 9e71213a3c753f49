"""Imports every family module so that its measures are registered (order = listing order):
platonic-representation's measures first (svcca, its last, opens the CCA family), then ReSi's."""

from . import (
    alignment,  # noqa: F401  Procrustes, aligned cosine, regression, correlation matching
    cca,  # noqa: F401  svcca, pwcca
    kernels,  # noqa: F401  cka, unbiased_cka
    knn,  # noqa: F401  mutual_knn, cycle_knn, lcs_knn, edit_distance_knn, cknna
    neighborhoods,  # noqa: F401  Jaccard, rank, joint rank-Jaccard, second-order cosine
    rsm,  # noqa: F401  rsa, rsm_norm_difference, distance_correlation
    spectral,  # noqa: F401  eigenspace overlap, GULP
    statistics,  # noqa: F401  magnitude, concentricity, uniformity differences
)
