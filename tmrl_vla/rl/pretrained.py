"""``TMRLAgent``: a trained high-level policy as a Hub-ready directory.

A directory holds ``high_level.safetensors`` (actor, critics, temperatures), ``tmrl_config.json``
(the TMRL config, feature widths, and *which* base policy and CSP adapter it steers, with the base's
weights hash) and a model card. The CSP adapter and base policy stay where they are (their own
directories or Hub repos): the agent records them rather than copying them, and refuses to attach
to a different base.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tmrl_vla.hub import library_versions, resolve_dir
from tmrl_vla.rl.agent import SACAgent, SACConfig
from tmrl_vla.rl.trainer import TMRLConfig, build_agent

WEIGHTS_FILE = "high_level.safetensors"
CONFIG_FILE = "tmrl_config.json"


def _config_from_dict(d: dict) -> TMRLConfig:
    d = dict(d)
    d["sac"] = SACConfig(**d["sac"])
    if d.get("tmrl_heads") is not None:
        d["tmrl_heads"] = tuple(d["tmrl_heads"])
    return TMRLConfig(**d)


@dataclass
class TMRLAgent:
    agent: SACAgent
    config: TMRLConfig
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
        a = trainer.agent.actor.config
        return cls(
            agent=trainer.agent,
            config=trainer.config,
            widths={"obs_dim": a.obs_dim, "action_dim": a.action_dim, "embed_dim": a.embed_dim},
            base_policy=base_policy,
            base_weights_hash=trainer.collector.csp.base_hash,
            csp_adapter=csp_adapter if trainer.config.agent == "tmrl" else None,
            results=results,
        )

    def save_pretrained(self, directory: str | Path, *, repo_id: str | None = None) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.agent.state_dict().items()}
        save_file(state, directory / WEIGHTS_FILE)
        meta = {
            "format_version": 1,
            "tmrl": asdict(self.config),
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
        from safetensors.torch import load_file

        path = resolve_dir(path_or_repo_id)
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a TMRL agent: {CONFIG_FILE} is missing")
        meta = json.loads((path / CONFIG_FILE).read_text())
        config = _config_from_dict(meta["tmrl"])
        recorded = meta["base_policy"]["weights_hash"]
        agent = build_agent(config, **meta["widths"])
        agent.load_state_dict(load_file(path / WEIGHTS_FILE))
        loaded = cls(
            agent=agent,
            config=config,
            widths=meta["widths"],
            base_policy=meta["base_policy"]["name_or_path"],
            base_weights_hash=recorded,
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
        """The separate frozen encoder this agent observes through (``config.obs_encoder``), or None
        when it observes the VLA's pooled prefix; pass it to ``DecisionCollector(encoder=...)``."""
        from tmrl_vla.rl.encoder import load_observation_encoder

        return load_observation_encoder(self.config.obs_encoder, device)

    @torch.no_grad()
    def act(self, features: torch.Tensor, *, deterministic: bool = True) -> dict[str, torch.Tensor]:
        """Head actions in [-1, 1] for (b, obs_dim) features (see :func:`tmrl_vla.rl.decision.decide`)."""
        actions, _ = self.actor.sample(features, deterministic=deterministic)
        return actions

    def push_to_hub(self, repo_id: str, *, private: bool | None = None) -> str:
        from tmrl_vla.hub import push_to_hub

        return push_to_hub(
            lambda folder: self.save_pretrained(folder, repo_id=repo_id),
            repo_id,
            private=private,
            message=f"Upload {self.config.agent.upper()} high-level policy",
        )

    def _write_card(self, directory: Path, meta: dict, *, repo_id: str | None) -> None:
        from tmrl_vla.hub import render_card, update_card

        c = self.config
        section = render_card(
            "tmrl_policy.md",
            agent=c.agent.upper(),
            repo_id=repo_id or str(directory),
            base_policy=meta["base_policy"]["name_or_path"],
            weights_hash=meta["base_policy"]["weights_hash"],
            csp_adapter=meta["csp_adapter"] or "none (plain BC policy)",
            heads=", ".join(c.heads),
            image_grid=c.image_grid,
            observation=(f"`{c.obs_encoder}` (separate frozen encoder)" if c.obs_encoder else "the VLA's clean prefix")
            + f", image tokens pooled on a {c.image_grid} x {c.image_grid} grid per camera, and the state",
            num_critics=c.num_critics,
            hidden=c.hidden,
            utd=c.sac.utd,
            gamma=c.sac.gamma,
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
