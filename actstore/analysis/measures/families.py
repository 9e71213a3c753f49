"""Imports every family module so that its measures are registered (order = listing order)."""

# platonic-representation's measures first, then ReSi's

# ReSi part B: RSM-based, neighbourhood and statistics measures
from . import rsm  # noqa: F401, I001  (registration order) rsa, rsm_norm_difference, distance_correlation
from . import neighborhoods  # noqa: F401  jaccard_similarity, rank_similarity, joint_rank_jaccard_similarity, second_order_cosine_similarity
from . import statistics  # noqa: F401  magnitude_difference, concentricity_difference, uniformity_difference
