"""Label propagation over a nearest-neighbour graph (Zhou et al. 2004; in deep
semi-supervised learning, Iscen et al. 2019), used to refine a teacher's targets: each
unlabelled image's class probabilities are smoothed with those of its nearest neighbours in
the teacher's feature space, and the labelled images, whose classes are known, pass their
labels on to theirs. A teacher's isolated mistakes are outvoted by neighbours it got right."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def knn_graph(features: torch.Tensor, k: int, chunk: int = 2048
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``k`` most similar other rows by cosine similarity: (similarities,
    indices), both N x k, computed ``chunk`` rows at a time (memory chunk x N)."""
    f = F.normalize(features.float(), dim=1)
    k = min(k, len(f) - 1)
    sims, idx = [], []
    for start in range(0, len(f), chunk):
        s = f[start:start + chunk] @ f.T
        rows = torch.arange(len(s))
        s[rows, rows + start] = -2.0  # below any cosine: an image is not its own neighbour
        v, i = s.topk(k, dim=1)
        sims.append(v)
        idx.append(i)
    return torch.cat(sims), torch.cat(idx)


def propagate_labels(features: torch.Tensor, probs: torch.Tensor,
                     labelled_features: torch.Tensor, labels: torch.Tensor, k: int, *,
                     alpha: float = 0.8, temperature: float = 0.1, iters: int = 20
                     ) -> torch.Tensor:
    """Refined class probabilities of the unlabelled images (rows of ``features`` and
    ``probs``). The graph joins every image, labelled or not, to its ``k`` nearest neighbours,
    weighted by softmax(similarity / ``temperature``); ``iters`` rounds of
    ``P = (1 - alpha) P0 + alpha W P`` start from the teacher's probabilities, with the
    labelled images' rows held at their one-hot labels (rows of W sum to 1, so every
    round keeps each row a distribution)."""
    n = len(labelled_features)
    sims, idx = knn_graph(torch.cat([labelled_features, features]), k)
    w = (sims / temperature).softmax(1).unsqueeze(2)
    start = torch.cat([F.one_hot(labels, probs.shape[1]).to(probs.dtype), probs])
    p = start
    for _ in range(iters):
        p = (1 - alpha) * start + alpha * (w * p[idx]).sum(1)
        p[:n] = start[:n]
    return p[n:]
