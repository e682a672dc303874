"""Writing a trained agent as a LeRobot policy directory: one directory (one Hub repo) per agent.

    config.json                  type "tmrl": the agent's configs and what it steers
    model.safetensors            the actor (and, by default, the critics, to continue training)
    policy_preprocessor.json ... the base's processors, with their statistics
    README.md, learning_curve.png, training.json
    base_policy/, csp_adapter/   only when the base or adapter were local directories

A base or adapter given as a Hub repo id is named (with its revision), not copied. One given as a
local directory is copied into the agent (``./base_policy``, ``./csp_adapter``), so the directory,
and the Hub repo made from it, is complete and holds no path of the machine it was saved on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from huggingface_hub import metadata_load, metadata_save

from tmrl_vla.csp.serialization import CSP_CONFIG_FILE, PROCESSOR_PREFIXES, hub_name
from tmrl_vla.hub import check_repo_id, library_versions, render_card, resolve_dir, update_card
from tmrl_vla.policy.configuration_tmrl import TMRLAgentConfig
from tmrl_vla.policy.modeling_tmrl import EMBEDDED_PREFIX, WEIGHTS_FILE, TMRLAgentPolicy, save_agent_weights
from tmrl_vla.policy.processor_tmrl import (
    PACKAGED_TINY_VLM,
    PACKAGED_TOKENIZER_STEP,
    add_robot_units,
    is_packaged_tiny_vlm,
)

BASE_FOLDER, ADAPTER_FOLDER = "base_policy", "csp_adapter"
CURVE_FILE, TRAINING_FILE = "learning_curve.png", "training.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"  # PEFT's record of the adapter and its base
# The files of a LeRobot checkpoint or CSP adapter that a copy keeps: no logs, metrics, manifests, or
# cards (the agent's card describes the whole stack, and an older card may name local paths).
_KEPT_SUFFIXES = (".json", ".safetensors")
_DROPPED = ("manifest.json", "train_config.json", "csp_train_config.json")


def portable_processor(file: Path) -> None:
    """Rewrite a saved processor pipeline so its tokenizer step names the packaged tiny backbone
    portably (:mod:`tmrl_vla.policy.processor_tmrl`); other pipelines are left as they are."""
    spec = json.loads(file.read_text())
    changed = False
    for step in spec.get("steps", []):
        config = step.get("config", {})
        if step.get("registry_name") == "tokenizer_processor" and is_packaged_tiny_vlm(config.get("tokenizer_name")):
            step["registry_name"], config["tokenizer_name"] = PACKAGED_TOKENIZER_STEP, PACKAGED_TINY_VLM
            changed = True
    if changed:
        file.write_text(json.dumps(spec, indent=2))


def copy_processors(source: Path, directory: Path) -> None:
    """The pre/post-processor pipelines of ``source`` (and their state files) into ``directory``."""
    for name in PROCESSOR_PREFIXES:
        for file in source.glob(f"{name}*"):
            shutil.copy2(file, directory / file.name)
        portable_processor(directory / f"{name}.json")


def embed_checkpoint(source: Path, target: Path, *, base_ref: str | None) -> None:
    """Copy a LeRobot checkpoint or CSP adapter into ``target`` with every recorded path replaced:
    the policy's own ``pretrained_path`` is cleared, the packaged backbone named portably, and an
    adapter's record of its base becomes ``base_ref`` (the base's Hub id, or None when the base
    travels beside it in the same agent)."""
    if not (target.exists() and source.resolve() == target.resolve()):  # saving an agent again in place
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for file in source.iterdir():
            if file.is_file() and file.suffix in _KEPT_SUFFIXES and file.name not in _DROPPED:
                shutil.copy2(file, target / file.name)
    config = target / "config.json"
    if config.is_file():
        values = json.loads(config.read_text())
        values["pretrained_path"] = None
        if is_packaged_tiny_vlm(values.get("vlm_model_name")):
            values["vlm_model_name"] = PACKAGED_TINY_VLM
        config.write_text(json.dumps(values, indent=4))
    for name in PROCESSOR_PREFIXES:
        if (target / f"{name}.json").is_file():
            portable_processor(target / f"{name}.json")
    if (target / CSP_CONFIG_FILE).is_file():
        meta = json.loads((target / CSP_CONFIG_FILE).read_text())
        meta["base_model"]["name_or_path"] = base_ref
        (target / CSP_CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        peft = json.loads((target / ADAPTER_CONFIG_FILE).read_text())
        peft["base_model_name_or_path"] = base_ref
        (target / ADAPTER_CONFIG_FILE).write_text(json.dumps(peft, indent=2, sort_keys=True))


def _component(name: str | None, revision: str | None, directory: Path, folder: str, what: str, *, base_ref=None):
    """(reference, revision, directory it was read from) of a component in the exported config; a
    local directory is embedded, a Hub repo is named at its revision."""
    if name is None:
        return None, None, None
    if Path(name).is_dir():
        embed_checkpoint(Path(name), directory / folder, base_ref=base_ref)
        return EMBEDDED_PREFIX + folder, None, Path(name)
    if hub_name(name) is None:
        raise FileNotFoundError(f"the {what} {name!r} is neither a local directory nor a Hub repo id")
    source = resolve_dir(name, revision=revision)
    return name, revision or snapshot_commit(source), source


def snapshot_commit(path: Path) -> str | None:
    """The commit a Hub download of a repo is at (its snapshot folder's name), so an agent names the
    exact base it was trained on even when the user gave no revision."""
    return path.name if path.parent.name == "snapshots" else None


def export_agent(
    agent,
    directory: str | Path,
    *,
    repo_id: str | None = None,
    include_critics: bool = True,
    curve: str | Path | None = None,
    commands: dict[str, str] | None = None,
    license: str | None = "apache-2.0",
) -> Path:
    """Write ``agent`` (a :class:`~tmrl_vla.rl.pretrained.TMRLAgent`) as a ``tmrl`` LeRobot policy
    directory (see the module docstring); ``curve``: its learning-curve image; ``commands``: the
    commands that reproduce and evaluate it, shown on the card (no paths of this machine)."""
    from lerobot.configs.policies import PreTrainedConfig

    if repo_id is not None:
        check_repo_id(repo_id)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    base_ref, base_revision, base_dir = _component(
        agent.base_policy, agent.base_revision, directory, BASE_FOLDER, "base policy"
    )
    adapter_ref, adapter_revision, adapter_dir = _component(
        agent.csp_adapter,
        agent.csp_revision,
        directory,
        ADAPTER_FOLDER,
        "CSP adapter",
        base_ref=None if base_ref.startswith(EMBEDDED_PREFIX) else base_ref,
    )
    base_config = PreTrainedConfig.from_pretrained(base_dir)
    kind = agent.config.kind
    config = TMRLAgentConfig(
        base_policy=base_ref,
        base_revision=base_revision,
        base_weights_hash=agent.base_weights_hash,
        csp_adapter=adapter_ref,
        csp_revision=adapter_revision,
        agent=agent.config,
        observation=agent.observation,
        sac=agent.sac,
        obs_dim=agent.widths["obs_dim"],
        action_dim=agent.widths["action_dim"],
        embed_dim=agent.widths["embed_dim"],
        input_features=base_config.input_features,
        output_features=base_config.output_features,
        device="cpu",
        repo_id=repo_id,
        license=license,
        tags=card_tags(kind),
        robot_units=agent.robot_units,
    )
    config.pretrained_path = None
    config._save_pretrained(directory)
    save_agent_weights(agent.agent, directory / WEIGHTS_FILE, include_critics=include_critics)
    copy_processors(base_dir, directory)
    if agent.robot_units:
        add_robot_units(directory, agent.robot_units)
    if curve is not None and Path(curve).is_file() and Path(curve).resolve() != (directory / CURVE_FILE).resolve():
        shutil.copy2(curve, directory / CURVE_FILE)
    training = {"results": agent.results or {}, "commands": commands or {}, "versions": library_versions()}
    (directory / TRAINING_FILE).write_text(json.dumps(training, indent=2))
    write_agent_card(directory, config, training, repo_id=repo_id, datasets=_adapter_datasets(adapter_dir))
    return directory


def card_tags(kind: str) -> list[str]:
    return ["lerobot", "tmrl", "csp", "reinforcement-learning", "robotics"] + (["dsrl"] if kind == "dsrl" else [])


def _adapter_datasets(adapter_dir: Path | None) -> list[str]:
    """The Hub datasets the CSP adapter was trained on (what the card lists under ``datasets``)."""
    if adapter_dir is None:
        return []
    meta = json.loads((adapter_dir / CSP_CONFIG_FILE).read_text())
    return [d for d in meta.get("datasets", []) if hub_name(d) and not d.startswith("local/")]


def _results_table(results: dict) -> str:
    rows = [
        ("task", results.get("env")),
        ("training episodes", results.get("episodes")),
        ("successes in training", results.get("successes")),
        ("episodes to 80% rolling success", results.get("episodes_to_80") or "not reached"),
        ("last evaluation success", _rate(results.get("final_eval_success"))),
    ]
    lines = ["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows if v is not None]
    return "\n".join(lines) if len(lines) > 2 else "No training results were recorded with this agent."


def _rate(value) -> str | None:
    return None if value is None else f"{value:.2f}"


def _reference(name: str | None, revision: str | None) -> str:
    if name is None:
        return "none (the plain base policy: DSRL)"
    if name.startswith(EMBEDDED_PREFIX):
        return f"`{name}` (in this repo)"
    at = f" at revision `{revision}`" if revision else ""
    return f"[`{name}`](https://huggingface.co/{name}){at}"


def write_agent_card(
    directory: Path, config: TMRLAgentConfig, training: dict, *, repo_id: str | None, datasets: list[str]
) -> None:
    """Fill ``hub_cards/tmrl_policy.md`` into the directory's README (text a person wrote outside our
    section is kept) and set its YAML front matter."""
    a, o = config.agent, config.observation
    commands = training.get("commands") or {}
    name = repo_id or "path/to/this/agent"
    evaluate = commands.get(
        "evaluate",
        f"lerobot-eval --policy.path={name} --env.type=so100_pick_cube --env.shift=moved_camera --eval.n_episodes=50",
    )
    section = render_card(
        "tmrl_policy.md",
        agent=a.kind.upper(),
        repo_id=name,
        base_policy=_reference(config.base_policy, config.base_revision),
        csp_adapter=_reference(config.csp_adapter, config.csp_revision),
        weights_hash=config.base_weights_hash,
        heads=", ".join(a.active_heads),
        observation=(f"`{o.encoder}` (separate frozen encoder)" if o.encoder else "the VLA's clean prefix")
        + f", image tokens pooled on a {o.image_grid} x {o.image_grid} grid per camera, and the state",
        num_critics=a.num_critics,
        hidden=a.hidden,
        utd=config.sac.utd,
        gamma=config.sac.gamma,
        n_exec=a.n_exec,
        results=_results_table(training.get("results") or {}),
        curve=f"![Learning curve]({CURVE_FILE})" if (directory / CURVE_FILE).is_file() else "",
        train_command=commands.get("train", "accelerate launch recipes/finetune_pick.py"),
        eval_command=evaluate,
        versions=", ".join(f"{k} {v}" for k, v in training["versions"].items()),
    )
    readme = directory / "README.md"
    update_card(readme, section)
    base_id = config.base_policy if not (config.base_policy or EMBEDDED_PREFIX).startswith(EMBEDDED_PREFIX) else None
    front = {
        "library_name": "lerobot",
        "pipeline_tag": "robotics",
        "tags": list(config.tags or card_tags(a.kind)),
        **({"license": config.license} if config.license else {}),
        **({"base_model": base_id} if base_id else {}),
        **({"datasets": datasets} if datasets else {}),
    }
    metadata_save(readme, (metadata_load(readme) or {}) | front)


__all__ = ["TMRLAgentPolicy", "embed_checkpoint", "export_agent", "portable_processor", "write_agent_card"]
