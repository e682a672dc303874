"""Demonstrations in the replay (RLPD-style): a LeRobotDataset's episodes as noise-space transitions.

The agent acts in the frozen policy's noise space (z, sigma, eps_c), but a demonstration holds
actions. Each demonstration decision (every ``n_exec`` frames of an episode) becomes one row:

* its observation is what the agent would have observed at that frame (the frozen policy's pooled
  prefix of the recorded cameras, plus the state: :func:`~tmrl_vla.rl.observation.encode`);
* its latent is the z, among ``candidates`` tried, whose chunk at sigma = 0 (the frozen policy itself)
  comes nearest to the ``n_exec`` actions the demonstration took from there (sigma's head at its
  bottom, y = -1; eps_c, if the agent has it, at 0): the noise-space action that best replays the
  demonstration. The flow from one z held over the chunk cannot reproduce every chunk, so the match
  is approximate; :class:`DemoReport` says how near it came, against z = 0;
* its reward is the env's, rebuilt from the frames (``step_reward`` per tick, ``success_reward`` on
  the last), as every demonstration episode is taken as a success at its last frame; n-step
  returns as for the agent's own rows (:class:`~tmrl_vla.rl.nstep.NStepReturns`).

The rows fill a buffer of their own, from which ``fraction`` of every batch is drawn
(:class:`~tmrl_vla.rl.replay.MixedReplay`), as RLPD (Ball et al. 2023) samples 50/50 from its
demonstrations and its online data. The critics then see successful states and their latents from the
first update; the observation statistics still come from the agent's own warm-up.

Reuse: the dataset is LeRobot's ``LeRobotDataset`` (images or video, decoded by LeRobot with pyav);
the frames go through the policy's own preprocessor, as the env's observations do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from tmrl_vla.csp.policy import PrefixCache
from tmrl_vla.rl.collector import Transitions
from tmrl_vla.rl.config import DemoReplayConfig
from tmrl_vla.rl.decision import latent_to_noise
from tmrl_vla.rl.nstep import NStepReturns
from tmrl_vla.rl.observation import encode
from tmrl_vla.rl.replay import ReplayBuffer


@dataclass(frozen=True)
class DemoReport:
    """How the demonstrations entered the replay."""

    episodes: int
    decisions: int  # demonstration decisions (one noise-space action each)
    rows: int  # replay rows (after n-step returns: one per decision)
    # Root mean square error, in units of the dataset's per-joint action std, between the executed part of
    # the demonstration's chunk and the frozen policy's chunk: at the matched latent, and at z = 0.
    rmse_matched: float
    rmse_zero: float

    def line(self) -> str:
        return (
            f"{self.episodes} demonstration episodes -> {self.decisions} decisions in the replay; the matched "
            f"latents replay them with an action RMSE of {self.rmse_matched:.2f} std (z = 0: {self.rmse_zero:.2f})"
        )


def load_demo_dataset(config: DemoReplayConfig):
    """The LeRobotDataset of ``config`` (video decoded with pyav, as everywhere in this library)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from tmrl_vla.data.stream import explain_missing_dataset

    with explain_missing_dataset(config.repo_id, config.root):
        return LeRobotDataset(config.repo_id, root=config.root, video_backend="pyav")


def check_demo_features(dataset, policy_config) -> None:
    """Raise, naming both sides, if the dataset lacks a camera or the state the policy reads, or its
    actions are not the policy's width."""
    features = dataset.meta.features
    needed = [*policy_config.image_features, "observation.state", "action"]
    missing = [k for k in needed if k not in features]
    if missing:
        raise KeyError(
            f"the demonstrations lack {missing} that the policy reads; the dataset has {sorted(features)} and "
            f"the policy reads {needed}: record them with the policy's camera and state names"
        )
    width, expected = features["action"]["shape"][0], policy_config.action_feature.shape[0]
    if width != expected:
        raise ValueError(f"the demonstrations' actions have {width} dimensions but the policy's have {expected}")


def decision_frames(start: int, end: int, n_exec: int) -> list[tuple[int, int]]:
    """(first frame, frames executed) of each decision of an episode spanning frames [start, end)."""
    return [(t, min(n_exec, end - t)) for t in range(start, end, n_exec)]


def demo_rewards(executed: list[int], step_reward: float, success_reward: float) -> list[float]:
    """Each decision's reward summed over its ticks; the episode's last tick succeeds."""
    rewards = [step_reward * n for n in executed]
    rewards[-1] += success_reward - step_reward
    return rewards


def _frames(dataset, indices: list[int], keys: list[str], to_policy=None) -> dict:
    """The raw batch (images CHW in [0, 1], state in the policy's units, task) of dataset frames ``indices``."""
    items = [dataset[i] for i in indices]
    batch = {k: torch.stack([item[k] for item in items]).float() for k in keys}
    if to_policy is not None:
        batch["observation.state"] = _convert(to_policy, batch["observation.state"])
    batch["task"] = [item["task"] for item in items]
    return batch


def _convert(to_policy, joints: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(to_policy(joints.numpy())), dtype=torch.float32)


def _repeat(value, b: int, n: int):
    """Each of the ``b`` samples in ``value`` (a batch, a prefix cache's inputs or outputs: tensors with
    the batch first, lists of samples, nested in tuples, lists and dicts) repeated ``n`` times in a row;
    anything not batched as it is."""
    if isinstance(value, torch.Tensor):
        return value.repeat_interleave(n, dim=0) if value.ndim and value.shape[0] == b else value
    if isinstance(value, dict):
        return {k: _repeat(v, b, n) for k, v in value.items()}
    if isinstance(value, list) and len(value) == b and all(isinstance(x, str) for x in value):
        return [x for x in value for _ in range(n)]  # one task string per sample
    if isinstance(value, (list, tuple)):
        return type(value)(_repeat(v, b, n) for v in value)
    return value


@torch.no_grad()
def match_latents(
    csp,
    batch: dict,
    prefix: PrefixCache,
    targets: torch.Tensor,
    executed: torch.Tensor,
    postprocessor,
    *,
    z_scale: float,
    candidates: torch.Tensor,
    scale: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each of the b samples of a preprocessed ``batch`` (with its clean ``prefix``), the candidate
    latent (rows of ``candidates`` (K, A), the first of which is z = 0) whose chunk at sigma = 0 is
    nearest to ``targets`` (b, n, A), in joint units over each sample's first ``executed`` (b,) steps,
    each joint divided by ``scale`` (A,).
    Returns (latents (b, A), matched RMSE (b,), RMSE at z = 0 (b,))."""
    b, k = targets.shape[0], candidates.shape[0]
    config = csp.base_policy.config
    # one vision pass per frame: its clean prefix is repeated for the K candidates
    cache = PrefixCache(*(_repeat(part, b, k) for part in (prefix.args, prefix.kwargs, prefix.outputs)))
    noise = latent_to_noise(candidates.repeat(b, 1), config.chunk_size, config.max_action_dim, z_scale)
    chunk = csp.predict_action_chunk(_repeat(batch, b, k), sigma=0.0, noise=noise, prefix=cache)
    chunk = postprocessor(chunk).float().cpu().view(b, k, config.chunk_size, -1)
    n = targets.shape[1]
    mask = (torch.arange(n)[None, :] < executed[:, None]).float()  # (b, n)
    err = ((chunk[:, :, :n] - targets[:, None]) / scale).pow(2).mean(-1)  # (b, K, n)
    mse = (err * mask[:, None]).sum(-1) / mask.sum(-1, keepdim=True)  # (b, K)
    best = mse.argmin(dim=1)
    return candidates[best], mse.gather(1, best[:, None]).squeeze(1).sqrt(), mse[:, 0].sqrt()


def demo_replay(
    config: DemoReplayConfig,
    *,
    steering,
    heads: dict[str, int],
    obs_dim: int,
    n_step: int,
    gamma: float,
    seed: int,
    to_policy=None,
    batch_frames: int = 8,
    progress: bool = True,
) -> tuple[ReplayBuffer, DemoReport]:
    """The demonstrations of ``config`` as a replay buffer for the agent that ``steering`` (a
    :class:`~tmrl_vla.rl.evaluation.Steering`) plays, with the agent's ``heads`` {name: width}.
    ``to_policy``: maps the dataset's joint values (state and actions, (n, joints)) to the policy's
    units, as a robot env does (:meth:`~tmrl_vla.robots.env.RobotEnv.to_policy`: ``lerobot-record``
    stores a robot's own units, e.g. degrees); None: already the policy's.
    Deterministic given ``seed``; draws nothing from torch's global generator."""
    dataset = load_demo_dataset(config)
    csp, policy_config = steering.csp, steering.csp.base_policy.config
    check_demo_features(dataset, policy_config)
    # the two columns needed whole (images are decoded only at the decision frames)
    columns = dataset.hf_dataset.select_columns(["episode_index", "action"]).with_format("numpy")[:]
    episode_of = np.asarray(columns["episode_index"])
    actions = torch.from_numpy(np.stack(columns["action"])).float()
    if to_policy is not None:
        actions = _convert(to_policy, actions)
    chosen = sorted(set(episode_of.tolist())) if config.episodes is None else list(config.episodes)
    unknown = sorted(set(chosen) - set(episode_of.tolist()))
    if unknown:
        raise ValueError(f"rl.demos.episodes names episodes {unknown} that {config.repo_id} does not have")
    n_exec = steering.agent.n_exec
    # per episode: its decisions (first frame, frames executed) and its last frame
    episodes = {}
    for ep in chosen:
        frames = np.flatnonzero(episode_of == ep)
        episodes[ep] = (decision_frames(int(frames[0]), int(frames[-1]) + 1, n_exec), int(frames[-1]))
    plan = [decision for decisions, _ in episodes.values() for decision in decisions]
    generator = torch.Generator().manual_seed(seed)
    action_dim = actions.shape[1]
    candidates = torch.cat(
        [torch.zeros(1, action_dim), torch.rand(config.candidates - 1, action_dim, generator=generator) * 2 - 1]
    )
    keys = [*policy_config.image_features, "observation.state"]
    scale = actions.std(0).clamp_min(1e-6)  # each joint's spread in the demonstrations
    features, latents, rmse, rmse0 = [], [], [], []
    bar = tqdm(total=len(plan), desc="demos -> replay", unit="decision", disable=not progress)
    for i in range(0, len(plan), batch_frames):
        part = plan[i : i + batch_frames]
        batch = steering.preprocessor(_frames(dataset, [t for t, _ in part], keys, to_policy))
        prefix, feats = encode(csp, batch, steering.observation.image_grid, steering.encoder)
        z, err, err0 = match_latents(
            csp,
            batch,
            prefix,
            torch.stack([_pad(actions[t : t + n_exec], n_exec) for t, _ in part]),
            torch.tensor([n for _, n in part]),
            steering.postprocessor,
            z_scale=steering.agent.z_scale,
            candidates=candidates,
            scale=scale,
        )
        features.append(feats.cpu())
        latents.append(z)
        rmse.append(err)
        rmse0.append(err0)
        bar.update(len(part))
    bar.close()
    # the observation after each episode's last decision (done: never bootstrapped): its last frame
    last = iter(_encoded(dataset, steering, [end for _, end in episodes.values()], keys, to_policy))
    features, latents = iter(torch.cat(features)), iter(torch.cat(latents))
    buffer = ReplayBuffer(max(len(plan), 1), obs_dim, heads)
    nstep = NStepReturns(1, n_step, gamma)
    for decisions, _ in episodes.values():
        obs = torch.stack([next(features) for _ in decisions])
        following = torch.cat([obs[1:], next(last)[None]])
        rewards = demo_rewards([n for _, n in decisions], config.step_reward, config.success_reward)
        for j in range(len(decisions)):
            final = torch.tensor([j == len(decisions) - 1])
            rows = nstep.push(
                Transitions(
                    obs=obs[j : j + 1],
                    actions=_head_actions(heads, next(latents)[None]),
                    reward=torch.tensor([rewards[j]]),
                    done=final.float(),
                    next_obs=following[j : j + 1],
                    episode_end=final,
                    success=final,
                    sigma=torch.zeros(1),
                    env_index=torch.zeros(1, dtype=torch.long),
                )
            )
            if rows is not None:
                buffer.add_rows(rows)
    report = DemoReport(
        episodes=len(chosen),
        decisions=len(plan),
        rows=len(buffer),
        rmse_matched=float(torch.cat(rmse).mean()),
        rmse_zero=float(torch.cat(rmse0).mean()),
    )
    return buffer, report


def _pad(actions: torch.Tensor, n: int) -> torch.Tensor:
    """``actions`` (m, A) padded to n rows by repeating the last (the padded steps are masked)."""
    if actions.shape[0] >= n:
        return actions[:n]
    return torch.cat([actions, actions[-1:].expand(n - actions.shape[0], -1)])


def _encoded(dataset, steering, frames: list[int], keys: list[str], to_policy=None) -> torch.Tensor:
    """The agent's observation features of dataset frames ``frames``."""
    batch = steering.preprocessor(_frames(dataset, frames, keys, to_policy))
    return encode(steering.csp, batch, steering.observation.image_grid, steering.encoder)[1].cpu()


def _head_actions(heads: dict[str, int], z: torch.Tensor) -> dict[str, torch.Tensor]:
    """The noise-space action of a matched latent: z, sigma at its bottom (y = -1: sigma 0, the frozen
    policy itself), no context noise (eps_c = 0)."""
    values = {"z": z, "y": -torch.ones(1, heads.get("y", 1)), "eps_c": torch.zeros(1, heads.get("eps_c", 1))}
    return {h: values[h] for h in heads}
