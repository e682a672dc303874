"""``ObservationEncoder``: a separate frozen vision model for the RL observation (optional).

By default the high-level policy observes the VLA's own clean prefix, pooled (the vision encoder
runs once per decision and its output is reused for sampling the chunk). The TMRL reference code
instead observes a separate frozen image model (DINOv2 with registers, mean-pooled per camera).
``--rl.observation.encoder=<path or Hub repo id>`` selects that: its patch tokens, pooled on the same
``image_grid`` per camera, plus the normalised state, become the observation; the VLA still embeds
its prefix once per decision for the chunk.

Any ViT-style ``transformers`` vision model works whose ``last_hidden_state`` is some leading
tokens (CLS, registers) followed by the patch grid: DINOv2 (with or without registers), ViT, and
the vision tower of CLIP or SigLIP. Its image processor's resize, centre crop and normalisation
are applied to the camera tensors directly (no PIL round trip), so the features match what the
model was trained on.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoImageProcessor, AutoModel

from tmrl_vla.hub import resolve_dir


def _edge_size(size) -> tuple[str, int | tuple[int, int]]:
    """An image processor's ``size``/``crop_size`` as ("shortest", n) or ("exact", (h, w))."""
    if isinstance(size, int):
        return "shortest", size
    size = dict(size)
    if "height" in size and "width" in size:
        return "exact", (int(size["height"]), int(size["width"]))
    if "shortest_edge" in size:
        return "shortest", int(size["shortest_edge"])
    raise ValueError(f"unsupported image processor size {size}")


class ObservationEncoder(nn.Module):
    """A frozen vision model: camera images (b, 3, H, W) in [0, 1] -> pooled patch features."""

    def __init__(
        self,
        vision: nn.Module,
        *,
        hidden_size: int,
        patch_size: int,
        mean: list[float],
        std: list[float],
        resize: tuple[str, int | tuple[int, int]] | None,
        crop: tuple[int, int] | None,
        name: str = "",
    ) -> None:
        super().__init__()
        self.vision = vision.eval().requires_grad_(False)
        self.hidden_size, self.patch_size, self.name = hidden_size, patch_size, name
        self.resize, self.crop = resize, crop
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> ObservationEncoder:
        """Load a model and its image processor from a directory or a Hub repo id (or its local cache)."""
        path = resolve_dir(name_or_path)
        if not (path / "preprocessor_config.json").is_file():
            raise FileNotFoundError(
                f"observation encoder {name_or_path!r} has no image processor (preprocessor_config.json): "
                "its input size and normalisation are unknown"
            )
        model = AutoModel.from_pretrained(path)
        processor = AutoImageProcessor.from_pretrained(path)
        vision = getattr(model, "vision_model", model)  # CLIP / SigLIP: the vision tower
        config = getattr(model.config, "vision_config", model.config)
        patch = getattr(config, "patch_size", None)
        if patch is None:
            raise ValueError(f"observation encoder {name_or_path!r} is not a ViT-style model (no patch_size)")
        resize = _edge_size(processor.size) if getattr(processor, "do_resize", False) else None
        crop = None
        if getattr(processor, "do_center_crop", False):
            kind, value = _edge_size(processor.crop_size)
            crop = value if kind == "exact" else (value, value)
        normalise = getattr(processor, "do_normalize", True)
        mean = list(processor.image_mean) if normalise else [0.0, 0.0, 0.0]
        std = list(processor.image_std) if normalise else [1.0, 1.0, 1.0]
        return cls(
            vision,
            hidden_size=int(config.hidden_size),
            patch_size=int(patch),
            mean=mean,
            std=std,
            resize=resize,
            crop=crop,
            name=str(name_or_path),
        )

    def feature_width(self, cameras: int, image_grid: int = 1) -> int:
        return cameras * image_grid**2 * self.hidden_size

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) in [0, 1] -> the model's pixel values (resize, centre crop, normalise)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected camera images (b, 3, H, W), got {tuple(images.shape)}")
        x = images.float()
        if self.resize is not None:
            kind, value = self.resize
            h, w = x.shape[-2:]
            if kind == "shortest":
                scale = value / min(h, w)
                size = (max(value, round(h * scale)), max(value, round(w * scale)))
            else:
                size = value
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        if self.crop is not None:
            ch, cw = self.crop
            h, w = x.shape[-2:]
            top, left = max((h - ch) // 2, 0), max((w - cw) // 2, 0)
            x = x[..., top : top + ch, left : left + cw]
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    @torch.no_grad()
    def pooled(self, images: torch.Tensor, image_grid: int = 1) -> torch.Tensor:
        """(b, image_grid^2 * D): the patch tokens of one camera averaged on an image_grid x image_grid grid."""
        pixels = self.preprocess(images)
        h, w = pixels.shape[-2] // self.patch_size, pixels.shape[-1] // self.patch_size
        tokens = self.vision(pixel_values=pixels).last_hidden_state  # (b, leading + h * w, D)
        leading = tokens.shape[1] - h * w
        if leading < 0:
            raise ValueError(
                f"observation encoder {self.name!r} returned {tokens.shape[1]} tokens for a {h} x {w} patch grid"
            )
        grid = tokens[:, leading:].transpose(1, 2).reshape(tokens.shape[0], self.hidden_size, h, w)
        pooled = F.adaptive_avg_pool2d(grid.float(), image_grid)  # (b, D, g, g)
        return pooled.permute(0, 2, 3, 1).reshape(tokens.shape[0], -1)

    def forward(self, images: list[torch.Tensor], image_grid: int = 1) -> torch.Tensor:
        """Cameras in a fixed order -> (b, cameras * image_grid^2 * D)."""
        return torch.cat([self.pooled(x, image_grid) for x in images], dim=-1)


def load_observation_encoder(name_or_path: str | None, device: torch.device | str = "cpu") -> ObservationEncoder | None:
    """The configured encoder on ``device``, or None (observe the VLA's pooled prefix)."""
    if not name_or_path:
        return None
    return ObservationEncoder.from_pretrained(name_or_path).to(device)
