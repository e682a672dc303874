"""eval/check_shifts.py on the tiny policy: the table, the JSON, and resuming without measuring again."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("check_shifts", ROOT / "eval" / "check_shifts.py")
check_shifts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_shifts)


def test_a_shift_is_checked_then_read_back(tiny_base_policy, tiny_adapter, tmp_path, monkeypatch, capsys):
    args = ["--base", str(tiny_base_policy), "--adapter", str(tiny_adapter), "--out", str(tmp_path)]
    args += ["--shifts", "small_cube", "--episodes", "2", "--states", "2", "--k", "2"]
    report = check_shifts.main(args)
    row = report["results"]["small_cube"]
    assert row["expert"] == {"rate": 1.0, "ci95": [pytest.approx(0.342, abs=1e-3), 1.0], "n": 2}
    assert row["base"]["n"] == 2 and row["bc_success_at_2"]["n"] == 2 and row["csp_success_at_2"]["n"] == 2
    # the expert solves it and a 3-step BC policy does not: the verdict then rests on coverage
    assert row["fine_tuning_problem"] is (row["csp_success_at_2"]["rate"] > row["bc_success_at_2"]["rate"])
    saved = json.loads((tmp_path / "shift_check.json").read_text())
    assert saved["results"] == json.loads(json.dumps(report["results"]))
    assert saved["command"] == "python eval/check_shifts.py --shifts small_cube --episodes 2 --states 2 --k 2"
    assert "| small_cube | 1.00 (0.34-1.00) |" in (tmp_path / "shift_check.md").read_text()

    monkeypatch.setattr(check_shifts, "check_shift", lambda *a: pytest.fail("measured again"))
    again = check_shifts.main(args)  # already in the JSON: read back, not measured
    assert again["results"]["small_cube"] == row


def test_unknown_shifts_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        check_shifts.main(["--shifts", "rolled_camera,upside_down", "--out", str(tmp_path), "--base", "x"])
