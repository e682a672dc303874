"""``TMRLAgentPolicy``: a fine-tuned agent as a LeRobot policy (``--policy.path=<agent>``).

``from_pretrained`` rebuilds the whole runnable stack from the agent's config: the base VLA, its
CSP adapter merged into it (TMRL; DSRL steers the plain base), the agent's actor (and critics when
saved, to continue training) and a separate observation encoder if the agent uses one. Then
``select_action`` behaves as LeRobot's chunking policies do: when the action queue is empty, one
decision (:func:`tmrl_vla.rl.decision.decide`: encode the clean prefix once, choose z and sigma,
sample a chunk) refills it with the chunk's first ``n_action_steps`` actions. These are exactly the
actions the project's own collector executes, so ``lerobot-eval`` measures what training measured.

Only the agent's networks are the policy's weights (``model.safetensors``); the frozen stack is
loaded from where the config names it, never copied into that file.
"""

from __future__ import annotations

import builtins
import json
from collections import deque
from pathlib import Path

import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.pretrained import PreTrainedPolicy
from safetensors.torch import load_file, save_file

from tmrl_vla.csp.policy import CSPPolicy
from tmrl_vla.hub import resolve_dir
from tmrl_vla.policies import CheckpointError, load_lerobot_policy
from tmrl_vla.policy.configuration_tmrl import POLICY_TYPE, TMRLAgentConfig
from tmrl_vla.rl.agent import SACAgent, build_agent
from tmrl_vla.rl.decision import decide
from tmrl_vla.rl.encoder import load_observation_encoder

WEIGHTS_FILE = "model.safetensors"  # LeRobot's name for a policy's weights
EMBEDDED_PREFIX = "./"  # a component stored inside the agent's own directory or repo


class NotAnAgentError(CheckpointError):
    """A directory or repo that holds something other than a ``tmrl`` agent (e.g. a plain policy)."""


def resolve_component(name: str, revision: str | None, source: Path | None, what: str) -> Path:
    """The directory of a component the config names: ``./<folder>`` inside the agent (``source``),
    a local directory, or a Hub repo id at ``revision`` (from the local cache when offline)."""
    if name.startswith(EMBEDDED_PREFIX):
        folder = name.removeprefix(EMBEDDED_PREFIX)
        if source is None or "/" in folder or folder in ("", ".", ".."):
            raise CheckpointError(
                f"the agent's {what} {name!r} is a folder of the agent's own directory; load the agent with "
                "TMRLAgentPolicy.from_pretrained(<agent directory or repo id>)"
            )
        path = source / folder
        if not path.is_dir():
            raise CheckpointError(f"the agent in {source} names its {what} {name!r}, but {path} is missing")
        return path
    return resolve_dir(name, revision=revision)


def load_base(config: TMRLAgentConfig, source: Path | None, device: str = "cpu"):
    """(policy, preprocessor, postprocessor) of the base VLA the agent steers."""
    if not config.base_policy:
        raise CheckpointError("this tmrl config names no base policy (base_policy is empty)")
    path = resolve_component(config.base_policy, config.base_revision, source, "base policy")
    base, pre, post = load_lerobot_policy(path, device=device)  # refuses an agent given as the base
    base.config.pretrained_path, base.config.pretrained_revision = config.base_policy, config.base_revision
    return base, pre, post


def load_frozen_stack(config: TMRLAgentConfig, source: Path | None, device: str = "cpu") -> CSPPolicy:
    """The frozen policy the agent steers: the base with its CSP adapter merged (TMRL), or the base
    wrapped without one (DSRL, where sigma is 0 and the wrapper returns the base's output)."""
    base, _, _ = load_base(config, source, device)
    if config.agent.kind == "tmrl":
        adapter = resolve_component(config.csp_adapter, config.csp_revision, source, "CSP adapter")
        csp = CSPPolicy.from_pretrained(adapter, base=base)
    else:
        csp = CSPPolicy.from_base(base)
    return csp.merge_adapter().eval().requires_grad_(False)


def _policy_type(path: Path) -> str | None:
    config = path / "config.json"
    return json.loads(config.read_text()).get("type") if config.is_file() else None


def check_is_agent(path: Path, name: object) -> None:
    """Raise :class:`NotAnAgentError` unless ``path`` holds a ``tmrl`` agent, saying what it holds."""
    kind = _policy_type(path)
    if kind == POLICY_TYPE:
        return
    if kind is not None:
        raise NotAnAgentError(
            f"{name} holds a LeRobot {kind!r} policy, not a tmrl agent. Load it as a policy (--policy.path, "
            f"or as the base of an agent: --policy.path={name} in recipes/finetune_pick.py)"
        )
    if (path / "tmrl_config.json").is_file():
        raise NotAnAgentError(
            f"{name} holds an agent in the older high-level-only format; convert it with "
            "TMRLAgent.from_pretrained(old).save_pretrained(new) (tmrl_vla.rl.pretrained)"
        )
    raise NotAnAgentError(f"{name} is not a LeRobot policy directory: config.json is missing")


def load_agent_weights(agent: SACAgent, file: Path) -> bool:
    """Load ``agent``'s actor, and its critics when the file holds them, from a safetensors file;
    returns whether it did hold them (an agent saved for deployment carries the actor only)."""
    state = load_file(file)
    actor_keys = {k for k in agent.state_dict() if k.startswith("actor.")}
    missing = sorted(actor_keys - set(state))
    if missing:
        raise CheckpointError(f"{file} lacks the actor's weights {missing[:4]}... : not this agent's file")
    has_critics = any(k.startswith("critics.") for k in state)
    result = agent.load_state_dict(state, strict=has_critics)
    if result.unexpected_keys:
        raise CheckpointError(f"{file} holds weights this agent does not have: {result.unexpected_keys[:4]}")
    return has_critics


def save_agent_weights(agent: SACAgent, file: Path, *, include_critics: bool) -> None:
    """``agent``'s weights to a safetensors file: all of them, or the actor's only."""
    state = agent.state_dict()
    if not include_critics:
        state = {k: v for k, v in state.items() if k.startswith("actor.")}
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(file))


class TMRLAgentPolicy(PreTrainedPolicy):
    config_class = TMRLAgentConfig
    name = POLICY_TYPE

    def __init__(
        self, config: TMRLAgentConfig, *, source: Path | None = None, csp: CSPPolicy | None = None, **_
    ) -> None:
        """``source``: the agent's directory (where ``./<folder>`` components live); ``csp``: an
        already-built frozen stack to steer (checked by weights hash) instead of loading one."""
        super().__init__(config)
        device = config.device or "cpu"
        self.csp = csp if csp is not None else load_frozen_stack(config, source, device)
        if config.base_weights_hash is not None and self.csp.base_hash != config.base_weights_hash:
            raise CheckpointError(
                f"the agent was trained on base {config.base_policy!r} with weights {config.base_weights_hash}, but "
                f"the policy it would steer has weights {self.csp.base_hash}: pin the revision it was trained on "
                "(base_revision)"
            )
        self._check_features()
        self.agent: SACAgent = build_agent(
            config.agent, config.sac, obs_dim=config.obs_dim, action_dim=config.action_dim, embed_dim=config.embed_dim
        )
        self.encoder = load_observation_encoder(config.observation.encoder, device)
        self.has_critics = False  # set when the saved weights include them
        self.generator: torch.Generator | None = None  # None: torch's global generator, as LeRobot policies use
        self.reset()

    def _check_features(self) -> None:
        """The config's features (what LeRobot's tools feed and expect) must be the base's."""
        base = self.csp.base_policy.config
        for kind, ours, theirs in (
            ("input", self.config.input_features, base.input_features),
            ("output", self.config.output_features, base.output_features),
        ):
            if not ours:
                continue
            for key, feature in ours.items():
                other = (theirs or {}).get(key)
                if other is None or tuple(other.shape) != tuple(feature.shape):
                    have = {k: tuple(f.shape) for k, f in (theirs or {}).items()}
                    raise CheckpointError(
                        f"{kind} feature {key!r} {tuple(feature.shape)} does not match the base policy's "
                        f"{have}: the env or dataset does not fit the policy this agent steers"
                    )

    @property
    def actor(self):
        return self.agent.actor

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls: builtins.type[TMRLAgentPolicy],
        pretrained_name_or_path: str | Path,
        *,
        config: PreTrainedConfig | None = None,
        revision: str | None = None,
        csp: CSPPolicy | None = None,
        **kwargs,
    ) -> TMRLAgentPolicy:
        """A saved agent (directory or Hub repo id) with the frozen stack it names, ready to act."""
        path = resolve_dir(pretrained_name_or_path, revision=revision)
        check_is_agent(path, pretrained_name_or_path)
        if config is None:
            config = PreTrainedConfig.from_pretrained(path)
        if not isinstance(config, TMRLAgentConfig):
            raise NotAnAgentError(f"{pretrained_name_or_path} holds a {config.type!r} config, not a tmrl agent")
        policy = cls(config, source=path, csp=csp)
        policy.load_agent_weights(path / WEIGHTS_FILE)
        policy.to(config.device or "cpu")
        return policy.eval()

    def load_agent_weights(self, file: Path) -> None:
        """The actor (and the critics, when saved) from a safetensors file; no other format is read."""
        self.has_critics = load_agent_weights(self.agent, file)

    def _save_pretrained(self, save_directory: Path, state_dict=None) -> None:
        """The config and the agent's weights only (the frozen stack is named, not copied);
        :func:`tmrl_vla.policy.export.export_agent` writes the rest of an agent directory."""
        self.config._save_pretrained(save_directory)
        if state_dict is not None:
            save_file({k: v.detach().contiguous() for k, v in state_dict.items()}, str(save_directory / WEIGHTS_FILE))
        else:
            save_agent_weights(self.agent, save_directory / WEIGHTS_FILE, include_critics=self.has_critics)

    # ------------------------------------------------------------------------------- acting
    def reset(self) -> None:
        """Empty the action queue (LeRobot calls this at every episode start)."""
        self._queue: deque[torch.Tensor] = deque(maxlen=self.config.n_action_steps)

    @torch.no_grad()
    def decide(self, batch: dict[str, torch.Tensor], *, generator: torch.Generator | None = None):
        """One decision on a preprocessed batch: the :class:`~tmrl_vla.rl.decision.Decision`."""
        c = self.config
        return decide(
            self.csp,
            self.actor,
            batch,
            z_scale=c.agent.z_scale,
            deterministic=c.deterministic,
            generator=generator if generator is not None else self.generator,
            image_grid=c.observation.image_grid,
            encoder=self.encoder,
        )

    def check_batch(self, batch: dict[str, torch.Tensor]) -> None:
        """Raise unless the batch carries the base's cameras at its resolution: LeRobot checks camera
        names only, and a VLA resizes any image it is given, so a wrong resolution would run silently."""
        for key, feature in self.config.image_features.items():
            if key not in batch:
                raise CheckpointError(f"the policy reads camera {key!r}; the observation has {sorted(batch)}")
            have, need = tuple(batch[key].shape[-2:]), tuple(feature.shape[-2:])
            if have != need:
                raise CheckpointError(
                    f"camera {key!r} gives {have[0]} x {have[1]} images, but the policy was trained on "
                    f"{need[0]} x {need[1]}: set the env's or camera's resolution to match"
                )

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
        """The chunk (b, chunk_size, action_dim), normalised as the base's own output is."""
        self.check_batch(batch)
        return self.decide(batch, generator=kwargs.get("generator")).chunk

    @torch.no_grad()
    def select_action(self, batch: dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
        """The next action (b, action_dim); a decision refills the queue when it is empty."""
        if not self._queue:
            chunk = self.predict_action_chunk(batch, **kwargs)
            self._queue.extend(chunk[:, : self.config.n_action_steps].transpose(0, 1))
        return self._queue.popleft()

    # ------------------------------------------------------------------------------ training
    def forward(self, batch, **kwargs):
        raise NotImplementedError(
            "a tmrl agent learns from its own rollouts, not from a dataset: continue training it with "
            "recipes/finetune_pick.py (tmrl_vla.rl.run.run_rl), not lerobot-train"
        )

    def get_optim_params(self) -> dict:
        return {"params": self.actor.actor_parameters()}


__all__ = ["NotAnAgentError", "TMRLAgentPolicy", "load_base", "load_frozen_stack"]
