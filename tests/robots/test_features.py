"""A robot's features against a policy's: every mismatch named, both sides; frames and actions by name."""

import numpy as np
import pytest

from tmrl_vla.robots.features import RobotPolicyMismatch, action_dict, check_robot_fits_policy, observation_frame

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


@pytest.fixture(scope="module")
def policy_config():
    from tmrl_vla.models.tiny_smolvla import make_tiny_smolvla

    return make_tiny_smolvla().config  # reads observation.images.front (3, 64, 64) and a 6-joint state


def so101(cameras=None):
    joints = {f"{j}.pos": float for j in JOINTS}
    return {**joints, **(cameras if cameras is not None else {"front": (64, 64, 3)})}, dict(joints)


def test_a_fitting_robot_maps_observations_and_actions_by_name(policy_config):
    obs_features, act_features = so101()
    features = check_robot_fits_policy(
        policy_config, obs_features, act_features, joint_names=[f"{j}.pos" for j in JOINTS]
    )
    reading = {f"{j}.pos": float(i) for i, j in enumerate(JOINTS)} | {"front": np.zeros((64, 64, 3), np.uint8)}
    frame = observation_frame(features, reading)
    assert frame["observation.state"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert frame["observation.images.front"].shape == (64, 64, 3)
    assert action_dict(features, np.arange(6.0)) == {f"{j}.pos": float(i) for i, j in enumerate(JOINTS)}
    with pytest.raises(RobotPolicyMismatch, match="an action of 7 values for the robot's 6 joints"):
        action_dict(features, np.zeros(7))


def test_every_mismatch_is_named_with_both_sides(policy_config):
    obs_features, act_features = so101({"wrist": (48, 64, 3)})
    act_features.pop("gripper.pos")
    with pytest.raises(RobotPolicyMismatch) as err:
        check_robot_fits_policy(policy_config, obs_features, act_features)
    message = str(err.value)
    assert "the policy reads ['observation.images.front'], the robot gives ['observation.images.wrist']" in message
    assert "missing ['observation.images.front']; not read ['observation.images.wrist']" in message
    assert "action: the policy has 6 values, the robot's joint commands are 5" in message


def test_a_renamed_camera_is_checked_at_its_resolution(policy_config):
    obs_features, act_features = so101({"top": (96, 96, 3)})
    rename = {"observation.images.top": "observation.images.front"}
    with pytest.raises(RobotPolicyMismatch, match=r"trained on 64 x 64 images, the camera gives \(96, 96\)"):
        check_robot_fits_policy(policy_config, obs_features, act_features, rename_map=rename)
    obs_features["top"] = (64, 64, 3)
    features = check_robot_fits_policy(policy_config, obs_features, act_features, rename_map=rename)
    reading = {f"{j}.pos": 0.0 for j in JOINTS} | {"top": np.zeros((64, 64, 3), np.uint8)}
    assert set(observation_frame(features, reading, rename)) == {"observation.state", "observation.images.front"}


def test_joints_in_another_order_are_refused(policy_config):
    obs_features, act_features = so101()
    swapped = [f"{j}.pos" for j in JOINTS[1::-1] + JOINTS[2:]]
    with pytest.raises(RobotPolicyMismatch, match="the policy's joints are .*shoulder_lift.pos', 'shoulder_pan.pos'"):
        check_robot_fits_policy(policy_config, obs_features, act_features, joint_names=swapped)
