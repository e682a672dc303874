"""Model cards, directory resolution and Hub pushes (tmrl_vla.hub), without the network."""

import re
import string
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from huggingface_hub import HfApi, RepoFile, RepoUrl
from huggingface_hub import _snapshot_download as snapshot_module
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RemoteEntryNotFoundError

from tmrl_vla import hub

CSP_START, CSP_END = "<!-- tmrl_vla:csp -->", "<!-- /tmrl_vla:csp -->"
REAL_REPO_INFO = HfApi.repo_info
ALLOWED = ["*.json", "*.safetensors", "*.md", "*.txt", "*.jinja", "*.model", "*.png"]


def template_fields(name: str) -> set[str]:
    text = (resources.files("tmrl_vla.hub_cards") / name).read_text()
    return {field for _, field, _, _ in string.Formatter().parse(text) if field}


def csp_fields(**overrides) -> dict:
    fields = {name: f"<{name}>" for name in template_fields("csp_adapter.md")}
    return fields | overrides


# ------------------------------------------------------------------------------------ cards


def test_render_card_fills_every_field_of_the_template():
    assert {"repo_id", "lora_r", "lora_alpha", "versions"} <= template_fields("csp_adapter.md")
    text = hub.render_card("csp_adapter.md", **csp_fields(repo_id="me/adapter", lora_r=8, lora_alpha=16))
    assert text.splitlines()[0] == CSP_START and text.strip().splitlines()[-1] == CSP_END
    assert 'CSPPolicy.from_pretrained("me/adapter"<base_argument>)' in text
    assert "| LoRA | r = 8, alpha = 16 |" in text
    assert "{" not in text.replace("```", "")  # no placeholder is left unfilled
    for name in template_fields("csp_adapter.md") - {"repo_id", "lora_r", "lora_alpha"}:
        assert f"<{name}>" in text


def test_render_card_with_a_missing_field_raises_naming_it():
    fields = csp_fields()
    del fields["weights_hash"]
    with pytest.raises(KeyError, match="weights_hash"):
        hub.render_card("csp_adapter.md", **fields)


def test_render_card_names_the_template_and_every_missing_field():
    fields = csp_fields()
    del fields["weights_hash"], fields["lora_r"], fields["versions"]
    with pytest.raises(hub.MissingCardFieldsError) as err:
        hub.render_card("csp_adapter.md", **fields, unused="extra fields are ignored")
    assert str(err.value) == (
        "card template csp_adapter.md needs fields ['lora_r', 'versions', 'weights_hash'] that were not given"
    )
    assert isinstance(err.value, KeyError)
    assert err.value.template == "csp_adapter.md" and err.value.missing == ["lora_r", "versions", "weights_hash"]


def test_tmrl_template_renders_with_its_own_markers():
    fields = {name: f"<{name}>" for name in template_fields("tmrl_policy.md")}
    text = hub.render_card("tmrl_policy.md", **fields)
    assert text.splitlines()[0] == "<!-- tmrl_vla:tmrl -->"
    assert text.strip().splitlines()[-1] == "<!-- /tmrl_vla:tmrl -->"
    assert 'TMRLAgentPolicy.from_pretrained("<repo_id>")' in text


def section(body: str) -> str:
    return f"{CSP_START}\n## CSP adapter\n{body}\n{CSP_END}\n"


def test_update_card_creates_a_missing_readme(tmp_path):
    readme = tmp_path / "README.md"
    hub.update_card(readme, section("first"))
    assert readme.read_text() == section("first")


def test_update_card_keeps_other_text_and_replaces_its_own_section(tmp_path):
    readme = tmp_path / "README.md"
    peft_card = "---\nlibrary_name: peft\n---\n\n# Model Card for the adapter\n\nWritten by PEFT.\n"
    readme.write_text(peft_card)

    hub.update_card(readme, section("first"))
    text = readme.read_text()
    assert text == peft_card.rstrip() + "\n\n" + section("first")

    # A person adds notes after our section; a second save replaces the section in place.
    readme.write_text(text + "\n## Notes\n\nA person wrote this.\n")
    hub.update_card(readme, section("second"))
    text = readme.read_text()
    assert text.count(CSP_START) == 1 and text.count(CSP_END) == 1
    assert "first" not in text and "## CSP adapter\nsecond\n" in text
    assert text.startswith(peft_card.rstrip() + "\n\n" + CSP_START)
    assert text.endswith(CSP_END + "\n\n## Notes\n\nA person wrote this.\n")


def test_update_card_leaves_another_marked_section_alone(tmp_path):
    readme = tmp_path / "README.md"
    tmrl = "<!-- tmrl_vla:tmrl -->\nhigh-level policy\n<!-- /tmrl_vla:tmrl -->\n"
    readme.write_text(tmrl)
    hub.update_card(readme, section("csp"))
    hub.update_card(readme, section("csp again"))
    assert readme.read_text() == tmrl + "\n" + section("csp again")


# ------------------------------------------------------------------------------------ repo ids


@pytest.mark.parametrize("repo_id", ["me/adapter", "model", "Org-1/smolvla_csp.v2"])
def test_check_repo_id_returns_a_valid_id_unchanged(repo_id):
    assert hub.check_repo_id(repo_id) == repo_id


@pytest.mark.parametrize(
    "repo_id, message",
    [
        (
            "me/my model",
            "'me/my model' is not a valid Hub repo id (user/name): Repo id must use alphanumeric chars, "
            "'-', '_' or '.'. The name cannot start or end with '-' or '.' and the maximum length is 96: "
            "'me/my model'.",
        ),
        ("me/a..b", "'me/a..b' is not a valid Hub repo id (user/name): Cannot have -- or .. in repo_id: 'me/a..b'."),
        (
            "outputs/a/b",
            "'outputs/a/b' is not a valid Hub repo id (user/name); it looks like a local path, and a Hub repo id "
            "is user/name: Repo id must be in the form 'repo_name' or 'namespace/repo_name': 'outputs/a/b'. "
            "Use `repo_type` argument if needed.",
        ),
        ("", "'' is not a valid Hub repo id (user/name): it is empty"),
    ],
)
def test_check_repo_id_refuses_an_invalid_id_saying_why(repo_id, message):
    with pytest.raises(hub.InvalidRepoIdError) as err:
        hub.check_repo_id(repo_id)
    assert str(err.value) == message
    assert isinstance(err.value, ValueError) and isinstance(err.value, HFValidationError)


@pytest.fixture
def no_download(monkeypatch):
    """``snapshot_download`` as ``tmrl_vla.hub`` calls it, failing the test if it is called at all."""

    def snapshot_download(*args, **kwargs):
        raise AssertionError(f"snapshot_download was called with {args} {kwargs}")

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)


@pytest.mark.parametrize(
    "name, message",
    [
        ("./outputs/missing", "no such directory: './outputs/missing' (and it is not a valid Hub repo id, user/name,"),
        ("outputs/a/b", "no such directory: 'outputs/a/b' (and it is not a valid Hub repo id, user/name, either"),
        ("~/outputs", "no such directory: '~/outputs' (and it is not a valid Hub repo id, user/name, either"),
        ("me/my model", "'me/my model' is neither a local directory nor a valid Hub repo id (user/name): Repo id"),
        ("me/a..b", "'me/a..b' is neither a local directory nor a valid Hub repo id (user/name): Cannot have"),
        ("", "'' is neither a local directory nor a valid Hub repo id (user/name): it is empty"),
    ],
)
def test_resolve_dir_refuses_a_name_that_is_no_directory_and_no_repo_id_before_any_download(
    tmp_path, monkeypatch, no_download, name, message
):
    monkeypatch.chdir(tmp_path)  # "./outputs/missing" really is missing, and "" would be this directory
    with pytest.raises(hub.InvalidRepoIdError) as err:
        hub.resolve_dir(name)
    assert str(err.value).startswith(message)


def test_resolve_dir_takes_a_path_object_that_does_not_exist_as_a_missing_directory(tmp_path, no_download):
    missing = tmp_path / "outputs" / "missing"
    with pytest.raises(hub.InvalidRepoIdError, match="^no such directory: " + re.escape(repr(str(missing)))):
        hub.resolve_dir(missing)


def test_resolve_dir_returns_a_local_directory_as_is(tmp_path, monkeypatch):
    assert hub.resolve_dir(tmp_path) == tmp_path
    assert hub.resolve_dir(str(tmp_path)) == tmp_path
    (tmp_path / "someone" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # a relative directory wins over a repo id of the same name, unresolved
    assert hub.resolve_dir("someone/model") == Path("someone/model")
    (tmp_path / "outputs" / "a" / "b").mkdir(parents=True)
    assert hub.resolve_dir("outputs/a/b") == Path("outputs/a/b")  # no repo id, but a directory: fine


def test_resolve_dir_reads_a_repo_id_from_the_offline_cache(tmp_path, local_hub):
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "config.json").write_text('{"a": 1}')
    local_hub(saved, "someone/model")
    resolved = hub.resolve_dir("someone/model")
    assert resolved != saved and resolved.is_dir()
    assert sorted(p.name for p in resolved.iterdir()) == ["config.json"]
    assert (resolved / "config.json").read_text() == '{"a": 1}'


def test_resolve_dir_of_a_repo_id_not_in_the_cache_says_how_to_get_it(local_hub):
    with pytest.raises(
        hub.NotInLocalCacheError, match=r"'someone/absent' at revision v2 is not a local directory"
    ) as err:
        hub.resolve_dir("someone/absent", revision="v2")
    assert "huggingface-cli download someone/absent" in str(err.value)
    assert isinstance(err.value.__cause__, LocalEntryNotFoundError)


# ------------------------------------------------------------------------- what is downloaded

REPO_TREE = {
    "config.json": "data",
    "model.safetensors": "data",
    "README.md": "data",
    "merges.txt": "data",
    "chat_template.jinja": "data",
    "tokenizer.model": "data",
    "figures/curve.png": "data",
    "processor/deep/policy_preprocessor.json": "data",
    "processor/stats.safetensors": "data",
    "pytorch_model.bin": "pickle",
    "optimizer.pt": "pickle",
    "buffer.pkl": "pickle",
    "modeling_custom.py": "code",
    "processor/deep/weights.bin": "pickle",
    "processor/hook.py": "code",
}


@pytest.fixture
def hub_with_pickles(local_hub, monkeypatch):
    """The Hub seen by huggingface_hub's real ``snapshot_download``, with a repo that holds data,
    pickles and code: the repo lookups answer from ``REPO_TREE`` and each file download is recorded
    and written into the cache, so the real pattern filtering decides what is asked for."""
    commit = "fedcba9876543210fedcba9876543210fedcba98"
    fetched = []

    def repo_info(self, repo_id, **kwargs):
        return SimpleNamespace(sha=commit)

    def list_repo_tree(self, repo_id, **kwargs):
        for path, content in REPO_TREE.items():
            yield RepoFile(path=path, size=len(content), oid="0" * 40)

    def hf_hub_download(repo_id, *, filename, revision, cache_dir, **kwargs):
        fetched.append(filename)
        target = Path(cache_dir) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / revision / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(REPO_TREE[filename])
        return str(target)

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # online, to these fakes
    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    monkeypatch.setattr(HfApi, "list_repo_tree", list_repo_tree)
    monkeypatch.setattr(snapshot_module, "hf_hub_download", hf_hub_download)
    return fetched


def test_resolve_dir_downloads_data_files_only_never_pickles_or_code(hub_with_pickles, monkeypatch):
    resolved = hub.resolve_dir("someone/mixed")
    data = sorted(path for path, content in REPO_TREE.items() if content == "data")
    assert sorted(hub_with_pickles) == data  # nested folders included, by the same patterns
    assert sorted(p.relative_to(resolved).as_posix() for p in resolved.rglob("*") if p.is_file()) == data

    # Offline, the cached snapshot is complete for these patterns: the pickles it lacks are not asked for.
    from huggingface_hub import constants

    monkeypatch.setattr(HfApi, "repo_info", REAL_REPO_INFO)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the Hub is offline again (local_hub)
    assert hub.resolve_dir("someone/mixed") == resolved
    # Without the patterns the same cache counts as incomplete: the patterns are what leaves the pickles out.
    with pytest.raises(LocalEntryNotFoundError, match="incomplete.*pytorch_model.bin"):
        snapshot_module.snapshot_download("someone/mixed")


def test_an_offline_cache_is_read_as_it_is(tmp_path, local_hub):
    """The patterns decide what a download fetches; a snapshot some other tool put in the cache is
    returned unchanged, and the loaders read only the named data files in it."""
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "config.json").write_text("{}")
    (saved / "pytorch_model.bin").write_text("pickle")
    local_hub(saved, "someone/other")
    assert sorted(p.name for p in hub.resolve_dir("someone/other").iterdir()) == ["config.json", "pytorch_model.bin"]


def test_the_file_patterns_are_data_only():
    assert list(hub.HUB_FILE_PATTERNS) == ALLOWED


# ------------------------------------------------------------------------------------ pushing


def test_push_to_hub_saves_into_a_temporary_folder_and_uploads_one_commit(fake_hub):
    saved_into = []

    def save(folder: Path):
        saved_into.append(folder)
        (folder / "adapter_config.json").write_text("{}")
        (folder / "sub").mkdir()
        (folder / "sub" / "weights.safetensors").write_text("w")
        (folder / "sub" / "weights.bin").write_text("pickle")
        (folder / "modeling.py").write_text("code")
        hub.update_card(folder / "README.md", section("pushed"))

    with pytest.warns(UserWarning) as warned:
        url = hub.push_to_hub(save, "me/adapter", private=True, message="Upload CSP adapter")
    assert [str(w.message) for w in warned] == [
        "not pushed to me/adapter (only *.json, *.safetensors, *.md, *.txt, *.jinja, *.model, *.png are): "
        "modeling.py, sub/weights.bin"
    ]

    assert url == "https://huggingface.co/me/adapter/commit/c0ffee"
    assert [c["call"] for c in fake_hub] == ["create_repo", "upload_folder"]  # one commit
    assert fake_hub[0] == {"call": "create_repo", "repo_id": "me/adapter", "private": True, "exist_ok": True}
    upload = fake_hub[1]
    assert set(upload) == {"call", "repo_id", "folder_path", "commit_message", "allow_patterns", "files"}
    assert upload["repo_id"] == "me/adapter" and upload["commit_message"] == "Upload CSP adapter"
    assert upload["allow_patterns"] == ALLOWED
    assert Path(upload["folder_path"]) == saved_into[0]
    files = {name: data.decode() for name, data in upload["files"].items()}
    assert files == {"adapter_config.json": "{}", "sub/weights.safetensors": "w", "README.md": section("pushed")}
    assert not saved_into[0].exists()  # the temporary folder is gone after the upload


def test_pushing_again_keeps_what_a_person_wrote_on_the_hub(fake_hub, hub_repos):
    seen = []

    def save_with(body):
        def save(folder: Path):
            seen.append((folder / "README.md").read_text() if (folder / "README.md").exists() else None)
            (folder / "adapter_model.safetensors").write_text(body)
            hub.update_card(folder / "README.md", section(body))

        return save

    hub.push_to_hub(save_with("first"), "me/adapter", message="Upload CSP adapter")
    assert seen == [None]  # a new repo has no card yet
    assert hub_repos["me/adapter"] == {"adapter_model.safetensors": b"first", "README.md": section("first").encode()}

    person = "---\nlicense: apache-2.0\n---\n\n# My adapter\n\nIntroduction a person wrote.\n\n"
    notes = "\n## Notes\n\nResults a person added on the Hub.\n"
    hub_repos["me/adapter"]["README.md"] = (person + section("first") + notes).encode()

    url = hub.push_to_hub(save_with("second"), "me/adapter", message="Upload CSP adapter (2 steps)")

    assert url == "https://huggingface.co/me/adapter/commit/c0ffee"
    assert seen[1] == person + section("first") + notes  # save starts from the card on the Hub
    assert [c["call"] for c in fake_hub] == ["create_repo", "upload_folder", "create_repo", "upload_folder"]
    upload = fake_hub[3]
    assert upload["commit_message"] == "Upload CSP adapter (2 steps)"
    assert upload["files"] == {
        "adapter_model.safetensors": b"second",
        "README.md": (person + section("second") + notes).encode(),
    }
    assert hub_repos["me/adapter"]["README.md"] == (person + section("second") + notes).encode()


def test_push_to_hub_stops_when_the_card_on_the_hub_cannot_be_read(fake_hub, monkeypatch):
    """Anything but "there is no README" stops the push: pushing on would replace a person's card."""

    def hf_hub_download(self, repo_id, filename, **kwargs):
        raise LocalEntryNotFoundError("the Hub cannot be reached")

    monkeypatch.setattr(HfApi, "hf_hub_download", hf_hub_download)
    saved = []
    with pytest.raises(LocalEntryNotFoundError, match="cannot be reached"):
        hub.push_to_hub(saved.append, "me/adapter")
    assert saved == [] and [c["call"] for c in fake_hub] == ["create_repo"]


@pytest.mark.parametrize("repo_id", ["me/my adapter", "./outputs/adapter", "me/a..b", ""])
def test_push_to_hub_refuses_an_invalid_repo_id_before_creating_anything(fake_hub, repo_id):
    saved = []
    with pytest.raises(hub.InvalidRepoIdError, match=r"is not a valid Hub repo id \(user/name\)"):
        hub.push_to_hub(saved.append, repo_id)
    assert fake_hub == [] and saved == []


def test_push_to_hub_uploads_to_the_repo_id_the_hub_returns(monkeypatch):
    uploaded, looked_up = [], []

    def hf_hub_download(self, repo_id, filename, **kwargs):
        looked_up.append((repo_id, filename))
        response = httpx.Response(404, request=httpx.Request("HEAD", f"https://huggingface.co/{repo_id}"))
        raise RemoteEntryNotFoundError("404", response=response)

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: RepoUrl("https://huggingface.co/org/model"))
    monkeypatch.setattr(HfApi, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: uploaded.append(kw) or "plain-url")
    assert hub.push_to_hub(lambda folder: None, "model") == "plain-url"  # no commit_url: the value itself
    assert looked_up == [("org/model", "README.md")]
    assert uploaded[0]["repo_id"] == "org/model" and uploaded[0]["commit_message"] == "Upload"


def test_library_versions_names_the_packages(monkeypatch):
    import importlib.metadata

    names = ["tmrl_vla", "lerobot", "peft", "torch", "transformers"]
    versions = hub.library_versions()
    assert list(versions) == names
    assert versions == {name: importlib.metadata.version(name) for name in names}

    real = importlib.metadata.version

    def version(name):
        if name == "peft":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(hub, "version", version)  # the name hub looks up
    assert hub.library_versions() == {name: "unknown" if name == "peft" else real(name) for name in names}
