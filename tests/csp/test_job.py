"""recipes/train_csp.py: lerobot-train's flags, refused jobs, checkpoints, resume, pushes and W&B."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from huggingface_hub.repocard import metadata_load

from tmrl_vla.csp.job import TrainCSPJob, check_job, parse_args, train

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "train_csp.py"
FAST = ["--batch_size=4", "--num_workers=0", "--warmup_steps=1", "--calibration_batches=1", "--num_threads=1"]


def flags(base, demos, out, *extra) -> list[str]:
    config, root, _ = demos
    data = [f"--dataset.repo_id={config.repo_id}", f"--dataset.root={root}", "--dataset.video_backend=pyav"]
    return [f"--policy.path={base}", *data, f"--output_dir={out}", *FAST, *extra]


def test_lerobot_train_flags():
    job = parse_args(
        args=[
            "--policy.path=lerobot/smolvla_base",
            "--policy.revision=v1",
            "--dataset.repo_id=you/data",
            "--dataset.root=data/you",
            "--steps=10",
            "--batch_size=8",
            "--num_workers=3",
            "--save_freq=5",
            "--log_freq=2",
            "--seed=7",
            "--lr=3e-4",
            "--csp.lora_r=8",
            "--dataset.image_transforms.enable=true",
            "--wandb.enable=true",
            "--push_to_hub=true",
            "--hub.repo_id=you/csp",
        ]
    )
    assert (job.policy.path, job.policy.revision, job.dataset.repo_id, job.dataset.root) == (
        "lerobot/smolvla_base",
        "v1",
        "you/data",
        "data/you",
    )
    assert (job.steps, job.batch_size, job.num_workers, job.save_every, job.log_every, job.seed) == (10, 8, 3, 5, 2, 7)
    assert job.lr == 3e-4 and job.csp.lora_r == 8 and job.dataset.image_transforms.enable
    assert job.wandb.enable and job.push_to_hub and job.hub.repo_id == "you/csp"
    assert job.train_config().steps == 10 and job.data_loader == "stream"


@pytest.mark.parametrize(
    "args, error, match",
    [
        (["--dataset.repo_id=a/b"], ValueError, "--policy.path is required"),
        (["--policy.path=a/b"], ValueError, "--dataset.repo_id is required"),
        (["--policy.path=a/b", "--dataset.repo_id=a/b", "--push_to_hub=true"], ValueError, "needs --hub.repo_id"),
        (
            ["--policy.path=a/b", "--dataset.repo_id=a/b", "--push_to_hub=true", "--hub.repo_id=not a repo"],
            ValueError,
            "Repo id",
        ),
        (["--policy.path=a/b", "--dataset.repo_id=a/b", "--resume=true"], FileNotFoundError, "holds no checkpoint"),
    ],
)
def test_jobs_that_cannot_run_are_refused_before_anything_happens(tmp_path, args, error, match):
    out = tmp_path / "out"
    with pytest.raises(error, match=match):
        check_job(parse_args(args=[*args, f"--output_dir={out}"]))
    assert not out.exists()


def test_an_output_directory_holding_files_is_refused(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(FileExistsError, match="--resume=true"):
        check_job(parse_args(args=["--policy.path=a/b", "--dataset.repo_id=a/b", f"--output_dir={tmp_path}"]))


def run_recipe(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(RECIPE), *args], env=env, capture_output=True, text=True, timeout=300)


def test_the_recipe_trains_on_a_video_dataset_then_resumes_and_refuses_changes(
    tmp_path, tiny_base_policy, tiny_video_demos
):
    out = tmp_path / "run"
    first = run_recipe(flags(tiny_base_policy, tiny_video_demos, out, "--steps=2", "--save_freq=1", "--log_freq=1"))
    assert first.returncode == 0, first.stderr[-3000:]
    last = out / "checkpoints" / "last" / "pretrained_model"
    assert f"lerobot-eval --policy.path={last} --policy.use_peft=true" in first.stdout
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["000001", "000002", "last"]
    assert {"adapter_model.safetensors", "csp_config.json", "config.json", "train_config.json", "README.md"} <= {
        p.name for p in last.iterdir()
    }
    assert "sigma_0.00-0.25=" in first.stderr  # the bar shows the loss per sigma bucket

    # the recipe's own refusals, checked in this process (a recipe run costs seconds of imports)
    with pytest.raises(FileExistsError, match="--resume=true"):
        check_job(parse_args(args=flags(tiny_base_policy, tiny_video_demos, out, "--steps=2")))
    with pytest.raises(ValueError, match=r"lr \(0.001 vs 0.5\)"):
        check_job(
            parse_args(args=flags(tiny_base_policy, tiny_video_demos, out, "--steps=3", "--resume=true", "--lr=0.5"))
        )

    resumed = run_recipe(flags(tiny_base_policy, tiny_video_demos, out, "--steps=3", "--resume=true", "--log_freq=1"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step 2" in resumed.stdout + resumed.stderr
    assert (out / "checkpoints" / "last").readlink().name == "000003"
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_push_to_hub_uploads_the_adapter_with_its_card_and_no_local_paths(
    tmp_path, tiny_base_policy, tiny_video_demos, fake_hub, monkeypatch
):
    logged = []
    fake_wandb = types.SimpleNamespace(
        init=lambda **kw: (
            logged.append(("init", kw)) or types.SimpleNamespace(log=lambda row, step: logged.append((step, row)))
        )
    )
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb)
    out = tmp_path / "run"
    args = ["--steps=2", "--log_freq=1", "--push_to_hub=true", "--hub.repo_id=someone/tiny-csp", "--wandb.enable=true"]
    result = train(parse_args(args=flags(tiny_base_policy, tiny_video_demos, out, *args)))
    assert result["commit_url"] == "https://huggingface.co/someone/tiny-csp/commit/c0ffee"
    upload = next(c for c in fake_hub if c["call"] == "upload_folder")
    assert upload["commit_message"] == "Upload CSP adapter (2 steps)"
    files = upload["files"]
    assert {"adapter_model.safetensors", "adapter_config.json", "csp_config.json", "config.json", "README.md"} <= set(
        files
    )
    card_path = tmp_path / "README.md"
    card_path.write_bytes(files["README.md"])
    assert "datasets" not in metadata_load(card_path)  # local/...: on disk only, no Hub page to name
    assert "lerobot-eval --policy.path=someone/tiny-csp --policy.use_peft=true" in files["README.md"].decode()
    for name in ("README.md", "train_config.json", "csp_config.json"):
        text = files[name].decode()
        assert str(tmp_path) not in text and str(out) not in text, name
    assert json.loads(files["train_config.json"])["hub"]["repo_id"] == "someone/tiny-csp"
    assert logged[0][0] == "init" and logged[0][1]["job_type"] == "train_csp"
    assert [step for step, _ in logged[1:]] == [1, 2] and "csp/loss" in logged[1][1]


def test_the_default_job_is_refused_with_what_to_pass():
    with pytest.raises(ValueError, match="--policy.path is required"):
        train(TrainCSPJob())


@pytest.mark.parametrize("what", ["policy", "dataset"])
def test_absent_repo_ids_say_how_to_fix_and_write_nothing(
    tmp_path, tiny_base_policy, tiny_video_demos, what, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    config, root, _ = tiny_video_demos
    out = tmp_path / "run"
    if what == "policy":
        args = ["--policy.path=someone/absent-policy", f"--dataset.repo_id={config.repo_id}", f"--dataset.root={root}"]
        match = "not in the local Hub cache.*huggingface-cli download someone/absent-policy"
    else:
        args = [f"--policy.path={tiny_base_policy}", "--dataset.repo_id=someone/absent-data"]
        match = "No LeRobot dataset 'someone/absent-data'.*--dataset.root="
    with pytest.raises(FileNotFoundError, match=match):
        train(parse_args(args=[*args, f"--output_dir={out}", "--steps=1"]))
    assert not out.exists()


def test_a_resume_may_change_how_long_and_how_it_reports_but_not_what_it_trains(tmp_path):
    import draccus

    base = ["--policy.path=a/b", "--dataset.repo_id=a/b", f"--output_dir={tmp_path}"]
    last = tmp_path / "checkpoints" / "last" / "pretrained_model"
    last.mkdir(parents=True)
    (last / "train_config.json").write_text(json.dumps(draccus.encode(parse_args(args=base))))
    allowed = ["--resume=true", "--steps=9000", "--num_workers=8", "--wandb.enable=true", "--push_to_hub=true"]
    assert check_job(parse_args(args=[*base, *allowed, "--hub.repo_id=me/csp"])) == tmp_path
    with pytest.raises(ValueError, match=r"csp.lora_r \(16 vs 8\)"):
        check_job(parse_args(args=[*base, "--resume=true", "--csp.lora_r=8"]))
