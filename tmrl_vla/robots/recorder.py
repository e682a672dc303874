"""Every robot episode as a LeRobot dataset, for the next CSP round and for anyone's tools.

The frames are what ``lerobot-record`` would store for the same robot (its features, by LeRobot's
``hw_to_dataset_features`` and ``build_dataset_frame``; cameras as video), plus three per-frame
columns of what happened: ``next.reward``, ``next.done`` (success) and ``intervention`` (a person
held the arm through a teleoperator on that tick; the action is then theirs).

Crash safety. LeRobot's writer keeps the current data file open and writes its footer (and the
buffered episode metadata) only at ``finalize``; a process killed before that leaves a file no
reader accepts. So each episode is finalized as it ends and the dataset reopened with
``LeRobotDataset.resume`` for the next: a SIGKILL loses at most the episode in flight, and a
resumed run appends to the same dataset. On 64 x 64 images this costs well under a second per
episode, while the person resets the scene.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.utils.constants import ACTION, OBS_STR
from lerobot.utils.feature_utils import build_dataset_frame
from lerobot.utils.import_utils import get_safe_default_video_backend

# SVT-AV1 (LeRobot's video encoder) prints its whole configuration to the terminal at every episode,
# between the lines a person at the robot reads; errors only, unless the user asked for more.
os.environ.setdefault("SVT_LOG", "1")


@functools.cache
def video_backend() -> str:
    """LeRobot's video decoder, chosen once: asked every time, LeRobot probes torchcodec again and,
    where it cannot load (no FFmpeg libraries), prints the same traceback at every episode."""
    return get_safe_default_video_backend()


# LeRobot's AV1 encoder kills the process (a floating point exception) on frames of 24 px or less;
# 32 encodes (measured on 17, 24, 32, 48 and 64 px squares).
MIN_VIDEO_SIDE = 32
EXTRA_FEATURES = {
    "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
    "next.done": {"dtype": "bool", "shape": (1,), "names": None},
    "intervention": {"dtype": "bool", "shape": (1,), "names": None},
}


class EpisodeRecorder:
    """``add(observation, action, reward, done, intervention)`` per tick; ``save_episode()`` at an
    episode's end, ``discard_episode()`` to drop one (e.g. an e-stopped episode)."""

    def __init__(
        self,
        root: str | Path,
        repo_id: str,
        *,
        fps: int,
        features: Mapping[str, dict],
        task: str,
        robot_type: str | None = None,
        use_videos: bool = True,
    ) -> None:
        self.root, self.repo_id, self.task = Path(root), repo_id, task
        small = [
            k for k, v in features.items() if v["dtype"] in ("video", "image") and min(v["shape"][:2]) < MIN_VIDEO_SIDE
        ]
        if use_videos and small:
            raise ValueError(
                f"cameras {small} give images under {MIN_VIDEO_SIDE} px a side, which LeRobot's video encoder "
                "cannot encode (the process dies): record them as images (use_videos=False)"
            )
        # cameras as video (LeRobot's default), or as PNG images
        kind = "video" if use_videos else "image"
        self.features = {
            k: ({**v, "dtype": kind} if v["dtype"] in ("video", "image") else v) for k, v in features.items()
        }
        if (self.root / "meta" / "info.json").exists():
            self.dataset = LeRobotDataset.resume(repo_id, root=self.root, video_backend=video_backend())
            self._check_same_features()
            self._drop_unsaved_images()  # frames of an episode that was in flight when a run died
        else:
            self.dataset = LeRobotDataset.create(
                repo_id,
                fps,
                features={**self.features, **EXTRA_FEATURES},
                root=self.root,
                robot_type=robot_type,
                use_videos=use_videos,
                video_backend=video_backend(),
            )
        self._open = True

    @property
    def num_episodes(self) -> int:
        return self.dataset.meta.total_episodes

    def _check_same_features(self) -> None:
        have = {k: (v["dtype"], tuple(v["shape"])) for k, v in self.dataset.meta.features.items()}
        want = {k: (v["dtype"], tuple(v["shape"])) for k, v in {**self.features, **EXTRA_FEATURES}.items()}
        differ = sorted(k for k in want if have.get(k) != want[k])
        if differ:
            raise ValueError(
                f"the dataset in {self.root} was recorded with other features ({differ}): record into another "
                "directory (--dataset.root) or with the robot it was made with"
            )

    def _drop_unsaved_images(self) -> None:
        images = self.root / "images"
        if images.exists():
            shutil.rmtree(images)

    def _reopen(self) -> None:
        if not self._open:
            self.dataset = LeRobotDataset.resume(self.repo_id, root=self.root, video_backend=video_backend())
            self._open = True

    def add(
        self,
        observation: Mapping,
        action: np.ndarray,
        *,
        reward: float,
        done: bool,
        intervention: bool = False,
    ) -> None:
        """One tick: the robot's raw observation (``get_observation()``) and the command sent (robot units)."""
        self._reopen()
        frame = build_dataset_frame(self.features, dict(observation), OBS_STR)
        names = self.features[ACTION]["names"]
        frame[ACTION] = np.asarray(action, dtype=np.float32).reshape(len(names))
        frame["next.reward"] = np.array([reward], dtype=np.float32)
        frame["next.done"] = np.array([done], dtype=bool)
        frame["intervention"] = np.array([intervention], dtype=bool)
        frame["task"] = self.task
        self.dataset.add_frame(frame)

    def save_episode(self) -> None:
        """Write the episode and close the files, so that it survives whatever happens next."""
        if self._open and self.dataset.has_pending_frames():
            self.dataset.save_episode()
        self.close()

    def discard_episode(self) -> None:
        if self._open and self.dataset.has_pending_frames():
            self.dataset.clear_episode_buffer()

    def close(self) -> None:
        if self._open:
            self.dataset.finalize()
            self._open = False
