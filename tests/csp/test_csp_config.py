import pytest

from tmrl_vla.csp.config import CSPConfig


def test_round_trip_ignores_keys_of_newer_versions():
    config = CSPConfig(noise_language=False, segment_scale={"image": 6.1}, lora_r=8)
    values = config.to_dict() | {"a_field_from_the_future": 1}
    assert CSPConfig.from_dict(values) == config


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_timesteps": 0}, "num_timesteps"),
        ({"noise_image": False, "noise_language": False}, "at least one noised segment"),
        ({"noise_scale": "rms"}, "noise_scale"),
        ({"context_noise": "shared"}, "context_noise"),
        ({"sigma_embedding_dim": 7}, "even number"),
        ({"segment_scale": {"audio": 1.0}}, "unknown segments"),
    ],
)
def test_bad_values_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        CSPConfig(**overrides)
