"""Images unlike every class of the set, by the final model's features (the pooled features
before the classifier, cosine distance): an image's mean distance to its 5 nearest training
images of each class, the nearest class's, compared with the training images' own by
Tukey's fences. Also the images a person should look at though no model could judge them:
unreadable files (skipped by training, with the reason) and near-blank images (one flat
colour).

Taking each class apart keeps a group of foreign images spread over the classes from being
each other's nearest neighbours. An image unlike its own class but like another one is a
``label`` finding (with the class it looks like), not an outlier. A group that the network
learnt a region of its own for is not found (``benchmarks/audit.md``)"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEIGHBOURS = 5
FAR = 3.0  # Tukey's "far out": beyond the upper quartile by 3 interquartile ranges
BLANK_STD = 2.0  # pixel standard deviation (of 255) below which an image is near-blank


def knn_distance(
    query: torch.Tensor,
    ref: torch.Tensor,
    in_ref: torch.Tensor,
    k: int = NEIGHBOURS,
    chunk: int = 4096,
) -> torch.Tensor:
    """Mean cosine distance of each row of ``query`` to its ``k`` nearest rows of ``ref``
    (rows L2-normalised); a query row that is itself in ``ref`` (``in_ref``) skips its
    nearest, itself."""
    k = min(k, len(ref) - 1)
    if k < 1:
        return torch.zeros(len(query))
    out = []
    for start in range(0, len(query), chunk):
        top = (query[start : start + chunk] @ ref.T).topk(k + 1, dim=1).values
        own = in_ref[start : start + chunk, None]
        out.append(1 - torch.where(own, top[:, 1:], top[:, :k]).mean(1))
    return torch.cat(out)


def fence_score(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """(x - Q3(ref)) / IQR(ref): how many interquartile ranges ``x`` lies beyond the upper
    quartile of ``ref`` (Tukey's fences; above 3 is "far out"). Distances are skewed to the
    right, which a z-score (even the median/MAD one) does not allow for."""
    q1, q3 = torch.quantile(ref.float(), torch.tensor([0.25, 0.75]))
    return (x - q3) / (q3 - q1).clamp_min(1e-6)


def outlier_scores(
    features: torch.Tensor, is_train: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Each image's :func:`fence_score` of its k-NN distance to the training images of the
    nearest class (each image without itself), against the training images' own; above
    :data:`FAR`, an outlier. Classes of fewer than two training images are left out."""
    f = F.normalize(features.float(), dim=1)
    train = torch.nonzero(is_train).flatten()
    nearest = torch.full((len(f),), float("inf"))
    for c in labels[train].unique():
        ref = train[labels[train] == c]
        if len(ref) >= 2:
            own = is_train & (labels == c)
            nearest = torch.minimum(nearest, knn_distance(f, f[ref], own))
    if torch.isinf(nearest).all():
        return torch.zeros(len(f))
    return fence_score(nearest, nearest[is_train])


def near_blank(images: torch.Tensor) -> torch.Tensor:
    """Per image: whether its pixels are (nearly) one flat value."""
    return images.float().flatten(1).std(1) < BLANK_STD
