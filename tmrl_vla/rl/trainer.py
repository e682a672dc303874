"""The TMRL (or DSRL) training loop: collect decisions, update SAC, evaluate, checkpoint.

Reads top to bottom like CleanRL's SAC: build, warm up with uniform random heads, then one loop of
``collect -> replay -> update`` with named ``is_eval_step`` / ``is_save_step`` branches. DSRL is the
same loop with ``agent="dsrl"``: only the z head, on the plain BC policy (wrapped without an adapter,
so at sigma = 0 it is exactly the BC policy).

Several processes (``accelerate launch --num_processes N`` or ``torchrun``): each owns its envs, its
seeds and its replay shard; gradients are averaged before every optimiser step
(:mod:`tmrl_vla.rl.distributed`), so the weights stay equal on all ranks. Rank 0 logs and evaluates.

Checkpoints hold everything a resumed run needs to continue as if never stopped: actor, critics and
target critics (with their frozen observation statistics), optimisers, every rank's replay shard,
the rows still waiting for their n-step return, collector seed counters and episode counts, and the
RNG states. A resumed run starts fresh episodes, so the waiting rows enter the replay bootstrapped
from the last observation reached, and interrupted episodes no longer count for the success
buffer. Before the first update, the observation statistics are frozen at the warm-up data
(:mod:`tmrl_vla.rl.normalize`). Each lives in ``checkpoints/<decision>/`` (one file per rank, the resolved
config beside them) and counts only once its ``complete`` marker exists, written by rank 0 after
every rank has renamed its file into place; the two newest complete checkpoints are kept.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from tmrl_vla.rl.agent import SACAgent, SACConfig
from tmrl_vla.rl.distributed import NonFiniteLossError, all_reduce_sum, barrier, broadcast_module, rank, world_size
from tmrl_vla.rl.nstep import NStepReturns

EVAL_SEED = 4_000_000_000  # evaluation episodes' seeds start here, far from every training seed


@dataclass(frozen=True)
class TMRLConfig:
    agent: Literal["tmrl", "dsrl"] = "tmrl"
    # Heads the TMRL agent learns; None = all three. Without "eps_c" the context noise is drawn
    # i.i.d. per token by the CSP policy, as in CSP training. DSRL always has only "z".
    tmrl_heads: tuple[str, ...] | None = None
    num_envs: int = 8  # per process
    total_decisions: int = 2000  # decision steps (each one decision in every env of every process)
    warmup_decisions: int = 25  # uniform random heads, before any update
    updates_per_decision: int = 1  # agent.update() calls per collected decision batch (each runs sac.utd critic steps)
    n_exec: int = 5
    # Normalise the RL observation with statistics frozen at the end of the warm-up (rl.normalize).
    normalize_obs: bool = True
    # Decisions per TD target (tmrl_vla.rl.nstep): 1 is one-step SAC.
    n_step: int = 1
    # "decision": fresh exploration noise for every head at every decision (SAC as usual);
    # "episode": each env holds its heads' noise (and its warm-up draws) for a whole episode.
    exploration: Literal["decision", "episode"] = "decision"
    # Image tokens in the RL observation: 1 = their mean; g = averaged on a g x g grid per camera
    # (keeps coarse position, which the mean loses).
    image_grid: int = 1
    # A separate frozen vision model for the observation (path or Hub repo id of a ViT-style
    # transformers model with an image processor, e.g. facebook/dinov2-with-registers-small, as in the
    # reference code): its patch tokens pooled on the same grid replace the VLA's pooled prefix.
    obs_encoder: str | None = None
    z_scale: float = 1.0
    replay_capacity: int = 100_000  # per process
    # Keep successful episodes' transitions in a second buffer and sample batches 50/50 from both.
    success_buffer: bool = False
    success_window: int = 50  # training episodes in the rolling success rate (all processes together)
    eval_every: int = 100  # decisions
    eval_episodes: int = 20
    save_every: int = 100
    seed: int = 0
    hidden: int = 256
    num_critics: int = 5
    # SAC temperature at the start, per head. Rewards are 0/1 per episode, so Q lies in [0, 1]: an
    # entropy bonus weighted 1.0 swamps it and the actor only spreads out (measured: no learning in
    # 150 decisions); a small start lets the critic matter from the first updates.
    init_temperature: float = 0.05
    # Per-head target entropy; heads not named use -dim(head).
    target_entropy: dict[str, float] = field(default_factory=dict)
    sac: SACConfig = field(default_factory=SACConfig)

    @property
    def heads(self) -> tuple[str, ...]:
        if self.agent == "dsrl":
            return ("z",)
        return tuple(self.tmrl_heads) if self.tmrl_heads else ("z", "y", "eps_c")

    def __post_init__(self) -> None:
        if self.agent not in ("tmrl", "dsrl"):
            raise ValueError(f"agent must be 'tmrl' or 'dsrl', got {self.agent!r}")
        unknown = set(self.tmrl_heads or ()) - {"z", "y", "eps_c"}
        if unknown:
            raise ValueError(
                f"tmrl_heads names unknown heads {sorted(unknown)} in {self.tmrl_heads}; the heads are z, y and eps_c "
                "(on the command line: --rl.tmrl_heads=[z,y])"
            )
        if self.tmrl_heads is not None and ("z" not in self.tmrl_heads or "y" not in self.tmrl_heads):
            raise ValueError(f"TMRL needs the 'z' and 'y' heads (eps_c is optional), got {self.tmrl_heads}")
        if self.n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {self.n_step}")
        if self.exploration not in ("decision", "episode"):
            raise ValueError(f"exploration must be 'decision' or 'episode', got {self.exploration!r}")
        if min(self.num_envs, self.total_decisions, self.eval_every, self.save_every, self.success_window) < 1:
            raise ValueError("num_envs, total_decisions, eval_every, save_every and success_window must be >= 1")


def _row(value, k: int):
    return {h: a[k] for h, a in value.items()} if isinstance(value, dict) else value[k]


def _stack_rows(rows: list[dict]) -> dict:
    return {
        key: (
            {h: torch.stack([r[key][h] for r in rows]) for h in rows[0][key]}
            if isinstance(rows[0][key], dict)
            else torch.stack([r[key] for r in rows])
        )
        for key in rows[0]
    }


def build_agent(config: TMRLConfig, obs_dim: int, action_dim: int, embed_dim: int) -> SACAgent:
    from tmrl_vla.rl.actor import HighLevelConfig, HighLevelPolicy
    from tmrl_vla.rl.critic import CriticConfig, CriticEnsemble

    shared = dict(obs_dim=obs_dim, action_dim=action_dim, embed_dim=embed_dim, heads=config.heads, hidden=config.hidden)
    actor = HighLevelPolicy(
        HighLevelConfig(**shared, init_temperature=config.init_temperature, target_entropy=dict(config.target_entropy))
    )
    critics = CriticEnsemble(CriticConfig(**shared, num_critics=config.num_critics))
    return SACAgent(actor, critics, config.sac)


def _with_defaults(saved: dict, defaults: dict) -> dict:
    """``saved`` with every field it lacks taken from ``defaults``, nested configs included."""
    out = dict(saved)
    for k, d in defaults.items():
        if k not in out:
            out[k] = d
        elif isinstance(d, dict) and isinstance(out[k], dict) and d:
            out[k] = _with_defaults(out[k], d)
    return out


def config_differences(
    saved: dict, mine: dict, defaults: dict | None = None, ignore: tuple[str, ...] = ("total_decisions",)
) -> list[str]:
    """'field (saved vs now)' for every top-level field that differs, except ``ignore``.

    Both sides are compared as JSON (a tuple equals the list it is saved as). A field the saved
    config lacks, e.g. one added to the library after the checkpoint was written, counts as its
    value in ``defaults``: new options default to the old behaviour, so such a run still resumes.
    """
    saved, mine = json.loads(json.dumps(saved)), json.loads(json.dumps(mine))
    if defaults is not None:
        saved = _with_defaults(saved, json.loads(json.dumps(defaults)))
    return [
        f"{k} ({saved.get(k)!r} vs {mine.get(k)!r})"
        for k in sorted(set(saved) | set(mine))
        if k not in ignore and saved.get(k) != mine.get(k)
    ]


class TMRLTrainer:
    def __init__(
        self,
        config: TMRLConfig,
        *,
        csp,
        preprocessor,
        postprocessor,
        make_env,
        out_dir: str | Path,
        resume: bool = True,
        log=print,
    ) -> None:
        from tmrl_vla.envs.batched import BatchedEnv
        from tmrl_vla.rl.collector import DecisionCollector
        from tmrl_vla.rl.replay import MixedReplay, ReplayBuffer

        self.config = config
        self.rank = rank()
        self.world = world_size()
        self.is_main = self.rank == 0
        self.log = log if self.is_main else (lambda *_: None)
        self.out_dir = Path(out_dir)
        self.checkpoints = self.out_dir / "checkpoints"
        self.metrics_file = self.out_dir / "metrics.jsonl"
        if not resume:
            refuse_existing_run(self.out_dir)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        from tmrl_vla.rl.decision import feature_width
        from tmrl_vla.rl.encoder import load_observation_encoder

        # loaded before seeding: building a model may draw from the global generator
        encoder = load_observation_encoder(config.obs_encoder, next(csp.parameters()).device)
        torch.manual_seed(config.seed)  # equal initial weights on every rank (and broadcast below)
        action_dim = csp.base_policy.config.action_feature.shape[0]
        state_dim = csp.base_policy.config.robot_state_feature.shape[0]
        obs_dim = feature_width(csp, state_dim, config.image_grid, encoder)
        self.agent = build_agent(config, obs_dim, action_dim, csp.embed_width)
        broadcast_module(self.agent)
        self.make_env = make_env
        self.envs = BatchedEnv(make_env, config.num_envs)
        check_action_dim(self.envs, action_dim)
        rank_seed = (config.seed * 64 + self.rank) * 1_000_000  # disjoint episode seeds per run and rank
        self.collector = DecisionCollector(
            self.envs,
            csp,
            self.agent.actor,
            preprocessor,
            postprocessor,
            n_exec=config.n_exec,
            z_scale=config.z_scale,
            seed=rank_seed,
            image_grid=config.image_grid,
            exploration=config.exploration,
            encoder=encoder,
        )
        heads = {h: self.agent.actor.config.head_dim(h) for h in config.heads}
        self.replay = ReplayBuffer(config.replay_capacity, obs_dim, heads)
        keep_successes = config.success_buffer or config.sac.imitation_weight > 0
        self.success_replay = ReplayBuffer(config.replay_capacity, obs_dim, heads) if keep_successes else None
        self.sampler = MixedReplay(self.replay, self.success_replay) if config.success_buffer else self.replay
        self.nstep = NStepReturns(config.num_envs, config.n_step, config.sac.gamma)
        self.open_episodes: list[list[dict]] = [[] for _ in range(config.num_envs)]  # for the success buffer
        self.generator = torch.Generator().manual_seed(rank_seed + 1)
        self.recent: collections.deque[bool] = collections.deque(maxlen=config.success_window)
        self.decision = 0
        self.episodes = 0  # all processes together
        self.successes = 0
        latest = latest_checkpoint(self.out_dir)
        if latest is None and self.is_main:
            self.metrics_file.unlink(missing_ok=True)  # rows of an attempt that never reached a checkpoint
        if latest is not None:
            self._load(latest)
            self.log(f"[tmrl] resumed from {latest} at decision {self.decision} ({self.episodes} episodes)")

    # ------------------------------------------------------------------------------ the loop
    def train(self) -> dict:
        cfg = self.config
        start, start_decision = time.perf_counter(), self.decision
        progress = _progress(cfg.total_decisions, self.decision, cfg.agent, enabled=self.is_main)
        while self.decision < cfg.total_decisions:
            warmup = self.decision < cfg.warmup_decisions
            t = self.collector.step(uniform=warmup)
            rows = self.nstep.push(t)
            if rows is not None:
                self._add(self.replay, rows)
            if self.success_replay is not None:
                self._track_episodes(rows, t)
            self.decision += 1
            self.recent.extend(t.success[t.episode_end].tolist())
            ended, won, win_n, win_s, reward, sigma = all_reduce_sum(
                [
                    float(t.episode_end.sum()),
                    float(t.success.sum()),
                    len(self.recent),
                    sum(self.recent),
                    float(t.reward.sum()),
                    float(t.sigma.sum()),
                ]
            )
            self.episodes += int(ended)
            self.successes += int(won)
            n = cfg.num_envs * self.world
            row = {
                "decision": self.decision,
                "rollout/episodes": self.episodes,
                "rollout/successes": self.successes,
                # success rate of the most recent `success_window` training episodes per process, pooled
                "rollout/success_recent": win_s / win_n if win_n else 0.0,
                "rollout/reward_mean": reward / n,
                "actor/sigma_mean": sigma / n,
            }
            if not warmup:
                if cfg.normalize_obs and not self.agent.actor.normalize.ready:
                    self._set_observation_stats()
                try:
                    for _ in range(cfg.updates_per_decision):
                        row |= self.agent.update(self.sampler, self.generator, self.success_replay)
                except NonFiniteLossError as err:
                    path = self._save(tag="nonfinite")
                    raise RuntimeError(
                        f"Stopped at decision {self.decision}: {err}. No update was applied; the last finite state "
                        f"is saved in {path}. Lower the learning rates or check the rewards and observations."
                    ) from err
            is_eval_step = self.decision % cfg.eval_every == 0 or self.decision == cfg.total_decisions
            is_save_step = self.decision % cfg.save_every == 0 or self.decision == cfg.total_decisions
            if is_eval_step and self.is_main:
                row["eval/success_rate"] = self.evaluate(cfg.eval_episodes)
            row["perf/decisions_per_s"] = (self.decision - start_decision) / (time.perf_counter() - start)
            if self.is_main:
                with self.metrics_file.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                progress.update(1)
                progress.set_postfix(episodes=self.episodes, success=f"{row['rollout/success_recent']:.2f}")
            if is_save_step:
                self._save()
            if is_eval_step and self.is_main:
                from tmrl_vla.rl.curves import plot_learning_curve, read_metrics

                plot_learning_curve({cfg.agent: read_metrics(self.metrics_file)}, self.out_dir / "learning_curve.png")
        progress.close()
        return {"decisions": self.decision, "episodes": self.episodes, "successes": self.successes}

    def _set_observation_stats(self) -> None:
        """Freeze the networks' observation normalisation at the warm-up data of all processes."""
        from tmrl_vla.rl.normalize import mean_std, moments

        summed = all_reduce_sum(moments(self.replay.obs[: len(self.replay)]).tolist())
        self.agent.set_observation_stats(*mean_std(torch.tensor(summed, dtype=torch.float64)))

    @staticmethod
    def _add(buffer, rows: dict) -> None:
        buffer.add(rows["obs"], rows["actions"], rows["reward"], rows["done"], rows["next_obs"], rows["steps"])

    def _track_episodes(self, rows: dict | None, t) -> None:
        """Hold each env's rows until its episode ends; a success copies them to the success buffer."""
        if rows is not None:
            for k, env in enumerate(rows["env"].tolist()):
                self.open_episodes[env].append({key: _row(value, k) for key, value in rows.items() if key != "env"})
        for row in torch.nonzero(t.episode_end).flatten().tolist():
            episode = self.open_episodes[int(t.env_index[row])]
            if t.success[row] and episode:  # every row of an ended episode left the n-step stage above
                self._add(self.success_replay, _stack_rows(episode))
            episode.clear()

    def close(self) -> None:
        """Release the envs' renderers (GL contexts are best freed before interpreter shutdown)."""
        self.envs.close()

    @torch.no_grad()
    def evaluate(self, episodes: int) -> float:
        """Success rate of the deterministic high-level policy on fresh episodes (seeds apart from training)."""
        from tmrl_vla.envs.batched import BatchedEnv
        from tmrl_vla.rl.collector import DecisionCollector, play_episodes

        envs = BatchedEnv(self.make_env, min(self.config.num_envs, episodes))
        c = self.collector
        evaluator = DecisionCollector(
            envs,
            c.csp,
            self.agent.actor,
            c.preprocessor,
            c.postprocessor,
            n_exec=c.n_exec,
            z_scale=c.z_scale,
            seed=EVAL_SEED,
            image_grid=c.image_grid,
            encoder=c.encoder,
            seeding="per_env",  # the same initial states at every evaluation, for every agent
        )
        n = envs.num_envs  # each env plays a fixed share of the episodes (see play_episodes)
        quota = torch.tensor([episodes // n + (i < episodes % n) for i in range(n)])
        wins = play_episodes(evaluator, quota, deterministic=True)
        envs.close()
        return wins / episodes

    # ----------------------------------------------------------------------------- checkpoints
    def _state(self) -> dict:
        a = self.agent
        return {
            "config": asdict(self.config),
            "world_size": self.world,
            "decision": self.decision,
            "episodes": self.episodes,
            "successes": self.successes,
            "recent": list(self.recent),
            "agent": a.state_dict(),
            "optimizers": {
                "actor": a.actor_opt.state_dict(),
                "critic": a.critic_opt.state_dict(),
                "temperature": a.temperature_opt.state_dict(),
            },
            "replay": self.replay.state_dict(),
            "success_replay": self.success_replay.state_dict() if self.success_replay is not None else None,
            "nstep": self.nstep.state_dict(),
            "collector": {
                "next_seed": self.collector.next_seed,
                "episodes_finished": self.collector.episodes_finished,
                "successes": self.collector.successes,
                "generator": self.collector.generator.get_state(),
            },
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def _save(self, tag: str | None = None) -> Path:
        """Write this rank's file, then (rank 0, once every rank has) the marker; returns the directory."""
        name = f"{self.decision:08d}" if tag is None else f"{tag}-{self.decision:08d}"
        directory = self.checkpoints / name
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"rank{self.rank}.pt"
        tmp = target.with_name(target.name + ".tmp")
        torch.save(self._state(), tmp)
        os.replace(tmp, target)
        if tag is not None:  # a diagnostic snapshot (e.g. before a NaN): written by whoever got here
            (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
            return directory
        barrier()
        if self.is_main:
            (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
            (directory / "complete").write_text(json.dumps({"decision": self.decision, "world_size": self.world}))
            for old in complete_checkpoints(self.out_dir)[:-2]:
                shutil.rmtree(old, ignore_errors=True)
        barrier()
        return directory

    def _load(self, directory: Path) -> None:
        marker = json.loads((directory / "complete").read_text())
        if marker["world_size"] != self.world:
            raise ValueError(
                f"{directory} was written by {marker['world_size']} process(es) and this run has {self.world}: "
                "each process owns a replay shard, so resume with the same number of processes"
            )
        state = torch.load(directory / f"rank{self.rank}.pt", weights_only=False)
        differ = config_differences(state["config"], asdict(self.config), defaults=asdict(TMRLConfig()))
        if differ:
            raise ValueError(f"{directory} was written by another config; fields that differ: " + ", ".join(differ))
        a = self.agent
        a.load_state_dict(state["agent"])
        a.actor_opt.load_state_dict(state["optimizers"]["actor"])
        a.critic_opt.load_state_dict(state["optimizers"]["critic"])
        a.temperature_opt.load_state_dict(state["optimizers"]["temperature"])
        self.replay.load_state_dict(state["replay"])
        if self.success_replay is not None:
            self.success_replay.load_state_dict(state["success_replay"])
        # The run goes on with fresh episodes, so the interrupted ones end here: their rows still
        # waiting for n-step returns enter the replay bootstrapped from the last observation reached
        # (none wait with n_step = 1), and none of them can reach the success buffer any more.
        self.nstep.load_state_dict(state["nstep"])
        rows = self.nstep.flush()
        if rows is not None:
            self._add(self.replay, rows)
        c = state["collector"]
        self.collector.next_seed = c["next_seed"]
        self.collector.episodes_finished = c["episodes_finished"]
        self.collector.successes = c["successes"]
        self.collector.generator.set_state(c["generator"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.decision, self.episodes, self.successes = state["decision"], state["episodes"], state["successes"]
        self.recent.extend(state["recent"])
        if self.is_main and self.metrics_file.exists():  # drop rows logged after this checkpoint
            from tmrl_vla.rl.curves import read_metrics  # skips a row torn by a crash mid-write

            kept = [r for r in read_metrics(self.metrics_file) if r["decision"] <= self.decision]
            self.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in kept))


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """A run's checkpoint directories whose ``complete`` marker exists, oldest first."""
    checkpoints = Path(run_dir) / "checkpoints"
    if not checkpoints.is_dir():
        return []
    return sorted(p for p in checkpoints.iterdir() if p.name.isdigit() and (p / "complete").exists())


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory of a run, or None."""
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def refuse_existing_run(run_dir: str | Path) -> None:
    """Raise rather than silently mix a new run into an old one's checkpoints and metrics."""
    if latest_checkpoint(run_dir) is not None:
        raise FileExistsError(
            f"{run_dir} already holds a TMRL run; resume it (--resume) or choose another output directory"
        )


def check_action_dim(envs, action_dim: int) -> None:
    """Raise if the env's action space does not have the policy's action dimension."""
    space = envs.action_space if hasattr(envs, "action_space") else envs.envs[0].action_space
    if space.shape[-1] != action_dim:
        raise ValueError(
            f"The env's actions have {space.shape[-1]} dimensions but the policy outputs {action_dim}: "
            "this policy was trained for another robot or action space"
        )


def _progress(total: int, initial: int, name: str, *, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="decision", disable=not enabled, dynamic_ncols=True)
