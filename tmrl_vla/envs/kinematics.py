"""Closed-form inverse kinematics of the SO-100-like arm in ``assets/so100_pick_cube.xml``.

Only what the scripted expert needs: the gripper pointing straight down with its jaws square to
the cube. Pan aims the arm plane at the target; shoulder and elbow form a two-link chain that puts
the wrist above the target; the wrist pitch makes the three pitches sum to a vertical tool; the roll
undoes the pan so the jaws keep the cube's yaw. The numbers below are the MJCF's link lengths; a
test checks this solution against MuJoCo's forward kinematics.
"""

from __future__ import annotations

import numpy as np

SHOULDER_HEIGHT = 0.10  # shoulder_lift axis above the table (0.06 + 0.04)
UPPER_ARM = 0.15
FOREARM = 0.15
WRIST_TO_TIP = 0.08  # wrist_flex axis to the point between the fingertips (0.03 + 0.05)


def top_down_ik(tip: np.ndarray, yaw: float = 0.0) -> np.ndarray:
    """Joint angles (pan, lift, elbow, wrist_flex, wrist_roll) placing the fingertip centre at ``tip``.

    A hinge about +y by a positive angle tilts a link *down*, so the tool is vertical when the three
    pitch angles add up to pi/2. ``yaw`` is the cube's yaw; the jaws close along a face normal.
    Targets out of reach are pulled back onto the boundary of the workspace rather than raising,
    because the expert interpolates through space and must never crash mid-demo.
    """
    x, y, z = (float(v) for v in tip)
    pan = np.arctan2(y, x)
    r = np.hypot(x, y)
    dr, dz = r, z + WRIST_TO_TIP - SHOULDER_HEIGHT
    reach = np.hypot(dr, dz)
    max_reach = (UPPER_ARM + FOREARM) * 0.999
    if reach > max_reach:
        dr, dz = dr * max_reach / reach, dz * max_reach / reach
        reach = max_reach
    cos_q = (reach**2 - UPPER_ARM**2 - FOREARM**2) / (2 * UPPER_ARM * FOREARM)
    elbow = np.arccos(np.clip(cos_q, -1.0, 1.0))  # >= 0: the elbow bends down, so it sits above the line
    up = np.arctan2(dz, dr) + np.arctan2(FOREARM * np.sin(elbow), UPPER_ARM + FOREARM * np.cos(elbow))
    lift = -up
    wrist = np.pi / 2 - lift - elbow
    # Jaws slide along the hand's y axis, whose yaw is pan + pi/2 - roll; a cube is symmetric
    # under quarter turns, so take the smallest roll that squares the jaws to a face.
    roll = (pan - yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4
    return np.array([pan, lift, elbow, wrist, roll])
