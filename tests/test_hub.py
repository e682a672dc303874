"""Model cards, directory resolution and Hub pushes (tmrl_vla.hub), without the network."""

import string
from importlib import resources
from pathlib import Path

import pytest
from huggingface_hub import HfApi, RepoUrl
from huggingface_hub.errors import LocalEntryNotFoundError

from tmrl_vla import hub

CSP_START, CSP_END = "<!-- tmrl_vla:csp -->", "<!-- /tmrl_vla:csp -->"


def template_fields(name: str) -> set[str]:
    text = (resources.files("tmrl_vla.hub_cards") / name).read_text()
    return {field for _, field, _, _ in string.Formatter().parse(text) if field}


def csp_fields(**overrides) -> dict:
    fields = {name: f"<{name}>" for name in template_fields("csp_adapter.md")}
    return fields | overrides


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


def test_tmrl_template_renders_with_its_own_markers():
    fields = {name: f"<{name}>" for name in template_fields("tmrl_policy.md")}
    text = hub.render_card("tmrl_policy.md", **fields)
    assert text.splitlines()[0] == "<!-- tmrl_vla:tmrl -->"
    assert text.strip().splitlines()[-1] == "<!-- /tmrl_vla:tmrl -->"
    assert 'TMRLAgent.from_pretrained("<repo_id>", csp=csp)' in text


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


def test_resolve_dir_returns_a_local_directory_as_is(tmp_path, monkeypatch):
    assert hub.resolve_dir(tmp_path) == tmp_path
    assert hub.resolve_dir(str(tmp_path)) == tmp_path
    (tmp_path / "someone" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # a relative directory wins over a repo id of the same name, unresolved
    assert hub.resolve_dir("someone/model") == Path("someone/model")


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


def test_push_to_hub_saves_into_a_temporary_folder_and_uploads_one_commit(fake_hub):
    saved_into = []

    def save(folder: Path):
        saved_into.append(folder)
        (folder / "adapter_config.json").write_text("{}")
        (folder / "sub").mkdir()
        (folder / "sub" / "weights.bin").write_text("w")
        hub.update_card(folder / "README.md", section("pushed"))

    url = hub.push_to_hub(save, "me/adapter", private=True, message="Upload CSP adapter")

    assert url == "https://huggingface.co/me/adapter/commit/c0ffee"
    assert [c["call"] for c in fake_hub] == ["create_repo", "upload_folder"]  # one commit
    assert fake_hub[0] == {"call": "create_repo", "repo_id": "me/adapter", "private": True, "exist_ok": True}
    upload = fake_hub[1]
    assert upload["repo_id"] == "me/adapter" and upload["commit_message"] == "Upload CSP adapter"
    assert Path(upload["folder_path"]) == saved_into[0]
    files = {name: data.decode() for name, data in upload["files"].items()}
    assert files == {"adapter_config.json": "{}", "sub/weights.bin": "w", "README.md": section("pushed")}
    assert not saved_into[0].exists()  # the temporary folder is gone after the upload


def test_push_to_hub_uploads_to_the_repo_id_the_hub_returns(monkeypatch):
    uploaded = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: RepoUrl("https://huggingface.co/org/model"))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: uploaded.append(kw) or "plain-url")
    assert hub.push_to_hub(lambda folder: None, "model") == "plain-url"  # no commit_url: the value itself
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
