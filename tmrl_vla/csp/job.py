"""The job behind ``recipes/train_csp.py``: a CSP adapter for a user's own LeRobot VLA, trained on
their own LeRobotDataset, with lerobot-train's names and habits.

Flags are lerobot-train's where it has one (``--policy.path``, ``--dataset.repo_id``,
``--dataset.root``, ``--steps``, ``--batch_size``, ``--num_workers``, ``--save_freq``,
``--log_freq``, ``--seed``, ``--output_dir``, ``--resume``, ``--wandb.enable``), plus
``--push_to_hub`` / ``--hub.repo_id``; every other field of
:class:`~tmrl_vla.csp.trainer.CSPTrainConfig` is a flag of its own (``--lr``, ``--csp.lora_r``).

The output is LeRobot's layout: ``<output_dir>/checkpoints/<step>/pretrained_model`` holds an
adapter that ``lerobot-eval --policy.path=<it> --policy.use_peft=true`` and
``CSPPolicy.from_pretrained`` both load, ``checkpoints/last`` the newest, and ``--resume=true``
continues from it in the same data order.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import draccus
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from lerobot.configs.default import DatasetConfig, WandBConfig

from tmrl_vla.config_tools import config_differences, parse_config
from tmrl_vla.csp.serialization import hub_name, save_adapter
from tmrl_vla.csp.trainer import CSPTrainConfig, train_csp
from tmrl_vla.hub import check_repo_id, push_to_hub
from tmrl_vla.training import CHECKPOINTS, LAST, PRETRAINED

JOB_CONFIG_FILE = "train_config.json"  # the job's config, beside each checkpoint's adapter (as lerobot-train's)
ALIASES = {"--save_freq": "--save_every", "--log_freq": "--log_every"}


@dataclass(frozen=True)
class BasePolicy:
    path: str | None = None  # the LeRobot checkpoint to adapt: a directory or a Hub repo id (required)
    revision: str | None = None  # the Hub revision (branch, tag or commit) of that repo id


@dataclass(frozen=True)
class HubTarget:
    repo_id: str | None = None  # where --push_to_hub=true uploads the final adapter (user/name)
    private: bool | None = None  # create the repo private; None: the Hub's default


# What a resumed run may change: how long it runs, how it reads and reports, where it publishes.
RESUMABLE_CHANGES = (
    *("steps", "num_workers", "num_threads", "log_every", "save_every", "resume", "output_dir", "push_to_hub"),
    "dataset.video_backend",
    *(f"wandb.{f.name}" for f in dataclasses.fields(WandBConfig)),
    *(f"hub.{f.name}" for f in dataclasses.fields(HubTarget)),
)


@dataclass(frozen=True)
class TrainCSPJob(CSPTrainConfig):
    policy: BasePolicy = field(default_factory=BasePolicy)  # the frozen VLA the adapter is trained on
    # The LeRobotDataset to train on (--dataset.repo_id, --dataset.root, --dataset.episodes,
    # --dataset.image_transforms.enable, ...), read as lerobot-train reads it.
    # Videos decode with pyav unless --dataset.video_backend=torchcodec: pyav always loads, torchcodec
    # needs FFmpeg libraries of the system (where they are missing, LeRobot prints a traceback per process).
    dataset: DatasetConfig = field(default_factory=lambda: DatasetConfig(repo_id="", video_backend="pyav"))
    output_dir: str | None = None  # where checkpoints and metrics go; None: outputs/train_csp/<date>/<time>
    resume: bool = False  # continue the run in output_dir from checkpoints/last
    wandb: WandBConfig = field(default_factory=WandBConfig)  # LeRobot's Weights & Biases settings (--wandb.enable)
    push_to_hub: bool = False  # upload the final adapter, with its card, to hub.repo_id (main process)
    hub: HubTarget = field(default_factory=HubTarget)  # the repo --push_to_hub uploads to

    def train_config(self) -> CSPTrainConfig:
        """The trainer's own config: this job's fields that CSPTrainConfig has."""
        return CSPTrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(CSPTrainConfig)})


def parse_args(preset: TrainCSPJob | None = None, args: list[str] | None = None) -> TrainCSPJob:
    """The recipe's command line over ``preset`` (``--save_freq``/``--log_freq`` as lerobot-train names them)."""
    return parse_config(preset or TrainCSPJob(), args, ALIASES)


def check_job(job: TrainCSPJob) -> Path:
    """Refuse a job that cannot run, before anything is loaded, trained, written or sent; returns
    the output directory."""
    if not job.policy.path:
        raise ValueError("--policy.path is required: the LeRobot checkpoint (directory or Hub repo id) to adapt")
    if not job.dataset.repo_id:
        raise ValueError("--dataset.repo_id is required (with --dataset.root for a dataset on disk)")
    if job.push_to_hub:
        if not job.hub.repo_id:
            raise ValueError("--push_to_hub=true needs --hub.repo_id=<user>/<name>")
        check_repo_id(job.hub.repo_id)
    out = Path(job.output_dir or default_output_dir())
    last = out / CHECKPOINTS / LAST / PRETRAINED
    if job.resume:
        if not last.is_dir():
            raise FileNotFoundError(f"--resume=true, but {out} holds no checkpoint ({last} is missing)")
        saved = json.loads((last / JOB_CONFIG_FILE).read_text())
        differ = config_differences(saved, draccus.encode(job), ignore=RESUMABLE_CHANGES)
        if differ:
            raise ValueError(
                f"The run in {out} was started with other settings; resume it with the same ones or start a "
                f"new --output_dir. Differences (saved vs now): {'; '.join(differ)}"
            )
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"{out} already holds files (another run?). Continue that run with --resume=true, or choose another "
            "--output_dir."
        )
    return out


def default_output_dir() -> str:
    """``outputs/train_csp/<date>/<time>`` as the main process reads the clock, the same on every process."""
    stamp = [datetime.now().strftime("%Y-%m-%d/%H-%M-%S")]
    if PartialState().num_processes > 1:
        broadcast_object_list(stamp)  # two processes may read the clock on either side of a second
    return f"outputs/train_csp/{stamp[0]}"


def train(job: TrainCSPJob) -> dict:
    """Train (or resume) the adapter, then push it if asked; returns the trainer's summary."""
    out = check_job(job)
    on_row = wandb_logger(job, out) if job.wandb.enable else None

    def add_job_config(directory: Path) -> None:
        (directory / JOB_CONFIG_FILE).write_text(json.dumps(draccus.encode(job), indent=2))

    result = train_csp(
        job.train_config(),
        base_policy_dir=job.policy.path,
        base_revision=job.policy.revision,
        dataset=job.dataset,
        out_dir=out,
        checkpoints=True,
        on_row=on_row,
        on_export=add_job_config,
    )
    final = out / CHECKPOINTS / LAST / PRETRAINED
    result["adapter_dir"] = final
    if PartialState().is_main_process:
        print(f"CSP adapter: {final}\nRun it with LeRobot: lerobot-eval --policy.path={final} --policy.use_peft=true")
        if job.push_to_hub:

            def save(folder: Path) -> None:
                save_adapter(result["csp"], folder, repo_id=job.hub.repo_id)
                (folder / JOB_CONFIG_FILE).write_text(json.dumps(shareable(job), indent=2))

            message = f"Upload CSP adapter ({result['steps']} steps)"
            result["commit_url"] = push_to_hub(save, job.hub.repo_id, private=job.hub.private, message=message)
            print(f"pushed to {result['commit_url']}")
    return result


def shareable(job: TrainCSPJob) -> dict:
    """The job's config as pushed to the Hub: the paths of this machine (output directory, dataset
    root, a base given as a directory) are left out; repo ids stay."""
    config = draccus.encode(job)
    config["output_dir"] = None
    config["dataset"]["root"] = None
    config["policy"]["path"] = hub_name(job.policy.path)  # as the adapter's card names it
    return config


def wandb_logger(job: TrainCSPJob, out: Path):
    """``on_row`` for Weights & Biases, on the main process (LeRobot's WandBLogger needs lerobot-train's
    whole pipeline config, so the run is started here with the same settings)."""
    if not PartialState().is_main_process:
        return None
    try:
        import wandb
    except ImportError as err:
        raise ImportError("--wandb.enable=true needs the wandb package: pip install wandb") from err
    w, run = job.wandb, None

    def log(row: dict) -> None:
        nonlocal run
        if run is None:  # started with the first row: a job refused up front leaves no W&B run behind
            run = wandb.init(
                project=w.project,
                entity=w.entity,
                notes=w.notes,
                id=w.run_id,
                mode=w.mode or "online",
                dir=str(out),
                config=draccus.encode(job),
                job_type="train_csp",
                resume="allow" if job.resume else None,
            )
        run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    return log
