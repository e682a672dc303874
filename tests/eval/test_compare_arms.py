import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("compare_arms", ROOT / "eval" / "compare_arms.py")
arms = importlib.util.module_from_spec(spec)
spec.loader.exec_module(arms)


def write_run(root: Path, shift: str, agent: str, seed: int, rate: float, final_eval: float, episodes=40):
    """A run whose training succeeds at ``rate`` per episode, one episode per decision."""
    run = root / shift / agent / f"seed{seed}"
    run.mkdir(parents=True)
    rows = []
    for e in range(1, episodes + 1):
        row = {"decision": e, "rollout/episodes": e, "rollout/successes": int(rate * e), "rollout/success_recent": rate}
        if e % 20 == 0:
            row["eval/success_rate"] = final_eval if e == episodes else 0.0
        rows.append(row)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_paired_arms_report_per_agent_differences_and_skip_unpaired_runs(tmp_path, capsys):
    for seed, (ref, new) in enumerate([(0.1, 0.3), (0.2, 0.4)]):
        for shift in ("a", "b"):
            write_run(tmp_path / "ref", shift, "tmrl", seed, ref, 0.25)
            write_run(tmp_path / "new", shift, "tmrl", seed, new, 0.5)
            write_run(tmp_path / "ref", shift, "dsrl", seed, 0.1, 0.25)
            write_run(tmp_path / "new", shift, "dsrl", seed, 0.1, 0.25)
    write_run(tmp_path / "ref", "c", "tmrl", 0, 0.9, 1.0)  # no partner in "new": left out
    out = tmp_path / "out"
    summary = arms.main(
        ["--arm", f"ref={tmp_path / 'ref'}", "--arm", f"new={tmp_path / 'new'}", "--episodes", "20", "--out", str(out)]
    )
    tmrl, dsrl = summary["agents"]["tmrl"], summary["agents"]["dsrl"]
    assert tmrl["pairs"] == ["a/seed0", "a/seed1", "b/seed0", "b/seed1"]
    first = tmrl["success_first"]
    assert first["ref"] == pytest.approx(0.15) and first["new"] == pytest.approx(0.35)
    assert first["new - ref"]["mean"] == pytest.approx(0.2) and first["new - ref"]["pairs"] == 4
    assert tmrl["eval_last"]["new - ref"]["ci95"] == pytest.approx([0.25, 0.25])
    assert dsrl["success_first"]["new - ref"]["mean"] == pytest.approx(0.0)
    assert (out / "curves.png").stat().st_size > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary


def test_a_run_shorter_than_the_window_is_not_counted():
    rows = [{"rollout/episodes": e, "rollout/successes": e // 2} for e in range(1, 11)]
    assert arms.success_first(rows, 10) == pytest.approx(0.5)
    assert arms.success_first(rows, 11) is None


def test_an_arm_needs_an_existing_directory(tmp_path):
    with pytest.raises(SystemExit):
        arms.main(["--arm", f"a={tmp_path}", "--arm", "b=missing"])


def test_eval_is_read_at_a_common_decision_when_the_arms_differ_in_length():
    rows = [{"decision": d, "eval/success_rate": d / 1000} for d in (100, 200, 300, 400)]
    assert arms.eval_last(rows) == pytest.approx(0.4)
    assert arms.eval_last(rows, 250) == pytest.approx(0.2)  # the last one at or before it
    assert arms.eval_last(rows, 400) == pytest.approx(0.4)
    assert arms.eval_last(rows, 500) is None  # the run stops short: not read as if it had got there


def test_eval_within_reads_each_run_after_the_same_episodes():
    """Two decisions per episode against one: each is read at its last evaluation within 150 episodes."""
    slow = [{"decision": d, "rollout/episodes": d // 2, "eval/success_rate": d / 1000} for d in (100, 200, 300, 400)]
    fast = [{"decision": d, "rollout/episodes": d, "eval/success_rate": d / 1000} for d in (100, 200, 300, 400)]
    assert arms.eval_within(slow, 150) == pytest.approx(0.3)  # decision 300: 150 episodes
    assert arms.eval_within(fast, 150) == pytest.approx(0.1)  # decision 100: 100 episodes (200 is past it)
    assert arms.eval_within(slow, 250) == pytest.approx(0.4)  # it ended at 200 episodes: its last
    assert arms.eval_within(fast, 50) is None  # no evaluation within 50 episodes
