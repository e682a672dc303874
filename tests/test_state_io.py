"""Training state through safetensors: every kind of value a resume file holds comes back equal."""

import numpy as np
import pytest
import torch

from tmrl_vla.state_io import load_state, save_state


def test_a_training_state_round_trips_with_its_types(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    buffer = torch.arange(12.0).view(3, 4)
    rng = np.random.default_rng(0)
    state = {
        "optimizer": opt.state_dict(),  # int keys, a "step" tensor, param groups with tuples
        "views": {"whole": buffer, "row": buffer[1]},  # views of one storage
        "rng": torch.get_rng_state(),
        "numpy_rng": rng.bit_generator.state,
        "mt": np.random.RandomState(1).get_state(),  # a uint32 array inside a tuple
        "counters": [1, 2.5, "x", None, True, (3, 4)],
        "empty": {},
    }
    save_state(state, tmp_path / "state.safetensors")
    back = load_state(tmp_path / "state.safetensors")
    assert back["optimizer"]["state"].keys() == {0, 1}
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    torch.testing.assert_close(back["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    opt.load_state_dict(back["optimizer"])  # accepted by torch as it is
    assert torch.equal(back["views"]["row"], buffer[1]) and torch.equal(back["rng"], state["rng"])
    assert back["numpy_rng"] == state["numpy_rng"]
    name, keys, pos, has_gauss, cached = back["mt"]
    assert keys.dtype == np.uint32 and np.array_equal(keys, state["mt"][1]) and pos == state["mt"][2]
    assert back["counters"] == [1, 2.5, "x", None, True, (3, 4)] and back["empty"] == {}
    assert not (tmp_path / "state.safetensors.tmp").exists()


def test_other_objects_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot store a object"):
        save_state({"x": object()}, tmp_path / "bad.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(ValueError, match="is not a training state written by tmrl_vla"):
        load_state(tmp_path / "weights.safetensors")
