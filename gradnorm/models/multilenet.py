"""MultiLeNet, the MultiMNIST network of Sener & Koltun (NeurIPS 2018; their ``multi_lenet.py``).

Shared trunk: 5×5 convolution to 10 channels, 2×2 max-pool, ReLU; 5×5 convolution to 20 channels,
2×2 max-pool, ReLU; a fully connected layer 320 → 50 (for 28×28 inputs), ReLU. That last layer is
GradNorm's W. Each task's head: fully connected 50 → 50, ReLU, 50 → the task's outputs.

The authors' code also drops channels after the second convolution (one mask for all tasks) and units
after each head's hidden layer, p = 0.5; ``dropout`` (default 0: none) turns that on (docs/multimnist.md).
About 21k shared and 3k parameters per classification head.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from gradnorm.models.base import MultiTaskModel


class MultiLeNet(MultiTaskModel):
    """conv 10 → conv 20 → fc ``width`` shared (the fc is W), heads fc ``width`` → ``width`` → out.

    Args:
        in_channels: image channels (1).
        image_size: height = width of the input images (28).
        heads: task name -> output size.
        width: units of the shared fc layer and of the heads' hidden layer (50).
        dropout: the authors' dropout probability (0.5 in their code); 0 turns it off.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, heads: Mapping[str, int] = (),
                 width: int = 50, dropout: float = 0.0):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("image_size", image_size), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout must be a number in [0, 1), got {dropout!r}")
        side = ((image_size - 4) // 2 - 4) // 2  # two 5×5 valid convolutions, each followed by a 2×2 max-pool
        if side < 1:
            raise ValueError(f"model=multilenet needs images of at least 16×16 pixels, got {image_size}")
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, 10, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(10, 20, kernel_size=5), nn.Dropout2d(dropout), nn.MaxPool2d(2), nn.ReLU(),
            nn.Flatten(), nn.Linear(20 * side * side, width), nn.ReLU(),
        )
        self.heads = nn.ModuleDict({
            name: nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, out))
            for name, out in dict(heads).items()})

    def shared(self, x: Tensor) -> Tensor:
        return self.trunk(x)

    @property
    def last_shared_layer(self) -> nn.Module:
        return self.trunk[-2]

