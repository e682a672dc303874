"""Record scripted-expert demonstrations as a LeRobotDataset (v3) at a local root.

Storage choice, measured here: frames are stored as PNG images inside the parquet files rather
than as MP4 video. Both wrote 477 frames in ~2.5-3.2 s (simulation included) and read a random
sample with a 10-step action chunk in ~5 ms, but images are lossless and decode with Pillow alone,
whereas video decoding needs torchcodec's system FFmpeg (missing on a fresh machine of this kind:
LeRobot then falls back to PyAV with a warning) and AV1 encoding is lossy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from datasets.utils import logging as ds_logging
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from tqdm.auto import tqdm

from tmrl_vla.envs.expert import ExpertConfig, ScriptedExpert
from tmrl_vla.envs.pick_cube import JOINT_NAMES, PickCubeConfig, PickCubeEnv


@dataclass(frozen=True)
class DemoConfig:
    """What to record. Changing any field changes the cache key of the demos."""

    num_episodes: int = 200  # expert episodes attempted (only successful ones are kept by default)
    seed: int = 0  # episode i is env seed ``seed + i``; the expert's own RNG is seeded from ``seed``
    env: PickCubeConfig = field(default_factory=PickCubeConfig)  # the scene recorded: the in-distribution task
    expert: ExpertConfig = field(default_factory=ExpertConfig)  # the scripted expert's motion and noise
    repo_id: str = "local/so100_pick_cube_demos"  # the dataset's LeRobot repo id (written locally, never pushed)
    keep_failures: bool = False  # failed expert episodes are dropped by default

    def __post_init__(self) -> None:
        if self.num_episodes < 1:
            raise ValueError(f"num_episodes must be >= 1, got {self.num_episodes}")


def dataset_features(env: PickCubeConfig, *, video: bool = False) -> dict[str, dict]:
    """LeRobotDataset feature spec for the pick task (joint names as the SO-100 follower's)."""
    size, dtype = env.image_size, "video" if video else "image"
    features: dict[str, dict] = {
        env.image_key(cam): {"dtype": dtype, "shape": (size, size, 3), "names": ["height", "width", "channels"]}
        for cam in env.cameras
    }
    names = [f"{j}.pos" for j in JOINT_NAMES]
    features["observation.state"] = {"dtype": "float32", "shape": (len(JOINT_NAMES),), "names": names}
    features["action"] = {"dtype": "float32", "shape": (len(JOINT_NAMES),), "names": names}
    return features


@dataclass
class DemoStats:
    episodes_tried: int
    episodes_saved: int
    frames: int

    @property
    def expert_success_rate(self) -> float:
        return self.episodes_saved / max(self.episodes_tried, 1)


def record_demos(config: DemoConfig, root: str | Path, *, progress: bool = True, video: bool = False) -> DemoStats:
    """Roll out the scripted expert and write a LeRobotDataset at ``root``; cameras as PNG images,
    or with ``video`` as MP4 videos (LeRobot's encoder), as community datasets store them.

    ``root`` must not exist: LeRobot would refuse it half-way, and silently adding to an existing
    dataset would mix configurations. Failed expert episodes are discarded unless
    ``keep_failures`` is set; either way the count is returned.
    """
    root = Path(root)
    if root.exists():
        raise FileExistsError(
            f"Dataset root {root} already exists; refusing to overwrite it. Remove it or choose another root."
        )
    env = PickCubeEnv(config.env)
    expert = ScriptedExpert(config.expert, seed=config.seed)
    dataset = LeRobotDataset.create(
        config.repo_id,
        fps=env.metadata["render_fps"],
        features=dataset_features(config.env, video=video),
        root=root,
        robot_type="so100_follower",
        use_videos=video,
        video_backend="pyav",  # never probe torchcodec: it needs system FFmpeg libraries
    )
    saved = frames = 0
    bars_were_on = datasets_progress_bars(False)  # one bar per saved episode would bury ours
    try:
        bar = tqdm(range(config.num_episodes), desc="recording demos", unit="ep", disable=not progress)
        for i in bar:
            obs, _ = env.reset(seed=config.seed + i)
            expert.reset(env)
            done = success = False
            n = 0
            while not done:
                action = expert.act(env)
                dataset.add_frame({**obs, "action": action, "task": env.task})
                obs, _, terminated, truncated, info = env.step(action)
                success, done = bool(info["is_success"]), terminated or truncated
                n += 1
            if success or config.keep_failures:
                dataset.save_episode()
                saved += 1
                frames += n
            else:
                dataset.clear_episode_buffer()
            bar.set_postfix(saved=saved)
    finally:
        dataset.finalize()
        env.close()
        datasets_progress_bars(bars_were_on)
    return DemoStats(episodes_tried=config.num_episodes, episodes_saved=saved, frames=frames)


def datasets_progress_bars(enable: bool) -> bool:
    """Turn the ``datasets`` library's progress bars on or off; returns the previous setting."""
    was = ds_logging.is_progress_bar_enabled()
    (ds_logging.enable_progress_bar if enable else ds_logging.disable_progress_bar)()
    return was


def load_demos(repo_id: str, root: str | Path, *, chunk_size: int, fps: int = 25, **kwargs):
    """Open recorded demos with action chunks, offline (``root`` is read, the Hub is never asked)."""
    delta = {"action": [i / fps for i in range(chunk_size)]}
    kwargs.setdefault("video_backend", "pyav")
    return LeRobotDataset(repo_id, root=root, delta_timestamps=delta, **kwargs)
