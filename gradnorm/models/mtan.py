"""MTAN on SegNet (Liu, Johns, Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019): the
backbone of the NYUv2 tables of CAGrad, Nash-MTL, FAMO, Aligned-MTL and LibMTL (docs/nyuv2.md §4).

A shared SegNet (filters 64, 128, 256, 512, 512; every block a 3×3 conv with bias, batch norm and
ReLU; max pooling with indices, unpooling with them) and, per task, soft attention over it:

- encoder stage j: the task's mask a = σ(1×1 conv-BN-ReLU-1×1 conv-BN) of [the stage's first
  feature, the task's previous attended feature]; attended = a ⊙ the stage's last feature; then a
  3×3 conv block shared by the tasks, and a 2×2 max pooling;
- decoder stage j: the task's feature upsampled ×2 (bilinear), a shared 3×3 conv block, the task's
  mask from [the stage's unpooled input, that feature]; attended = mask ⊙ the stage's last feature.

Each task's head is MTAN's prediction block, a 3×3 conv and a 1×1 conv (no normalisation between)
on its attended 64-channel feature. Initialisation as MTAN: Xavier-normal conv weights, zero biases.

The suite's interface (docs/architecture.md): the last shared layer (GradNorm's W) is the shared
decoder's last 3×3 conv, the layer the Nash-MTL code names ``last_shared_parameters`` for its SegNet;
its output after BN and ReLU is z, which each task's last attention step multiplies by its mask, so
``features`` are T views of z and every task's gradient at W passes through them. The attention
modules are task-specific but are not in ``heads``: ``shared_parameters()`` (every parameter not in a
head) holds them, as the shared parameters of the Nash-MTL, FAMO and LibMTL code hold MTAN's attention.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradnorm.models.base import MultiTaskModel
from gradnorm.models.dense import check_input_channels

FILTERS = (64, 128, 256, 512, 512)


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """MTAN's ``conv_layer``: 3×3 convolution (with bias), batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True))


def attention_block(in_channels: int, channels: int) -> nn.Sequential:
    """MTAN's ``att_layer``: a soft mask in (0, 1) from 1×1 conv, BN, ReLU, 1×1 conv, BN, sigmoid."""
    return nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels), nn.Sigmoid())


class TaskAttention(nn.Module):
    """One task's attention masks: five for the encoder stages, five for the decoder stages (index j is
    the stage at scale 2^j, as the shared blocks are indexed)."""

    def __init__(self, f=FILTERS):
        super().__init__()
        self.encoder = nn.ModuleList([attention_block(f[0], f[0])] +
                                     [attention_block(2 * f[j], f[j]) for j in range(1, 5)])
        self.decoder = nn.ModuleList([attention_block(2 * f[0], f[0])] +
                                     [attention_block(f[j] + f[j - 1], f[j - 1]) for j in range(1, 5)])


class MTAN(MultiTaskModel):
    """SegNet-MTAN with one attention branch and one prediction block per task.

    Args:
        in_channels: image channels (3).
        heads: task name -> output channels (seg 13, depth 1, normals 3).
    """

    def __init__(self, in_channels: int = 3, heads: Mapping[str, int] = ()):
        super().__init__()
        check_input_channels(in_channels, False, "mtan")
        if not heads:
            raise ValueError("the model needs at least one task head")
        f = FILTERS
        # shared SegNet: encoder stage j = encoder_block[j] then conv_block_enc[j]; decoder stage at scale j =
        # decoder_block[j] (f[j] -> f[j-1]) then conv_block_dec[j]
        self.encoder_block = nn.ModuleList([conv_block(in_channels, f[0])] +
                                           [conv_block(f[j - 1], f[j]) for j in range(1, 5)])
        self.conv_block_enc = nn.ModuleList([conv_block(f[0], f[0]), conv_block(f[1], f[1])] + [
            nn.Sequential(conv_block(f[j], f[j]), conv_block(f[j], f[j])) for j in range(2, 5)])
        self.decoder_block = nn.ModuleList([conv_block(f[0], f[0])] + [conv_block(f[j], f[j - 1]) for j in range(1, 5)])
        self.conv_block_dec = nn.ModuleList([conv_block(f[0], f[0]), conv_block(f[0], f[0])] + [
            nn.Sequential(conv_block(f[j - 1], f[j - 1]), conv_block(f[j - 1], f[j - 1])) for j in range(2, 5)])
        # the attention branches' 3×3 conv blocks, shared by the tasks
        self.encoder_block_att = nn.ModuleList([conv_block(f[j], f[min(j + 1, 4)]) for j in range(5)])
        self.decoder_block_att = nn.ModuleList([conv_block(f[0], f[0])] +
                                               [conv_block(f[j], f[j - 1]) for j in range(1, 4)] +
                                               [conv_block(f[4], f[4])])
        self.attention = nn.ModuleDict({name: TaskAttention(f) for name in heads})
        self.heads = nn.ModuleDict({name: nn.Sequential(nn.Conv2d(f[0], f[0], 3, padding=1),
                                                        nn.Conv2d(f[0], int(out), 1))
                                    for name, out in heads.items()})
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def last_shared_layer(self) -> nn.Module:
        return self.conv_block_dec[0][0]

    def trunk(self, x: Tensor) -> tuple[list[tuple[Tensor, Tensor]], list[tuple[Tensor, Tensor]]]:
        """The shared SegNet: per encoder stage (first, last feature); per decoder stage, from the deepest,
        (unpooled input, last feature). The last decoder stage's last feature is z."""
        encoder, pooled = [], []
        for j in range(5):
            first = self.encoder_block[j](x)
            last = self.conv_block_enc[j](first)
            encoder.append((first, last))
            x, indices = F.max_pool2d(last, kernel_size=2, stride=2, return_indices=True)
            pooled.append((indices, last.shape[-2:]))
        decoder = []
        for j in reversed(range(5)):
            indices, size = pooled[j]
            unpooled = F.max_unpool2d(x, indices, kernel_size=2, stride=2, output_size=size)
            x = self.conv_block_dec[j](self.decoder_block[j](unpooled))
            decoder.append((unpooled, x))
        return encoder, decoder

    def shared(self, x: Tensor) -> Tensor:
        return self.trunk(x)[1][-1][1]

    def forward(self, x: Tensor) -> tuple[dict[str, Tensor], list[Tensor]]:
        encoder, decoder = self.trunk(x)
        z = decoder[-1][1]
        features = [z.view_as(z) for _ in self.heads]
        predictions = {}
        for (name, head), z_view in zip(self.heads.items(), features):
            predictions[name] = head(self._attend(self.attention[name], encoder, decoder, z_view))
        return predictions, features

    def _attend(self, attention: TaskAttention, encoder, decoder, z_view: Tensor) -> Tensor:
        """One task's attended 64-channel feature; its last mask multiplies ``z_view`` (its view of z)."""
        feature = None
        for j, (first, last) in enumerate(encoder):
            mask = attention.encoder[j](first if feature is None else torch.cat((first, feature), dim=1))
            feature = F.max_pool2d(self.encoder_block_att[j](mask * last), kernel_size=2, stride=2)
        for step, (unpooled, last) in enumerate(decoder):
            j = 4 - step
            feature = F.interpolate(feature, size=unpooled.shape[-2:], mode="bilinear", align_corners=True)
            feature = self.decoder_block_att[j](feature)
            mask = attention.decoder[j](torch.cat((unpooled, feature), dim=1))
            feature = mask * (z_view if j == 0 else last)
        return feature
