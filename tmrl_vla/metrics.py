"""``metrics.jsonl``: one JSON row per logged step, appended as training goes, trimmed on resume.

Every trainer (BC, CSP, TMRL) logs this way. A row torn by a crash mid-write is skipped on reading;
a resumed run first drops the rows logged after its checkpoint, so each step appears once.
Metric names: ``docs/metrics.md``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a ``metrics.jsonl`` (or of an archived ``metrics.jsonl.gz``); a half-written last line
    (a crash mid-write) is skipped."""
    path = Path(path)
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_metrics(path: str | Path, row: dict) -> None:
    """Append one row."""
    with Path(path).open("a") as f:
        f.write(json.dumps(row) + "\n")


def keep_metrics_until(path: str | Path, key: str, last: int) -> None:
    """Drop the rows whose ``key`` (step or decision) is past ``last`` (and any torn row), if the file exists."""
    path = Path(path)
    if path.exists():
        kept = [row for row in read_metrics(path) if row[key] <= last]
        path.write_text("".join(json.dumps(row) + "\n" for row in kept))
