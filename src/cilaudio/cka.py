"""Linear centred kernel alignment (CKA) between the layer activations of two models.

Minibatch CKA with the unbiased HSIC estimator (Song et al., 2012; Nguyen, Raghu & Kornblith,
"Do wide and deep networks learn the same things?", ICLR 2021):

    HSIC_1(K, L) = 1/(n(n-3)) * [ tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2))
                                  - 2/(n-2) * 1^T K~ L~ 1 ]

where K~, L~ are the Gram matrices with their diagonal set to zero, and

    CKA(i, j) = mean_b HSIC_1(K_i, L_j) / sqrt(mean_b HSIC_1(K_i, K_i) * mean_b HSIC_1(L_j, L_j))

with K = X X^T for the activations X of one batch flattened to (n, features).
:func:`linear_cka_biased` is the classic full-batch estimator, an independent reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["hsic_unbiased", "MinibatchCKA", "linear_cka_biased"]

MIN_BATCH = 4  # the unbiased estimator divides by n - 3


def _gram(x: Tensor) -> Tensor:
    """Linear Gram matrix of activations ``x`` (n, ...) flattened to (n, features), float64."""
    flat = x.detach().reshape(x.shape[0], -1).to(torch.float64)  # (n, features)
    return flat @ flat.T  # (n, n)


def _zero_diag(k: Tensor) -> Tensor:
    """Copy of a stack of square matrices (..., n, n) with the diagonals set to zero."""
    k = k.to(torch.float64).clone()
    k.diagonal(dim1=-2, dim2=-1).zero_()
    return k


def _hsic_cross(ks: Tensor, ls: Tensor) -> Tensor:
    """Unbiased HSIC for every pair of a stack of Gram matrices.

    ``ks`` (a, n, n) and ``ls`` (b, n, n), diagonals already zero and float64.
    Returns (a, b) with entry [i, j] = HSIC_1(ks[i], ls[j]).
    """
    n = ks.shape[-1]
    trace = torch.einsum("inm,jmn->ij", ks, ls)  # tr(K L) for every pair, (a, b)
    k_sum = ks.sum(dim=(1, 2))  # 1^T K 1, (a,)
    l_sum = ls.sum(dim=(1, 2))  # 1^T L 1, (b,)
    k_row = ks.sum(dim=1)  # 1^T K, (a, n)
    l_col = ls.sum(dim=2)  # L 1, (b, n)
    middle = k_row @ l_col.T  # 1^T K L 1, (a, b)
    value = trace + torch.outer(k_sum, l_sum) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * middle
    return value / (n * (n - 3))


def hsic_unbiased(K: Tensor, L: Tensor) -> Tensor:
    """Unbiased HSIC estimator HSIC_1 of two (n, n) Gram matrices, as a float64 scalar tensor.

    The diagonals of ``K`` and ``L`` are ignored (set to zero internally). Raises ValueError
    for n < 4, where the estimator is undefined.
    """
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape != L.shape:
        raise ValueError(f"K and L must be square matrices of the same shape; got {tuple(K.shape)} and {tuple(L.shape)}")
    n = K.shape[0]
    if n < MIN_BATCH:
        raise ValueError(f"unbiased HSIC needs at least {MIN_BATCH} samples, got {n}")
    L = L.to(K.device)
    return _hsic_cross(_zero_diag(K)[None], _zero_diag(L)[None])[0, 0]


class MinibatchCKA:
    """Accumulates minibatch linear CKA between every layer of model A and every layer of model B.

    Call :meth:`update` once per batch with the activations of all layers of both models on
    the same clips, then :meth:`compute` for the (n_layers_a, n_layers_b) CKA matrix.
    """

    def __init__(self, n_layers_a: int, n_layers_b: int) -> None:
        if n_layers_a < 1 or n_layers_b < 1:
            raise ValueError("n_layers_a and n_layers_b must be positive")
        self.n_layers_a = n_layers_a
        self.n_layers_b = n_layers_b
        self._sum_ab = torch.zeros(n_layers_a, n_layers_b, dtype=torch.float64)  # sum_b HSIC(K_i, L_j)
        self._sum_aa = torch.zeros(n_layers_a, dtype=torch.float64)  # sum_b HSIC(K_i, K_i)
        self._sum_bb = torch.zeros(n_layers_b, dtype=torch.float64)  # sum_b HSIC(L_j, L_j)
        self.n_batches = 0

    def update(self, acts_a: Sequence[Tensor], acts_b: Sequence[Tensor]) -> None:
        """Add one batch: ``acts_a[i]`` (n, ...) for each layer of A, ``acts_b[j]`` (n, ...) for B.

        Every tensor must have the same batch size n >= 4 (smaller batches raise ValueError;
        the caller drops them). Each Gram matrix is computed once per batch.
        """
        if len(acts_a) != self.n_layers_a or len(acts_b) != self.n_layers_b:
            raise ValueError(
                f"expected {self.n_layers_a} + {self.n_layers_b} layers, got {len(acts_a)} + {len(acts_b)}"
            )
        sizes = {int(t.shape[0]) for t in (*acts_a, *acts_b)}
        if len(sizes) != 1:
            raise ValueError(f"all activations must share the batch size, got {sorted(sizes)}")
        n = sizes.pop()
        if n < MIN_BATCH:
            raise ValueError(f"minibatch CKA needs batches of at least {MIN_BATCH} samples, got {n}")
        device = acts_a[0].device
        ks = _zero_diag(torch.stack([_gram(t.to(device)) for t in acts_a]))  # (a, n, n)
        ls = _zero_diag(torch.stack([_gram(t.to(device)) for t in acts_b]))  # (b, n, n)
        self._sum_ab += _hsic_cross(ks, ls).cpu()
        self._sum_aa += _hsic_self(ks).cpu()
        self._sum_bb += _hsic_self(ls).cpu()
        self.n_batches += 1

    def compute(self) -> np.ndarray:
        """CKA matrix (n_layers_a, n_layers_b), float64. Raises RuntimeError before any update."""
        if self.n_batches == 0:
            raise RuntimeError("MinibatchCKA.compute() called before any update()")
        # the 1/n_batches of the three means cancels in the ratio
        denom = torch.sqrt(torch.outer(self._sum_aa, self._sum_bb))  # (a, b)
        return (self._sum_ab / denom).numpy()


def _hsic_self(ks: Tensor) -> Tensor:
    """HSIC_1(K_i, K_i) for each matrix of a stack (a, n, n) with zero diagonals; returns (a,)."""
    n = ks.shape[-1]
    trace = (ks * ks.transpose(1, 2)).sum(dim=(1, 2))  # tr(K K), (a,)
    k_sum = ks.sum(dim=(1, 2))  # (a,)
    middle = (ks.sum(dim=1) * ks.sum(dim=2)).sum(dim=1)  # 1^T K K 1, (a,)
    value = trace + k_sum**2 / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * middle
    return value / (n * (n - 3))


def linear_cka_biased(X: Tensor | np.ndarray, Y: Tensor | np.ndarray) -> float:
    """Classic full-batch linear CKA ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on centred features.

    ``X`` (n, ...) and ``Y`` (n, ...) are flattened to (n, features) and centred per feature.
    """
    x = torch.as_tensor(X).detach().reshape(len(X), -1).to(torch.float64)  # (n, p)
    y = torch.as_tensor(Y).detach().reshape(len(Y), -1).to(torch.float64)  # (n, q)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"X and Y must have the same number of samples, got {x.shape[0]} and {y.shape[0]}")
    y = y.to(x.device)
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    if x.shape[0] < max(x.shape[1], y.shape[1]):
        # same quantities through the (n, n) Gram matrices: ||Y^T X||_F^2 = tr(X X^T Y Y^T)
        kx, ky = x @ x.T, y @ y.T  # (n, n)
        cross = (kx * ky).sum()
        norm_x, norm_y = torch.linalg.matrix_norm(kx), torch.linalg.matrix_norm(ky)
    else:
        cross = torch.linalg.matrix_norm(y.T @ x) ** 2  # (q, p)
        norm_x = torch.linalg.matrix_norm(x.T @ x)
        norm_y = torch.linalg.matrix_norm(y.T @ y)
    return float(cross / (norm_x * norm_y))
