"""Ranking of a ``desra-fast run``: which images have the worst artifacts, and the train/val split.

The one ranking shared by ``desra-fast select`` (the lists the fine-tune reads) and ``desra-fast
report`` (the gallery and its curated lists), so both show and write the same images in the same
order.
"""
from __future__ import annotations

import heapq
from typing import Callable, Dict, Iterable, List, Optional

# Score of a manifest record per ``--by`` (higher = worse).
SCORES: Dict[str, Callable[[dict], float]] = {
    "fraction": lambda r: float(r.get("artifact_fraction") or 0.0),
    "area": lambda r: max(r.get("areas") or [0]),
    "regions": lambda r: int(r.get("regions") or 0),
}


def eligible(rec: dict) -> bool:
    """A record that can be ranked: no error, an LR path, at least one detected region."""
    return rec.get("error") is None and bool(rec.get("lr")) and int(rec.get("regions") or 0) > 0


def rank_key(by: str) -> Callable[[dict], tuple]:
    """Sort key of :func:`rank`: worst score first, ties by the manifest ``path``."""
    score = SCORES[by]
    return lambda r: (-score(r), r["path"])


def rank(records: Iterable[dict], by: str, top: Optional[int] = None) -> List[dict]:
    """Records with at least one region, worst first (ties by path).

    Args:
        records: manifest records (one per image; any iterable, consumed once).
        by: a key of :data:`SCORES` (``"fraction"``, ``"area"``, ``"regions"``).
        top: keep only the ``top`` worst; memory is then O(top) whatever the number of records
            (``heapq.nsmallest`` returns exactly ``sorted(...)[:top]``).
    """
    key = rank_key(by)
    kept = (r for r in records if eligible(r))
    if top is None:
        return sorted(kept, key=key)
    return heapq.nsmallest(top, kept, key=key)


def split(n: int, train: int) -> List[int]:
    """Indices of ``train`` of ``n`` ranked images spread evenly over the ranking (sorted)."""
    train = min(train, n)
    return sorted({min(n - 1, int((j + 0.5) * n / train)) for j in range(train)}) if train else []


def train_count(kept: int, train: int, top: int) -> int:
    """How many of ``kept`` ranked images go to training when ``train`` of ``top`` were asked
    (fewer in proportion when fewer than ``top`` images are kept)."""
    return round(train * kept / top)


def split_lists(lr_paths: List[str], train: int, top: int):
    """``(train, val)``: the LR paths of the ranked top images split as ``select --train``."""
    idx = set(split(len(lr_paths), train_count(len(lr_paths), train, top)))
    return ([p for i, p in enumerate(lr_paths) if i in idx], [p for i, p in enumerate(lr_paths) if i not in idx])
