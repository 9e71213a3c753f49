"""Pure numerics for comparing layers and models: arrays in, small frozen dataclasses out.

No I/O and no imports from the rest of actstore. Modules:
  cka          linear CKA (biased / debiased), all-pairs matrices, permutation tests
  knn          cosine k-NN graphs, mutual k-NN, affinity matrices
  diagonal     generalized-diagonal test, argmax path, Bonferroni
  errors       AnalysisError (a ValueError)
"""

from .cka import (
    CkaMatrixTest,
    CkaPlan,
    CkaTest,
    cka_matrix,
    cka_matrix_permutation_test,
    cka_permutation_test,
    linear_cka,
    plan_cka_matrix,
)
from .diagonal import (
    DiagonalTest,
    argmax_path,
    bonferroni,
    diagonal_test,
    generalized_diagonal_mask,
)
from .errors import AnalysisError
from .knn import affinity_matrix, knn_graph, knn_graph_recall, mutual_knn, null_mean
from .permutation import permutation_p_value

__all__ = [
    "AnalysisError",
    "CkaMatrixTest",
    "CkaPlan",
    "CkaTest",
    "DiagonalTest",
    "affinity_matrix",
    "argmax_path",
    "bonferroni",
    "cka_matrix",
    "cka_matrix_permutation_test",
    "cka_permutation_test",
    "diagonal_test",
    "generalized_diagonal_mask",
    "knn_graph",
    "knn_graph_recall",
    "linear_cka",
    "mutual_knn",
    "null_mean",
    "permutation_p_value",
    "plan_cka_matrix",
]
