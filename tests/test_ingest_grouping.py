"""The pieces of honest splits on their own: the pair search, joining groups, and choosing whole groups."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from radpipe.components.ingest import grouping
from radpipe.components.ingest.near_duplicates import close_pairs, perceptual_hash
from radpipe.config import DEFAULT_GROUP_PATTERN

from conftest import SAMPLE


def test_pair_search_finds_exactly_the_pairs_within_the_threshold() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64)
    # Neighbours a few bits away from some of them, so that every distance up to 6 occurs.
    flips = [base[i] ^ np.uint64(sum(1 << b for b in rng.choice(64, i % 7, replace=False))) for i in range(40)]
    values = np.concatenate([base, np.array(flips, dtype=np.uint64)])
    hashes = [f"{int(v):016x}" for v in values]
    for bits in (0, 3, 6):
        found = {(p.first, p.second, p.distance) for p in close_pairs(hashes, bits)}
        expected = {
            (i, j, int(np.bitwise_count(values[i] ^ values[j])))
            for i in range(len(values))
            for j in range(i + 1, len(values))
            if np.bitwise_count(values[i] ^ values[j]) <= bits
        }
        assert found == expected and found


def test_perceptual_hash_sees_through_small_changes_not_other_pictures() -> None:
    slices = sorted((SAMPLE / "train" / "normal").glob("*.png"))
    picture = np.asarray(Image.open(slices[0]).convert("RGB"))
    touched = picture.copy()
    touched[40:60, 300:304] = 255  # a pen mark
    other = np.asarray(Image.open(sorted((SAMPLE / "test" / "adenocarcinoma").glob("*.png"))[0]).convert("RGB"))
    a, b, c = (perceptual_hash(Image.fromarray(p)) for p in (picture, touched, other))
    distance = lambda x, y: bin(int(x, 16) ^ int(y, 16)).count("1")  # noqa: E731
    assert re.fullmatch(r"[0-9a-f]{16}", a)
    assert distance(a, b) <= 4 < distance(a, c)


@pytest.mark.parametrize(
    ("name", "scan"),
    [
        ("000109 (2)", "000109"),
        ("000109", "000109"),
        ("6 - Copy (2) - Copy", "6"),
        ("10 (2) - Copy", "10"),
        ("n8 (2) - Copy", "n8"),
        ("004007_01_01_519", "004007_01_01_519"),
    ],
)
def test_default_pattern_reads_kaggle_scan_ids(name: str, scan: str) -> None:
    assert grouping.name_key(name, "normal", re.compile(DEFAULT_GROUP_PATTERN)) == f"name:normal/{scan}"


def test_name_keys_are_scoped_by_class_and_optional() -> None:
    pattern = re.compile(DEFAULT_GROUP_PATTERN)
    assert grouping.name_key("000137", "adenocarcinoma", pattern) != grouping.name_key("000137", "normal", pattern)
    assert grouping.name_key("000137", "normal", None) is None
    assert grouping.name_key("scan-7", "a", re.compile(r"scan-(\d+)")) == "name:a/7"
    assert grouping.name_key("other", "a", re.compile(r"scan-(\d+)")) is None


def test_connected_groups_join_equal_keys_and_links_transitively() -> None:
    keys = ["name:a/2", "name:a/1", "file:x", "name:a/2", "file:y", "file:z"]
    groups = grouping.connected_groups(keys, [(2, 3), (4, 5)])
    assert groups == ["file:x", "name:a/1", "file:x", "file:x", "file:y", "file:y"]
    assert grouping.connected_groups(list(reversed(keys)), [(2, 3), (0, 1)])[::-1] == groups


def test_choose_groups_takes_whole_groups_towards_the_targets_and_keeps_two_for_training() -> None:
    groups = {"big": Counter(a=10), "g1": Counter(a=3), "g2": Counter(a=3), "g3": Counter(b=1), "g4": Counter(b=1)}
    pool = Counter(a=16, b=3)
    targets = {"a": grouping.target_count(16, 0.3 * 16), "b": grouping.target_count(3, 0.3 * 3)}
    assert targets == {"a": 5, "b": 1}
    assert grouping.choose_groups(["big", "g1", "g2", "g3", "g4"], groups, targets, pool) == ["g1", "g2", "g3"]
    # A class of two keeps both; a group that would empty a class below two is not taken.
    assert grouping.choose_groups(["g3"], {"g3": Counter(b=1)}, {"b": 1}, Counter(b=2)) == []
    assert grouping.target_count(2, 0.9) == 0 and grouping.target_count(3, 0.1) == 1


def test_group_order_is_seeded_and_largest_first() -> None:
    groups = {f"g{i}": Counter(a=1 + (i == 3)) for i in range(8)}
    sort_keys = {g: f"{i:02d}" for i, g in enumerate(groups)}
    first = grouping.order_groups(groups, sort_keys, seed=1)
    assert first[0] == "g3" and first == grouping.order_groups(groups, sort_keys, seed=1)
    assert any(grouping.order_groups(groups, sort_keys, seed=s) != first for s in range(2, 6))
