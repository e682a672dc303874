import mujoco
import numpy as np
import pytest

from tmrl_vla.envs.kinematics import top_down_ik
from tmrl_vla.envs.pick_cube import PickCubeEnv


@pytest.mark.parametrize("target", [(0.13, -0.09, 0.02), (0.23, 0.09, 0.02), (0.18, 0.0, 0.12), (0.12, 0.0, 0.16)])
def test_ik_matches_mujoco_forward_kinematics(target):
    env = PickCubeEnv()
    q = top_down_ik(np.array(target), yaw=0.0)
    env.data.qpos[env._arm_qpos[:5]] = q
    mujoco.mj_forward(env.model, env.data)
    np.testing.assert_allclose(env.tip_pos(), target, atol=1e-6)
    hand = env.data.xmat[env.model.body("hand").id].reshape(3, 3)
    np.testing.assert_allclose(hand[:, 0], [0, 0, -1], atol=1e-6)  # tool points straight down
    assert abs(hand[2, 1]) < 1e-6 and min(abs(hand[0, 1]), abs(hand[1, 1])) < 1e-6  # jaws square to the axes
    assert np.all(q >= env.joint_low[:5]) and np.all(q <= env.joint_high[:5])
    env.close()
