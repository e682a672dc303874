"""The TMRL (or DSRL) training loop: collect decisions, update SAC, evaluate, checkpoint.

Reads top to bottom like CleanRL's SAC: build (seeded), warm up with random heads, then one
loop of ``collect -> replay -> update`` with named ``is_eval_step`` / ``is_save_step`` branches. DSRL
is the same loop with ``agent.kind="dsrl"``: only the z head, on the plain BC policy (wrapped
without an adapter, so at sigma = 0 it is exactly the BC policy).

Several processes (``accelerate launch --num_processes N`` or ``torchrun``): each owns its envs, its
seeds and its replay shard; gradients are averaged before every optimiser step
(:mod:`tmrl_vla.rl.distributed`), so the weights stay equal on all ranks. Rank 0 logs and evaluates.
Before the first update the observation statistics are frozen at the warm-up data of all ranks
(:mod:`tmrl_vla.rl.normalize`). Checkpoints and resuming: :mod:`tmrl_vla.rl.checkpoint`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import torch
from tqdm.auto import tqdm

from tmrl_vla.csp.policy import CSPPolicy
from tmrl_vla.envs.batched import BatchedEnv
from tmrl_vla.metrics import append_metrics, read_metrics
from tmrl_vla.rl import checkpoint
from tmrl_vla.rl.agent import build_agent
from tmrl_vla.rl.config import TMRLConfig
from tmrl_vla.rl.curves import plot_learning_curve
from tmrl_vla.rl.demos import demo_replay
from tmrl_vla.rl.distributed import NonFiniteLossError, all_reduce_sum, broadcast_module, rank, world_size
from tmrl_vla.rl.encoder import load_observation_encoder
from tmrl_vla.rl.evaluation import Steering, evaluate, make_collector
from tmrl_vla.rl.normalize import mean_std, moments
from tmrl_vla.rl.nstep import NStepReturns
from tmrl_vla.rl.observation import feature_width
from tmrl_vla.rl.replay import MixedReplay, ReplayBuffer, SuccessfulEpisodes

DEMOS_FILE = "demos.json"  # how the demonstrations entered the replay (rl.demos.DemoReport)


class TMRLTrainer:
    def __init__(
        self,
        config: TMRLConfig,
        *,
        csp: CSPPolicy,
        preprocessor,
        postprocessor,
        make_env: Callable[[], gym.Env],
        out_dir: str | Path,
        resume: bool = True,
        log: Callable[[str], None] = print,
        on_checkpoint: Callable[[TMRLTrainer], None] | None = None,
        save_at_episode_end: bool = False,
        should_stop: Callable[[], bool] | None = None,
        updates_at_episode_end: bool = False,
    ) -> None:
        """``on_checkpoint``: called on the main process after each checkpoint is saved (e.g. to push
        the agent as it is then). ``save_at_episode_end``: also checkpoint after every decision in
        which an episode ended, so a crash loses at most the episode in flight (a robot, whose
        episodes cost a person's time). ``should_stop()``: checked after every decision; when true,
        the run checkpoints and ends early (e.g. the person pressed quit). ``updates_at_episode_end``:
        the SAC updates owed for an episode's decisions all run when it ends, not between its chunks,
        so a real-time arm is not held still mid-episode while the agent learns (same updates per
        decision in total)."""
        self.config, cfg = config, config
        self.on_checkpoint = on_checkpoint
        self.save_at_episode_end, self.should_stop = save_at_episode_end, should_stop
        self.updates_at_episode_end = updates_at_episode_end
        self.owed_updates = 0  # decisions whose updates wait for the episode's end (updates_at_episode_end)
        self.rank, self.world = rank(), world_size()
        self.is_main = self.rank == 0
        self.log = log if self.is_main else (lambda *_: None)
        self.out_dir = Path(out_dir)
        self.metrics_file = self.out_dir / "metrics.jsonl"
        if not resume:
            checkpoint.refuse_existing_run(self.out_dir)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        # loaded before seeding: building a model may draw from the global generator
        self.encoder = load_observation_encoder(cfg.observation.encoder, next(csp.parameters()).device)
        torch.manual_seed(cfg.seed)  # equal initial weights on every rank (and broadcast below)
        action_dim = csp.base_policy.config.action_feature.shape[0]
        state_dim = csp.base_policy.config.robot_state_feature.shape[0]
        obs_dim = feature_width(csp, state_dim, cfg.observation.image_grid, self.encoder)
        self.agent = build_agent(cfg.agent, cfg.sac, obs_dim=obs_dim, action_dim=action_dim, embed_dim=csp.embed_width)
        broadcast_module(self.agent)
        self.make_env = make_env
        self.envs = BatchedEnv(make_env, cfg.num_envs)
        check_action_dim(self.envs, action_dim)
        rank_seed = (cfg.seed * 64 + self.rank) * 1_000_000  # disjoint episode seeds per run and rank
        self.steering = Steering(
            csp, self.agent.actor, preprocessor, postprocessor, cfg.agent, cfg.observation, self.encoder
        )
        self.collector = make_collector(self.envs, self.steering, seed=rank_seed, exploration=cfg.sac.exploration)
        self._build_replay(obs_dim)
        self.generator = torch.Generator().manual_seed(rank_seed + 1)
        self.recent: collections.deque[bool] = collections.deque(maxlen=cfg.success_window)
        self.decision = self.episodes = self.successes = 0  # episodes and successes: all processes together
        latest = checkpoint.latest_checkpoint(self.out_dir)
        if latest is None and self.is_main:
            self.metrics_file.unlink(missing_ok=True)  # rows of an attempt that never reached a checkpoint
        if latest is not None:
            checkpoint.load(self, latest)
            self.log(f"[tmrl] resumed from {latest} at decision {self.decision} ({self.episodes} episodes)")

    @property
    def csp(self) -> CSPPolicy:
        """The frozen policy this trainer's agent steers."""
        return self.steering.csp

    def _build_replay(self, obs_dim: int) -> None:
        """The replay shard, the n-step stage before it, and (when used) the success buffer and the
        demonstrations."""
        sac, actor = self.config.sac, self.agent.actor.config
        heads = {h: actor.head_dim(h) for h in actor.heads}
        self.replay = ReplayBuffer(sac.replay_capacity, obs_dim, heads)
        self.nstep = NStepReturns(self.config.num_envs, sac.n_step, sac.gamma)
        self.success_replay = ReplayBuffer(sac.replay_capacity, obs_dim, heads) if sac.keeps_successes else None
        self.success_episodes = (
            SuccessfulEpisodes(self.success_replay, self.config.num_envs) if self.success_replay is not None else None
        )
        self.sampler = MixedReplay(self.replay, self.success_replay) if sac.success_buffer else self.replay
        self.demo_replay = None
        demos = self.config.demos
        if demos.enabled:
            # rebuilt the same on every start and resume (seeded): the dataset is the record
            # a robot env converts its own units (what lerobot-record stores) to the policy's
            self.demo_replay, report = demo_replay(
                demos,
                to_policy=getattr(self.envs.envs[0], "to_policy", None),
                steering=self.steering,
                heads=heads,
                obs_dim=obs_dim,
                n_step=sac.n_step,
                gamma=sac.gamma,
                seed=self.config.seed,
                progress=self.is_main,
            )
            self.log(f"[{self.config.agent.kind}] {report.line()}")
            if self.is_main:
                self.out_dir.joinpath(DEMOS_FILE).write_text(json.dumps(dataclasses.asdict(report), indent=2))
            self.sampler = MixedReplay(self.sampler, self.demo_replay, demos.fraction)

    # ------------------------------------------------------------------------------ the loop
    def train(self) -> dict:
        cfg = self.config
        start, start_decision = time.perf_counter(), self.decision
        progress = tqdm(
            total=cfg.total_decisions,
            initial=self.decision,
            desc=cfg.agent.kind,
            unit="decision",
            disable=not self.is_main,
            dynamic_ncols=True,
        )
        while self.decision < cfg.total_decisions:
            warmup = self.decision < cfg.sac.warmup_decisions
            episodes_before = self.episodes
            row = self.collect(warmup=cfg.sac.warmup_heads if warmup else None)
            episode_ended = self.episodes > episodes_before
            stopping = self.should_stop is not None and self.should_stop()
            last = self.decision == cfg.total_decisions or stopping
            if not warmup:
                self.owed_updates += 1
                if not self.updates_at_episode_end or episode_ended or last:
                    row |= self.update(decisions=self.owed_updates)
                    self.owed_updates = 0
            is_eval_step = cfg.eval_episodes > 0 and (self.decision % cfg.eval_every == 0 or last)
            is_save_step = self.decision % cfg.save_every == 0 or last or (self.save_at_episode_end and episode_ended)
            if is_eval_step and self.is_main:
                row["eval/success_rate"] = self.evaluate(cfg.eval_episodes)
            row["perf/decisions_per_s"] = (self.decision - start_decision) / (time.perf_counter() - start)
            if self.is_main:
                self.write_metrics(row, progress)
            if is_save_step:
                checkpoint.save(self)
                if self.is_main and self.on_checkpoint is not None:
                    self.on_checkpoint(self)
            if self.is_main and (is_eval_step or (cfg.eval_episodes == 0 and is_save_step)):
                curves = {cfg.agent.kind: read_metrics(self.metrics_file)}
                plot_learning_curve(curves, self.out_dir / "learning_curve.png")
            if stopping:
                self.log(f"[{cfg.agent.kind}] stopped at decision {self.decision} on request (resume with --resume)")
                break
        progress.close()
        return {"decisions": self.decision, "episodes": self.episodes, "successes": self.successes}

    def collect(self, *, warmup: str | None) -> dict:
        """One decision in every env; its transitions go to the replay (through the n-step stage).
        ``warmup``: how the heads are drawn before any update (``sac.warmup_heads``), None: the actor.
        Returns the decision's metrics, counted over all processes."""
        t = self.collector.step(warmup=warmup)
        self._take_over(t)
        kept = t if t.intervened is None or not t.intervened.any() else t.select(~t.intervened)
        rows = self.nstep.push(kept) if len(kept.env_index) else None
        if rows is not None:
            self.replay.add_rows(rows)
        if self.success_episodes is not None:
            self.success_episodes.observe(rows, t.episode_end, t.success, t.env_index)
        self.decision += 1
        self.recent.extend(t.success[t.episode_end].tolist())
        local = [t.episode_end.sum(), t.success.sum(), len(self.recent), sum(self.recent)]
        local += [t.reward.sum(), t.sigma.sum()]
        ended, won, win_n, win_s, reward, sigma = all_reduce_sum([float(x) for x in local])
        self.episodes += int(ended)
        self.successes += int(won)
        n = self.config.num_envs * self.world
        return {
            "decision": self.decision,
            "rollout/episodes": self.episodes,
            "rollout/successes": self.successes,
            # success rate of the most recent `success_window` training episodes per process, pooled
            "rollout/success_recent": win_s / win_n if win_n else 0.0,
            "rollout/reward_mean": reward / n,
            "actor/sigma_mean": sigma / n,
        }

    def _take_over(self, t) -> None:
        """Decisions in which a person drove the robot are not the agent's: its earlier decisions of
        that episode leave the n-step stage bootstrapped from where the person took over, the
        intervened ones never reach the replay, and the episode's success is not copied as the
        agent's. (The person's ticks are kept where they help: the recorded LeRobot dataset, for the
        next CSP round.)"""
        if t.intervened is None:
            return
        for env in t.env_index[t.intervened].tolist():
            rows = self.nstep.cut(env)
            if rows is not None:
                self.replay.add_rows(rows)
            if self.success_episodes is not None:
                self.success_episodes.take_over(env)

    def update(self, decisions: int = 1) -> dict:
        """``sac.updates_per_decision`` SAC updates per decision of ``decisions`` (the first one freezes
        the observation statistics)."""
        if self.config.observation.normalize and not self.agent.actor.normalize.ready:
            summed = all_reduce_sum(moments(self.replay.obs[: len(self.replay)]).tolist())
            self.agent.set_observation_stats(*mean_std(torch.tensor(summed, dtype=torch.float64)))
        row: dict = {}
        sac = self.config.sac
        try:
            # once per run: no critic step yet (the optimiser's state, restored on resume, says so)
            if sac.critic_pretrain_updates and sac.updates_per_decision and not self.agent.critic_opt.state:
                row |= self.agent.pretrain_critics(self.sampler, sac.critic_pretrain_updates, self.generator)
            for _ in range(sac.updates_per_decision * decisions):
                row |= self.agent.update(self.sampler, self.generator, self.success_replay)
        except NonFiniteLossError as err:
            path = checkpoint.save(self, tag="nonfinite")
            raise RuntimeError(
                f"Stopped at decision {self.decision}: {err}. No update was applied; the last finite state "
                f"is saved in {path}. Lower the learning rates or check the rewards and observations."
            ) from err
        return row

    def write_metrics(self, row: dict, progress: tqdm) -> None:
        append_metrics(self.metrics_file, row)
        progress.update(1)
        progress.set_postfix(episodes=self.episodes, success=f"{row['rollout/success_recent']:.2f}")

    def evaluate(self, episodes: int) -> float:
        """Success rate of the deterministic high-level policy on the fixed evaluation episodes."""
        return evaluate(self.make_env, self.steering, episodes=episodes, num_envs=self.config.num_envs)

    def close(self) -> None:
        """Release the envs' renderers (GL contexts are best freed before interpreter shutdown)."""
        self.envs.close()


def check_action_dim(envs: BatchedEnv, action_dim: int) -> None:
    """Raise if the env's action space does not have the policy's action dimension."""
    space = envs.envs[0].action_space
    if space.shape[-1] != action_dim:
        raise ValueError(
            f"The env's actions have {space.shape[-1]} dimensions but the policy outputs {action_dim}: "
            "this policy was trained for another robot or action space"
        )
