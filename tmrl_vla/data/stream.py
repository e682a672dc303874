"""Training batches read from a LeRobotDataset per step, as LeRobot's own trainer reads them.

Why a second path beside :class:`~tmrl_vla.data.memory.InMemoryDemos`: a user's dataset is usually
stored as video and far larger than memory (50 episodes x 400 frames x 2 cameras at 480 x 640 is
~37 GB decoded). Here nothing is decoded ahead: LeRobot's ``LeRobotDataset`` decodes each sample's
frames (pyav where torchcodec cannot load) inside the DataLoader's workers, applies LeRobot's
image transforms, and builds the action chunk from ``delta_timestamps`` resolved from the policy's
own config, so peak memory depends on the batch, not on the dataset's length.

The order is LeRobot's: an ``EpisodeAwareSampler`` whose permutation is a pure function of
``(seed, epoch)``, sharded across processes by accelerate, and repositioned on resume with
``compute_sampler_state`` so a resumed run reads the batches an uninterrupted one would have read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from lerobot.configs.default import DatasetConfig
from lerobot.datasets import EpisodeAwareSampler, compute_sampler_state
from lerobot.datasets.factory import resolve_delta_timestamps
from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
from lerobot.transforms import ImageTransforms
from lerobot.utils.constants import HF_LEROBOT_HOME
from torch.utils.data import DataLoader, default_collate


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int  # samples per step and per process
    num_workers: int  # DataLoader worker processes decoding frames (0: decode in the training process)
    seed: int  # the sampler's permutation of epoch e is a function of (seed, e) only


class StreamedDemos:
    """A LeRobotDataset with the policy's action chunks, read batch by batch."""

    def __init__(self, dataset: DatasetConfig, policy_config, loader: LoaderConfig) -> None:
        self.meta = open_metadata(dataset.repo_id, dataset.root, dataset.revision)
        transforms = dataset.image_transforms
        self.dataset = LeRobotDataset(
            dataset.repo_id,
            root=dataset.root,
            revision=dataset.revision,
            episodes=dataset.episodes,
            delta_timestamps=chunk_timestamps(policy_config, self.meta),
            image_transforms=ImageTransforms(transforms) if transforms.enable else None,
            video_backend=dataset.video_backend,
            return_uint8=True,  # video frames cross the worker pipe as bytes; to_float() divides by 255
        )
        self.image_keys = list(self.meta.camera_keys)
        self.loader_config = loader
        self.sampler = EpisodeAwareSampler(
            self.meta.episodes["dataset_from_index"],
            self.meta.episodes["dataset_to_index"],
            episode_indices_to_use=self.dataset.episodes,
            shuffle=True,
            seed=loader.seed,
            absolute_to_relative_idx=self.dataset.absolute_to_relative_idx,
        )

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def stats(self) -> dict:
        return self.meta.stats

    def batch(self, index: torch.Tensor) -> dict:
        """The batch of frames ``index`` (b,), read in this process (calibration, tests)."""
        return to_float(default_collate([self.dataset[int(i)] for i in index]), self.image_keys)

    def batches(
        self, *, start_step: int, num_processes: int, prepare: Callable[[DataLoader], DataLoader]
    ) -> Iterator[dict]:
        """Endless training batches from ``start_step`` on: ``prepare`` is ``accelerator.prepare``,
        which shards each step's ``batch_size * num_processes`` samples across the processes."""
        config = self.loader_config
        position = compute_sampler_state(start_step, len(self.sampler), config.batch_size, num_processes)
        self.sampler.load_state_dict(position)
        loader = DataLoader(
            self.dataset,
            batch_size=config.batch_size,
            sampler=self.sampler,
            num_workers=config.num_workers,
            # Seeds the workers from their own generator, not from the global torch RNG, whose draws
            # (flow noise and time) would otherwise depend on when an epoch's workers were started.
            generator=torch.Generator().manual_seed(config.seed),
            persistent_workers=False,
            drop_last=False,
        )
        loader = prepare(loader)
        while True:  # each pass advances the sampler's epoch
            for batch in loader:
                yield to_float(batch, self.image_keys)


def open_metadata(repo_id: str, root: str | Path | None, revision: str | None = None) -> LeRobotDatasetMetadata:
    """The dataset's metadata, or an error that says where it was looked for and how to fix it."""
    with explain_missing_dataset(repo_id, root):
        return LeRobotDatasetMetadata(repo_id, root=root, revision=revision)


@contextmanager
def explain_missing_dataset(repo_id: str, root: str | Path | None) -> Iterator[None]:
    """Turn the Hub's errors for a dataset that is neither on disk nor reachable into one that says
    where it was looked for and how to fix it (around whatever opens the dataset)."""
    try:
        yield
    except (OfflineModeIsEnabled, LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError) as err:
        where = f"at {root}" if root else f"in {HF_LEROBOT_HOME / repo_id} (LeRobot's local datasets)"
        raise FileNotFoundError(
            f"No LeRobot dataset {repo_id!r} {where}, and the Hub could not provide it ({type(err).__name__}). "
            "Pass --dataset.root=<the directory holding meta/info.json>, or download it once where the Hub is "
            f"reachable (huggingface-cli download {repo_id} --repo-type dataset)."
        ) from err


def chunk_timestamps(policy_config, meta) -> dict[str, list[float]] | None:
    """LeRobot's ``delta_timestamps`` for the policy, without windows of the current frame alone
    (SmolVLA asks for ``[0]``): those only add a time axis of length 1 that the policy drops again,
    and without it a batch has the shapes of an in-memory one and of an env observation."""
    delta = resolve_delta_timestamps(policy_config, meta) or {}
    kept = {key: offsets for key, offsets in delta.items() if list(offsets) != [0.0]}
    return kept or None


def to_float(batch: dict, image_keys: list[str]) -> dict:
    """Video frames come as uint8 (``return_uint8``); the policies expect float images in [0, 1]."""
    for key in image_keys:
        if key in batch and batch[key].dtype == torch.uint8:
            batch[key] = batch[key].float().div_(255.0)
    return batch
