"""Groups of images that must stay in one split, and the group-disjoint, stratified split that keeps them so.

Slices of one scan (or of one patient) look alike; if some sit in train and others in validation, early
stopping, temperature fitting and the choice of candidate are tuned on look-alikes of the training set
and the scores flatter the model. So ingest gives every image a *group key* and joins into one group:

- images with the same key: the scan id that ``data.group_pattern`` reads from the file name, scoped by
  class (Kaggle numbers scans within each class folder);
- near-duplicates (``near_duplicates.py``), whatever their keys: a scan exported twice under two names.

A split that ingest makes takes whole groups only. Which groups is decided by a seeded greedy pass over
the groups, largest first (ties in seeded random order), taking a group when it brings the split's
per-class counts closer to their targets; scikit-learn's ``StratifiedGroupKFold`` makes folds of 1/k, not
the 15 % of each class asked for, and cannot promise that every class keeps two training images.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence


def name_key(stem: str, label: str, pattern: re.Pattern[str] | None) -> str | None:
    """The scan id ``pattern`` reads from a file name (without extension), as a key scoped by class; None
    when there is no pattern or it does not match (the file is then a group of its own)."""
    if pattern is None:
        return None
    match = pattern.fullmatch(stem)
    if not match:
        return None
    scan = match.group("scan") if "scan" in pattern.groupindex else match.group(1)
    return f"name:{label}/{scan}" if scan else None


def connected_groups(keys: Sequence[str], links: Iterable[tuple[int, int]]) -> list[str]:
    """Items with equal keys, or linked (directly or through others), share a group; each group is named by
    the smallest key among its items, so the names do not depend on the order of the items."""
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(a: int, b: int) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in first:
            join(i, first[key])
        else:
            first[key] = i
    for a, b in links:
        join(a, b)
    name: dict[int, str] = {}
    for i, key in enumerate(keys):
        r = root(i)
        name[r] = min(name.get(r, key), key)
    return [name[root(i)] for i in range(len(keys))]


def target_count(available: int, wanted: float) -> int:
    """How many images of a class a made split should take: at least one while two stay behind for training."""
    n = round(wanted)
    if n == 0 and available >= 3:
        n = 1
    return min(n, available - 2) if available > 2 else 0


def order_groups(groups: Mapping[str, Counter[str]], sort_keys: Mapping[str, str], seed: int) -> list[str]:
    """Largest groups first, ties in an order shuffled by ``seed``. ``sort_keys`` (a content hash per group)
    fixes the order before shuffling, so that the result depends on the images, not on how keys are named."""
    order = sorted(groups, key=lambda g: sort_keys[g])
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -sum(groups[g].values()))  # stable: ties keep the shuffled order
    return order


def choose_groups(
    order: Sequence[str], groups: Mapping[str, Counter[str]], targets: Mapping[str, int], pool: Counter[str]
) -> list[str]:
    """Groups (in ``order``) that bring the per-class counts closest to ``targets``: a group is taken when it
    lowers the summed distance to the targets and leaves every class at least two images in ``pool`` (or
    all it has, when it has fewer)."""
    taken: Counter[str] = Counter()
    chosen = []
    for group in order:
        counts = groups[group]
        before = sum(abs(taken[c] - targets.get(c, 0)) for c in counts)
        after = sum(abs(taken[c] + n - targets.get(c, 0)) for c, n in counts.items())
        keeps_training = all(pool[c] - taken[c] - n >= min(2, pool[c]) for c, n in counts.items())
        if after < before and keeps_training:
            chosen.append(group)
            taken.update(counts)
    return chosen
