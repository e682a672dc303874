"""tmrl_vla.rl.analysis without a policy: the fixed settings drawn, and sigma split around the grasp.

tests/eval/test_fixed_heads.py and tests/eval/test_sigma_trace.py run these through the scripts
(FixedHeads, score_fixed, trace_sigma, and summarise_sigma with the gripper open high); these are
the pieces on their own."""

import pytest
import torch

from tmrl_vla.rl.analysis import phases, random_settings, summarise_sigma

# ---------------------------------------------------------------------------------- random_settings


def test_tmrl_settings_have_z_and_y_of_the_right_shapes_and_the_first_z_is_zero():
    settings = random_settings("tmrl", 5, 6, torch.Generator().manual_seed(3))
    assert len(settings) == 5
    assert all(set(s) == {"z", "y"} for s in settings)
    assert all(s["z"].shape == (1, 6) and s["y"].shape == (1, 1) for s in settings)
    assert torch.equal(settings[0]["z"], torch.zeros(1, 6))
    assert all(s["z"].abs().sum() > 0 for s in settings[1:])  # only the first is the zero setting
    assert settings[0]["y"].abs().item() > 0  # the zero z still gets a random sigma


def test_dsrl_settings_have_no_y():
    settings = random_settings("dsrl", 4, 3, torch.Generator().manual_seed(3))
    assert [set(s) for s in settings] == [{"z"}] * 4
    assert torch.equal(settings[0]["z"], torch.zeros(1, 3))


def test_values_lie_in_the_unit_box_and_spread_over_it():
    settings = random_settings("tmrl", 200, 4, torch.Generator().manual_seed(0))
    z = torch.cat([s["z"] for s in settings[1:]])
    y = torch.cat([s["y"] for s in settings])
    for values in (z, y):
        assert values.min() >= -1 and values.max() <= 1
        assert values.min() < -0.9 and values.max() > 0.9  # uniform on [-1, 1], not on [0, 1]


def test_the_same_generator_seed_gives_the_same_settings():
    for kind in ("tmrl", "dsrl"):
        first = random_settings(kind, 4, 6, torch.Generator().manual_seed(11))
        again = random_settings(kind, 4, 6, torch.Generator().manual_seed(11))
        other = random_settings(kind, 4, 6, torch.Generator().manual_seed(12))
        for a, b in zip(first, again, strict=True):
            assert a.keys() == b.keys() and all(torch.equal(a[h], b[h]) for h in a)
        assert not torch.equal(first[1]["z"], other[1]["z"])


def test_settings_draw_from_the_given_generator_only():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(5)
    global_state, before = torch.get_rng_state(), generator.get_state()
    random_settings("tmrl", 3, 2, generator)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert not torch.equal(generator.get_state(), before)


def test_no_settings_for_a_count_of_zero():
    assert random_settings("tmrl", 0, 6, torch.Generator().manual_seed(0)) == []


# ---------------------------------------------------------------------------------- phases


def record(sigma, gripper, success=True):
    return {"sigma": sigma, "gripper": gripper, "success": success, "length": len(sigma)}


def test_phases_split_around_the_decision_before_the_first_closed_reading():
    split = phases(record([0.1, 0.2, 0.3, 0.4, 0.5], [1.0, 1.0, 1.0, 0.0, 0.0]), middle=0.5, opens_high=True)
    assert split == {"reach": [0.1, 0.2], "grasp": [0.3], "after": [0.4, 0.5]}


def test_phases_with_a_gripper_that_closes_upwards():
    split = phases(record([0.9, 0.8, 0.7], [0.0, 1.0, 1.0]), middle=0.5, opens_high=False)
    assert split == {"reach": [], "grasp": [0.9], "after": [0.8, 0.7]}


def test_phases_at_the_last_decision_leave_nothing_after():
    split = phases(record([0.3, 0.6], [1.0, 0.2]), middle=0.5, opens_high=True)
    assert split == {"reach": [], "grasp": [0.3], "after": [0.6]}
    split = phases(record([0.3, 0.6, 0.2], [1.0, 1.0, 0.2]), middle=0.5, opens_high=True)
    assert split == {"reach": [0.3], "grasp": [0.6], "after": [0.2]}


def test_phases_are_none_when_the_gripper_never_closed_or_started_closed():
    assert phases(record([0.1, 0.2], [1.0, 0.9]), middle=0.5, opens_high=True) is None
    assert phases(record([0.1, 0.2], [0.0, 1.0]), middle=0.5, opens_high=True) is None  # closed at the start
    assert phases(record([0.1, 0.2], [0.0, 0.1]), middle=0.5, opens_high=False) is None


def test_phases_use_the_first_closing_only():
    split = phases(record([0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 1.0, 0.0]), middle=0.5, opens_high=True)
    assert split == {"reach": [], "grasp": [0.1], "after": [0.2, 0.3, 0.4]}


# ---------------------------------------------------------------------------------- summarise_sigma


def test_summary_with_a_gripper_that_reads_higher_when_closed():
    records = [
        record([0.8, 0.6, 0.2, 0.1], [0.0, 0.0, 0.04, 0.04]),  # closes at decision 2: grasp at decision 1
        record([0.5, 0.3], [0.0, 0.0], success=False),
    ]
    s = summarise_sigma(records, open_value=0.0, closed_value=0.04)
    assert s["episodes"] == 2 and s["successes"] == 1 and s["decisions"] == 6
    assert s["sigma_mean"] == pytest.approx(2.5 / 6)
    assert s["sigma_mean_gripper_open"] == pytest.approx(2.2 / 4)
    assert s["sigma_mean_gripper_closed"] == pytest.approx(0.15)
    assert s["decisions_gripper_closed"] == 2
    assert s["successes_sigma_reach"] == pytest.approx(0.8)
    assert s["successes_sigma_grasp"] == pytest.approx(0.6)
    assert s["successes_sigma_after"] == pytest.approx(0.15)


def test_summary_of_episodes_that_never_close_has_no_closed_or_phase_means():
    s = summarise_sigma([record([0.4, 0.2], [1.0, 1.0]), record([0.6], [0.9])], open_value=1.0, closed_value=0.0)
    assert s["sigma_mean"] == pytest.approx(0.4) and s["sigma_mean_gripper_open"] == pytest.approx(0.4)
    assert s["sigma_mean_gripper_closed"] is None and s["decisions_gripper_closed"] == 0
    assert s["successes"] == 2
    assert [s[f"successes_sigma_{k}"] for k in ("reach", "grasp", "after")] == [None, None, None]


def test_summary_pools_the_phases_of_all_successful_episodes():
    records = [
        record([0.2, 0.4, 0.0], [1.0, 1.0, 0.0]),  # reach [0.2], grasp [0.4], after [0.0]
        record([0.6, 0.8, 0.1, 0.3], [1.0, 1.0, 1.0, 0.0]),  # reach [0.6, 0.8], grasp [0.1], after [0.3]
    ]
    s = summarise_sigma(records, open_value=1.0, closed_value=0.0)
    assert s["successes_sigma_reach"] == pytest.approx((0.2 + 0.6 + 0.8) / 3)  # per decision, not per episode
    assert s["successes_sigma_grasp"] == pytest.approx(0.25)
    assert s["successes_sigma_after"] == pytest.approx(0.15)


def test_summary_values_are_plain_python_numbers():
    s = summarise_sigma([record([0.5, 0.5], [1.0, 0.0])], open_value=1.0, closed_value=0.0)
    assert type(s["sigma_mean"]) is float and type(s["decisions"]) is int
    assert type(s["decisions_gripper_closed"]) is int


# -------------------------------------------------------------------------------------- start_actor


def test_a_start_actor_plays_its_init_std_and_sigma_and_dsrl_has_no_sigma():
    from tmrl_vla.rl.actor import sigma_from_y
    from tmrl_vla.rl.analysis import start_actor

    tmrl = start_actor("tmrl", 6, init_std=0.22, init_sigma=0.05)
    prior = tmrl.prior()
    assert set(prior) == {"z", "y"}
    assert prior["z"][1].exp().flatten().tolist() == pytest.approx([0.22] * 6, rel=1e-4)
    assert sigma_from_y(torch.tanh(prior["y"][0])).item() == pytest.approx(0.05, rel=1e-4)
    dsrl = start_actor("dsrl", 6, init_std=1.0, init_sigma=0.05)
    assert set(dsrl.prior()) == {"z"} and dsrl.config.init_sigma is None
