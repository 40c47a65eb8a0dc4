"""ResNet50 in PyTorch, built layer for layer as Keras's, with the Keras arm's preprocessing and head.

This is not torchvision's ResNet50. Keras's (``keras.applications.ResNet50``, the Keras arm's
backbone) differs from it in four ways, and this network follows Keras in each, so that Keras's
weights carried over (``weights.py``) give the same logits:

- every convolution carries a bias (torchvision's have none before a batch norm);
- the first block of a stage strides in its first 1x1 convolution (and its projection
  shortcut), not in the 3x3 (torchvision's "v1.5");
- batch norm's epsilon is 1.001e-5 (torchvision's 1e-5);
- padding is Keras's: ``ZeroPadding2D(3)`` then a 7x7/2 convolution, ``ZeroPadding2D(1)`` then a
  3x3/2 max pooling (zeros, not -inf: the same, as it follows a ReLU), "same" 3x3 convolutions
  at stride 1 (one pixel each side) and unpadded 1x1 ones.

Each convolution with its batch norm (and ReLU) is torchvision's ``Conv2dNormActivation``, the
one building block that matches once told so (bias on, Keras's epsilon, a ReLU not in place);
torchvision's ``Bottleneck`` does not match (see above, and it reuses one ReLU and adds in place).

For shap's PyTorch Deep SHAP (``shap/explainers/_deep/deep_pytorch.py``), which rescales only
the leaf modules it hooks: every nonlinearity is a leaf module used once (no ReLU shared, none in
place); the residual addition is a plain ``+`` (linear: its gradient is DeepLIFT's rule), as are
the zero padding and the window copy below. shap's handler of an *overlapping* max pooling
(3x3, stride 2) un-pools with ``max_unpool2d``, which overwrites where windows overlap instead
of adding, so its maps would not add up; :class:`KerasMaxPool` therefore copies each 3x3 window
into a tile of its own (a linear copy: its gradient adds the overlaps back up) and pools the
tiles with a non-overlapping ``MaxPool2d(3, 3)``, which shap handles exactly. Its forward pass is
Keras's pooling, and its Deep SHAP rule is TensorFlow's (whose ``MaxPoolGrad`` adds overlaps).
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops.misc import Conv2dNormActivation

from pytorch_impl.model import N_CHANNELS

# keras.applications.resnet50.preprocess_input ("caffe" mode): BGR channel means of ImageNet.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
BATCH_NORM_EPSILON = 1.001e-5  # Keras's ResNet50 (torchvision's: 1e-5)
RESNET50_BLOCKS = (3, 4, 6, 3)  # blocks per stage, Keras's conv2 ... conv5
RESNET50_WIDTHS = (64, 128, 256, 512)  # bottleneck widths per stage; a block outputs 4x its width
STAGE_NAMES = ("conv2", "conv3", "conv4", "conv5")  # Keras's layer-name prefixes of the stages


class ResNet50Preprocess(nn.Module):
    """``resnet50.preprocess_input`` as a layer, as the Keras arm's first layer: RGB→BGR, then
    minus the ImageNet BGR mean. Affine, so Deep SHAP's plain gradient through it is exact."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN_BGR))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) RGB in [0, 255]
        return x.flip(1) - self.mean[:, None, None]  # (B, 3, H, W) BGR, centred


class KerasMaxPool(nn.Module):
    """Keras's ``ZeroPadding2D(1)`` + ``MaxPooling2D(3, strides=2)`` as non-overlapping pooling of
    copied windows (the module docstring says why): the same outputs, additive Deep SHAP maps."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(3, 3)  # one 3x3 tile per window: no overlap

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        x = F.pad(x, (1, 1, 1, 1))  # zeros, as ZeroPadding2D
        windows = x.unfold(2, 3, 2).unfold(3, 3, 2)  # (B, C, Ho, Wo, 3, 3): every 3x3 window, stride 2
        b, c, ho, wo = windows.shape[:4]
        tiles = windows.permute(0, 1, 2, 4, 3, 5).reshape(b, c, 3 * ho, 3 * wo)  # window (i, j) at rows 3i..3i+2
        return self.pool(tiles)  # (B, C, Ho, Wo)


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, relu: bool = True) -> Conv2dNormActivation:
    """Conv (with bias) → BatchNorm (Keras's epsilon) → ReLU (or none), Keras's padding at stride 1."""
    return Conv2dNormActivation(
        c_in,
        c_out,
        kernel,
        stride,
        padding=(kernel - 1) // 2,  # "same" for the 3x3 at stride 1, none for 1x1 (Keras's "valid")
        norm_layer=partial(nn.BatchNorm2d, eps=BATCH_NORM_EPSILON),
        activation_layer=nn.ReLU if relu else None,
        inplace=False,
        bias=True,
    )


class Block(nn.Module):
    """Keras's ``residual_block_v1``: 1x1 (strides) → 3x3 → 1x1 (4x width), plus the shortcut
    (a strided 1x1 projection in a stage's first block, else the input), then a ReLU."""

    def __init__(self, c_in: int, width: int, stride: int, project: bool) -> None:
        super().__init__()
        self.shortcut = _conv(c_in, 4 * width, 1, stride, relu=False) if project else nn.Identity()  # Keras: _0_
        self.conv1 = _conv(c_in, width, 1, stride)
        self.conv2 = _conv(width, width, 3)
        self.conv3 = _conv(width, 4 * width, 1, relu=False)
        self.out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.shortcut(x) + self.conv3(self.conv2(self.conv1(x))))  # Keras: Add([shortcut, x])


class KerasResNet(nn.Sequential):
    """ResNet50 without its top, as Keras builds it; modules named as Keras's layers: ``conv1``
    (pad 3 + 7x7/2 + BN + ReLU), ``pool1``, then stages ``conv2`` ... ``conv5`` of blocks
    ``block1`` ...; ``blocks``/``widths`` other than ResNet50's give smaller networks of the same
    kind (the tests' stand-ins). Output (B, 4 * widths[-1], H/32, W/32), rounded as Keras's."""

    def __init__(self, blocks: tuple[int, ...] = RESNET50_BLOCKS, widths: tuple[int, ...] = RESNET50_WIDTHS) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv1"] = _conv(N_CHANNELS, 64, 7, stride=2)  # padding 3: Keras's ZeroPadding2D(3), then valid
        layers["pool1"] = KerasMaxPool()
        c_in = 64
        for i, (name, n_blocks, width) in enumerate(zip(STAGE_NAMES, blocks, widths, strict=True)):
            stride = 1 if i == 0 else 2  # Keras: stride1=1 for conv2, 2 after
            stage = OrderedDict(
                (f"block{b + 1}", Block(c_in if b == 0 else 4 * width, width, stride if b == 0 else 1, b == 0))
                for b in range(n_blocks)
            )
            layers[name] = nn.Sequential(stage)
            c_in = 4 * width
        super().__init__(layers)
        self.out_channels = c_in


class ResNet50Classifier(nn.Module):
    """Raw pixels → ``ResNet50Preprocess`` → ResNet50 (Keras's layout) → average pooling → the
    published head: Flatten → Linear(256) → ReLU → Dropout(0.5) → Linear(K) logits, as the Keras
    arm (``keras_impl/resnet50.py``)."""

    def __init__(
        self,
        n_classes: int,
        image_size: int,
        dense_units: int = 256,
        dropout: float = 0.5,
        blocks: tuple[int, ...] = RESNET50_BLOCKS,
        widths: tuple[int, ...] = RESNET50_WIDTHS,
    ) -> None:
        super().__init__()
        self.n_classes, self.image_size = n_classes, image_size
        self.args = dict(
            n_classes=n_classes,
            image_size=image_size,
            dense_units=dense_units,
            dropout=dropout,
            blocks=list(blocks),
            widths=list(widths),
        )
        self.preprocess = ResNet50Preprocess()
        self.backbone = KerasResNet(tuple(blocks), tuple(widths))
        # Keras's AveragePooling2D(7) on ResNet50's 7x7 map at 224 px, its global average elsewhere: one average
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(),  # (B, 2048): the pooled features
            nn.Linear(self.backbone.out_channels, dense_units),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(dense_units, n_classes),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled backbone features (B, 4 * widths[-1], 1, 1) of raw pixels (B, 3, H, W)."""
        return self.pool(self.backbone(self.preprocess(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes) for raw pixels x, float (B, 3, H, W) in [0, 255]."""
        return self.head(self.features(x))


def build_model(
    n_classes: int,
    image_size: int,
    dense_units: int = 256,
    dropout: float = 0.5,
    blocks: tuple[int, ...] = RESNET50_BLOCKS,
    widths: tuple[int, ...] = RESNET50_WIDTHS,
) -> ResNet50Classifier:
    """The pixel-input classifier for ``n_classes`` and square ``image_size`` RGB images, its
    backbone frozen (no gradients for its weights), in channels-last memory as the CNN. Its
    weights are PyTorch's initialisation until the Keras backbone's are loaded (``weights.py``)."""
    model = ResNet50Classifier(n_classes, image_size, dense_units, dropout, blocks, widths)
    model.backbone.requires_grad_(False)
    return model.to(memory_format=torch.channels_last)
