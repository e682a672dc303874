import pytest

from tmrl_vla.registry import Registry, UnknownNameError


def test_register_and_get():
    reg = Registry("thing")

    @reg.register("alpha")
    def make_alpha():
        return "a"

    assert reg.get("alpha")() == "a"
    assert "alpha" in reg and reg.names() == ["alpha"]


def test_unknown_name_lists_known_names_and_suggests():
    reg = Registry("env")
    reg.register("so100_pick_cube")(object)
    reg.register("gym_hil_pick_cube")(object)
    with pytest.raises(UnknownNameError) as err:
        reg.get("so100_pick_cub")
    message = str(err.value)
    assert "Did you mean 'so100_pick_cube'" in message
    assert "gym_hil_pick_cube" in message and "so100_pick_cube" in message


def test_duplicate_registration_is_an_error():
    reg = Registry("env")
    reg.register("x")(object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x")(object)
