import pytest

from tmrl_vla.rl.curves import episodes_to_threshold


def rows():
    return [
        {"rollout/episodes": 5, "rollout/success_recent": 1.0},  # a lucky start: too few episodes
        {"rollout/episodes": 20, "rollout/success_recent": 0.3, "eval/success_rate": 0.5},
        {"rollout/episodes": 40, "rollout/success_recent": 0.5, "eval/success_rate": 0.85},
        {"rollout/episodes": 60, "rollout/success_recent": 0.8},
    ]


def test_training_measure_waits_for_enough_episodes():
    assert episodes_to_threshold(rows(), 0.8, min_episodes=10) == 60
    assert episodes_to_threshold(rows(), 0.8, min_episodes=1) == 5
    assert episodes_to_threshold(rows(), 0.9, min_episodes=10) is None


def test_evaluation_measure_reads_the_deterministic_policy_points():
    assert episodes_to_threshold(rows(), 0.8, measure="evaluation") == 40
    assert episodes_to_threshold(rows(), 0.9, measure="evaluation") is None
    with pytest.raises(ValueError, match="measure"):
        episodes_to_threshold(rows(), 0.8, measure="best")
