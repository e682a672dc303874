"""``TMRLAgentConfig``: what a fine-tuned agent is, as a LeRobot policy config (type ``tmrl``).

It names the frozen stack rather than holding it: the base VLA and its CSP adapter are each a Hub
repo id (pinned by revision), a directory, or a folder inside the agent's own repo (``./name``,
used when they were local files at export time, so the repo is complete on its own). The agent's
own networks (actor, optionally the critics) are the policy's ``model.safetensors``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lerobot.configs.policies import PreTrainedConfig
from lerobot.optim.optimizers import AdamConfig

from tmrl_vla.rl.config import AgentConfig, ObservationConfig, SACConfig

POLICY_TYPE = "tmrl"


@PreTrainedConfig.register_subclass(POLICY_TYPE)
@dataclass
class TMRLAgentConfig(PreTrainedConfig):
    # The LeRobot policy the agent steers: a Hub repo id, a directory, or "./<folder>" of this agent.
    base_policy: str | None = None
    base_revision: str | None = None  # the Hub revision of base_policy (a commit, branch or tag)
    # Hash of the base's weights the agent was trained on; loading onto other weights is refused.
    base_weights_hash: str | None = None
    # TMRL: the base's CSP adapter (same forms as base_policy). DSRL: None (the plain base).
    csp_adapter: str | None = None
    csp_revision: str | None = None  # the Hub revision of csp_adapter
    agent: AgentConfig = field(default_factory=AgentConfig)  # the agent's heads, chunking and networks
    observation: ObservationConfig = field(default_factory=ObservationConfig)  # what it observes
    sac: SACConfig = field(default_factory=SACConfig)  # how it was trained (kept to continue training)
    obs_dim: int = 0  # width of the agent's observation features
    action_dim: int = 0  # width of its z head (the base's action dimension)
    embed_dim: int = 0  # the VLA's prefix embedding width (its eps_c head)
    # Act with the actor's mean (evaluation, deployment); False samples its heads as in training.
    deterministic: bool = True
    # {"scale": [...], "offset": [...]}, one value per joint: the units of the robot the agent was
    # fine-tuned on, as the base policy's = the robot's * scale + offset. The saved processors then
    # convert the robot's state in and the actions out (processor_tmrl). None: the base's own units.
    robot_units: dict | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.agent.kind == "tmrl" and self.csp_adapter is None and self.base_policy is not None:
            raise ValueError("a TMRL agent steers a CSP policy: csp_adapter must name the base's CSP adapter")

    @property
    def n_action_steps(self) -> int:
        """Actions of each chunk executed before the next decision (LeRobot's name for it)."""
        return self.agent.n_exec

    @property
    def observation_delta_indices(self) -> None:
        return None

    @property
    def action_delta_indices(self) -> None:
        return None

    @property
    def reward_delta_indices(self) -> None:
        return None

    def get_optimizer_preset(self) -> AdamConfig:
        return AdamConfig(lr=self.sac.actor_lr)

    def get_scheduler_preset(self) -> None:
        return None

    def validate_features(self) -> None:
        """Features come from the base policy at export; the policy checks them against the base
        it loads (:class:`~tmrl_vla.policy.modeling_tmrl.TMRLAgentPolicy`)."""
