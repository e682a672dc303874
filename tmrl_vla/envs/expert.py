"""A scripted expert for :class:`~tmrl_vla.envs.pick_cube.PickCubeEnv` that reads privileged state.

Motion family (the same for every context shift, since shifts only change pixels): move above the
cube, descend, close the gripper, lift. Waypoints are interpolated in Cartesian space with a
minimum-jerk profile and turned into joint targets by closed-form IK, so the recorded actions are
smooth absolute joint targets like a teleoperator's. Two options make demos varied rather than
one trajectory replayed: a speed factor drawn per episode (phase durations) and Gaussian noise on
the executed joint targets; the recorded action is the one executed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tmrl_vla.envs.kinematics import top_down_ik
from tmrl_vla.envs.pick_cube import CUBE_HALF, GRIPPER_CLOSED, GRIPPER_OPEN, PickCubeConfig, PickCubeEnv


@dataclass(frozen=True)
class ExpertConfig:
    speed_range: tuple[float, float] = (0.8, 1.25)  # per-episode speed factor; > 1 is faster
    action_noise: float = 0.01  # std (rad) of noise on the executed arm joint targets
    gripper_noise: float = 0.002  # std (m) on the gripper target: a loose grip drops the cube
    approach_height: float = 0.07  # fingertip height above the cube centre before descending
    grasp_depth: float = 0.004  # fingertips this far below the cube centre when closing
    lift_height: float = 0.10  # lift the fingertips this far above the grasp point
    # Phase durations in control steps at speed 1 (25 Hz): approach, descend, close, lift.
    phase_steps: tuple[int, int, int, int] = (22, 10, 8, 14)

    def __post_init__(self) -> None:
        lo, hi = self.speed_range
        if not 0 < lo <= hi:
            raise ValueError(f"speed_range must satisfy 0 < low <= high, got {self.speed_range}")
        if self.action_noise < 0 or self.gripper_noise < 0:
            raise ValueError("action_noise and gripper_noise must be >= 0")


def _min_jerk(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s**3 * (10 - 15 * s + 6 * s**2)


class ScriptedExpert:
    """Call :meth:`reset` after ``env.reset`` and :meth:`act` once per step."""

    def __init__(self, config: ExpertConfig | None = None, seed: int | None = None) -> None:
        self.config = config or ExpertConfig()
        self.rng = np.random.default_rng(seed)
        self._plan: list[tuple[np.ndarray, np.ndarray, float, int]] = []

    def reset(self, env: PickCubeEnv) -> None:
        cfg = self.config
        speed = self.rng.uniform(*cfg.speed_range)
        steps = [max(1, round(n / speed)) for n in cfg.phase_steps]
        cube = env.cube_pos()
        start = env.tip_pos()
        above = cube + np.array([0.0, 0.0, cfg.approach_height])
        grasp = cube - np.array([0.0, 0.0, cfg.grasp_depth])
        grasp[2] = max(grasp[2], CUBE_HALF * 0.5)
        lifted = grasp + np.array([0.0, 0.0, cfg.lift_height])
        # (from, to, gripper, steps): a straight-line segment with a fixed gripper command.
        self._plan = [
            (start, above, GRIPPER_OPEN, steps[0]),
            (above, grasp, GRIPPER_OPEN, steps[1]),
            (grasp, grasp, GRIPPER_CLOSED, steps[2]),
            (grasp, lifted, GRIPPER_CLOSED, steps[3]),
        ]
        self._t = 0

    def _waypoint(self, t: int) -> tuple[np.ndarray, float]:
        """Fingertip target and gripper command at step ``t`` of the plan."""
        for begin, end, grip, n in self._plan:
            if t < n:
                return begin + (end - begin) * _min_jerk((t + 1) / n), grip
            t -= n
        _, end, grip, _ = self._plan[-1]  # plan finished: hold the last pose
        return end, grip

    def act(self, env: PickCubeEnv) -> np.ndarray:
        target, grip = self._waypoint(self._t)
        self._t += 1
        action = np.concatenate([top_down_ik(target, yaw=0.0), [grip]])
        std = np.array([self.config.action_noise] * 5 + [self.config.gripper_noise])
        action = action + self.rng.normal(0.0, 1.0, size=action.shape) * std
        return np.clip(action, env.joint_low, env.joint_high).astype(np.float32)


def expert_success(config: PickCubeConfig, episodes: int, *, seed: int = 100_000) -> list[bool]:
    """Whether the scripted expert solves each of ``episodes`` episodes (env seeds ``seed + i``):
    a context shift is a fine-tuning problem only if the motion the demos hold still solves it."""
    env = PickCubeEnv(config)
    expert = ScriptedExpert(seed=seed)
    out = []
    try:
        for i in range(episodes):
            env.reset(seed=seed + i)
            expert.reset(env)
            done, info = False, {}
            while not done:
                _, _, terminated, truncated, info = env.step(expert.act(env))
                done = terminated or truncated
            out.append(bool(info["is_success"]))
    finally:
        env.close()
    return out
