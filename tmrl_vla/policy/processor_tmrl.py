"""Processors of the ``tmrl`` policy type: the base VLA's own, saved with the agent.

An agent reads and acts exactly as its base does (the same normalisation statistics, the same
tokenizer), so its processors are the base's pipelines, saved as LeRobot saves a policy's.

Two things are added where needed. An agent fine-tuned on a robot whose joint units differ from
its base policy's (``RobotEnvConfig.joint_scale/offset``) records them (``robot_units``), and its
saved pipelines convert the robot's state in and the actions out (:class:`RobotUnitsInStep`,
:class:`RobotUnitsOutStep`), so that ``lerobot-rollout --policy.path=<agent>`` drives that robot.

And one step is replaced: LeRobot's tokenizer step records its tokenizer by name and
loads it with ``AutoTokenizer.from_pretrained(name)``. The embedded default's tiny backbone ships
inside this package, so its name would be a directory of the machine that saved it. The
:class:`PackagedTokenizerStep` records the package-relative name instead and finds the installed
copy when it loads; any other tokenizer (a Hub model) keeps LeRobot's own step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lerobot.processor import ProcessorStepRegistry, TokenizerProcessorStep
from lerobot.processor.pipeline import ObservationProcessorStep, PolicyActionProcessorStep
from lerobot.utils.constants import OBS_STATE

from tmrl_vla.models.tiny_smolvla import TINY_VLM_DIR

# How a saved file names the packaged tiny backbone: readable, and never a path of one machine.
PACKAGED_TINY_VLM = "tmrl_vla/models/tiny_smolvlm"
PACKAGED_TOKENIZER_STEP = "tmrl_vla_packaged_tokenizer"


def is_packaged_tiny_vlm(name: str | None) -> bool:
    """Whether ``name`` is the tiny backbone shipped in this package: the portable name, or its
    directory in any install (this one or the one that trained the policy, which may be gone)."""
    return bool(name) and Path(name).parts[-3:] == Path(PACKAGED_TINY_VLM).parts


@ProcessorStepRegistry.register(name=PACKAGED_TOKENIZER_STEP)
@dataclass
class PackagedTokenizerStep(TokenizerProcessorStep):
    """LeRobot's tokenizer step for the packaged tiny backbone: saved as ``PACKAGED_TINY_VLM``,
    loaded from this install's copy."""

    def __post_init__(self) -> None:
        if self.tokenizer is None and self.tokenizer_name == PACKAGED_TINY_VLM:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(TINY_VLM_DIR)
        super().__post_init__()

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {"tokenizer_name": PACKAGED_TINY_VLM}


def portable_steps(pipeline):
    """``pipeline`` with a tokenizer step of the packaged backbone swapped for
    :class:`PackagedTokenizerStep` (same tokenizer, portable name); other steps unchanged."""
    for i, step in enumerate(pipeline.steps):
        if type(step) is TokenizerProcessorStep and is_packaged_tiny_vlm(step.tokenizer_name):
            config = {k: v for k, v in step.get_config().items() if k != "tokenizer_name"}
            pipeline.steps[i] = PackagedTokenizerStep(
                tokenizer_name=PACKAGED_TINY_VLM, tokenizer=step.input_tokenizer, **config
            )
    return pipeline


def make_tmrl_pre_post_processors(config, dataset_stats=None, **_: Any):
    """The base policy's processors, for a ``tmrl`` config built without a saved agent directory
    (LeRobot's factory calls this by naming convention). A saved agent carries its own."""
    from tmrl_vla.policy.modeling_tmrl import load_base

    if dataset_stats is not None:
        raise ValueError("a tmrl agent normalises with its base policy's statistics; it takes no dataset_stats")
    _, preprocessor, postprocessor = load_base(config, source=None)
    return portable_steps(preprocessor), postprocessor


# Steps that put a robot's joint units around a policy trained in other units (an agent fine-tuned
# on a robot through RobotEnv's joint_scale/offset), so LeRobot's own tools run it on that robot.
ROBOT_UNITS_IN_STEP = "tmrl_vla_robot_units_in"
ROBOT_UNITS_OUT_STEP = "tmrl_vla_robot_units_out"


def _affine(value, scale: list[float], offset: list[float], *, inverse: bool):
    """``value * scale + offset`` over the last dimension (or its inverse), for tensors and arrays."""
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        s = torch.as_tensor(scale, dtype=value.dtype, device=value.device)
        o = torch.as_tensor(offset, dtype=value.dtype, device=value.device)
    else:
        value, s, o = np.asarray(value), np.asarray(scale), np.asarray(offset)
    if value.shape[-1] != len(scale):
        raise ValueError(f"the robot units are for {len(scale)} joints, the value has {value.shape[-1]}")
    return (value - o) / s if inverse else value * s + o


@dataclass
class _RobotUnits:
    """The units both steps carry: policy units = robot units * scale + offset, per joint."""

    scale: list[float]
    offset: list[float]

    def get_config(self) -> dict[str, Any]:
        return {"scale": list(self.scale), "offset": list(self.offset)}

    def transform_features(self, features):
        return features  # the same features, in other units


@ProcessorStepRegistry.register(name=ROBOT_UNITS_IN_STEP)
@dataclass
class RobotUnitsInStep(_RobotUnits, ObservationProcessorStep):
    """The robot's ``observation.state`` in the policy's units: ``state * scale + offset``."""

    def observation(self, observation):
        if OBS_STATE in observation:
            observation[OBS_STATE] = _affine(observation[OBS_STATE], self.scale, self.offset, inverse=False)
        return observation


@ProcessorStepRegistry.register(name=ROBOT_UNITS_OUT_STEP)
@dataclass
class RobotUnitsOutStep(_RobotUnits, PolicyActionProcessorStep):
    """The policy's actions in the robot's units: ``(action - offset) / scale``."""

    def action(self, action):
        return _affine(action, self.scale, self.offset, inverse=True)


def add_robot_units(directory: Path, robot_units: dict) -> None:
    """Put the robot-units steps into a saved agent's pipelines: first in its preprocessor (before
    normalisation) and last in its postprocessor (after unnormalisation)."""
    import json

    config = {"scale": list(robot_units["scale"]), "offset": list(robot_units["offset"])}
    for name, step, first in (
        ("policy_preprocessor", ROBOT_UNITS_IN_STEP, True),
        ("policy_postprocessor", ROBOT_UNITS_OUT_STEP, False),
    ):
        file = Path(directory) / f"{name}.json"
        spec = json.loads(file.read_text())
        entry = {"registry_name": step, "config": config}
        spec["steps"] = [entry, *spec["steps"]] if first else [*spec["steps"], entry]
        file.write_text(json.dumps(spec, indent=2))
