"""DPT head ("RefineNet-based fusion") regressing disparity and confidence from four token maps.

Tapped tokens [B, N, C] are reshaped to maps at stride 16, reassembled to strides 4, 8, 16 and 32 with
``layer_dims`` channels, projected to ``feature_dim``, fused coarse-to-fine with residual conv units and
upsampled to the input resolution by the output head (conv3x3, x2, conv3x3, ReLU, conv1x1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DPTHead", "FusionBlock", "ResidualConvUnit"]


class Upsample2x(nn.Module):
    """Bilinear x2 upsampling with aligned corners (parameter-free)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x))))."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        # the inner ReLU in place: conv1's output is a temporary that no backward pass needs
        return x + self.conv2(F.relu(self.conv1(F.relu(x)), inplace=True))


class FusionBlock(nn.Module):
    """out_conv(up2(rcu2(x + rcu1(skip)))); the coarsest level has no skip input.

    The 1x1 ``out_conv`` is applied before the upsampling: both are linear and bilinear weights sum to one,
    so the result is the same while the convolution costs four times less.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.rcu1 = ResidualConvUnit(features)
        self.rcu2 = ResidualConvUnit(features)
        self.up = Upsample2x()
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None:
            x = x + self.rcu1(skip)
        return self.up(self.out_conv(self.rcu2(x)))


def _reassemble(dim_in: int, dim_out: int, level: int) -> nn.Sequential:
    """Token map at stride 16 -> feature map at stride 4, 8, 16 or 32 (level 0..3)."""
    layers: list[nn.Module] = [nn.Conv2d(dim_in, dim_out, 1)]
    if level == 0:
        layers.append(nn.ConvTranspose2d(dim_out, dim_out, 4, stride=4))
    elif level == 1:
        layers.append(nn.ConvTranspose2d(dim_out, dim_out, 2, stride=2))
    elif level == 3:
        layers.append(nn.Conv2d(dim_out, dim_out, 3, stride=2, padding=1))
    return nn.Sequential(*layers)


class DPTHead(nn.Module):
    """Dense regression head over four tapped token sequences.

    Args:
        dims_in: token dims of the four tapped layers.
        layer_dims: reassembled channels at strides 4, 8, 16, 32.
        feature_dim: fusion width. last_dim: width before the final 1x1 conv.
        num_channels: output channels (disparity, confidence logit).
    """

    def __init__(self, dims_in: Sequence[int], layer_dims: Sequence[int], feature_dim: int = 256,
                 last_dim: int = 32, num_channels: int = 2, patch_size: int = 16) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.project = nn.ModuleList(_reassemble(d, c, i) for i, (d, c) in enumerate(zip(dims_in, layer_dims)))
        self.layer_rn = nn.ModuleList(nn.Conv2d(c, feature_dim, 3, padding=1, bias=False) for c in layer_dims)
        self.fusion = nn.ModuleList(FusionBlock(feature_dim) for _ in range(4))
        self.out = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim // 2, 3, padding=1),
            Upsample2x(),
            nn.Conv2d(feature_dim // 2, last_dim, 3, padding=1),
            nn.ReLU(inplace=True),  # on a full-resolution temporary: no second buffer of that size
            nn.Conv2d(last_dim, num_channels, 1),
        )
        # NHWC convolutions are markedly faster with oneDNN (CPU) and cuDNN (tensor cores).
        self.to(memory_format=torch.channels_last)

    def forward(self, tokens: Sequence[Tensor], image_size: tuple[int, int]) -> Tensor:
        """tokens: 4 x [B, N, C_i] with N = (H/16)(W/16) -> [B, num_channels, H, W]."""
        h, w = image_size[0] // self.patch_size, image_size[1] // self.patch_size
        maps = [t.transpose(1, 2).unflatten(2, (h, w)).contiguous(memory_format=torch.channels_last) for t in tokens]
        feats = [rn(proj(m)) for proj, rn, m in zip(self.project, self.layer_rn, maps)]
        path = self.fusion[3](feats[3])[:, :, : feats[2].shape[2], : feats[2].shape[3]]
        for level in (2, 1, 0):
            path = self.fusion[level](path, feats[level])
        return self.out(path).contiguous()
