"""``TMRLAgent``: a trained high-level policy as a Hub-ready directory.

A directory holds ``high_level.safetensors`` (actor, critics, temperatures), ``tmrl_config.json``
(the agent's, observation's and SAC configs, the feature widths, and *which* base policy and CSP
adapter it steers, with the base's weights hash) and a model card. The CSP adapter and base policy
stay where they are (their own directories or Hub repos): the agent records them rather than
copying them, and refuses to attach to a different base. Run settings (envs, length, cadence) are
not part of an agent; they stay with the run's checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tmrl_vla.hub import library_versions, push_to_hub, render_card, resolve_dir, update_card
from tmrl_vla.rl.agent import SACAgent, build_agent
from tmrl_vla.rl.config import AgentConfig, ObservationConfig, SACConfig
from tmrl_vla.rl.encoder import load_observation_encoder

WEIGHTS_FILE = "high_level.safetensors"
CONFIG_FILE = "tmrl_config.json"
FORMAT_VERSION = 2
# Format 1 saved the run's whole flat config; these of its fields moved (name in format 1 -> section, name).
_FORMAT_1_FIELDS = {
    "agent": ("agent", "kind"),
    "tmrl_heads": ("agent", "heads"),
    "image_grid": ("observation", "image_grid"),
    "obs_encoder": ("observation", "encoder"),
    "normalize_obs": ("observation", "normalize"),
    **{k: ("agent", k) for k in ("n_exec", "z_scale", "hidden", "num_critics", "init_temperature", "target_entropy")},
    **{
        k: ("sac", k)
        for k in (
            "n_step",
            "updates_per_decision",
            "exploration",
            "warmup_decisions",
            "replay_capacity",
            "success_buffer",
        )
    },
}


def _from_dict(cls, values: dict):
    """A config dataclass from saved values; keys of newer versions are ignored, lists become tuples."""
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})


def read_configs(meta: dict) -> tuple[AgentConfig, ObservationConfig, SACConfig]:
    """The three configs of a saved agent, from either format."""
    if meta.get("format_version", 1) == 1:
        flat = meta["tmrl"]
        sections: dict[str, dict] = {"agent": {}, "observation": {}, "sac": dict(flat.get("sac", {}))}
        for old, (section, new) in _FORMAT_1_FIELDS.items():
            if old in flat:
                sections[section][new] = flat[old]
    else:
        sections = {name: meta[name] for name in ("agent", "observation", "sac")}
    return (
        _from_dict(AgentConfig, sections["agent"]),
        _from_dict(ObservationConfig, sections["observation"]),
        _from_dict(SACConfig, sections["sac"]),
    )


@dataclass
class TMRLAgent:
    agent: SACAgent
    config: AgentConfig
    observation: ObservationConfig
    sac: SACConfig
    widths: dict  # obs_dim, action_dim, embed_dim
    base_policy: str | None = None  # path or repo id of the LeRobot policy it steers
    base_weights_hash: str | None = None
    csp_adapter: str | None = None  # path or repo id (None for DSRL)
    results: dict | None = None  # what training measured (episodes, successes, last evaluation), for the card

    @property
    def actor(self):
        return self.agent.actor

    @classmethod
    def from_trainer(
        cls, trainer, *, base_policy: str | None, csp_adapter: str | None, results: dict | None = None
    ) -> TMRLAgent:
        """The agent a :class:`~tmrl_vla.rl.trainer.TMRLTrainer` holds (any object with its ``agent``,
        ``config`` and ``csp``), recorded with the base policy and adapter it steers."""
        cfg, a = trainer.config, trainer.agent.actor.config
        return cls(
            agent=trainer.agent,
            config=cfg.agent,
            observation=cfg.observation,
            sac=cfg.sac,
            widths={"obs_dim": a.obs_dim, "action_dim": a.action_dim, "embed_dim": a.embed_dim},
            base_policy=base_policy,
            base_weights_hash=trainer.csp.base_hash,
            csp_adapter=csp_adapter if cfg.agent.kind == "tmrl" else None,
            results=results,
        )

    def save_pretrained(self, directory: str | Path, *, repo_id: str | None = None) -> Path:

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.agent.state_dict().items()}
        save_file(state, directory / WEIGHTS_FILE)
        meta = {
            "format_version": FORMAT_VERSION,
            "agent": asdict(self.config),
            "observation": asdict(self.observation),
            "sac": asdict(self.sac),
            "widths": self.widths,
            "base_policy": {"name_or_path": self.base_policy, "weights_hash": self.base_weights_hash},
            "csp_adapter": self.csp_adapter,
            "results": self.results,
            "versions": library_versions(),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        self._write_card(directory, meta, repo_id=repo_id)
        return directory

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, *, csp=None) -> TMRLAgent:
        """Load a saved agent; with ``csp`` (the frozen policy it will steer), check it is the same base."""
        path = resolve_dir(path_or_repo_id)
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a TMRL agent: {CONFIG_FILE} is missing")
        meta = json.loads((path / CONFIG_FILE).read_text())
        config, observation, sac = read_configs(meta)
        agent = build_agent(config, sac, **meta["widths"])
        agent.load_state_dict(load_file(path / WEIGHTS_FILE))
        loaded = cls(
            agent=agent,
            config=config,
            observation=observation,
            sac=sac,
            widths=meta["widths"],
            base_policy=meta["base_policy"]["name_or_path"],
            base_weights_hash=meta["base_policy"]["weights_hash"],
            csp_adapter=meta["csp_adapter"],
            results=meta.get("results"),
        )
        if csp is not None:
            loaded.check_base(csp, source=path_or_repo_id)
        return loaded

    def check_base(self, csp, *, source: object = "this agent") -> None:
        """Raise unless ``csp`` wraps the base policy this agent was trained on (by weights hash)."""
        if self.base_weights_hash is not None and csp.base_hash != self.base_weights_hash:
            raise ValueError(
                f"The agent in {source} was trained on base policy {self.base_policy!r} "
                f"(weights {self.base_weights_hash}) but is being attached to weights {csp.base_hash}"
            )

    def observation_encoder(self, device: torch.device | str = "cpu"):
        """The separate frozen encoder this agent observes through (``observation.encoder``), or None
        when it observes the VLA's pooled prefix."""
        return load_observation_encoder(self.observation.encoder, device)

    @torch.no_grad()
    def act(self, features: torch.Tensor, *, deterministic: bool = True) -> dict[str, torch.Tensor]:
        """Head actions in [-1, 1] for (b, obs_dim) features (see :func:`tmrl_vla.rl.observation.encode`)."""
        actions, _ = self.actor.sample(features, deterministic=deterministic)
        return actions

    def push_to_hub(self, repo_id: str, *, private: bool | None = None) -> str:
        return push_to_hub(
            lambda folder: self.save_pretrained(folder, repo_id=repo_id),
            repo_id,
            private=private,
            message=f"Upload {self.config.kind.upper()} high-level policy",
        )

    def _write_card(self, directory: Path, meta: dict, *, repo_id: str | None) -> None:
        c, o = self.config, self.observation
        section = render_card(
            "tmrl_policy.md",
            agent=c.kind.upper(),
            repo_id=repo_id or str(directory),
            base_policy=meta["base_policy"]["name_or_path"],
            weights_hash=meta["base_policy"]["weights_hash"],
            csp_adapter=meta["csp_adapter"] or "none (plain BC policy)",
            heads=", ".join(c.active_heads),
            image_grid=o.image_grid,
            observation=(f"`{o.encoder}` (separate frozen encoder)" if o.encoder else "the VLA's clean prefix")
            + f", image tokens pooled on a {o.image_grid} x {o.image_grid} grid per camera, and the state",
            num_critics=c.num_critics,
            hidden=c.hidden,
            utd=self.sac.utd,
            gamma=self.sac.gamma,
            n_exec=c.n_exec,
            results=_describe_results(meta.get("results")),
            versions=", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        )
        update_card(directory / "README.md", section)


def _describe_results(results: dict | None) -> str:
    if not results:
        return "not recorded"
    parts = []
    if "episodes" in results:
        parts.append(f"{results['episodes']} training episodes, {results.get('successes', '?')} successes")
    if results.get("final_eval_success") is not None:
        parts.append(f"last evaluation success {results['final_eval_success']:.2f}")
    if results.get("env"):
        parts.append(f"env {results['env']}")
    return "; ".join(parts) or "not recorded"
