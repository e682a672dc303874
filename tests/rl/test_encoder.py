import numpy as np
import pytest
import torch

from tmrl_vla.rl.encoder import ObservationEncoder, load_observation_encoder


def test_preprocessing_follows_the_image_processor(tiny_dinov2):
    path, _, processor = tiny_dinov2
    encoder = ObservationEncoder.from_pretrained(path)
    images = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    ours = encoder.preprocess(images)
    as_uint8 = [(x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for x in images]
    theirs = processor(images=as_uint8, return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (2, 3, 32, 32)
    # PIL's and torch's bicubic resampling differ a little on pixel noise; a missed crop or
    # normalisation would differ by whole units
    assert (ours - theirs).abs().mean() < 0.02


def test_features_are_the_patch_tokens_pooled_per_camera(tiny_dinov2):
    path, model, _ = tiny_dinov2
    encoder = ObservationEncoder.from_pretrained(path)
    front, wrist = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        tokens = model(pixel_values=encoder.preprocess(front)).last_hidden_state
    assert tokens.shape == (2, 1 + 4 + 16, 16)  # CLS, 4 registers, a 4 x 4 patch grid
    mean = encoder([front, wrist], image_grid=1)
    assert mean.shape == (2, encoder.feature_width(2, 1)) == (2, 32)
    torch.testing.assert_close(mean[:, :16], tokens[:, 5:].mean(1))
    grid = encoder([front], image_grid=2)  # 2 x 2 cells of 2 x 2 patches
    assert grid.shape == (2, 4 * 16)
    cells = tokens[:, 5:].reshape(2, 4, 4, 16)
    torch.testing.assert_close(grid[:, :16], cells[:, :2, :2].mean((1, 2)))  # top-left cell
    torch.testing.assert_close(grid.reshape(2, 4, 16).mean(1), mean[:, :16])
    assert not any(p.requires_grad for p in encoder.parameters())  # frozen


def test_loads_by_repo_id_from_the_local_hub_cache(tiny_dinov2, local_hub):
    path, _, _ = tiny_dinov2
    local_hub(path, "someone/tiny-dinov2")
    images = torch.rand(1, 3, 64, 64)
    by_id = load_observation_encoder("someone/tiny-dinov2")
    torch.testing.assert_close(by_id([images]), ObservationEncoder.from_pretrained(path)([images]))
    assert load_observation_encoder(None) is None


def test_bad_encoders_and_inputs_get_clear_errors(tiny_dinov2, tmp_path):
    import shutil

    path, _, _ = tiny_dinov2
    bare = tmp_path / "no_processor"
    shutil.copytree(path, bare)
    (bare / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no image processor"):
        ObservationEncoder.from_pretrained(bare)
    encoder = ObservationEncoder.from_pretrained(path)
    with pytest.raises(ValueError, match=r"\(b, 3, H, W\)"):
        encoder([torch.rand(64, 64, 3)])
