"""Model cards and Hub pushes for what tmrl_vla saves (CSP adapters, TMRL high-level policies).

Cards are templates in ``hub_cards/`` (shipped as ``tmrl_vla.hub_cards``) filled from the saved
config. A card is *updated, never overwritten*: our section sits between HTML comment markers, and
anything else in ``README.md`` (PEFT writes a card of its own, a person may add notes on the Hub) is
kept, on disk and across pushes.

Only data crosses the Hub boundary, in both directions: :data:`HUB_FILE_PATTERNS` lists the kinds of
file we download and upload. Pickled weights (``*.bin``, ``*.pt``, ``*.pkl``) and code (``*.py``)
in a repo are never fetched, so nothing here can unpickle or run them.
"""

from __future__ import annotations

import re
import string
import tempfile
import warnings
from collections.abc import Callable
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RemoteEntryNotFoundError
from huggingface_hub.utils import filter_repo_objects, validate_repo_id

# huggingface_hub matches these with fnmatch on the path inside the repo, where ``*`` also matches
# ``/``: ``*.json`` takes ``config.json`` and ``processor/config.json`` alike, so nested folders of
# these files come along without patterns of their own.
HUB_FILE_PATTERNS = (
    "*.json",  # configs, processor pipelines, tokenizer files, safetensors indexes
    "*.safetensors",  # weights and normalisation statistics: tensors only, nothing to execute
    "*.md",  # model cards
    "*.txt",  # tokenizer merges and vocabularies
    "*.jinja",  # chat templates
    "*.model",  # sentencepiece tokenizers
    "*.png",  # figures in cards
)

README = "README.md"


def library_versions() -> dict[str, str]:
    """The versions a card records, so a reader can rebuild the environment a model was saved in."""
    out = {}
    for name in ("tmrl_vla", "lerobot", "peft", "torch", "transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


class NotInLocalCacheError(FileNotFoundError):
    """A Hub repo id that is neither a local directory nor in the local Hub cache, with the Hub unreachable."""


class InvalidRepoIdError(HFValidationError):
    """A name that cannot be a Hub repo id (and, where a directory was allowed, is no directory either).

    A subclass of huggingface_hub's own ``HFValidationError`` (a ``ValueError``), so code that already
    catches that one keeps working.
    """


def _looks_like_a_path(name: str) -> bool:
    """Whether ``name`` was most likely meant as a directory: a repo id has at most one ``/`` and
    never starts with ``.``, ``/`` or ``~``."""
    return name.count("/") > 1 or "\\" in name or name.startswith((".", "/", "~"))


def _repo_id_problem(repo_id: object) -> str | None:
    """Why ``repo_id`` is not a valid Hub repo id (huggingface_hub's own wording), or None."""
    if repo_id == "":
        return "it is empty"
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        return str(err)
    return None


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` unchanged if it is a valid Hub repo id (``user/name``); otherwise raise
    :class:`InvalidRepoIdError` saying why.

    Checked before any network call, so a typo fails at once, with a message about the name, rather
    than after a round trip with a 404 or an error about URLs.
    """
    problem = _repo_id_problem(repo_id)
    if problem is None:
        return repo_id
    hint = "; it looks like a local path, and a Hub repo id is user/name" if _looks_like_a_path(str(repo_id)) else ""
    raise InvalidRepoIdError(f"{repo_id!r} is not a valid Hub repo id (user/name){hint}: {problem}")


def resolve_dir(path_or_repo_id: str | Path, *, revision: str | None = None) -> Path:
    """A local directory as is; otherwise a Hub repo id, fetched (or read from the local Hub cache).

    A name that is neither an existing directory nor a valid repo id raises
    :class:`InvalidRepoIdError` before anything is sent: a mistyped output directory then reads as
    "no such directory", not as a Hub error.

    Only files matching :data:`HUB_FILE_PATTERNS` are downloaded, so a repo's pickles and code never
    reach this machine. With the Hub offline the snapshot is read from the cache as it is (the
    patterns only decide what a download fetches); every loader reads named data
    files from it and none unpickles.

    With the Hub offline (``HF_HUB_OFFLINE=1``, or no network) a repo id missing from the cache
    raises :class:`NotInLocalCacheError` saying how to get it there.
    """
    path = Path(path_or_repo_id)
    if path.is_dir() and str(path_or_repo_id) != "":
        return path
    name = str(path_or_repo_id)
    problem = _repo_id_problem(name)
    if problem is not None:
        if _looks_like_a_path(name):
            raise InvalidRepoIdError(
                f"no such directory: {name!r} (and it is not a valid Hub repo id, user/name, either: {problem})"
            )
        raise InvalidRepoIdError(
            f"{name!r} is neither a local directory nor a valid Hub repo id (user/name): {problem}"
        )
    try:
        # With the Hub offline, the cache alone: snapshot_download would otherwise try to list the
        # files of a revision given as a commit hash online, and fail even when that commit is cached.
        offline = constants.HF_HUB_OFFLINE
        return Path(
            snapshot_download(name, revision=revision, allow_patterns=list(HUB_FILE_PATTERNS), local_files_only=offline)
        )
    except LocalEntryNotFoundError as err:
        at = f" at revision {revision}" if revision else ""
        raise NotInLocalCacheError(
            f"{name!r}{at} is not a local directory and is not in the local Hub cache, and the Hub "
            "cannot be reached (offline). Download it once where the Hub is reachable "
            f"(huggingface-cli download {name}), copy that cache here (HF_HUB_CACHE), or pass a "
            "local directory instead."
        ) from err


class MissingCardFieldsError(KeyError):
    """A card template rendered without some of its fields; names the template and all of them."""

    def __init__(self, template: str, missing: list[str]) -> None:
        super().__init__(template, missing)
        self.template, self.missing = template, missing

    def __str__(self) -> str:  # KeyError would show the repr of its arguments
        return f"card template {self.template} needs fields {self.missing} that were not given"


def render_card(template: str, **fields) -> str:
    """The card section of ``hub_cards/<template>`` filled with ``fields``.

    Every field the template names must be given: all the missing ones are reported at once, since
    a card is filled from a config and one run should show everything the config lacks.
    """
    text = (resources.files("tmrl_vla.hub_cards") / template).read_text()
    names = {re.split(r"[.\[]", field, maxsplit=1)[0] for _, field, _, _ in string.Formatter().parse(text) if field}
    missing = sorted(names - fields.keys())
    if missing:
        raise MissingCardFieldsError(template, missing)
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


def _fetch_readme(api: HfApi, repo_id: str, into: Path) -> bytes | None:
    """The repo's current ``README.md``, or None when it has none yet.

    Only a missing file counts as "none": any other failure (offline, no access) propagates, since
    pushing on without the card would replace text a person wrote on the Hub.
    """
    try:
        return Path(api.hf_hub_download(repo_id=repo_id, filename=README, local_dir=into)).read_bytes()
    except RemoteEntryNotFoundError:
        return None


def push_to_hub(
    save: Callable[[Path], object], repo_id: str, *, private: bool | None = None, message: str = "Upload"
) -> str:
    """Save with ``save(folder)`` into a temporary folder and upload it as one commit; returns the commit URL.

    The folder starts with the repo's current ``README.md``, if it has one: ``save`` updates our
    marked section in place, so what a person wrote on the Hub around it survives the push. Only
    files matching :data:`HUB_FILE_PATTERNS` are uploaded (a warning names any others ``save``
    wrote), so pickles and code never reach the Hub from here.
    """
    check_repo_id(repo_id)
    api = HfApi()
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "upload"
        folder.mkdir()
        card = _fetch_readme(api, repo_id, Path(tmp) / "hub")
        if card is not None:
            (folder / README).write_bytes(card)
        save(folder)
        written = sorted(f.relative_to(folder).as_posix() for f in folder.rglob("*") if f.is_file())
        left_out = sorted(set(written) - set(filter_repo_objects(written, allow_patterns=list(HUB_FILE_PATTERNS))))
        if left_out:
            warnings.warn(
                f"not pushed to {repo_id} (only {', '.join(HUB_FILE_PATTERNS)} are): {', '.join(left_out)}",
                stacklevel=2,
            )
        info = api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=message, allow_patterns=list(HUB_FILE_PATTERNS)
        )
    return str(getattr(info, "commit_url", info))
