"""A build cache for derived assets (demos, base policy, adapters): built once, never half-written.

Each stage lives in ``<cache_dir>/<name>-<hash12>/`` where the hash covers the stage's config (and
the hashes of the stages it was built from, passed in the config). A stage is valid when its
``manifest.json`` exists and records the same full hash; ``manifest.json`` is written last, inside a
work directory that is renamed into place atomically, so a crash can never leave a directory that
looks valid. The work directory (``<final>.partial``) survives a crash so a builder may resume from
what it left there (the BC trainer resumes from its last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def config_hash(config: Any) -> str:
    """A stable hash of a JSON-able config (keys sorted, tuples as lists)."""
    blob = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$TMRL_VLA_CACHE`` if set, else ``~/.cache/tmrl_vla``."""
    env = os.environ.get("TMRL_VLA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tmrl_vla"


@dataclass(frozen=True)
class StageResult:
    path: Path
    hash: str
    built: bool  # False when a valid cached copy was reused
    seconds: float
    manifest: dict


class AssetCache:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def stage_dir(self, name: str, config: Any) -> Path:
        return self.root / f"{name}-{config_hash(config)[:12]}"

    def lookup(self, name: str, config: Any) -> Path | None:
        """The stage's directory if it holds a valid build of exactly this config, else None."""
        path = self.stage_dir(name, config)
        manifest = _read_manifest(path)
        if manifest is not None and manifest.get("hash") == config_hash(config):
            return path
        return None

    def get_or_build(
        self,
        name: str,
        config: Any,
        build: Callable[[Path], dict | None],
        *,
        log: Callable[[str], None] = print,
        is_main: bool = True,
    ) -> StageResult:
        """Return the cached stage, or run ``build(work_dir)`` and publish its result atomically.

        ``build`` writes everything into ``work_dir`` (which may already hold a previous attempt's
        files, for resuming) and may return extra fields for the manifest (metrics, timings).
        A distributed build (every process runs ``build``, e.g. accelerate training) passes
        ``is_main=False`` on all but one process: those only run ``build`` and touch nothing else;
        the caller waits for every process before using the returned path.
        """
        final = self.stage_dir(name, config)
        digest = config_hash(config)
        if (path := self.lookup(name, config)) is not None:
            manifest = _read_manifest(path) or {}
            log(f"[cache] {name}: reusing {path}")
            return StageResult(path=path, hash=digest, built=False, seconds=0.0, manifest=manifest)
        if not is_main:
            start = time.perf_counter()
            build(final.with_name(final.name + ".partial"))
            return StageResult(path=final, hash=digest, built=True, seconds=time.perf_counter() - start, manifest={})
        if final.exists():  # present but invalid (no manifest, or another config's): rebuild
            log(f"[cache] {name}: {final} is incomplete or stale; rebuilding")
            shutil.rmtree(final)
        work = final.with_name(final.name + ".partial")
        work.mkdir(parents=True, exist_ok=True)
        log(f"[cache] {name}: building into {work}")
        start = time.perf_counter()
        extra = build(work) or {}
        seconds = time.perf_counter() - start
        manifest = {"stage": name, "hash": digest, "config": config, "build_seconds": seconds, **extra}
        _write_json_atomic(work / MANIFEST, manifest)
        os.replace(work, final)
        log(f"[cache] {name}: built in {seconds:.1f} s -> {final}")
        return StageResult(path=final, hash=digest, built=True, seconds=seconds, manifest=manifest)


def _read_manifest(path: Path) -> dict | None:
    try:
        return json.loads((path / MANIFEST).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
