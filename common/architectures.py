"""The study's two architectures in numbers, framework-free: multiply-adds of one image's forward pass.

Each is built in both frameworks (``pytorch_impl/`` and ``keras_impl/`` hold a CNN and a ResNet50
module each), and the same architecture costs the same whichever framework runs it, so the arms'
config sections (``forward_macs``) read these. Convolutions and dense layers are counted; batch
norm, additions, activations and pooling are left out.
"""

from __future__ import annotations

RESNET50_STAGES = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2))  # (blocks, width, stride of the first)


def cnn_macs(image_size: int, n_classes: int) -> int:
    """The published CNN: Conv(3→6, 5) → MaxPool(2) → Conv(6→16, 3) → MaxPool(2) → Linear(·, 120)
    → Linear(120, 84) → Linear(84, K)."""
    conv1 = image_size - 4  # Conv(3, 6, 5)
    conv2 = conv1 // 2 - 2  # MaxPool(2), Conv(6, 16, 3)
    flat = 16 * (conv2 // 2) ** 2  # MaxPool(2), Flatten
    return conv1**2 * 5 * 5 * 3 * 6 + conv2**2 * 3 * 3 * 6 * 16 + flat * 120 + 120 * 84 + 84 * n_classes


def resnet50_macs(image_size: int, n_classes: int, dense_units: int = 256) -> int:
    """ResNet50 as Keras builds it (each stage's first block strides in its first 1x1 convolution
    and its projection shortcut) and the published head: Dense(``dense_units``) → Dense(K)."""
    side = (image_size + 6 - 7) // 2 + 1  # conv1: 7x7, stride 2, after 3 pixels of zero padding
    macs = side**2 * 7 * 7 * 3 * 64
    side = (side + 2 - 3) // 2 + 1  # max pooling 3x3, stride 2, after 1 pixel of padding
    channels = 64
    for blocks, width, stride in RESNET50_STAGES:
        for block in range(blocks):
            first = block == 0
            out = (side - 1) // stride + 1 if first else side  # the first 1x1 convolution strides
            macs += out**2 * channels * width + out**2 * 9 * width * width + out**2 * width * 4 * width
            if first:  # the projection shortcut
                macs += out**2 * channels * 4 * width
            side, channels = out, 4 * width
    return macs + channels * dense_units + dense_units * n_classes
