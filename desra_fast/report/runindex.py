"""A run's manifest as a small on-disk index: counts, histograms, the ranking, the table chunks.

The manifest is streamed once (:func:`desra_fast.jobs.store.iter_manifest`, the jobs engine's
line parser: corrupt lines are skipped and counted) into a temporary SQLite file holding one
compact row per image (the last line of a path counts, as for the jobs engine). Everything after
that is read back from SQLite with cursors, so the report's memory does not grow with the run:
the top N come from :func:`desra_fast.jobs.select.rank` (the ranking of ``desra-fast select``)
with a heap of N, and only their full manifest lines are read again (by byte offset).
"""
from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from ..jobs.select import SCORES, eligible, rank
from ..jobs.store import iter_manifest, parse_manifest_line

FRACTION_BINS = 20
AREA_BINS_PER_DECADE = 4
TABLE_CHUNK = 5000
# Columns of a row of the full ranking table (the page's table reads them by position).
TABLE_COLUMNS = ["rank", "lr", "fraction", "regions", "largest_area", "d_mean", "d_min", "d_below", "error"]


@dataclass
class RunIndex:
    """Counts of one pass over a manifest and the SQLite file holding its rows."""
    db: sqlite3.Connection
    manifest: Path
    by: str
    lines: int = 0
    corrupt: int = 0
    counts: Dict[str, int] = field(default_factory=dict)

    def close(self) -> None:
        self.db.close()


def _num(v) -> Optional[float]:
    """A finite float or None (NaN, inf, strings, missing)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _area_bin(a: float) -> int:
    """Histogram bin of a region area: fixed log10 bins, :data:`AREA_BINS_PER_DECADE` per decade."""
    return math.floor(math.log10(a) * AREA_BINS_PER_DECADE)


def _row(off: int, rec: dict, by: str) -> tuple:
    """The compact row of one record; raises (TypeError, ValueError) on malformed fields."""
    areas = rec.get("areas") or []
    if not isinstance(areas, list) or not all(_num(a) is not None for a in areas):
        raise ValueError("areas")
    d = rec.get("d") if isinstance(rec.get("d"), dict) else {}
    ok = eligible(rec)
    score = SCORES[by](rec)
    err = rec.get("error")
    return (rec["path"], off, str(rec.get("lr") or ""), None if err is None else str(err), int(ok),
            float(score), int(rec.get("regions") or 0), _num(rec.get("artifact_fraction")),
            max(areas) if areas else None, ",".join(str(_area_bin(a)) for a in areas if a > 0),
            _num(d.get("mean")), _num(d.get("min")),
            _num(d.get("below_threshold")))


def build_index(manifest: Path, db_path: Path, by: str) -> RunIndex:
    """Stream ``manifest`` into a new SQLite file ``db_path``.

    Returns the :class:`RunIndex` (``lines`` complete lines, ``corrupt`` of them skipped:
    not JSON, no ``path``, or fields of the wrong type)."""
    db = sqlite3.connect(str(db_path))
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TABLE rows (path TEXT PRIMARY KEY, off INTEGER, lr TEXT, error TEXT, elig INTEGER,"
               " score REAL, regions INTEGER, fraction REAL, area REAL, area_bins TEXT, d_mean REAL, d_min REAL,"
               " d_below REAL)")
    idx = RunIndex(db, Path(manifest), by)
    batch: List[tuple] = []
    sql = "INSERT OR REPLACE INTO rows VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
    for off, rec in iter_manifest(manifest):
        idx.lines += 1
        try:
            if rec is None:
                raise ValueError("not a manifest record")
            batch.append(_row(off, rec, by))
        except (TypeError, ValueError, OverflowError):
            idx.corrupt += 1
            continue
        if len(batch) >= 2048:
            _flush(db, sql, batch, idx)
    _flush(db, sql, batch, idx)
    q = db.execute("SELECT count(*), sum(error IS NULL), sum(error IS NOT NULL), sum(error IS NULL AND regions > 0)"
                   " FROM rows").fetchone()
    idx.counts = {"images": q[0] or 0, "done": q[1] or 0, "failed": q[2] or 0, "with_artifacts": q[3] or 0}
    return idx


def _flush(db, sql, batch, idx: RunIndex) -> None:
    try:
        db.executemany(sql, batch)
    except (sqlite3.Error, UnicodeEncodeError, OverflowError):
        for row in batch:  # isolate the offending row (e.g. a lone surrogate in a name)
            try:
                db.execute(sql, row)
            except (sqlite3.Error, UnicodeEncodeError, OverflowError):
                idx.corrupt += 1
    batch.clear()


def _records(idx: RunIndex) -> Iterator[dict]:
    """Minimal records carrying exactly what :func:`rank` reads, streamed from SQLite."""
    for path, off, lr, err, regions, fraction, area in idx.db.execute(
            "SELECT path, off, lr, error, regions, fraction, area FROM rows"):
        yield {"path": path, "lr": lr, "error": err, "regions": regions, "artifact_fraction": fraction,
               "areas": [] if area is None else [area], "_off": off}


def top_records(idx: RunIndex, top: int) -> List[dict]:
    """The ``top`` worst images as ``select`` ranks them, as their full manifest records."""
    ranked = rank(_records(idx), idx.by, top)
    out = []
    with open(idx.manifest, "rb") as fh:
        for r in ranked:
            fh.seek(r["_off"])
            out.append(parse_manifest_line(fh.readline()))
    return out


def histograms(idx: RunIndex) -> dict:
    """Histograms of the artifact fraction (images with regions, linear bins from 0 to the
    largest) and of the region areas (all regions, log10 bins, :data:`AREA_BINS_PER_DECADE` per
    decade), each ``{"edges": [...], "counts": [...]}``."""
    db = idx.db
    where = "error IS NULL AND regions > 0"
    fmax = db.execute(f"SELECT max(fraction) FROM rows WHERE {where}").fetchone()[0]
    frac = {"edges": [], "counts": []}
    if fmax:
        counts = [0] * FRACTION_BINS
        for b, n in db.execute(f"SELECT min(CAST(fraction / ? * {FRACTION_BINS} AS INTEGER), {FRACTION_BINS - 1}), count(*)"
                               f" FROM rows WHERE {where} AND fraction IS NOT NULL GROUP BY 1", (fmax,)):
            counts[max(0, b)] += n
        frac = {"edges": [fmax * i / FRACTION_BINS for i in range(FRACTION_BINS + 1)], "counts": counts}
    bins: Dict[int, int] = {}
    for (text,) in db.execute(f"SELECT area_bins FROM rows WHERE {where} AND area_bins != ''"):
        for k in text.split(","):
            bins[int(k)] = bins.get(int(k), 0) + 1
    area = {"edges": [], "counts": []}
    if bins:
        k0, k1 = min(bins), max(bins) + 1
        area = {"edges": [10 ** (k / AREA_BINS_PER_DECADE) for k in range(k0, k1 + 1)],
                "counts": [bins.get(k, 0) for k in range(k0, k1)]}
    return {"fraction": frac, "area": area}


def table_rows(idx: RunIndex) -> Iterator[list]:
    """Every image as a :data:`TABLE_COLUMNS` row: the ranked ones first in ``select``'s order
    (score descending, ties by manifest path: SQLite compares UTF-8 bytes, which orders as
    Python compares code points), then the others by path with rank None."""
    n = 0
    for r in idx.db.execute("SELECT elig, lr, fraction, regions, area, d_mean, d_min, d_below, error, path FROM rows"
                            " ORDER BY elig DESC, CASE WHEN elig THEN -score END, path"):
        n += 1
        yield [n if r[0] else None, r[1] or r[9], r[2], r[3], r[4], r[5], r[6], r[7], r[8]]
