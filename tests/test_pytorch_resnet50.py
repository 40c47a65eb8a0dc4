"""ResNet50 laid out as Keras's, in PyTorch (``pytorch_impl/resnet50.py``), and its arm: what is
PyTorch's own. Nothing here needs TensorFlow: the conversion of the Keras arm's weights and the
comparison with Keras's network are ``tests/test_same_backbone.py``'s.

What every arm must do is checked over every arm in ``tests/test_arm_contract.py``; the arm
trained once per session (``pytorch_resnet50_case``) is a network of ResNet50's kind with one
narrow block per stage (``tests/arm_cases.py``). ResNet50 itself appears where it is the point.
"""

from __future__ import annotations

import operator
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("shap")

from torch import fx, nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from common.seeding import image_seeds  # noqa: E402
from pytorch_impl.explain import explain  # noqa: E402
from pytorch_impl.resnet50 import BATCH_NORM_EPSILON, KerasMaxPool, ResNet50Preprocess, build_model  # noqa: E402
from pytorch_impl.weights import _torch_prefix, load_backbone_state  # noqa: E402
from tests.arm_cases import RESNET_STAND_IN, SIZE, STAND_IN  # noqa: E402

pytestmark = pytest.mark.pytorch

NONLINEAR = (nn.ReLU, nn.MaxPool2d, nn.Softmax)


class _PoolAsLeaf(fx.Tracer):
    """Traces through the project's modules but keeps KerasMaxPool a call (its window copy is
    checked on its own below)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, KerasMaxPool) or super().is_leaf_module(m, qualname)


def test_resnet50_is_keras_layer_for_layer():
    model = build_model(n_classes=3, image_size=224)
    convs = {name: m for name, m in model.backbone.named_modules() if isinstance(m, nn.Conv2d)}
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(norms) == 53  # Keras's ResNet50: 53 convolutions, each with its batch norm
    assert all(c.bias is not None for c in convs.values())  # Keras's convolutions carry biases
    assert {m.eps for m in norms} == {BATCH_NORM_EPSILON} == {1.001e-5}
    assert convs["conv1.0"].kernel_size == (7, 7) and convs["conv1.0"].padding == (3, 3)
    for stage, stride in (("conv2", 1), ("conv3", 2), ("conv4", 2), ("conv5", 2)):
        first = f"{stage}.block1"
        # the first block strides in its first 1x1 convolution and its shortcut, not in the 3x3
        assert convs[f"{first}.conv1.0"].kernel_size == (1, 1) and convs[f"{first}.conv1.0"].stride == (stride,) * 2
        assert convs[f"{first}.shortcut.0"].stride == (stride,) * 2
        assert convs[f"{first}.conv2.0"].stride == (1, 1) and convs[f"{first}.conv2.0"].padding == (1, 1)
        assert convs[f"{stage}.block2.conv1.0"].stride == (1, 1)
    assert [len(getattr(model.backbone, s)) for s in ("conv2", "conv3", "conv4", "conv5")] == [3, 4, 6, 3]
    assert model.head[1].in_features == 2048 and model.head[1].out_features == 256
    assert model.head[3].p == 0.5 and model.head[4].out_features == 3
    with torch.no_grad():
        assert model.backbone(torch.zeros(1, 3, 224, 224)).shape == (1, 2048, 7, 7)
        assert model(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, 3)
    # only the head trains
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(name.startswith("head.") for name in trainable)


def test_every_nonlinearity_is_a_module_leaf_used_once_and_every_other_op_is_linear():
    model = build_model(n_classes=3, image_size=SIZE, **RESNET_STAND_IN)
    modules = [m for _, m in model.named_modules(remove_duplicate=False)]
    assert len({id(m) for m in modules}) == len(modules), "a module object appears twice"
    for m in modules:
        if isinstance(m, NONLINEAR):
            assert not list(m.children())
        assert not getattr(m, "inplace", False), f"in-place {type(m).__name__}"
    graph = fx.GraphModule(model, _PoolAsLeaf().trace(model)).graph
    called = [n.target for n in graph.nodes if n.op == "call_module"]
    leaves = [name for name, m in model.named_modules() if not list(m.children()) and name != "preprocess"]
    leaves = [name for name in leaves if not name.endswith("pool1.pool")] + ["backbone.pool1"]
    assert sorted(called) == sorted(leaves)  # each called once; the residual adds and the preprocessing:
    functions = {n.target for n in graph.nodes if n.op == "call_function"}
    assert functions <= {operator.add, operator.sub, operator.getitem}
    assert {n.target for n in graph.nodes if n.op == "call_method"} <= {"flip"}


def test_keras_max_pooling_is_the_overlapping_pooling_and_its_deep_shap_maps_add_up():
    x = torch.randn(4, 5, 9, 12)
    expected = F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 2)  # Keras: ZeroPadding2D(1) + MaxPooling2D(3, 2)
    assert torch.equal(KerasMaxPool()(x), expected)

    class Pool(nn.Module):  # the same pooling as PyTorch's overlapping module, for comparison
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.MaxPool2d(3, 2)

        def forward(self, x):
            return self.pool(F.pad(x, (1, 1, 1, 1)))

    def tiny(pool: nn.Module) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), pool, nn.Flatten(), nn.Linear(4 * 7 * 7, 2))

    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    errors = {}
    for name, pool in (("keras", KerasMaxPool()), ("overlapping", Pool())):
        e = explain(tiny(pool), images[:2], images[2:], "deep", nsamples=0, seeds=image_seeds(0, images[:2]))
        sums = e.attributions.reshape(2, 2, -1).sum(-1)
        errors[name] = np.abs(sums - (e.outputs - e.base_values)).max() / np.abs(e.outputs - e.base_values).max()
    # shap's handler un-pools overlapping windows by overwriting: maps that do not add up; the tiles do
    assert errors["keras"] < 1e-5 < 1e-2 < errors["overlapping"], errors


def test_the_preprocessing_is_keras_caffe_mode():
    x = torch.rand(2, 3, 4, 5) * 255
    out = ResNet50Preprocess()(x)
    bgr_mean = torch.tensor([103.939, 116.779, 123.68])
    assert torch.allclose(out, x[:, [2, 1, 0]] - bgr_mean[:, None, None])


def test_keras_layer_names_map_onto_the_modules_and_nothing_else():
    assert _torch_prefix("conv1_conv") == "conv1.0" and _torch_prefix("conv1_bn") == "conv1.1"
    assert _torch_prefix("conv4_block6_2_bn") == "conv4.block6.conv2.1"
    assert _torch_prefix("conv3_block1_0_conv") == "conv3.block1.shortcut.0"
    for name in ("conv1_relu", "pool1_pad", "conv2_block1_out", "dense", "conv6_block1_1_conv"):
        with pytest.raises(ValueError, match="not a layer"):
            _torch_prefix(name)
    model = build_model(3, SIZE, **RESNET_STAND_IN)
    state = {k: v.numpy() for k, v in model.backbone.state_dict().items()}
    with pytest.raises(RuntimeError, match="Missing key"):
        load_backbone_state(model, {k: v for k, v in state.items() if not k.endswith("running_var")})


def test_fit_trains_the_head_on_the_frozen_backbone_and_records_it(pytorch_resnet50_case, tmp_path):
    arm = pytorch_resnet50_case.arm
    info = pytorch_resnet50_case.result.info
    assert info["backbone_weights"] == STAND_IN and info["training_route"] == "backbone features, computed once"
    head = sum(p.numel() for p in arm.model.head.parameters())
    assert info["backbone_frozen"] and info["n_trainable_parameters"] == head
    assert any("not transfer learning" in f for f in pytorch_resnet50_case.result.fallbacks)
    arm.save(tmp_path / "model.pt")
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert checkpoint["model_args"]["blocks"] == list(RESNET_STAND_IN["blocks"])
    assert checkpoint["backbone"] == {"weights": STAND_IN, "digest": ""}


def test_captum_cross_check_agrees_with_shap(pytorch_resnet50_case):
    # the tiled max pooling keeps Captum's DeepLIFT right too (its MaxPool rule un-pools as shap's)
    arm, images, background = pytorch_resnet50_case.arm, pytorch_resnet50_case.images, pytorch_resnet50_case.background
    classes = arm.predict_proba(images).argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum says it sets hooks on the (private) copy
        theirs = arm.explain_independently(images, background, "deep", nsamples=0, seed=0, classes=classes)
    ours = arm.explain(images, background, "deep", nsamples=0, seed=0, classes=classes)
    diff = np.abs(theirs.attributions - ours.attributions).max() / np.abs(ours.attributions).max()
    assert diff < 1e-4, diff  # the same estimator, as the CNN's cross-check (tests/test_pytorch_arm.py)
