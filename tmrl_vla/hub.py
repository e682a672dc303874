"""Model cards and Hub pushes for what tmrl_vla saves (CSP adapters, TMRL high-level policies).

Cards are templates in ``hub_cards/`` (shipped as ``tmrl_vla.hub_cards``) filled from the saved
config. A card is *updated, never overwritten*: our section sits between HTML comment markers, and
anything else in ``README.md`` (PEFT writes a card of its own) is kept.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError


def library_versions() -> dict[str, str]:

    out = {}
    for name in ("tmrl_vla", "lerobot", "peft", "torch", "transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


class NotInLocalCacheError(FileNotFoundError):
    """A Hub repo id that is neither a local directory nor in the local Hub cache, with the Hub unreachable."""


def resolve_dir(path_or_repo_id: str | Path, *, revision: str | None = None) -> Path:
    """A local directory as is; otherwise a Hub repo id, fetched (or read from the local Hub cache).

    With the Hub offline (``HF_HUB_OFFLINE=1``, or no network) a repo id missing from the cache
    raises :class:`NotInLocalCacheError` saying how to get it there.
    """
    path = Path(path_or_repo_id)
    if path.is_dir():
        return path
    try:
        return Path(snapshot_download(str(path_or_repo_id), revision=revision))
    except LocalEntryNotFoundError as err:
        at = f" at revision {revision}" if revision else ""
        raise NotInLocalCacheError(
            f"{path_or_repo_id!r}{at} is not a local directory and is not in the local Hub cache, and the Hub "
            "cannot be reached (offline). Download it once where the Hub is reachable "
            f"(huggingface-cli download {path_or_repo_id}), copy that cache here (HF_HUB_CACHE), or pass a "
            "local directory instead."
        ) from err


def render_card(template: str, **fields) -> str:
    text = (resources.files("tmrl_vla.hub_cards") / template).read_text()
    return text.format(**fields)


def update_card(readme: Path, section: str) -> None:
    """Put ``section`` (which starts and ends with its markers) into ``readme``, replacing an older copy."""
    start, end = section.splitlines()[0], section.strip().splitlines()[-1]
    text = readme.read_text() if readme.exists() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.strip(), text)
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + section.strip() + "\n"
    readme.write_text(text)


def push_to_hub(
    save: Callable[[Path], object], repo_id: str, *, private: bool | None = None, message: str = "Upload"
) -> str:
    """Save into a temporary folder with ``save(folder)`` and upload it as one commit; returns the commit URL."""
    api = HfApi()
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save(folder)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message)
    return str(getattr(info, "commit_url", info))
