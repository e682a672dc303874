"""Saving, loading and pushing CSP adapters, apart from the wrapper that runs them.

An adapter directory is a plain PEFT adapter (``adapter_config.json``, ``adapter_model.safetensors``:
stock PEFT, and LeRobot's PEFT loading, run it as a LoRA policy, which is the CSP policy at
sigma = 0) plus ``csp_sigma_embedding.safetensors``, ``csp_config.json`` (the CSP config, the base
as its user named it, its type and weights hash, library versions), the base's LeRobot
``config.json`` (with ``use_peft``) and processors, so LeRobot's own loader runs it, and a model card.
The base is checked by a hash of its weights, so an adapter loaded onto another base fails with a
message naming both.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from huggingface_hub.repocard import metadata_load, metadata_save
from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn

from tmrl_vla.backends import backend_for
from tmrl_vla.csp.config import CSPConfig
from tmrl_vla.hub import (
    InvalidRepoIdError,
    check_repo_id,
    library_versions,
    push_to_hub,
    render_card,
    resolve_dir,
    update_card,
)
from tmrl_vla.policies import load_lerobot_policy

if TYPE_CHECKING:
    from tmrl_vla.csp.policy import CSPPolicy

CSP_CONFIG_FILE = "csp_config.json"
SIGMA_EMBEDDING_FILE = "csp_sigma_embedding.safetensors"
PROCESSOR_PREFIXES = ("policy_preprocessor", "policy_postprocessor")  # LeRobot's processor files
FORMAT_VERSION = 1


def weights_hash(module: nn.Module) -> str:
    """A content hash of a module's weights: identifies a base model independently of its path."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        # flattened first: a 0-dim tensor (a scalar buffer) has no byte view; other tensors' bytes are unchanged
        # sha256 reads the array's buffer: no copy of its bytes (~1 GB at pi0 size with .tobytes())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:16]


def name_or_path(policy: nn.Module) -> str | None:
    """Where a policy was loaded from, as its user named it (a Hub repo id or a path); None if unknown."""
    config = getattr(policy, "config", None)
    name = getattr(config, "pretrained_path", None) or getattr(policy, "name_or_path", None)
    return str(name) if name else None


def base_identity(policy: nn.Module) -> dict:
    """The base as an adapter records it: name (as given) and revision, policy type, weights hash."""
    return {
        "name_or_path": name_or_path(policy),
        "revision": getattr(policy.config, "pretrained_revision", None),
        "policy_type": policy.config.type,
    }


def read_adapter_config(path: Path) -> dict:
    """``csp_config.json`` of an adapter directory, or a clear error if it is not one."""
    meta_file = path / CSP_CONFIG_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not a CSP adapter: {CSP_CONFIG_FILE} is missing")
    return json.loads(meta_file.read_text())


def load_adapter(
    cls: type[CSPPolicy], path_or_repo_id: str | Path, base: nn.Module | None, is_trainable: bool
) -> CSPPolicy:
    """Build ``cls`` from an adapter directory or Hub repo id on ``base`` (checked by weights hash);
    without ``base``, the base the adapter records is loaded (:func:`load_recorded_base`)."""
    path = resolve_dir(path_or_repo_id)
    meta = read_adapter_config(path)
    recorded = meta["base_model"]
    if base is None:
        base = load_recorded_base(recorded, path)
    backend = backend_for(base)
    base_hash = weights_hash(base)
    if recorded.get("weights_hash") != base_hash or recorded.get("policy_type") != base.config.type:
        raise ValueError(
            f"CSP adapter {path} was trained on base {recorded.get('name_or_path')!r} "
            f"({recorded.get('policy_type')}, weights {recorded.get('weights_hash')}), but it is being loaded onto "
            f"{name_or_path(base)!r} ({base.config.type}, weights {base_hash}). Load it onto the base it was "
            "trained on."
        )
    for p in base.parameters():
        p.requires_grad_(False)
    peft_model = PeftModel.from_pretrained(base, path, is_trainable=is_trainable)
    csp = cls(peft_model, CSPConfig.from_dict(meta["csp"]), backend, base_hash)
    csp.sigma_embedding.load_state_dict(load_file(path / SIGMA_EMBEDDING_FILE))
    csp.sigma_embedding.weight.requires_grad_(is_trainable)
    csp.datasets = list(meta.get("datasets", []))
    return csp


def load_recorded_base(recorded: dict, adapter: Path) -> nn.Module:
    """The base policy an adapter names (``csp_config.json``: its repo id and revision, or path)."""
    if not recorded.get("name_or_path"):
        raise ValueError(
            f"CSP adapter {adapter} does not name its base policy (it was trained on a policy built in memory): "
            "pass the base with CSPPolicy.from_pretrained(adapter, base=policy)"
        )
    return load_lerobot_policy(recorded["name_or_path"], revision=recorded.get("revision"))[0]


def save_adapter(csp: CSPPolicy, directory: str | Path, *, repo_id: str | None = None) -> Path:
    """Write the PEFT files, the sigma embedding, ``csp_config.json`` and the card into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    base = base_identity(csp.base_policy)
    # PEFT's own record of the base, which LeRobot's PEFT loading (make_policy, use_peft=True) reads
    peft_config = csp.peft_model.peft_config["default"]
    peft_config.base_model_name_or_path, peft_config.revision = base["name_or_path"], base["revision"]
    readme = directory / "README.md"
    kept = readme.read_text() if readme.exists() else None  # a person's text; PEFT's save rewrites the card
    with csp.lora_wrappers_in_place():  # while merged, the LoRA weights live in the swapped-out wrappers
        csp.peft_model.save_pretrained(directory)
    readme.unlink(missing_ok=True)  # PEFT's template ("More Information Needed"): ours replaces it
    if kept is not None:
        readme.write_text(kept)
    state = {k: v.contiguous() for k, v in csp.sigma_embedding.state_dict().items()}
    save_file(state, directory / SIGMA_EMBEDDING_FILE)
    meta = {
        "format_version": FORMAT_VERSION,
        "csp": csp.config.to_dict(),
        "base_model": base | {"weights_hash": csp.base_hash},
        "datasets": csp.datasets,
        "versions": library_versions(),
    }
    (directory / CSP_CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    write_lerobot_files(csp, directory, base)
    write_adapter_card(directory, meta, repo_id=repo_id)
    return directory


def write_lerobot_files(csp: CSPPolicy, directory: Path, base: dict) -> None:
    """What LeRobot's own loader needs beside the PEFT files (``lerobot-eval --policy.path=<adapter>
    --policy.use_peft=true``, i.e. ``make_policy`` with ``use_peft``): the base's ``config.json`` with
    ``use_peft`` set, and the base's processors (normalisation statistics, tokenizer settings), copied
    from the base's checkpoint. A base built in memory has no checkpoint to copy them from."""
    config = copy.deepcopy(csp.base_policy.config)
    config.use_peft = True
    config._save_pretrained(directory)
    if base["name_or_path"] is None:
        return
    source = resolve_dir(base["name_or_path"], revision=base["revision"])
    for file in source.iterdir():
        if file.name.startswith(PROCESSOR_PREFIXES):
            shutil.copy2(file, directory / file.name)


def write_adapter_card(directory: Path, meta: dict, *, repo_id: str | None) -> None:
    """Fill ``hub_cards/csp_adapter.md`` from ``meta`` into the directory's README (text a person wrote
    outside our section is kept) and set its YAML front matter. Names only what travels with the
    adapter: Hub repo ids, never a path of the machine it was saved on."""
    c = CSPConfig.from_dict(meta["csp"])
    segments = [s for s in ("image", "language", "state") if getattr(c, f"noise_{s}")]
    scale = ", ".join(f"{k} {v:.3g}" for k, v in sorted(c.segment_scale.items()))
    base = meta["base_model"]
    base_id = hub_name(base["name_or_path"])
    # "local/..." is LeRobot's habit for a dataset that lives on disk only: no Hub page to link to
    datasets = [d for d in meta.get("datasets", []) if hub_name(d) and not d.startswith("local/")]
    section = render_card(
        "csp_adapter.md",
        policy_type=base["policy_type"],
        base_title=f"`{base_id}`" if base_id else f"a {base['policy_type']} policy",
        base_ref=f"[`{base_id}`](https://huggingface.co/{base_id})" if base_id else "(a local checkpoint)",
        base_argument="" if base_id else ", base=policy",
        base_comment="loads the base it names" if base_id else "pass the base checkpoint it was trained on",
        base_flag=base_id or "path/to/the/base",
        datasets_ref=", ".join(f"`{d}`" for d in datasets) or "a LeRobot dataset",
        weights_hash=base["weights_hash"],
        repo_id=repo_id or "path/or/repo_id/of/this/adapter",
        beta_start=c.beta_start,
        beta_end=c.beta_end,
        num_timesteps=c.num_timesteps,
        segments=", ".join(segments),
        noise_scale=c.noise_scale,
        segment_scale=f"(token RMS: {scale})" if scale else "",
        context_noise=c.context_noise,
        lora_r=c.lora_r,
        lora_alpha=c.lora_alpha,
        versions=", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
    )
    readme = directory / "README.md"
    update_card(readme, section)
    front = {
        "library_name": "lerobot",
        "pipeline_tag": "robotics",
        "tags": ["lerobot", "robotics", "csp", "tmrl", "lora", base["policy_type"]],
        **({"base_model": base_id} if base_id else {}),
        **({"datasets": datasets} if datasets else {}),
    }
    metadata_save(readme, (metadata_load(readme) or {}) | front)


def hub_name(name: str | None) -> str | None:
    """``name`` if it reads as a Hub repo id and is not a directory here, else None."""
    if not name or Path(name).exists():
        return None
    try:
        return check_repo_id(name)
    except InvalidRepoIdError:
        return None


def push_adapter(csp: CSPPolicy, repo_id: str, *, private: bool | None = None) -> str:
    """Upload the adapter directory (with its card) to the Hugging Face Hub as one commit."""
    return push_to_hub(
        lambda folder: save_adapter(csp, folder, repo_id=repo_id),
        repo_id,
        private=private,
        message="Upload CSP adapter",
    )
