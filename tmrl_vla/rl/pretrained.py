"""``TMRLAgent``: a trained high-level agent with what it steers, saved as a LeRobot policy.

An agent is its networks (actor, critics, temperatures), its configs (agent, observation, SAC),
the feature widths, and *which* base policy and CSP adapter it steers, with the base's weights
hash. :meth:`TMRLAgent.save_pretrained` writes it as a ``tmrl`` LeRobot policy directory
(:func:`tmrl_vla.policy.export.export_agent`), which LeRobot's own tools run through the
``lerobot_policy_tmrl`` plugin; :meth:`TMRLAgent.from_pretrained` reads that format and the older
one (``high_level.safetensors`` + ``tmrl_config.json``). Run settings (envs, length, cadence) are not
part of an agent; they stay with the run's checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from tmrl_vla.hub import push_to_hub, resolve_dir
from tmrl_vla.rl.agent import SACAgent, build_agent
from tmrl_vla.rl.config import AgentConfig, ObservationConfig, SACConfig
from tmrl_vla.rl.encoder import load_observation_encoder

WEIGHTS_FILE = "high_level.safetensors"  # the older format's files
CONFIG_FILE = "tmrl_config.json"
POLICY_CONFIG_FILE, POLICY_WEIGHTS_FILE = "config.json", "model.safetensors"  # the LeRobot policy format
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
    if "tmrl" in meta:  # format 1: the run's whole flat config
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
    base_revision: str | None = None  # Hub revision of base_policy
    csp_revision: str | None = None  # Hub revision of csp_adapter
    # The robot's joint units around the base's (TMRLAgentConfig.robot_units), or None.
    robot_units: dict | None = None

    @property
    def actor(self):
        return self.agent.actor

    @classmethod
    def from_trainer(
        cls,
        trainer,
        *,
        base_policy: str | None,
        csp_adapter: str | None,
        results: dict | None = None,
        robot_units: dict | None = None,
    ) -> TMRLAgent:
        """The agent a :class:`~tmrl_vla.rl.trainer.TMRLTrainer` holds (any object with its ``agent``,
        ``config`` and ``csp``), recorded with the base policy and adapter it steers (and the robot's
        joint units, when it was trained on a robot in other units than the base's)."""
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
            base_revision=getattr(trainer.csp.base_policy.config, "pretrained_revision", None),
            robot_units=robot_units,
        )

    def save_pretrained(self, directory: str | Path, *, repo_id: str | None = None, **export) -> Path:
        """Write the agent as a ``tmrl`` LeRobot policy directory; ``export``: the keyword arguments of
        :func:`tmrl_vla.policy.export.export_agent` (critics, learning curve, commands, license)."""
        from tmrl_vla.policy.export import export_agent

        return export_agent(self, directory, repo_id=repo_id, **export)

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, *, csp=None, revision: str | None = None) -> TMRLAgent:
        """Load a saved agent (either format); with ``csp`` (the frozen policy it will steer), check
        it is the same base. Only the agent is loaded here, not the stack it steers
        (:class:`tmrl_vla.policy.modeling_tmrl.TMRLAgentPolicy` loads both)."""
        path = resolve_dir(path_or_repo_id, revision=revision)
        if (path / POLICY_CONFIG_FILE).is_file():
            loaded = cls._from_policy_dir(path, path_or_repo_id)
        elif (path / CONFIG_FILE).is_file():
            loaded = cls._from_old_dir(path)
        else:
            raise FileNotFoundError(f"{path} is not a TMRL agent: it has no {POLICY_CONFIG_FILE} nor {CONFIG_FILE}")
        if csp is not None:
            loaded.check_base(csp, source=path_or_repo_id)
        return loaded

    @classmethod
    def _from_policy_dir(cls, path: Path, name: object) -> TMRLAgent:
        from tmrl_vla.policy.modeling_tmrl import EMBEDDED_PREFIX, check_is_agent, load_agent_weights

        check_is_agent(path, name)
        meta = json.loads((path / POLICY_CONFIG_FILE).read_text())
        config, observation, sac = read_configs(meta)
        widths = {k: meta[k] for k in ("obs_dim", "action_dim", "embed_dim")}
        agent = build_agent(config, sac, **widths)
        load_agent_weights(agent, path / POLICY_WEIGHTS_FILE)

        def here(ref: str | None) -> str | None:  # a component inside the agent: its path here
            return str(path / ref.removeprefix(EMBEDDED_PREFIX)) if ref and ref.startswith(EMBEDDED_PREFIX) else ref

        results = None
        if (path / "training.json").is_file():
            results = json.loads((path / "training.json").read_text()).get("results")
        return cls(
            agent=agent,
            config=config,
            observation=observation,
            sac=sac,
            widths=widths,
            base_policy=here(meta["base_policy"]),
            base_weights_hash=meta["base_weights_hash"],
            csp_adapter=here(meta["csp_adapter"]),
            results=results,
            base_revision=meta.get("base_revision"),
            csp_revision=meta.get("csp_revision"),
            robot_units=meta.get("robot_units"),
        )

    @classmethod
    def _from_old_dir(cls, path: Path) -> TMRLAgent:
        meta = json.loads((path / CONFIG_FILE).read_text())
        config, observation, sac = read_configs(meta)
        agent = build_agent(config, sac, **meta["widths"])
        agent.load_state_dict(load_file(path / WEIGHTS_FILE))
        return cls(
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

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, message: str | None = None, **export) -> str:
        """Upload the agent's policy directory (with its card) to the Hub as one commit."""
        return push_to_hub(
            lambda folder: self.save_pretrained(folder, repo_id=repo_id, **export),
            repo_id,
            private=private,
            message=message or f"Upload {self.config.kind.upper()} agent",
        )
