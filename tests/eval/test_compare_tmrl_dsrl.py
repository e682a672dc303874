import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "eval" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare = load_script("compare_tmrl_dsrl")


def test_tiny_comparison_end_to_end(tiny_base_policy, tiny_adapter, tmp_path, capsys):
    args = [
        "--policy",
        str(tiny_base_policy),
        "--adapter",
        str(tiny_adapter),
        "--seeds",
        "2",
        "--decisions",
        "2",
        "--jobs",
        "1",
        "--tiny",
        "--num-envs",
        "2",
        "--episode-length",
        "6",
        "--out",
        str(tmp_path / "cmp"),
        "--rl.observation.image_grid=1",  # the preset pools on a 2 x 2 grid
        *("--demo-episodes", "1", "--cache-dir", str(tmp_path / "cache")),  # one expert episode in the replay
    ]
    compare.main(args)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) >= {"tmrl_episodes_to_80", "dsrl_episodes_to_80", "ratio", "ratio_ci95", "seeds"}
    assert last["seeds"] == 2 and not math.isnan(last["ratio"])
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "cmp" / "tmrl" / "seed0" / "checkpoints" / f"{2:08d}" / "config.json").read_text())
    assert saved["observation"]["image_grid"] == 1  # the pass-through override reached the runs
    assert saved["demos"]["repo_id"] == "local/moved_camera_demos"  # the shift's demonstrations too
    for agent in ("tmrl", "dsrl"):
        for seed in (0, 1):
            rows = (tmp_path / "cmp" / agent / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()
            assert len(rows) == 2
    compare.main(args)  # finished runs are read back, not trained again
    assert capsys.readouterr().out.strip().splitlines()[-1] == json.dumps(last)


def test_report_summarises_existing_runs_without_building_or_training(tmp_path, monkeypatch, capsys):
    import tmrl_vla.assets
    import tmrl_vla.rl.run

    def refuse(*args, **kwargs):
        raise AssertionError("a report must neither build assets nor train")

    monkeypatch.setattr(tmrl_vla.assets, "build_default_assets", refuse)
    monkeypatch.setattr(tmrl_vla.rl.run, "run_rl", refuse)
    for agent, rates in (("tmrl", [0.5, 0.9]), ("dsrl", [0.3, 0.5, 0.6])):
        run = tmp_path / "cmp" / agent / "seed0"
        run.mkdir(parents=True)
        rows = [
            {
                "decision": 100 * (i + 1),
                "rollout/episodes": 60 * (i + 1),
                "rollout/success_recent": r,
                "rollout/successes": 20 * (i + 1),
                "eval/success_rate": r,
            }
            for i, r in enumerate(rates)
        ]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = str(tmp_path / "cmp")
    compare.main(["--report", "--seeds", "1", "--measure", "training", "--out", out, "--cache-dir", str(tmp_path)])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["tmrl_episodes_to_80"] == 120 and last["dsrl_censored"] == 1 and last["dsrl_episodes_to_80"] == 180
    assert last["decisions_per_run"] == [200, 300] and last["ratio_bound"] == "upper"


def tiny_suite_args(policy, adapter, split, out, *extra):
    return [
        *("--policy", str(policy), "--adapter", str(adapter), "--suite", str(split), "--role", "test"),
        *("--seeds", "1", "--decisions", "2", "--jobs", "1", "--tiny", "--num-envs", "2"),
        *("--episode-length", "6", "--out", str(out), "--rl.observation.image_grid=1", "--demo-episodes", "0", *extra),
    ]


def test_tiny_suite_runs_each_shift_resumes_and_reports_without_training(
    tiny_base_policy, tiny_adapter, tmp_path, monkeypatch, capsys
):
    import tmrl_vla.assets
    import tmrl_vla.rl.run

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"tune": ["moved_camera"], "test": ["dim_light", "green_cube"], "notes": "tests"}))
    out = tmp_path / "suite"
    args = tiny_suite_args(tiny_base_policy, tiny_adapter, split, out)
    compare.main(args)
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["shifts"] == ["dim_light", "green_cube"] and first["role"] == "test"
    assert first["thresholds"] == [0.5, 0.8] and set(first["pooled"]) == {"0.5", "0.8"}
    for pooled in first["pooled"].values():  # two shifts of one seed: the interval comes from the shifts
        assert pooled["ratio"] > 0 and None not in pooled["ratio_ci95"] and pooled["tmrl"]["runs"] == 2
    assert not (out / "moved_camera").exists()  # a tuning shift is not run for --role test
    for shift in ("dim_light", "green_cube"):
        assert (out / shift / "curves.png").stat().st_size > 1000
        assert json.loads((out / shift / "summary.json").read_text())["seeds"] == 1
        assert json.loads((out / shift / "tmrl" / "seed0" / "env.json").read_text())["shift"] == shift
        for threshold in ("0.5", "0.8"):
            assert first["per_shift"][shift][threshold]["dsrl"]["runs"] == 1
    assert json.loads((out / "suite_summary.json").read_text()) == first
    assert (out / "suite.png").stat().st_size > 1000
    metrics = sorted(out.glob("*/*/seed0/metrics.jsonl"))
    assert len(metrics) == 4
    written = [m.stat().st_mtime_ns for m in metrics]

    def refuse(*args, **kwargs):
        raise AssertionError("finished runs are read back: nothing trains or builds assets again")

    monkeypatch.setattr(tmrl_vla.rl.run, "run_rl", refuse)
    monkeypatch.setattr(tmrl_vla.assets, "build_default_assets", refuse)
    compare.main(args)  # the same suite again
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == first
    report = ["--report", "--suite", str(split), "--role", "test", "--seeds", "1", "--decisions", "2"]
    archive = tmp_path / "archive"
    compare.main([*report, "--out", str(out), "--archive", str(archive), "--cache-dir", str(tmp_path)])  # no assets
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert reported["pooled"] == first["pooled"] and reported["per_shift"] == first["per_shift"]
    assert [m.stat().st_mtime_ns for m in metrics] == written
    # the archive holds what a report needs (gzipped metrics, the env), no checkpoints, and reports the same
    assert sorted(p.name for p in (archive / "dim_light" / "tmrl" / "seed0").iterdir()) == [
        "env.json",
        "metrics.jsonl.gz",
    ]
    compare.main([*report, "--out", str(archive)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pooled"] == first["pooled"]
    # the suite again into an empty --out with that archive: its finished runs come back from it (run_rl refuses)
    fresh = tmp_path / "fresh"
    compare.main(tiny_suite_args(tiny_base_policy, tiny_adapter, split, fresh, "--archive", str(archive)))
    printed = capsys.readouterr().out
    assert printed.count("restored from the archive:") == 4
    assert json.loads(printed.strip().splitlines()[-1])["pooled"] == first["pooled"]
    # an interim report: a shift with a run not made yet (or not finished) is left out, and named
    shutil.rmtree(archive / "green_cube" / "dsrl")
    compare.main([*report, "--out", str(archive)])
    printed = capsys.readouterr().out
    interim = json.loads(printed.strip().splitlines()[-1])
    assert interim["shifts"] == ["dim_light"] and interim["left_out"] == {"green_cube": "1 of 2 runs complete"}
    assert "left out of the report: green_cube (1 of 2 runs complete)" in printed
    longer = [*report[:-2], "--decisions", "3", "--out", str(archive)]  # runs shorter than asked are not complete
    assert compare.main(longer) == {"left_out": dict.fromkeys(["dim_light", "green_cube"], "0 of 2 runs complete")}


@pytest.mark.parametrize(
    "split, problem",
    [
        ({"tune": ["moved_camera"], "test": []}, "'test' must be a non-empty list"),
        ({"tune": ["moved_camera"], "test": ["foggy_lens"]}, "unknown shifts in 'test'"),
        ({"tune": ["moved_camera"], "test": ["moved_camera"]}, "in both 'tune' and 'test'"),
    ],
)
def test_a_bad_split_file_is_refused_naming_the_file_and_the_problem(tmp_path, capsys, split, problem):
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    with pytest.raises(SystemExit):
        compare.main(["--suite", str(path), "--role", "test", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert problem in err and str(path) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, problem",
    [
        (["--shift", "foggy_lens"], "unknown --shift 'foggy_lens'; known shifts: "),
        (["--suite", "split.json"], "--suite needs --role"),
        (["--role", "test"], "--role and --thresholds belong to a suite"),
        (["--suite", "split.json", "--role", "test", "--shift", "dim_light"], "--shift and --threshold are for one"),
    ],
)
def test_unknown_shifts_and_mixed_flags_are_refused(tmp_path, capsys, args, problem):
    with pytest.raises(SystemExit):
        compare.main([*args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert problem in err
    if problem.startswith("unknown --shift"):
        assert "dim_light" in err and "moved_camera" in err  # the known ones are named


def test_demo_episodes_record_each_shift_once_and_reach_both_agents(tmp_path, monkeypatch):
    """--demo-episodes records expert demonstrations of each run's own shift into the cache (once) and
    points both agents' rl.demos at them; a report needs none."""
    args, overrides = compare.parse(["--demo-episodes", "1", "--shift", "dim_light", "--cache-dir", str(tmp_path)])
    rl = compare.rl_config(args, overrides)
    with_demos = compare.with_demos(rl, "dim_light", args)
    root = Path(with_demos.demos.root)
    assert with_demos.demos.repo_id == "local/dim_light_demos" and (root / "meta" / "info.json").exists()
    assert root.parent.parent == tmp_path  # in the asset cache
    manifest = json.loads((root.parent / "manifest.json").read_text())
    assert "dim_light" in json.dumps(manifest)  # recorded on the run's shift, not the training scene
    assert compare.with_demos(rl, "dim_light", args).demos.root == str(root)  # built once, then reused
    args.report = True
    assert compare.with_demos(rl, "dim_light", args) is rl
