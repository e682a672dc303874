import importlib.util
import json
import math
from pathlib import Path

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
    ]
    compare.main(args)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) >= {"tmrl_episodes_to_80", "dsrl_episodes_to_80", "ratio", "ratio_ci95", "seeds"}
    assert last["seeds"] == 2 and not math.isnan(last["ratio"])
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "cmp" / "tmrl" / "seed0" / "checkpoints" / f"{2:08d}" / "config.json").read_text())
    assert saved["observation"]["image_grid"] == 1  # the pass-through override reached the runs
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
