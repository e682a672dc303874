"""Shared fixtures. Tests never touch the network: the Hub is forced offline for the whole session."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import copy  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny models run fastest single-threaded; CI has two cores for two jobs


@pytest.fixture(scope="session")
def tiny_demos(tmp_path_factory):
    """A 4-episode demo dataset of the default task, recorded once per test session."""
    from tmrl_vla.data.demos import DemoConfig, record_demos

    root = tmp_path_factory.mktemp("demos") / "dataset"
    config = DemoConfig(num_episodes=4, seed=0, repo_id="local/test_demos")
    stats = record_demos(config, root, progress=False)
    return config, root, stats


@pytest.fixture(scope="session")
def tiny_video_demos(tmp_path_factory):
    """``tiny_demos`` recorded again with the cameras as MP4 video (same episodes, same frames)."""
    from tmrl_vla.data.demos import DemoConfig, record_demos

    root = tmp_path_factory.mktemp("video_demos") / "dataset"
    config = DemoConfig(num_episodes=4, seed=0, repo_id="local/test_video_demos")
    stats = record_demos(config, root, progress=False, video=True)
    return config, root, stats


@pytest.fixture(scope="session")
def tiny_base_policy(tiny_demos, tmp_path_factory):
    """A tiny SmolVLA checkpoint trained for a few BC steps on ``tiny_demos`` (a real LeRobot checkpoint)."""
    from lerobot.configs.default import DatasetConfig

    from tmrl_vla.bc import BCConfig, train_bc

    config, root, _ = tiny_demos
    out = tmp_path_factory.mktemp("base_policy")
    train_bc(
        BCConfig(steps=3, batch_size=4, warmup_steps=1, num_threads=1),
        dataset=DatasetConfig(repo_id=config.repo_id, root=str(root)),
        out_dir=out,
        progress=False,
        log=lambda _: None,
    )
    return out


@pytest.fixture(scope="session")
def tiny_adapter(tiny_base_policy, tmp_path_factory):
    """An untrained CSP adapter of ``tiny_base_policy`` saved like a real one (for scripts taking --adapter)."""
    from tmrl_vla.csp.config import CSPConfig
    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.policies import load_lerobot_policy

    policy, _, _ = load_lerobot_policy(tiny_base_policy)
    return CSPPolicy.from_base(policy, CSPConfig(noise_scale="none")).save_pretrained(
        tmp_path_factory.mktemp("tiny_adapter") / "adapter"
    )


@pytest.fixture(scope="module")
def tiny_policy_and_batch():
    """A random tiny SmolVLA, its pre-processor, and one preprocessed training batch (b = 3)."""
    from lerobot.policies.factory import make_pre_post_processors

    from tmrl_vla.models.tiny_smolvla import make_tiny_smolvla

    torch.manual_seed(0)
    policy = make_tiny_smolvla()
    stats = {
        "observation.state": {"mean": torch.zeros(6), "std": torch.ones(6)},
        "action": {"mean": torch.zeros(6), "std": torch.ones(6)},
    }
    pre, _ = make_pre_post_processors(policy.config, dataset_stats=stats)
    g = torch.Generator().manual_seed(1)
    raw = {
        "observation.images.front": torch.rand(3, 3, 64, 64, generator=g),
        "observation.state": torch.randn(3, 6, generator=g),
        "action": torch.randn(3, 10, 6, generator=g),
        "action_is_pad": torch.zeros(3, 10, dtype=torch.bool),
        "task": ["pick up the cube", "pick up the red cube", "lift it"],
    }
    return policy, pre(raw)


@pytest.fixture
def fresh(tiny_policy_and_batch):
    """(a private copy of the policy, the batch, the flow noise used for sampling)."""
    policy, batch = tiny_policy_and_batch
    noise = torch.randn(3, 10, 32, generator=torch.Generator().manual_seed(2))
    return copy.deepcopy(policy), {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}, noise


def tiny_rl_config(**overrides):
    """A TMRL config small enough for a test: 2 envs, tiny critics, a few decisions.

    ``overrides`` name a section (``agent=AgentConfig(...)``, ``sac=SACConfig(...)``), replaced
    whole, or a field of any section (``hidden=32``, ``warmup_decisions=2``, ``total_decisions=4``),
    applied after the sections; ``kind="dsrl"`` picks the agent."""
    import dataclasses

    from tmrl_vla.rl.config import AgentConfig, ObservationConfig, SACConfig, TMRLConfig

    sections = {
        "agent": AgentConfig(hidden=16, num_critics=2),
        "observation": ObservationConfig(),
        "sac": SACConfig(utd=1, batch_size=4, warmup_decisions=1),
    }
    top = dict(num_envs=2, total_decisions=3, eval_every=3, eval_episodes=2, save_every=2)
    fields = {name: {f.name for f in dataclasses.fields(type(c))} for name, c in sections.items()}
    for key, value in overrides.items():
        if key in sections:
            sections[key] = value
    for key, value in overrides.items():
        if key in sections:
            continue
        owner = next((name for name, names in fields.items() if key in names), None)
        if owner is None:
            top[key] = value
        else:
            sections[owner] = dataclasses.replace(sections[owner], **{key: value})
    return TMRLConfig(**sections, **top)


def make_tiny_trainer(base_policy, out, *, log=print, trainer_options=None, **overrides):
    """A TMRLTrainer of ``tiny_rl_config(**overrides)`` steering the tiny policy at ``base_policy``
    (wrapped without an adapter, unit noise scale) on 6-step pick episodes, writing to ``out``;
    ``trainer_options`` are further TMRLTrainer keyword arguments."""
    from tmrl_vla.csp.config import CSPConfig
    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv
    from tmrl_vla.policies import load_lerobot_policy
    from tmrl_vla.rl.trainer import TMRLTrainer

    policy, pre, post = load_lerobot_policy(base_policy)
    return TMRLTrainer(
        tiny_rl_config(**overrides),
        csp=CSPPolicy.from_base(policy, CSPConfig(noise_scale="none")),
        preprocessor=pre,
        postprocessor=post,
        make_env=lambda: PickCubeEnv(PickCubeConfig(episode_length=6)),
        out_dir=out,
        log=log,
        **(trainer_options or {}),
    )


@pytest.fixture
def tiny_rl():
    """``tiny_rl(**overrides)`` -> a test-sized TMRLConfig."""
    return tiny_rl_config


@pytest.fixture(scope="session")
def tiny_dinov2(tmp_path_factory):
    """A tiny random DINOv2-with-registers and its image processor, saved like a Hub checkpoint."""
    from transformers import BitImageProcessor, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = Dinov2WithRegistersConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        patch_size=8,
        image_size=32,
        num_register_tokens=4,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dinov2") / "model"
    model = Dinov2WithRegistersModel(config)
    model.save_pretrained(path)
    processor = BitImageProcessor(
        size={"shortest_edge": 40},
        crop_size={"height": 32, "width": 32},
        do_center_crop=True,
        image_mean=[0.4, 0.5, 0.6],
        image_std=[0.2, 0.25, 0.3],
    )
    processor.save_pretrained(path)
    return path, model.eval(), processor


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """``publish(directory, repo_id)``: put a saved model into a local Hub cache, as a download
    would have, with the Hub offline, so loading by repo id runs the real ``snapshot_download``."""
    import shutil

    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def publish(directory, repo_id: str, commit: str = "0123456789abcdef0123456789abcdef01234567") -> None:
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        shutil.copytree(directory, repo / "snapshots" / commit)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)

    return publish


@pytest.fixture
def hub_repos():
    """What ``fake_hub`` holds: ``{repo_id: {path in the repo: bytes}}``, kept across the pushes of one
    test. A test may edit it, as a person editing a file on the Hub would."""
    return {}


@pytest.fixture
def fake_hub(monkeypatch, tmp_path, hub_repos):
    """Pushes intercepted at the ``huggingface_hub.HfApi`` boundary, nothing sent: a list of the calls,
    ``{"call": "create_repo", "repo_id", **kwargs}`` and ``{"call": "upload_folder", **kwargs,
    "files": {relative path: bytes}}`` (what the folder uploads at that time, after ``allow_patterns``
    and ``ignore_patterns`` as huggingface_hub applies them). Uploads are kept in ``hub_repos``, and
    ``HfApi.hf_hub_download`` serves files from there (one the repo lacks raises the Hub's 404 error,
    ``RemoteEntryNotFoundError``); downloads are not listed in the calls. Commits get oid c0ffee."""
    from pathlib import Path

    import httpx
    from huggingface_hub import CommitInfo, HfApi, RepoUrl
    from huggingface_hub.errors import RemoteEntryNotFoundError
    from huggingface_hub.utils import filter_repo_objects
    from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS

    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append({"call": "create_repo", "repo_id": repo_id, **kwargs})
        hub_repos.setdefault(repo_id, {})
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        names = sorted(f.relative_to(folder).as_posix() for f in folder.rglob("*") if f.is_file())
        ignore = kwargs.get("ignore_patterns") or []
        ignore = [ignore] if isinstance(ignore, str) else list(ignore)
        kept = filter_repo_objects(
            names, allow_patterns=kwargs.get("allow_patterns"), ignore_patterns=ignore + DEFAULT_IGNORE_PATTERNS
        )
        files = {name: (folder / name).read_bytes() for name in kept}
        hub_repos.setdefault(kwargs["repo_id"], {}).update(files)
        calls.append({"call": "upload_folder", **kwargs, "files": files})
        url = f"https://huggingface.co/{kwargs['repo_id']}/commit/c0ffee"
        return CommitInfo(commit_url=url, commit_message=kwargs["commit_message"], commit_description="", oid="c0ffee")

    def hf_hub_download(self, repo_id, filename, *, local_dir=None, **kwargs):
        url = f"https://huggingface.co/{repo_id}/resolve/main/{filename}"
        if filename not in hub_repos.get(repo_id, {}):
            response = httpx.Response(404, request=httpx.Request("HEAD", url))
            raise RemoteEntryNotFoundError(f"404 Client Error: entry not found for url: {url}", response=response)
        target = Path(local_dir or tmp_path / "fake_hub_downloads") / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(hub_repos[repo_id][filename])
        return str(target)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(HfApi, "hf_hub_download", hf_hub_download)
    return calls


@pytest.fixture(autouse=True)
def patient_servo_bus(request, monkeypatch):
    """Tests of the robots package drive an emulated servo bus that answers from a thread of the
    test process, on a machine that may run other jobs: every FeetechMotorsBus made in them waits
    200 ms longer for a reply than LeRobot's ~50 ms (as the simulated arm's does, through
    ``widen_reply_window``), so what they check is the protocol, not the host's scheduling."""
    if "robots" not in request.node.path.parts:
        return
    from lerobot.motors.feetech import feetech

    set_timeout = feetech.patch_setPacketTimeout  # what every FeetechMotorsBus installs on its port

    def patient(port, packet_length):
        set_timeout(port, packet_length)
        port.packet_timeout += 200

    monkeypatch.setattr(feetech, "patch_setPacketTimeout", patient)


def wait_for(condition, timeout=2.0):
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; returns its last value."""
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.01)
    return condition()
