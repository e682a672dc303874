"""Configuration of TMRL and DSRL, one dataclass per concern.

* :class:`AgentConfig`: the high-level agent itself (which heads it steers, how its chunks run, its
  networks). Saved with every trained agent.
* :class:`ObservationConfig`: what the agent and its critics observe. Saved with every agent.
* :class:`SACConfig`: how the agent learns (TD targets, update counts, exploration, replay).
  Saved with every agent, so training can continue and analyses can sample it as it was trained.
* :class:`DemoReplayConfig`: demonstrations put into the replay (:mod:`tmrl_vla.rl.demos`), if any.
* :class:`TMRLConfig`: one run: the four above plus the run's own settings (envs, length,
  cadence, seed). Saved beside every checkpoint; a run resumes only under the same settings.

On the command line (``recipes/finetune_pick.py``) they are ``--rl.agent.*``, ``--rl.observation.*``,
``--rl.sac.*``, ``--rl.demos.*`` and ``--rl.*``. Every field is listed in ``docs/configuration.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

HEADS = ("z", "y", "eps_c")


@dataclass(frozen=True)
class AgentConfig:
    # "tmrl": steer the frozen CSP policy's initial noise z and sigma (and optionally eps_c);
    # "dsrl": the baseline, z only, on the plain BC policy (Wagenmaker et al. 2025).
    kind: Literal["tmrl", "dsrl"] = "tmrl"
    # Heads a TMRL agent learns; None = all three (z, y, eps_c). Without "eps_c" the CSP policy draws
    # its context noise i.i.d. per token, as in CSP training. DSRL always has only "z".
    heads: tuple[str, ...] | None = None
    # Actions of each sampled chunk executed before the next decision (the paper's 5).
    n_exec: int = 5
    # z in [-1, 1] is multiplied by this before it becomes the flow's initial noise.
    z_scale: float = 1.0
    # Width of every hidden layer of the actor and of each critic.
    hidden: int = 256
    # Critics in the ensemble (the paper: 5, 10 for LIBERO).
    num_critics: int = 5
    # SAC temperature at the start, per head. Rewards are 0/1 per episode, so Q lies in [0, 1]: an
    # entropy bonus weighted 1.0 swamps it and the actor only spreads out (measured: no learning in
    # 150 decisions); a small start lets the critic matter from the first updates.
    init_temperature: float = 0.05
    # Target entropy per head (e.g. {"eps_c": -10}); heads not named use -dim(head), or, with the KL
    # anchor on (sac.anchor_weight > 0), the entropy of their start.
    target_entropy: dict[str, float] = field(default_factory=dict)
    # Where the actor's sigma starts: the y head's initial mean, in (0, 1); DSRL, which has no y
    # head, ignores it (as it ignores `heads`). None: near sigma_centre, by the random init. A low
    # start keeps the first episodes near the base policy (sigma 0 is the policy itself), which
    # matters when the base already half-solves the task.
    init_sigma: float | None = None
    # Standard deviation (before the tanh) that every head starts with. None: what the layers'
    # random init gives (about 0.22). 1.0 spreads z like the flow's own N(0, 1) noise, clipped by tanh.
    init_std: float | None = None
    # The sigma that the y head's centre (y = 0) maps to, in (0, 1): sigma = ((y + 1) / 2) ** k with
    # k = log(sigma_centre) / log(1/2); 0.5 is the paper's linear map. The entropy bonus pulls an
    # actor its critics do not yet inform towards y = 0, so this is where sigma rests until the
    # critics say otherwise; a low value keeps it near the base (sigma 0), with every sigma still
    # reachable. The random init and the uniform warm-up start there too (half the warm-up's draws
    # fall below it). DSRL ignores it.
    sigma_centre: float = 0.5

    @property
    def active_heads(self) -> tuple[str, ...]:
        """The heads this agent actually has."""
        if self.kind == "dsrl":
            return ("z",)
        return tuple(self.heads) if self.heads else HEADS

    def __post_init__(self) -> None:
        if self.kind not in ("tmrl", "dsrl"):
            raise ValueError(f"agent kind must be 'tmrl' or 'dsrl', got {self.kind!r}")
        unknown = set(self.heads or ()) - set(HEADS)
        if unknown:
            raise ValueError(
                f"heads names unknown heads {sorted(unknown)} in {self.heads}; the heads are z, y and eps_c "
                "(on the command line: --rl.agent.heads=[z,y])"
            )
        if self.kind == "tmrl" and self.heads is not None and ("z" not in self.heads or "y" not in self.heads):
            raise ValueError(f"TMRL needs the 'z' and 'y' heads (eps_c is optional), got {self.heads}")
        if self.n_exec < 1 or self.hidden < 1 or self.num_critics < 1:
            raise ValueError("n_exec, hidden and num_critics must be >= 1")
        if self.init_temperature <= 0:
            raise ValueError(f"init_temperature must be > 0, got {self.init_temperature}")
        if self.init_sigma is not None and not 0 < self.init_sigma < 1:
            raise ValueError(f"init_sigma must lie strictly between 0 and 1, got {self.init_sigma}")
        if not 0 < self.sigma_centre < 1:
            raise ValueError(f"sigma_centre must lie strictly between 0 and 1, got {self.sigma_centre}")
        if self.init_std is not None and self.init_std <= 0:
            raise ValueError(f"init_std must be > 0, got {self.init_std}")


@dataclass(frozen=True)
class ObservationConfig:
    # Image tokens in the observation: 1 = their mean; g = averaged on a g x g grid per camera
    # (keeps coarse position, which the mean loses).
    image_grid: int = 1
    # A separate frozen vision model (path or Hub repo id of a ViT-style transformers model with an
    # image processor, e.g. facebook/dinov2-with-registers-small, as in the reference code): its patch
    # tokens pooled on the same grid replace the VLA's pooled prefix. None: the VLA's own prefix.
    encoder: str | None = None
    # Normalise the observation with statistics frozen at the end of the warm-up (rl.normalize).
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.image_grid < 1:
            raise ValueError(f"image_grid must be >= 1, got {self.image_grid}")


@dataclass(frozen=True)
class SACConfig:
    gamma: float = 0.99  # discount per decision (one action chunk)
    tau: float = 0.005  # Polyak step of the target critics after each critic update
    actor_lr: float = 3e-4  # Adam learning rate of the actor
    critic_lr: float = 3e-4  # Adam learning rate of the critics
    temperature_lr: float = 3e-4  # Adam learning rate of every head's log temperature
    batch_size: int = 256  # transitions per update
    utd: int = 20  # critic updates per actor update (the paper's 20 for VLAs)
    # Actor updates (each after `utd` critic updates) per collected decision batch.
    updates_per_decision: int = 1
    # Decisions before any update, with heads drawn as `warmup_heads` says.
    warmup_decisions: int = 25
    # Critic-only updates on the warm-up's transitions just before the first actor update (0: none).
    # Without them the actor's first steps follow critics that have seen almost nothing, and the
    # entropy term alone moves it (eval/results/agent_start.md); with them its first step already
    # follows values fitted to every warm-up transition.
    critic_pretrain_updates: int = 0
    # "uniform": every head uniform in [-1, 1] (sigma uniform in [0, 1] unless agent.sigma_centre
    # bends the map), the paper's warm-up;
    # "prior": from the actor's start (agent.init_sigma, agent.init_std), whatever the state, so the
    # warm-up episodes look like the ones the actor will then play, near the base with a low sigma.
    warmup_heads: Literal["uniform", "prior"] = "uniform"
    # Decisions per TD target (tmrl_vla.rl.nstep): 1 is one-step SAC.
    n_step: int = 1
    # "decision": fresh exploration noise for every head at every decision (SAC as usual);
    # "episode": each env holds its heads' noise (and its warm-up draws) for a whole episode.
    exploration: Literal["decision", "episode"] = "decision"
    replay_capacity: int = 100_000  # transitions per process
    # Keep successful episodes' transitions in a second buffer and sample batches 50/50 from both.
    success_buffer: bool = False
    # Whether -alpha log pi(a'|s') enters the TD target. The reference TMRL code computes it and
    # drops it, and so do we: with all three heads the eps_c head alone has ~65 nats of entropy, so
    # at alpha ~0.04 the bonus is worth ~2.7 per decision against rewards of at most 1 per episode.
    # Measured (the recipe's earlier preset, all three heads, seed 0, 300 decisions): with it, Q
    # read 10.7, 25.4, 39.2, 51.8, 63.4 at decisions 51-251 and 72.9 at 300; without, 0.02.
    # Successes 22/128 vs 20/124 episodes.
    entropy_backup: bool = False
    # The TD target takes the min over this many target critics drawn at random per update (REDQ,
    # Chen et al. 2021); None takes the min over all N. With 0/1 rewards the min over all five
    # drifted every Q below zero (-0.75 after 150 decisions on the pick task, rewards never negative).
    target_subset: int | None = 2
    # Rewards are multiplied by this before they enter the TD target, so the critics' values (and
    # critic/q_mean) are in scaled units. The temperatures and the anchor are weighed against those
    # values: init_temperature fits returns of about [0, 1] (the pick task's one reward of 1). A
    # robot's -1 per tick over a 100-tick episode gives values near -100, against which a temperature
    # of 0.05 is nothing (measured on the simulated SO-101: the z and y heads' entropies at -9.5 and
    # -13 nats by decision 161); 0.01 (about 1 / the episode's ticks) brings them back to [-1, 0].
    reward_scale: float = 1.0
    # Weight of a self-imitation term in the actor loss: the negative log-likelihood of the actions
    # of the agent's own successful episodes (kept by the trainer; 0 turns it off).
    imitation_weight: float = 0.0
    # Weight of a KL term in the actor loss: from the actor's distribution at each state to its
    # configured start (z around 0 with spread agent.init_std, sigma at agent.init_sigma), summed
    # over heads; 0 turns it off. It holds the actor near a base that already half-solves the task
    # until the critics pay for leaving it (tmrl_vla.rl.sac.anchor_loss). With it on, the heads'
    # temperatures aim at their start's entropy (agent.target_entropy), not at one it cannot reach.
    anchor_weight: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1:
            raise ValueError("gamma and tau must lie in (0, 1]")
        if self.target_subset is not None and self.target_subset < 1:
            raise ValueError("target_subset must be >= 1 or None")
        if min(self.utd, self.batch_size, self.n_step, self.replay_capacity) < 1:
            raise ValueError("utd, batch_size, n_step and replay_capacity must be >= 1")
        for name in ("warmup_decisions", "updates_per_decision", "critic_pretrain_updates"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.reward_scale > 0:
            raise ValueError(f"reward_scale must be > 0, got {self.reward_scale}")
        if self.imitation_weight < 0:
            raise ValueError(f"imitation_weight must be >= 0, got {self.imitation_weight}")
        if self.anchor_weight < 0:
            raise ValueError(f"anchor_weight must be >= 0, got {self.anchor_weight}")
        if self.warmup_heads not in ("uniform", "prior"):
            raise ValueError(f"warmup_heads must be 'uniform' or 'prior', got {self.warmup_heads!r}")
        if self.exploration not in ("decision", "episode"):
            raise ValueError(f"exploration must be 'decision' or 'episode', got {self.exploration!r}")

    @property
    def keeps_successes(self) -> bool:
        """Whether the trainer must keep successful episodes (success buffer or self-imitation)."""
        return self.success_buffer or self.imitation_weight > 0


@dataclass(frozen=True)
class DemoReplayConfig:
    # Demonstrations of the task being fine-tuned, as a LeRobotDataset: its repo id (on the Hub, or the
    # name of a local one with `root`). None: no demonstrations in the replay.
    repo_id: str | None = None
    # The dataset's local directory (the one holding meta/info.json); None: LeRobot's cache of repo_id.
    root: str | None = None
    # Episode indices to use; None: all. Each is taken as a success at its last frame.
    episodes: list[int] | None = None
    # Share of every SAC batch drawn from the demonstrations (RLPD's 0.5); the rest from the agent's own.
    fraction: float = 0.5
    # Latents tried per demonstration decision (z = 0 and uniform draws in [-1, 1]); the nearest chunk wins.
    # On 10 pick demonstrations the action RMSE was 0.110 std with 64 and 0.105 with 256 (z = 0: 0.165).
    candidates: int = 64
    # The env's reward for a tick that does not succeed (the pick task: 0; a robot's step_penalty: -1), so
    # the demonstrations' rows are paid as the agent's own are.
    step_reward: float = 0.0
    # The env's reward for the tick that succeeds, each demonstration's last (the pick task: 1; a robot: 0).
    success_reward: float = 1.0

    def __post_init__(self) -> None:
        if self.root is not None and self.repo_id is None:
            raise ValueError(
                "rl.demos.root needs rl.demos.repo_id (the dataset's name), e.g. --rl.demos.repo_id=local/demos"
            )
        if not 0 < self.fraction < 1:
            raise ValueError(f"rl.demos.fraction must lie strictly between 0 and 1, got {self.fraction}")
        if self.candidates < 1:
            raise ValueError(f"rl.demos.candidates must be >= 1, got {self.candidates}")

    @property
    def enabled(self) -> bool:
        return self.repo_id is not None


@dataclass(frozen=True)
class TMRLConfig:
    agent: AgentConfig = field(default_factory=AgentConfig)  # the high-level agent
    observation: ObservationConfig = field(default_factory=ObservationConfig)  # what it observes
    sac: SACConfig = field(default_factory=SACConfig)  # how it learns
    demos: DemoReplayConfig = field(default_factory=DemoReplayConfig)  # demonstrations in its replay
    num_envs: int = 8  # envs per process
    total_decisions: int = 2000  # decision steps (each one decision in every env of every process)
    eval_every: int = 100  # decisions between evaluations of the deterministic agent (rank 0)
    # Episodes per evaluation, from the same initial states every time; 0: no evaluations (a robot,
    # whose every episode costs a person's time: the rolling training success is the measure).
    eval_episodes: int = 20
    save_every: int = 100  # decisions between checkpoints
    seed: int = 0  # fixes the agent's initial weights, the episodes' seeds and every random draw
    success_window: int = 50  # training episodes in the rolling success rate (all processes together)

    def __post_init__(self) -> None:
        if min(self.num_envs, self.total_decisions, self.eval_every, self.save_every, self.success_window) < 1:
            raise ValueError("num_envs, total_decisions, eval_every, save_every and success_window must be >= 1")
        if self.eval_episodes < 0:
            raise ValueError(f"eval_episodes must be >= 0 (0: no evaluations), got {self.eval_episodes}")
