"""Grouping speaker embeddings into speakers without knowing how many there are:
agglomerative clustering, average linkage on cosine similarity, stopped at a threshold."""

from __future__ import annotations

import numpy as np

# Above this many points, consecutive points are averaged first: the similarity matrix is
# n x n floats (2000 points: 16 MB), and neighbouring windows are nearly always one speaker.
_MAX_POINTS = 2000


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def _agglomerate(points: np.ndarray, threshold: float, max_clusters: int) -> np.ndarray:
    """Cluster index of each row: merge the two most similar clusters (mean pairwise cosine)
    until none is above threshold and there are at most max_clusters."""
    n = len(points)
    similarity = (points @ points.T).astype(np.float64)
    np.fill_diagonal(similarity, -np.inf)
    sizes = np.ones(n)
    alive = np.ones(n, dtype=bool)
    members = np.arange(n)
    best = similarity.max(axis=1)  # each row's best partner, kept current
    for clusters in range(n, 1, -1):
        i = int(np.argmax(np.where(alive, best, -np.inf)))
        j = int(np.argmax(similarity[i]))
        if similarity[i, j] < threshold and clusters <= max_clusters:
            break
        before = np.maximum(similarity[:, i], similarity[:, j])
        merged = (sizes[i] * similarity[i] + sizes[j] * similarity[j]) / (sizes[i] + sizes[j])
        merged[[i, j]] = -np.inf
        merged[~alive] = -np.inf
        similarity[i], similarity[:, i] = merged, merged
        similarity[j], similarity[:, j] = -np.inf, -np.inf
        sizes[i] += sizes[j]
        alive[j] = False
        best[j] = -np.inf
        members[members == j] = i
        # Rows whose best partner was i or j, or that now find the merged cluster closer.
        stale = alive & ((best <= before) | (merged >= best))
        stale[i] = True
        best[stale] = similarity[stale].max(axis=1)
    _, labels = np.unique(members, return_inverse=True)
    return labels


def _absorb_small(points: np.ndarray, labels: np.ndarray, min_size: int) -> np.ndarray:
    """Points of clusters smaller than min_size join the most similar larger cluster: a few
    windows of laughter, overlap or noise are not a person."""
    counts = np.bincount(labels)
    large = np.flatnonzero(counts >= min_size)
    if len(large) == 0 or len(large) == len(counts):
        return labels
    centroids = _unit(np.stack([points[labels == k].sum(axis=0) for k in large]))
    small = counts[labels] < min_size
    labels = labels.copy()
    labels[small] = large[np.argmax(points[small] @ centroids.T, axis=1)]
    return np.unique(labels, return_inverse=True)[1]


def cluster(
    embeddings: np.ndarray, threshold: float, max_clusters: int, min_size: int = 1
) -> np.ndarray:
    """Cluster index (0..k-1) of each embedding row, in no particular order; clusters of
    fewer than min_size rows are absorbed by the nearest larger one."""
    if len(embeddings) == 0:
        return np.zeros(0, dtype=int)
    points = _unit(np.asarray(embeddings, dtype=np.float64))
    group = -(-len(points) // _MAX_POINTS)
    if group == 1:
        return _absorb_small(points, _agglomerate(points, threshold, max_clusters), min_size)
    starts = np.arange(0, len(points), group)
    coarse = _unit(np.add.reduceat(points, starts, axis=0))
    labels = _absorb_small(
        coarse, _agglomerate(coarse, threshold, max_clusters), -(-min_size // group)
    )
    centroids = _unit(np.stack([coarse[labels == k].sum(axis=0) for k in range(labels.max() + 1)]))
    return np.argmax(points @ centroids.T, axis=1)
