"""Clustering speaker embeddings on synthetic groups whose number is known."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.engine import clusters
from appliance.engine.speakers import MIN_WINDOWS, SIMILARITY


def _groups(sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """192-dim points around one random direction per group (cosine to it about 0.8; random
    directions in 192 dimensions are nearly orthogonal), in consecutive runs, and their group."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), 192))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    noise = rng.normal(size=(len(truth), 192)) * 0.75 / np.sqrt(192)
    return centres[truth] + noise, truth


def _same_partition(found: np.ndarray, truth: np.ndarray) -> bool:
    """Whether found groups the rows exactly as truth does, whatever the numbering."""
    pairs = set(zip(found.tolist(), truth.tolist(), strict=True))
    return len(pairs) == len(set(found.tolist())) == len(set(truth.tolist()))


@pytest.mark.parametrize(
    "sizes",
    [
        [40],
        [20, 20],
        [20, 15, 25],
        [10, 10, 10, 10, 10],
        # Past the cap on points: consecutive points are averaged before clustering.
        [700, 700, 700],
    ],
)
def test_well_separated_groups_come_out_as_themselves(sizes):
    points, truth = _groups(sizes)
    found = clusters.cluster(points, SIMILARITY, 8, MIN_WINDOWS)
    assert _same_partition(found, truth)


def test_the_cap_bounds_the_count():
    points, _ = _groups([20, 15, 25])
    assert len(set(clusters.cluster(points, SIMILARITY, 2, MIN_WINDOWS).tolist())) == 2
    assert set(clusters.cluster(points, SIMILARITY, 1, MIN_WINDOWS).tolist()) == {0}


def test_a_group_smaller_than_min_size_joins_another():
    points, truth = _groups([20, 20, MIN_WINDOWS - 1])
    found = clusters.cluster(points, SIMILARITY, 8, MIN_WINDOWS)
    assert _same_partition(found[:40], truth[:40])
    assert len(set(found.tolist())) == 2


def test_no_embeddings_no_clusters():
    assert clusters.cluster(np.zeros((0, 192)), SIMILARITY, 8, MIN_WINDOWS).shape == (0,)
