"""The TMRL (or DSRL) training loop, single process: collect decisions, update SAC, evaluate, checkpoint.

Reads top to bottom like CleanRL's SAC: build, warm up with uniform random heads, then one loop of
``collect -> replay -> update`` with named ``is_eval_step`` / ``is_save_step`` branches. DSRL is the
same loop with ``agent="dsrl"``: only the z head, on the plain BC policy (wrapped without an adapter,
so at sigma = 0 it is exactly the BC policy).

Checkpoints hold everything a resumed run needs to continue as if never stopped: actor, critics and
target critics, optimisers, the replay buffer, the collector's seed counter and episode counts, and
the RNG states; they are written to a temporary file and renamed. Not yet here: several processes
(each with its own envs and replay shard), the recipe wiring, and the TMRL-vs-DSRL comparison.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from tmrl_vla.rl.agent import SACAgent, SACConfig


@dataclass(frozen=True)
class TMRLConfig:
    agent: Literal["tmrl", "dsrl"] = "tmrl"
    num_envs: int = 8
    total_decisions: int = 2000  # per env
    warmup_decisions: int = 25  # per env, uniform random heads, before any update
    updates_per_decision: int = 1  # agent.update() calls per collected decision batch (each runs sac.utd critic steps)
    n_exec: int = 5
    z_scale: float = 1.0
    replay_capacity: int = 100_000
    eval_every: int = 100  # decisions
    eval_episodes: int = 20
    save_every: int = 100
    seed: int = 0
    hidden: int = 256
    num_critics: int = 5
    sac: SACConfig = field(default_factory=SACConfig)

    @property
    def heads(self) -> tuple[str, ...]:
        return ("z", "y", "eps_c") if self.agent == "tmrl" else ("z",)

    def __post_init__(self) -> None:
        if self.agent not in ("tmrl", "dsrl"):
            raise ValueError(f"agent must be 'tmrl' or 'dsrl', got {self.agent!r}")


def build_agent(config: TMRLConfig, obs_dim: int, action_dim: int, embed_dim: int) -> SACAgent:
    from tmrl_vla.rl.actor import HighLevelConfig, HighLevelPolicy
    from tmrl_vla.rl.critic import CriticConfig, CriticEnsemble

    actor = HighLevelPolicy(
        HighLevelConfig(
            obs_dim=obs_dim, action_dim=action_dim, embed_dim=embed_dim, heads=config.heads, hidden=config.hidden
        )
    )
    critics = CriticEnsemble(
        CriticConfig(
            obs_dim=obs_dim,
            action_dim=action_dim,
            embed_dim=embed_dim,
            heads=config.heads,
            hidden=config.hidden,
            num_critics=config.num_critics,
        )
    )
    return SACAgent(actor, critics, config.sac)


class TMRLTrainer:
    def __init__(self, config: TMRLConfig, *, csp, preprocessor, postprocessor, make_env, out_dir: str | Path) -> None:
        from tmrl_vla.envs.batched import BatchedEnv
        from tmrl_vla.rl.collector import DecisionCollector
        from tmrl_vla.rl.replay import ReplayBuffer

        self.config = config
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)
        action_dim = csp.base_policy.config.action_feature.shape[0]
        state_dim = csp.base_policy.config.robot_state_feature.shape[0]
        obs_dim = 2 * csp.embed_width + state_dim
        self.agent = build_agent(config, obs_dim, action_dim, csp.embed_width)
        self.envs = BatchedEnv(make_env, config.num_envs)
        self.make_env = make_env
        self.collector = DecisionCollector(
            self.envs,
            csp,
            self.agent.actor,
            preprocessor,
            postprocessor,
            n_exec=config.n_exec,
            z_scale=config.z_scale,
            seed=config.seed,
        )
        heads = {h: self.agent.actor.config.head_dim(h) for h in config.heads}
        self.replay = ReplayBuffer(config.replay_capacity, obs_dim, heads)
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.decision = 0
        self.metrics_file = self.out_dir / "metrics.jsonl"
        self.checkpoint = self.out_dir / "checkpoint.pt"
        if self.checkpoint.exists():
            self._load()

    # ------------------------------------------------------------------------------ the loop
    def train(self) -> dict:
        cfg = self.config
        start = time.perf_counter()
        while self.decision < cfg.total_decisions:
            warmup = self.decision < cfg.warmup_decisions
            t = self.collector.step(uniform=warmup)
            self.replay.add(t.obs, t.actions, t.reward, t.done, t.next_obs)
            self.decision += 1
            row = {
                "decision": self.decision,
                "rollout/episodes": self.collector.episodes_finished,
                "rollout/successes": self.collector.successes,
                "rollout/reward_mean": float(t.reward.mean()),
                "actor/sigma_mean": float(t.sigma.mean()),
            }
            if not warmup:
                for _ in range(cfg.updates_per_decision):
                    row |= self.agent.update(self.replay, self.generator)
            is_eval_step = self.decision % cfg.eval_every == 0
            is_save_step = self.decision % cfg.save_every == 0
            if is_eval_step:
                row["eval/success_rate"] = self.evaluate(cfg.eval_episodes)
            row["perf/decisions_per_s"] = self.decision / (time.perf_counter() - start)
            with self.metrics_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            if is_save_step:
                self._save()
        self._save()
        return {"decisions": self.decision, "episodes": self.collector.episodes_finished}

    def close(self) -> None:
        """Release the envs' renderers (GL contexts are best freed before interpreter shutdown)."""
        self.envs.close()

    @torch.no_grad()
    def evaluate(self, episodes: int) -> float:
        """Success rate of the deterministic high-level policy on fresh episodes (seeds apart from training)."""
        from tmrl_vla.envs.batched import BatchedEnv
        from tmrl_vla.rl.collector import DecisionCollector

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
            seed=10**6,
        )
        done = wins = 0
        evaluator.reset()
        while done < episodes:
            t = evaluator.step(deterministic=True)
            done += int(t.episode_end.sum())
            wins += int(t.success.sum())
        envs.close()
        return wins / done

    # ----------------------------------------------------------------------------- checkpoints
    def _state(self) -> dict:
        a = self.agent
        return {
            "config": asdict(self.config),
            "decision": self.decision,
            "agent": a.state_dict(),
            "optimizers": {
                "actor": a.actor_opt.state_dict(),
                "critic": a.critic_opt.state_dict(),
                "temperature": a.temperature_opt.state_dict(),
            },
            "replay": self.replay.state_dict(),
            "collector": {
                "next_seed": self.collector.next_seed,
                "episodes_finished": self.collector.episodes_finished,
                "successes": self.collector.successes,
                "generator": self.collector.generator.get_state(),
            },
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def _save(self) -> None:
        tmp = self.checkpoint.with_name(self.checkpoint.name + ".tmp")
        torch.save(self._state(), tmp)
        os.replace(tmp, self.checkpoint)
        (self.out_dir / "config.json").write_text(json.dumps(asdict(self.config), indent=2))

    def _load(self) -> None:
        state = torch.load(self.checkpoint, weights_only=False)
        saved = state["config"]
        mine = json.loads(json.dumps(asdict(self.config)))
        differ = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k) and k != "total_decisions")
        if differ:
            raise ValueError(
                f"{self.checkpoint} was written by another config; fields that differ: "
                + ", ".join(f"{k} ({saved.get(k)!r} vs {mine.get(k)!r})" for k in differ)
            )
        a = self.agent
        a.load_state_dict(state["agent"])
        a.actor_opt.load_state_dict(state["optimizers"]["actor"])
        a.critic_opt.load_state_dict(state["optimizers"]["critic"])
        a.temperature_opt.load_state_dict(state["optimizers"]["temperature"])
        self.replay.load_state_dict(state["replay"])
        c = state["collector"]
        self.collector.next_seed = c["next_seed"]
        self.collector.episodes_finished = c["episodes_finished"]
        self.collector.successes = c["successes"]
        self.collector.generator.set_state(c["generator"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.decision = state["decision"]
