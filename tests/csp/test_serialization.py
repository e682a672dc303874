"""Saving, reading and pushing CSP adapters (tmrl_vla.csp.serialization), and the weights hash that
identifies a base policy."""

import copy
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub.repocard import metadata_load
from safetensors.torch import load_file
from torch import nn

from tmrl_vla.csp import serialization
from tmrl_vla.csp.config import CSPConfig
from tmrl_vla.csp.policy import CSPPolicy
from tmrl_vla.csp.serialization import push_adapter, read_adapter_config, save_adapter, weights_hash

ADAPTER_FILES = {
    "adapter_config.json",
    "adapter_model.safetensors",
    "csp_sigma_embedding.safetensors",
    "csp_config.json",
    "config.json",  # the base's LeRobot config with use_peft set (processors too when the base has a checkpoint)
    "README.md",
}

# ---------------------------------------------------------------------------------- weights hash


def small_module(seed=0):
    """Two layers and a buffer (of 1 or more dimensions: see the 0-dim test below)."""
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    module.register_buffer("scale", torch.ones(3))
    return module


def test_weights_hash_is_a_short_hex_digest_stable_for_equal_weights():
    module = small_module()
    digest = weights_hash(module)
    assert len(digest) == 16 and set(digest) <= set("0123456789abcdef")
    assert weights_hash(module) == digest
    assert weights_hash(copy.deepcopy(module)) == digest
    assert weights_hash(small_module(0)) == digest  # equal weights built separately


def test_weights_hash_changes_when_one_weight_changes():
    module = small_module()
    digest = weights_hash(module)
    with torch.no_grad():
        module[0].weight[2, 1] += 1e-6
    assert weights_hash(module) != digest
    assert weights_hash(small_module(1)) != digest


def test_weights_hash_covers_buffers_names_and_dtypes():
    module = small_module()
    digest = weights_hash(module)
    module.scale[1] = 2.0  # a buffer, not a parameter
    assert weights_hash(module) != digest
    renamed = nn.Sequential()
    renamed.add_module("first", small_module()[0])
    renamed.add_module("second", small_module()[1])
    renamed.register_buffer("scale", torch.ones(3))
    assert weights_hash(renamed) != digest  # the same tensors under other names
    assert weights_hash(small_module().double()) != digest


def test_weights_hash_does_not_depend_on_the_registration_order():
    a, b = nn.Module(), nn.Module()
    x, y = torch.arange(3.0), torch.ones(2)
    a.register_buffer("x", x.clone())
    a.register_buffer("y", y.clone())
    b.register_buffer("y", y.clone())
    b.register_buffer("x", x.clone())
    assert weights_hash(a) == weights_hash(b)


def test_weights_hash_of_a_module_with_a_scalar_buffer():
    module = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    digest = weights_hash(module)
    module[1].num_batches_tracked += 1
    assert weights_hash(module) != digest


# ---------------------------------------------------------------------------------- reading


def test_read_adapter_config_of_a_directory_that_is_not_an_adapter(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")  # a plain PEFT adapter is not a CSP one
    with pytest.raises(FileNotFoundError, match=r"is not a CSP adapter: csp_config.json is missing"):
        read_adapter_config(tmp_path)


def test_read_adapter_config_returns_the_saved_json(tmp_path):
    (tmp_path / "csp_config.json").write_text(json.dumps({"format_version": 1, "csp": {"lora_r": 4}}))
    assert read_adapter_config(tmp_path) == {"format_version": 1, "csp": {"lora_r": 4}}


def test_loading_from_a_directory_without_the_csp_config_fails_clearly(fresh, tmp_path):
    policy, _, _ = fresh
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path} is not a CSP adapter"):
        CSPPolicy.from_pretrained(tmp_path, base=policy)


# ---------------------------------------------------------------------------------- saving


def with_random_lora(csp: CSPPolicy) -> CSPPolicy:
    """Non-zero LoRA weights and sigma embedding, as after training (untrained LoRA B is zero)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in csp.named_parameters():
            if "lora_" in name or name.startswith("sigma_embedding"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    return csp


def test_save_adapter_writes_exactly_the_adapter_files(fresh, tmp_path):
    policy, _, _ = fresh
    base_hash = weights_hash(policy)  # before LoRA layers are injected
    csp = CSPPolicy.from_base(policy, CSPConfig(noise_scale="none", lora_r=4, lora_alpha=8))
    out = save_adapter(csp, tmp_path / "adapter")
    assert out == tmp_path / "adapter"
    assert {p.name for p in out.iterdir()} == ADAPTER_FILES
    meta = json.loads((out / "csp_config.json").read_text())
    assert meta["format_version"] == serialization.FORMAT_VERSION == 1
    assert meta["csp"] == csp.config.to_dict() and meta["csp"]["lora_r"] == 4
    assert meta["base_model"] == {
        "name_or_path": None,  # built in memory: nothing to name
        "revision": None,
        "policy_type": "smolvla",
        "weights_hash": base_hash,
    }
    assert set(meta["versions"]) == {"tmrl_vla", "lerobot", "peft", "torch", "transformers"}
    sigma = load_file(out / "csp_sigma_embedding.safetensors")
    assert set(sigma) == set(csp.sigma_embedding.state_dict())
    assert all(torch.equal(sigma[k], v) for k, v in csp.sigma_embedding.state_dict().items())


def test_the_card_holds_the_csp_section(fresh, tmp_path):
    policy, _, _ = fresh
    csp = CSPPolicy.from_base(policy, CSPConfig(noise_scale="none", noise_language=False, lora_r=4, lora_alpha=8))
    out = save_adapter(csp, tmp_path / "adapter")
    card = (out / "README.md").read_text()
    start, end = card.index("<!-- tmrl_vla:csp -->"), card.index("<!-- /tmrl_vla:csp -->")
    section = card[start:end]
    assert "# CSP adapter for a smolvla policy" in section
    assert "More Information Needed" not in card  # PEFT's empty template is not left behind
    assert card.startswith("---\nlibrary_name: lerobot\npipeline_tag: robotics\n")
    # no repo id: a placeholder, never the directory (a path of this machine, maybe a temporary one)
    assert 'CSPPolicy.from_pretrained("path/or/repo_id/of/this/adapter", base=policy)' in section
    assert str(out) not in card
    assert "| noised segments | image |" in section  # language is off
    assert "| noise scale | none  |" in section
    assert "| LoRA | r = 4, alpha = 8 |" in section
    assert f"weights hash `{csp.base_hash}`" in section
    assert card.count("<!-- tmrl_vla:csp -->") == 1


def test_a_repo_id_replaces_the_directory_in_the_card(fresh, tmp_path):
    policy, _, _ = fresh
    csp = CSPPolicy.from_base(policy, CSPConfig(noise_scale="none"))
    out = save_adapter(csp, tmp_path / "adapter", repo_id="someone/csp")
    card = (out / "README.md").read_text()
    assert 'CSPPolicy.from_pretrained("someone/csp", base=policy)' in card
    assert str(tmp_path) not in card


def test_saving_a_merged_adapter_writes_the_same_lora_weights(fresh, tmp_path):
    policy, _, _ = fresh
    csp = with_random_lora(CSPPolicy.from_base(policy, CSPConfig(noise_scale="none")))
    save_adapter(csp, tmp_path / "unmerged")
    csp.merge_adapter()
    assert csp.merged
    save_adapter(csp, tmp_path / "merged")
    assert csp.merged  # saving did not unmerge it
    for name in ("adapter_model.safetensors", "csp_sigma_embedding.safetensors"):
        unmerged, merged = (load_file(tmp_path / d / name) for d in ("unmerged", "merged"))
        assert unmerged.keys() == merged.keys() and unmerged
        assert all(torch.equal(unmerged[k], merged[k]) for k in unmerged), name
    lora = load_file(tmp_path / "merged" / "adapter_model.safetensors")
    assert all("lora_" in k for k in lora) and any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)
    assert json.loads((tmp_path / "merged" / "adapter_config.json").read_text()) == json.loads(
        (tmp_path / "unmerged" / "adapter_config.json").read_text()
    )


def test_a_saved_adapter_loads_back_with_its_weights(fresh, tmp_path):
    policy, _, _ = fresh
    pristine = copy.deepcopy(policy)
    csp = with_random_lora(CSPPolicy.from_base(policy, CSPConfig(noise_scale="none")))
    out = save_adapter(csp, tmp_path / "adapter")
    loaded = CSPPolicy.from_pretrained(out, base=pristine)
    mine, theirs = csp.state_dict(), loaded.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert loaded.config == csp.config and loaded.base_hash == csp.base_hash


# ---------------------------------------------------------------------------------- pushing


def test_push_adapter_uploads_the_adapter_files_in_one_commit(fresh, fake_hub):
    policy, _, _ = fresh
    csp = CSPPolicy.from_base(policy, CSPConfig(noise_scale="none"))
    url = push_adapter(csp, "someone/tiny-csp", private=True)
    assert url == "https://huggingface.co/someone/tiny-csp/commit/c0ffee"
    assert [c["call"] for c in fake_hub] == ["create_repo", "upload_folder"]
    assert fake_hub[0] == {"call": "create_repo", "repo_id": "someone/tiny-csp", "private": True, "exist_ok": True}
    upload = fake_hub[1]
    assert upload["repo_id"] == "someone/tiny-csp" and upload["commit_message"] == "Upload CSP adapter"
    assert set(upload["files"]) == ADAPTER_FILES
    card, folder = upload["files"]["README.md"].decode(), str(upload["folder_path"])
    assert 'CSPPolicy.from_pretrained("someone/tiny-csp", base=policy)' in card
    assert folder not in card  # the card names the repo, not the temporary folder
    assert not Path(folder).exists()  # the temporary folder is gone


# ------------------------------------------------------------------------------- the base's identity


def test_an_adapter_names_its_base_as_the_user_did_and_rebuilds_it(tiny_base_policy, local_hub, tmp_path):
    """A base loaded by repo id (from the offline Hub cache) is recorded by that repo id, in
    csp_config.json and in PEFT's own adapter_config.json (which LeRobot's PEFT loading reads), and
    from_pretrained without base= loads it again and gives the same actions."""
    from tmrl_vla.policies import load_lerobot_policy

    local_hub(tiny_base_policy, "someone/tiny-base")
    policy, pre, _ = load_lerobot_policy("someone/tiny-base")
    csp = CSPPolicy.from_base(policy, CSPConfig(noise_scale="none"))
    directory = csp.save_pretrained(tmp_path / "adapter")
    recorded = json.loads((directory / "csp_config.json").read_text())["base_model"]
    assert (recorded["name_or_path"], recorded["revision"], recorded["policy_type"]) == (
        "someone/tiny-base",
        None,
        "smolvla",
    )
    assert json.loads((directory / "adapter_config.json").read_text())["base_model_name_or_path"] == "someone/tiny-base"
    card = (directory / "README.md").read_text()
    assert "--policy.path=someone/tiny-base --csp.path=" in card
    assert 'CSPPolicy.from_pretrained("path/or/repo_id/of/this/adapter")  # loads the base it names' in card
    assert str(tmp_path) not in card and str(tiny_base_policy) not in card  # no path of this machine
    assert metadata_load(directory / "README.md")["base_model"] == "someone/tiny-base"

    rebuilt = CSPPolicy.from_pretrained(directory)  # no base=: the recorded one is loaded
    assert rebuilt.base_hash == csp.base_hash
    g = torch.Generator().manual_seed(0)
    batch = pre(
        {
            "observation.images.front": torch.rand(2, 3, 64, 64, generator=g),
            "observation.state": torch.randn(2, 6, generator=g),
            "task": ["pick up the cube"] * 2,
        }
    )
    noise = torch.randn(2, 10, 32, generator=g)
    expected = csp.predict_action_chunk(dict(batch), sigma=0.0, noise=noise)
    assert torch.equal(rebuilt.predict_action_chunk(dict(batch), sigma=0.0, noise=noise), expected)


def test_an_adapter_of_a_base_built_in_memory_needs_its_base(fresh, tmp_path):
    policy, _, _ = fresh
    directory = CSPPolicy.from_base(policy, CSPConfig(noise_scale="none")).save_pretrained(tmp_path / "adapter")
    assert json.loads((directory / "csp_config.json").read_text())["base_model"]["name_or_path"] is None
    with pytest.raises(ValueError, match="does not name its base policy"):
        CSPPolicy.from_pretrained(directory)


def test_lerobots_own_loader_runs_the_adapter_as_the_csp_policy_at_sigma_zero(
    tiny_base_policy, tiny_demos, local_hub, tmp_path
):
    """What `lerobot-eval --policy.path=<adapter> --policy.use_peft=true` does: LeRobot reads the
    adapter's config.json, loads the base PEFT's adapter_config.json names, wraps it with PEFT; its
    processors come from the adapter directory. Its actions equal the CSP policy's at sigma 0."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.policies.factory import make_policy, make_pre_post_processors

    from tmrl_vla.policies import load_lerobot_policy

    local_hub(tiny_base_policy, "someone/tiny-base")
    policy, pre, _ = load_lerobot_policy("someone/tiny-base")
    csp = CSPPolicy.from_base(policy, CSPConfig(noise_scale="none"))
    with torch.no_grad():  # a trained-looking adapter: LoRA B away from its zero init
        for name, p in csp.peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    directory = csp.save_pretrained(tmp_path / "adapter")
    assert {"policy_preprocessor.json", "policy_postprocessor.json"} <= {p.name for p in directory.iterdir()}

    config = PreTrainedConfig.from_pretrained(directory)
    config.pretrained_path = directory
    assert config.use_peft
    demos, root, _ = tiny_demos
    lerobot_policy = make_policy(config, ds_meta=LeRobotDatasetMetadata(demos.repo_id, root=root)).eval()
    lerobot_pre, _ = make_pre_post_processors(config, pretrained_path=str(directory))
    assert type(lerobot_policy).__name__ == "PeftModel"

    g = torch.Generator().manual_seed(0)
    raw = {
        "observation.images.front": torch.rand(2, 3, 64, 64, generator=g),
        "observation.state": torch.randn(2, 6, generator=g),
        "task": ["pick up the cube"] * 2,
    }
    noise = torch.randn(2, 10, 32, generator=g)
    ours = csp.predict_action_chunk(pre(dict(raw)), sigma=0.0, noise=noise)
    theirs = lerobot_policy.predict_action_chunk(lerobot_pre(dict(raw)), noise=noise)
    assert torch.equal(ours, theirs)
    bare, _, _ = load_lerobot_policy("someone/tiny-base")  # the base alone: the adapter does change actions
    assert not torch.equal(ours, bare.predict_action_chunk(pre(dict(raw)), noise=noise))


def test_the_card_front_matter_names_hub_ids_only_and_keeps_what_a_person_wrote(tiny_base_policy, tmp_path):
    from tmrl_vla.policies import load_lerobot_policy

    policy, _, _ = load_lerobot_policy(tiny_base_policy)  # a local directory: not named in the card
    csp = CSPPolicy.from_base(policy, CSPConfig(noise_scale="none"))
    csp.datasets = ["someone/demos"]
    out = csp.save_pretrained(tmp_path / "adapter", repo_id="someone/csp")
    meta = metadata_load(out / "README.md")
    assert meta == {
        "library_name": "lerobot",
        "pipeline_tag": "robotics",
        "tags": ["lerobot", "robotics", "csp", "tmrl", "lora", "smolvla"],
        "datasets": ["someone/demos"],
    }
    card = (out / "README.md").read_text()
    assert str(tiny_base_policy) not in card and "--policy.path=path/to/the/base" in card
    assert "lerobot-eval --policy.path=someone/csp --policy.use_peft=true" in card

    (out / "README.md").write_text(
        card.replace("<!-- /tmrl_vla:csp -->", "<!-- /tmrl_vla:csp -->\n\nNotes by a person.\n")
    )
    metadata = metadata_load(out / "README.md") | {"license": "apache-2.0"}
    from huggingface_hub.repocard import metadata_save

    metadata_save(out / "README.md", metadata)
    csp.save_pretrained(out, repo_id="someone/csp")  # saved again
    again = (out / "README.md").read_text()
    assert "Notes by a person." in again and again.count("<!-- tmrl_vla:csp -->") == 1
    assert metadata_load(out / "README.md")["license"] == "apache-2.0"
    assert "More Information Needed" not in again


def test_weights_hash_is_the_sha256_of_every_tensors_bytes_in_name_order():
    """The recorded hashes of saved adapters stay valid: the same bytes, read without copying them."""
    import hashlib

    from tmrl_vla.csp.serialization import weights_hash

    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).to(torch.bfloat16)
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):  # includes a 0-dim buffer
        h.update(name.encode() + tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    assert weights_hash(module) == h.hexdigest()[:16]
