"""The default task: an SO-100-like arm picks up a cube, in MuJoCo, rendered at 64x64.

Why our own scene rather than gym-hil's Panda: that scene carries ~192k mesh triangles and renders
at a few steps per second in software GL, far too slow for RL seeds on a CPU. This one is a
handful of primitives and steps at hundreds of frames per second with a camera.

The task is built as a *fine-tuning problem*, not just a scene:

* the cube is placed anywhere in a region several gripper-widths across, so a policy that does not
  read the image reaches the average position and misses (check: swapping images between
  episodes collapses the BC policy's success);
* a :class:`ContextShift` changes what the camera sees (cube colour, a distractor, lighting, the
  camera pose) but not the motion that solves the task, so the scripted expert still solves the
  shifted task with the same motion family while a BC policy trained on unshifted demos does not.

Observations follow LeRobot's naming (``observation.images.<camera>`` as HxWx3 uint8,
``observation.state`` as joint positions) and actions are absolute joint-position targets, as a
real SO-100/SO-101 follower takes them in ``send_action``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import gymnasium as gym
import mujoco  # noqa: E402, I001
import numpy as np

import tmrl_vla.envs.headless  # noqa: F401, I001  (must precede the first mujoco import)
from tmrl_vla.envs.kinematics import top_down_ik
from tmrl_vla.envs.registry import ENVS, check_env_options

JOINT_NAMES: tuple[str, ...] = (
    "shoulder_pan",
    "shoulder_lift",
    "elbow_flex",
    "wrist_flex",
    "wrist_roll",
    "gripper",
)
GRIPPER_OPEN = 0.04  # finger opening (m): the cube is 0.04 wide, so open leaves 4 cm of slack
GRIPPER_CLOSED = 0.0
CUBE_HALF = 0.02
RED = (0.85, 0.12, 0.10, 1.0)
TABLE = (0.55, 0.52, 0.48, 1.0)  # the scene file's table colour


@dataclass(frozen=True)
class ContextShift:
    """What differs between the demos' world and the fine-tuning world (visual context only).

    The defaults are the demo world. Every field changes pixels, none changes the dynamics or the
    motion needed, so a shifted task is solvable with actions the demos already contain.
    """

    cube_rgba: tuple[float, float, float, float] = RED  # the cube's colour, RGBA in [0, 1]
    distractor: bool = False  # a second, blue cube somewhere else in the region
    light_scale: float = 1.0  # multiplies the key light and the headlight
    camera_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # metres, added to the front camera
    # Degrees the front camera turns about its own viewing axis (the image rotates the other way).
    camera_roll: float = 0.0
    table_rgba: tuple[float, float, float, float] = TABLE  # the table's colour, RGBA in [0, 1]
    # Multiplies the key light's colour per channel (R, G, B): a tinted light, same brightness range.
    light_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # Multiplies the cube's size. The motion stays the one the demos hold as long as the open
    # gripper still fits around it (it opens to GRIPPER_OPEN = 0.04 m, twice CUBE_HALF): <= 1.
    cube_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("cube_rgba", "table_rgba"):
            value = getattr(self, name)
            if len(value) != 4 or not all(0.0 <= c <= 1.0 for c in value):
                raise ValueError(f"{name} must be 4 values in [0, 1], got {value}")
        if self.light_scale < 0:
            raise ValueError(f"light_scale must be >= 0, got {self.light_scale}")
        if len(self.light_rgb) != 3 or min(self.light_rgb) < 0:
            raise ValueError(f"light_rgb must be 3 values >= 0, got {self.light_rgb}")
        if len(self.camera_offset) != 3:
            raise ValueError(f"camera_offset must have 3 values, got {self.camera_offset}")
        if not 0.5 <= self.cube_scale <= 1.0:
            raise ValueError(
                f"cube_scale must lie in [0.5, 1]: a larger cube no longer fits the open gripper, got {self.cube_scale}"
            )


# Named shifts. "moved_camera" is the default fine-tuning task (the README says how it was picked).
SHIFTS: dict[str, ContextShift] = {
    "none": ContextShift(),
    "green_cube": ContextShift(cube_rgba=(0.15, 0.75, 0.20, 1.0)),
    "blue_cube": ContextShift(cube_rgba=(0.10, 0.30, 0.85, 1.0)),
    "distractor": ContextShift(distractor=True),
    "dim_light": ContextShift(light_scale=0.4),
    "moved_camera": ContextShift(camera_offset=(0.0, 0.04, 0.02)),
    "camera_left": ContextShift(camera_offset=(0.0, -0.04, 0.02)),
    "camera_high": ContextShift(camera_offset=(0.06, 0.0, 0.08)),
    "camera_low": ContextShift(camera_offset=(-0.03, 0.0, -0.05)),
    "rolled_camera": ContextShift(camera_roll=45.0),
    "dark_table": ContextShift(table_rgba=(0.18, 0.2, 0.24, 1.0)),
    "warm_light": ContextShift(light_rgb=(1.0, 0.6, 0.3)),
    "small_cube": ContextShift(cube_scale=0.5),
}


@dataclass(frozen=True)
class PickCubeConfig:
    """Configuration of :class:`PickCubeEnv`. The defaults are the demo (in-distribution) task."""

    image_size: int = 64  # every camera renders image_size x image_size pixels
    cameras: tuple[str, ...] = ("front",)  # any of "front", "wrist"
    episode_length: int = 100  # control steps (25 Hz: 4 s)
    control_substeps: int = 10  # physics steps of 4 ms per control step
    cube_x_range: tuple[float, float] = (0.13, 0.23)  # metres, in front of the base
    cube_y_range: tuple[float, float] = (-0.09, 0.09)  # metres, sideways of the base
    lift_height: float = 0.04  # the cube's bottom must rise this far ...
    hold_steps: int = 3  # ... for this many consecutive control steps
    task: str = "pick up the cube"  # the language instruction given to the policy
    shift: ContextShift = field(default_factory=ContextShift)  # what the camera sees differently (none by default)

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        unknown = set(self.cameras) - {"front", "wrist"}
        if not self.cameras or unknown:
            raise ValueError(f"cameras must be a non-empty subset of ('front', 'wrist'), got {self.cameras}")
        for name, (lo, hi) in (("cube_x_range", self.cube_x_range), ("cube_y_range", self.cube_y_range)):
            if lo > hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
        if self.episode_length < 1 or self.control_substeps < 1 or self.hold_steps < 1:
            raise ValueError("episode_length, control_substeps and hold_steps must be >= 1")

    @classmethod
    def with_shift(cls, shift: str | ContextShift, **kwargs: Any) -> PickCubeConfig:
        """A config whose context shift is a named one (see ``SHIFTS``) or given explicitly."""
        if isinstance(shift, str):
            if shift not in SHIFTS:
                raise ValueError(f"Unknown context shift {shift!r}; known: {', '.join(sorted(SHIFTS))}")
            shift = SHIFTS[shift]
        return cls(shift=shift, **kwargs)

    def image_key(self, camera: str) -> str:
        return f"observation.images.{camera}"


def _model_xml() -> str:
    return (resources.files("tmrl_vla.envs") / "assets" / "so100_pick_cube.xml").read_text()


class PickCubeEnv(gym.Env):
    """SO-100-like pick-cube task. Sparse reward 1 on success, which also terminates the episode.

    ``info["is_success"]`` follows LeRobot's evaluation convention. Episodes are repeatable: all
    randomness comes from the env's own generator, seeded through ``reset(seed=...)``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}

    def __init__(self, config: PickCubeConfig | None = None) -> None:
        self.config = config or PickCubeConfig()
        self.model = mujoco.MjModel.from_xml_string(_model_xml())
        self.data = mujoco.MjData(self.model)
        self._apply_shift(self.config.shift)

        m = self.model
        self._arm_qpos = np.array([m.jnt_qposadr[m.joint(n).id] for n in JOINT_NAMES])
        self._cube_qpos = m.jnt_qposadr[m.joint("cube").id]
        self._distractor_qpos = m.jnt_qposadr[m.joint("distractor").id]
        self._mirror_qpos = m.jnt_qposadr[m.joint("gripper_mirror").id]
        self._tip_site = m.site("tip").id
        self.joint_low = m.jnt_range[[m.joint(n).id for n in JOINT_NAMES], 0].astype(np.float32)
        self.joint_high = m.jnt_range[[m.joint(n).id for n in JOINT_NAMES], 1].astype(np.float32)

        size = self.config.image_size
        try:
            self._renderer = mujoco.Renderer(m, size, size)
        except mujoco.FatalError as err:
            raise RuntimeError(
                "MuJoCo could not create an offscreen GL context. On a machine without a display set "
                "MUJOCO_GL=egl (or osmesa) before mujoco is first imported - importing tmrl_vla.envs first "
                "does this - and install the EGL packages (see install.sh)."
            ) from err
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

        images = {
            self.config.image_key(cam): gym.spaces.Box(0, 255, (size, size, 3), np.uint8) for cam in self.config.cameras
        }
        self.observation_space = gym.spaces.Dict(
            {**images, "observation.state": gym.spaces.Box(self.joint_low, self.joint_high, dtype=np.float32)}
        )
        self.action_space = gym.spaces.Box(self.joint_low, self.joint_high, dtype=np.float32)
        self.home_qpos = home_pose(self)
        self._held = 0
        self._t = 0

    # ----------------------------------------------------------------------------------- setup
    def _apply_shift(self, shift: ContextShift) -> None:
        m = self.model
        m.geom_rgba[m.geom("cube").id] = shift.cube_rgba
        m.geom_rgba[m.geom("table").id] = shift.table_rgba
        m.geom_size[m.geom("cube").id] *= shift.cube_scale
        light = m.light("key").id
        m.light_diffuse[light] *= shift.light_scale * np.asarray(shift.light_rgb)
        m.vis.headlight.ambient[:] = np.asarray(m.vis.headlight.ambient) * shift.light_scale
        m.vis.headlight.diffuse[:] = np.asarray(m.vis.headlight.diffuse) * shift.light_scale
        camera = m.camera("front").id
        m.cam_pos[camera] += np.asarray(shift.camera_offset)
        if shift.camera_roll:
            half = np.deg2rad(shift.camera_roll) / 2  # about the camera's own z axis, its viewing axis
            rolled = np.zeros(4)
            mujoco.mju_mulQuat(rolled, m.cam_quat[camera].copy(), np.array([np.cos(half), 0.0, 0.0, np.sin(half)]))
            m.cam_quat[camera] = rolled

    @property
    def task(self) -> str:
        return self.config.task

    # ------------------------------------------------------------------------- privileged state
    def cube_pos(self) -> np.ndarray:
        return self.data.qpos[self._cube_qpos : self._cube_qpos + 3].copy()

    def tip_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._tip_site].copy()

    def joint_pos(self) -> np.ndarray:
        return self.data.qpos[self._arm_qpos].astype(np.float32)

    # ----------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        cfg = self.config
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._arm_qpos] = self.home_qpos
        self.data.qpos[self._mirror_qpos] = self.home_qpos[-1]
        self.data.ctrl[:] = self.home_qpos

        rng = self.np_random
        cube_xy = np.array([rng.uniform(*cfg.cube_x_range), rng.uniform(*cfg.cube_y_range)])
        self._place(self._cube_qpos, cube_xy)
        if cfg.shift.distractor:
            for _ in range(100):  # rejection-sample a spot at least two cube widths away
                xy = np.array([rng.uniform(*cfg.cube_x_range), rng.uniform(*cfg.cube_y_range)])
                if np.linalg.norm(xy - cube_xy) > 0.07:
                    break
            self._place(self._distractor_qpos, xy)
        mujoco.mj_forward(self.model, self.data)
        self._cube_z0 = self.cube_pos()[2]
        self._held = 0
        self._t = 0
        return self._observation(), {"is_success": False}

    def _place(self, adr: int, xy: np.ndarray) -> None:
        half = CUBE_HALF * (self.config.shift.cube_scale if adr == self._cube_qpos else 1.0)
        self.data.qpos[adr : adr + 3] = (xy[0], xy[1], half)
        self.data.qpos[adr + 3 : adr + 7] = (1.0, 0.0, 0.0, 0.0)

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (len(JOINT_NAMES),):
            raise ValueError(f"action must have shape ({len(JOINT_NAMES)},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains non-finite values: {action}")
        self.data.ctrl[:] = np.clip(action, self.joint_low, self.joint_high)
        mujoco.mj_step(self.model, self.data, nstep=self.config.control_substeps)
        self._t += 1

        lifted = self.cube_pos()[2] - self._cube_z0 > self.config.lift_height
        self._held = self._held + 1 if lifted else 0
        success = self._held >= self.config.hold_steps
        truncated = not success and self._t >= self.config.episode_length
        return self._observation(), float(success), success, truncated, {"is_success": success}

    def _observation(self) -> dict[str, np.ndarray]:
        obs = {"observation.state": self.joint_pos()}
        for cam in self.config.cameras:
            self._renderer.update_scene(self.data, camera=cam)
            obs[self.config.image_key(cam)] = self._renderer.render().copy()
        return obs

    def render(self) -> np.ndarray:
        self._renderer.update_scene(self.data, camera="front")
        return self._renderer.render().copy()

    def close(self) -> None:
        renderer = getattr(self, "_renderer", None)
        if renderer is not None:
            renderer.close()
            self._renderer = None


def home_pose(env: PickCubeEnv) -> np.ndarray:
    """The fixed start pose: gripper open and pointing down, above the near edge of the region."""
    arm = top_down_ik(np.array([0.12, 0.0, 0.16]), yaw=0.0)
    return np.concatenate([arm, [GRIPPER_OPEN]]).astype(np.float64)


@ENVS.register("so100_pick_cube")
def make_so100_pick_cube(shift: str | ContextShift = "none", **kwargs: Any) -> PickCubeEnv:
    """The default pick task; ``shift`` names a context shift (``SHIFTS``) or gives one; other options
    are :class:`PickCubeConfig` fields."""
    check_env_options("so100_pick_cube", PickCubeConfig, kwargs)
    if isinstance(kwargs.get("cameras"), list):
        kwargs["cameras"] = tuple(kwargs["cameras"])
    return PickCubeEnv(PickCubeConfig.with_shift(shift, **kwargs))
