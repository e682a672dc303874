"""A LeRobot robot's observations and actions against a policy's features, by name.

A LeRobot ``Robot`` describes itself as flat dicts (``observation_features``: ``"shoulder_pan.pos":
float``, ``"front": (480, 640, 3)``; ``action_features`` likewise) and a policy as its config's
``input_features`` / ``output_features`` (``observation.images.front``, ``observation.state``,
``action``). LeRobot's own ``hw_to_dataset_features`` and ``build_dataset_frame`` turn one into the
other (what ``lerobot-record`` and ``lerobot-rollout`` use); this module adds the check those skip:
before the arm moves, every camera the policy reads must exist at its resolution, the joint vectors
must have the policy's widths (and order, when the training data's joint names are known), and
every mismatch is one error that names both sides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE, OBS_STR
from lerobot.utils.feature_utils import build_dataset_frame, hw_to_dataset_features


class RobotPolicyMismatch(ValueError):
    """The robot does not give the policy what it reads, or cannot take what it outputs."""


def robot_dataset_features(observation_features: Mapping, action_features: Mapping) -> dict[str, dict]:
    """The robot's features as LeRobot's dataset features (``observation.state`` and ``action`` name
    their joints in the robot's order, cameras become ``observation.images.<name>``)."""
    return {
        **hw_to_dataset_features(dict(observation_features), OBS_STR),
        **hw_to_dataset_features(dict(action_features), ACTION),
    }


def check_robot_fits_policy(
    policy_config,
    observation_features: Mapping,
    action_features: Mapping,
    *,
    rename_map: Mapping[str, str] | None = None,
    joint_names: Sequence[str] | None = None,
) -> dict[str, dict]:
    """Raise :class:`RobotPolicyMismatch` listing every mismatch; return the dataset features.

    ``rename_map``: robot camera keys (``observation.images.<camera>``) -> the policy's, as
    LeRobot's ``--rename_map``. ``joint_names``: the joints of the policy's training data in order
    (its dataset's ``observation.state`` names), checked against the robot's when given.
    """
    features = robot_dataset_features(observation_features, action_features)
    rename = dict(rename_map or {})
    cameras = {rename.get(k, k): v for k, v in features.items() if k.startswith(f"{OBS_IMAGES}.")}
    problems = []
    wanted = dict(policy_config.image_features)
    missing, extra = sorted(set(wanted) - set(cameras)), sorted(set(cameras) - set(wanted))
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"not read {extra}"] if extra else [])
        problems.append(
            f"cameras: the policy reads {sorted(wanted)}, the robot gives {sorted(cameras)} ({'; '.join(parts)}): "
            "rename them with a rename map, or configure the robot's cameras"
        )
    for key in sorted(set(wanted) & set(cameras)):
        need = tuple(wanted[key].shape[1:])  # (C, H, W) -> (H, W)
        have = tuple(cameras[key]["shape"][:2])
        if need != have:
            problems.append(f"{key}: the policy was trained on {need[0]} x {need[1]} images, the camera gives {have}")
    for key, feature, what in (
        (OBS_STATE, policy_config.robot_state_feature, "joint readings"),
        (ACTION, policy_config.action_feature, "joint commands"),
    ):
        if feature is None:
            continue
        have = features.get(key, {}).get("names", [])
        if len(have) != feature.shape[0]:
            problems.append(
                f"{key}: the policy has {feature.shape[0]} values, the robot's {what} are {len(have)}: {have}"
            )
        elif joint_names is not None and list(joint_names) != list(have):
            problems.append(
                f"{key}: the policy's joints are {list(joint_names)}, the robot's are {have}, in that order"
            )
    if problems:
        raise RobotPolicyMismatch("the robot does not fit the policy:\n  " + "\n  ".join(problems))
    return features


def observation_frame(features: dict[str, dict], observation: Mapping, rename_map: Mapping | None = None) -> dict:
    """One robot observation as the policy's named arrays (LeRobot's ``build_dataset_frame``)."""
    frame = build_dataset_frame(features, dict(observation), OBS_STR)
    return {(rename_map or {}).get(k, k): v for k, v in frame.items()}


def action_dict(features: dict[str, dict], action: np.ndarray) -> dict[str, float]:
    """A policy's action vector back as the robot's named joint commands."""
    names = features[ACTION]["names"]
    action = np.asarray(action, dtype=float).reshape(-1)
    if action.shape[0] != len(names):
        raise RobotPolicyMismatch(f"an action of {action.shape[0]} values for the robot's {len(names)} joints {names}")
    return dict(zip(names, action.tolist(), strict=True))
