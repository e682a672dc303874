"""LeRobot's own simulated envs behind our env registry (``--env.type=pusht`` and friends).

``make_env("lerobot", env_type="pusht", **config_overrides)`` builds LeRobot's ``EnvConfig``
subclass for ``env_type`` through LeRobot's own config registry, builds *one* gymnasium env from it
(LeRobot only hands out vector envs) and wraps it in :class:`LeRobotEnvAdapter`, which renames
observations to the names LeRobot policies expect.

Env types whose single env this module cannot build the generic way register a builder in
:data:`SINGLE_ENV_BUILDERS` (``gym_manipulator``, i.e. gym-hil, does so in
:mod:`tmrl_vla.envs.gym_hil`). That keeps the dependency one-way: the gym-hil module imports this
one, never the reverse.

LeRobot is imported inside the functions: ``lerobot.envs.configs`` pulls in torch and LeRobot's
processor stack (seconds), which ``import tmrl_vla.envs`` must not pay.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

import tmrl_vla.envs.headless  # noqa: F401  (before the lazy mujoco imports of LeRobot's simulators)
from tmrl_vla.envs.registry import ENVS
from tmrl_vla.registry import Registry, UnknownNameError

if TYPE_CHECKING:
    from lerobot.envs.configs import EnvConfig

OBS_STATE = "observation.state"
OBS_IMAGES_PREFIX = "observation.images."
DEFAULT_TASK = "complete the task"

# pip extras of lerobot 0.6.x that install an env type's simulator. Types missing here have no
# extra (LeRobot installs them from git or Docker images), so the error says that instead.
PIP_EXTRAS: dict[str, str] = {
    "aloha": "aloha",
    "pusht": "pusht",
    "libero": "libero",
    "metaworld": "metaworld",
    "gym_manipulator": "hilserl",
}

# Keys under which envs report success in ``info``; LeRobot's evaluation reads ``is_success``,
# gym-hil reports ``succeed``.
_SUCCESS_KEYS = ("is_success", "succeed", "success")

# LeRobot env type -> f(config, gym_kwargs) -> one gymnasium env, for types that neither
# ``gym.make(config.gym_id)`` nor the config's ``create_envs`` builds the way we need.
SingleEnvBuilder = Callable[["EnvConfig", dict[str, Any]], gym.Env]
SINGLE_ENV_BUILDERS: Registry[SingleEnvBuilder] = Registry("LeRobot single-env builder")


class MissingEnvPackageError(ImportError):
    """An env type's simulator package is not installed; the message says what to pip install."""


def missing_package_error(env_type: str, package: str) -> MissingEnvPackageError:
    extra = PIP_EXTRAS.get(env_type)
    if extra is not None:
        how = f'Install it with: pip install "lerobot[{extra}]"'
    else:
        how = "LeRobot has no pip extra for it; install it as LeRobot's documentation for this benchmark describes"
    return MissingEnvPackageError(
        f"LeRobot env type {env_type!r} needs the package {package!r}, which is not installed. {how}."
    )


def unknown_name_error(kind: str, name: str, known: list[str]) -> UnknownNameError:
    """The same message shape as :meth:`tmrl_vla.registry.Registry.get`, for names we do not own."""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UnknownNameError(f"Unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known) or '(none)'}.")


# ---------------------------------------------------------------------------------- config
def lerobot_env_types() -> list[str]:
    """LeRobot's registered env types (``--env.type`` choices), sorted."""
    from lerobot.envs.configs import EnvConfig

    return sorted(EnvConfig.get_known_choices())


def make_lerobot_env_config(env_type: str, **overrides: Any) -> EnvConfig:
    """LeRobot's config for ``env_type`` with ``overrides`` applied to its dataclass fields.

    Goes through ``EnvConfig.get_choice_class`` (draccus' choice registry, the one behind
    ``--env.type``) so any env type a LeRobot plugin registers works too. Unknown types and unknown
    fields get the registry's did-you-mean error instead of a bare KeyError/TypeError.
    """
    from lerobot.envs.configs import EnvConfig

    known = sorted(EnvConfig.get_known_choices())
    if env_type not in known:
        raise unknown_name_error("LeRobot env type", env_type, known)
    cls = EnvConfig.get_choice_class(env_type)
    field_names = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    for key in overrides:
        if key not in field_names:
            raise unknown_name_error(f"{env_type} config field", key, field_names)
    return cls(**overrides)


# ----------------------------------------------------------------------------- observations
@dataclass(frozen=True)
class _Leaf:
    raw_key: str  # "/"-joined path in the env's (possibly nested) observation dict; "" for a bare array
    target: str  # our key
    kind: str  # "image", "state" (concatenated into observation.state) or "extra" (passed through)


def _flatten_space(space: gym.Space, prefix: str = "") -> Iterator[tuple[str, gym.Space]]:
    if isinstance(space, gym.spaces.Dict):
        for key, sub in space.spaces.items():
            yield from _flatten_space(sub, f"{prefix}/{key}" if prefix else key)
    else:
        yield prefix, space


def _lookup(obs: Any, raw_key: str) -> Any:
    if raw_key:
        for part in raw_key.split("/"):
            obs = obs[part]
    return obs


def _default_target(raw_key: str) -> str:
    """LeRobot's naming for raw keys a config's ``features_map`` does not list (as ``preprocess_observation``)."""
    if raw_key in ("", "agent_pos"):
        return OBS_STATE
    if raw_key == "pixels":
        return "observation.image"
    if raw_key.startswith("pixels/"):
        return OBS_IMAGES_PREFIX + raw_key.removeprefix("pixels/")
    return "observation." + raw_key.replace("/", ".")


class LeRobotEnvAdapter(gym.Wrapper):
    """Presents a LeRobot env in this library's format.

    Observations become a flat dict: every camera as ``observation.images.<name>`` (HxWx3 uint8),
    the robot state as one float32 vector ``observation.state``, anything else (e.g.
    ``observation.environment_state``) as float32 under the name LeRobot gives it. Names come from
    the config's ``features_map`` (raw key -> policy key), so they are the ones LeRobot policies and
    datasets use, with two normalisations our format needs:

    * a single-camera name ``observation.image`` (PushT, Meta-World) becomes
      ``observation.images.<camera>`` (``image`` for a bare ``pixels`` array), because every consumer
      here finds cameras by the ``observation.images.`` prefix; a policy trained on
      ``observation.image`` needs a rename map for it;
    * a state split into parts (LIBERO's ``observation.state.eef_pos`` ...) is concatenated in
      ``features_map`` order, since our format has one state vector. Pixel-only envs get an empty one.

    ``info["is_success"]`` is always present (gym-hil's ``succeed`` counts). ``task`` is the language
    instruction a VLA is conditioned on.
    """

    def __init__(
        self,
        env: gym.Env,
        features_map: Mapping[str, str] | None = None,
        *,
        instruction: str | None = None,
        config_task: str | None = None,
    ) -> None:
        super().__init__(env)
        self._instruction = instruction
        self._config_task = config_task
        self._leaves = self._plan(env.observation_space, dict(features_map or {}))
        self.observation_space = self._converted_space(env.observation_space)

    @staticmethod
    def _plan(space: gym.Space, features_map: dict[str, str]) -> list[_Leaf]:
        order = {key: i for i, key in enumerate(features_map)}
        leaves: list[_Leaf] = []
        for raw_key, sub in _flatten_space(space):
            if not isinstance(sub, gym.spaces.Box):
                continue  # text or discrete side channels carry nothing a policy reads as an array
            target = features_map.get(raw_key) or _default_target(raw_key)
            if sub.dtype == np.uint8 and len(sub.shape) == 3:
                if not target.startswith(OBS_IMAGES_PREFIX):
                    camera = raw_key.rsplit("/", 1)[-1] if "/" in raw_key else "image"
                    target = OBS_IMAGES_PREFIX + camera
                leaves.append(_Leaf(raw_key, target, "image"))
            elif target == OBS_STATE or target.startswith(OBS_STATE + "."):
                leaves.append(_Leaf(raw_key, target, "state"))
            else:
                leaves.append(_Leaf(raw_key, target, "extra"))
        # The exact state key first, then its parts in the order the config lists them.
        leaves.sort(key=lambda leaf: (leaf.kind != "state", leaf.target != OBS_STATE, order.get(leaf.raw_key, 1 << 30)))
        targets = [leaf.target for leaf in leaves if leaf.kind != "state"]
        duplicates = {t for t in targets if targets.count(t) > 1}
        if duplicates:
            raise ValueError(f"features_map sends several observations to {sorted(duplicates)}")
        return leaves

    def _converted_space(self, raw_space: gym.Space) -> gym.spaces.Dict:
        boxes = dict(_flatten_space(raw_space))
        spaces: dict[str, gym.Space] = {}
        lows: list[np.ndarray] = []
        highs: list[np.ndarray] = []
        for leaf in self._leaves:
            box = boxes[leaf.raw_key]
            assert isinstance(box, gym.spaces.Box)
            if leaf.kind == "image":
                spaces[leaf.target] = gym.spaces.Box(0, 255, box.shape, np.uint8)
            elif leaf.kind == "state":
                lows.append(np.asarray(box.low, np.float32).ravel())
                highs.append(np.asarray(box.high, np.float32).ravel())
            else:
                spaces[leaf.target] = gym.spaces.Box(
                    np.asarray(box.low, np.float32), np.asarray(box.high, np.float32), dtype=np.float32
                )
        empty = np.zeros(0, np.float32)
        spaces[OBS_STATE] = gym.spaces.Box(
            np.concatenate(lows) if lows else empty, np.concatenate(highs) if highs else empty, dtype=np.float32
        )
        return gym.spaces.Dict(spaces)

    def observation(self, raw: Any) -> dict[str, np.ndarray]:
        """Convert one raw observation of the wrapped env."""
        out: dict[str, np.ndarray] = {}
        state: list[np.ndarray] = []
        for leaf in self._leaves:
            value = np.asarray(_lookup(raw, leaf.raw_key))
            if leaf.kind == "image":
                if value.dtype != np.uint8 or value.ndim != 3 or value.shape[-1] != 3:
                    raise TypeError(f"{leaf.raw_key!r}: expected an HxWx3 uint8 image, got {value.dtype} {value.shape}")
                out[leaf.target] = np.ascontiguousarray(value)
            elif leaf.kind == "state":
                state.append(value.astype(np.float32).ravel())
            else:
                out[leaf.target] = value.astype(np.float32)
        out[OBS_STATE] = np.concatenate(state) if state else np.zeros(0, np.float32)
        return out

    @staticmethod
    def _info(info: dict[str, Any]) -> dict[str, Any]:
        info = dict(info)
        success = next((info[key] for key in _SUCCESS_KEYS if key in info), False)
        info["is_success"] = bool(np.all(success))
        return info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        raw, info = self.env.reset(seed=seed, options=options)
        return self.observation(raw), self._info(info)

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        raw, reward, terminated, truncated, info = self.env.step(action)
        return self.observation(raw), float(reward), bool(terminated), bool(truncated), self._info(info)

    @property
    def task(self) -> str:
        """The language instruction: an explicit one, else the env's own, else the config's task.

        LeRobot's eval asks the env for ``task_description`` (LIBERO, Meta-World and RoboCasa set it,
        per episode for some), so that wins over the config's ``task``, which for single-task envs
        is often a gym id such as ``PushT-v0`` rather than a sentence.
        """
        if self._instruction:
            return self._instruction
        if self.env.has_wrapper_attr("task_description"):
            description = self.env.get_wrapper_attr("task_description")
            if isinstance(description, str) and description:
                return description
        return self._config_task or DEFAULT_TASK


# --------------------------------------------------------------------------------- building
def _single_env(cfg: EnvConfig, gym_kwargs: dict[str, Any], suite: str | None, task_id: int) -> gym.Env:
    """One gymnasium env for ``cfg``, the way LeRobot's ``make_env`` would build each vector slot."""
    from lerobot.envs.configs import EnvConfig, HubEnvConfig

    if isinstance(cfg, HubEnvConfig):
        raise ValueError(
            f"LeRobot env type {cfg.type!r} downloads and runs code from the Hugging Face Hub; tmrl_vla does "
            "not fetch code from the Hub. Build it with lerobot.envs.factory.make_env and wrap one of its "
            "envs in tmrl_vla.envs.lerobot_adapter.LeRobotEnvAdapter."
        )
    if cfg.type in SINGLE_ENV_BUILDERS:
        # Registered by the modules that know such types; importing this module runs
        # tmrl_vla/envs/__init__.py first, which imports them all, so none is missing here.
        return SINGLE_ENV_BUILDERS.get(cfg.type)(cfg, gym_kwargs)

    if type(cfg).create_envs is EnvConfig.create_envs:
        # Single-task envs: LeRobot's default create_envs is gym.make(gym_id, **gym_kwargs) per slot.
        from gymnasium.envs.registration import registry

        if cfg.gym_id not in registry:
            if importlib.util.find_spec(cfg.package_name) is None:
                raise missing_package_error(cfg.type, cfg.package_name)
            try:
                importlib.import_module(cfg.package_name)
            except ModuleNotFoundError as err:  # installed, but one of its own dependencies is not
                raise missing_package_error(cfg.type, err.name or cfg.package_name) from err
            if cfg.gym_id not in registry:
                prefix = cfg.package_name + "/"
                ids = sorted(i.removeprefix(prefix) for i in registry if i.startswith(prefix))
                raise unknown_name_error(f"{cfg.type} task", str(cfg.task), ids)
        kwargs = {**cfg.gym_kwargs, **gym_kwargs}
        return gym.make(cfg.gym_id, disable_env_checker=cfg.disable_env_checker, **kwargs)

    # Benchmarks (LIBERO, Meta-World, ...) build their envs in their own create_envs; their gym
    # kwargs are derived from config fields, so overrides go through the config instead.
    if gym_kwargs:
        raise ValueError(f"env type {cfg.type!r} takes no gym_kwargs; set its config fields instead")
    try:
        suites = cfg.create_envs(n_envs=1, use_async_envs=False)
    except ModuleNotFoundError as err:
        raise missing_package_error(cfg.type, err.name or cfg.type) from err
    suite = suite or next(iter(suites))
    chosen = None
    try:
        if suite not in suites:
            raise unknown_name_error(f"{cfg.type} suite", suite, sorted(suites))
        if task_id not in suites[suite]:
            raise unknown_name_error(f"{suite} task id", str(task_id), [str(i) for i in sorted(suites[suite])])
        if not hasattr(suites[suite][task_id], "envs"):
            kind = type(suites[suite][task_id]).__name__
            raise TypeError(f"{cfg.type}.create_envs returned {kind}, not a SyncVectorEnv")
        chosen = suites[suite][task_id]
        return chosen.envs[0]
    finally:
        for tasks in suites.values():
            for vec in tasks.values():
                if vec is not chosen:
                    vec.close()


@ENVS.register("lerobot")
def make_lerobot_env(
    env_type: str,
    *,
    gym_kwargs: Mapping[str, Any] | None = None,
    suite: str | None = None,
    task_id: int = 0,
    instruction: str | None = None,
    config: Mapping[str, Any] | None = None,
    **config_overrides: Any,
) -> LeRobotEnvAdapter:
    """One env of LeRobot's type ``env_type`` (``--env.type``), in our observation format.

    ``config_overrides`` set fields of LeRobot's config (``task``, ``obs_type``, ``episode_length``,
    ...); ``config`` takes them as a mapping too, for fields whose names are taken by a parameter
    here or by ``make_env(name, ...)`` itself: gym_manipulator's ``name`` must be passed as
    ``config={"name": "gym_hil"}``. ``gym_kwargs`` are merged over the config's own for envs built
    with ``gym.make`` and for types with a builder in :data:`SINGLE_ENV_BUILDERS` (gym-hil).
    Multi-task benchmarks build every task of the chosen suite and keep ``task_id`` of ``suite``
    (default: the first suite). ``instruction`` overrides the language instruction.

    Raises :class:`MissingEnvPackageError` (an ImportError naming the pip extra) when the simulator is
    not installed, and :class:`~tmrl_vla.registry.UnknownNameError` listing LeRobot's env types for an
    unknown ``env_type``.
    """
    cfg = make_lerobot_env_config(env_type, **{**(config or {}), **config_overrides})
    env = _single_env(cfg, dict(gym_kwargs or {}), suite, task_id)
    return LeRobotEnvAdapter(env, cfg.features_map, instruction=instruction, config_task=cfg.task)
