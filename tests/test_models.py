"""Model registry and backbones: every registered model builds, runs forward/backward and is seeded.

The generic tests are parametrised over ``list_models()``, so a newly registered model is covered without
new test code. A model can set ``fn.example_in_shape`` to the small input it should be tested on;
otherwise it is tested on digits-like ``(1, 8, 8)`` inputs.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from unlearnkit.errors import UnlearnkitError
from unlearnkit.models import MODELS, create_model, list_models

NUM_CLASSES = 5
BATCH = 2
DEFAULT_IN_SHAPE = (1, 8, 8)


def example_in_shape(name: str) -> tuple[int, ...]:
    """The input shape a model is tested on: its ``example_in_shape`` attribute or digits-like."""
    return tuple(getattr(MODELS.get(name), "example_in_shape", DEFAULT_IN_SHAPE))


def build(name: str, seed: int = 0, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, NUM_CLASSES, example_in_shape(name), **kwargs)


def test_standard_backbones_registered() -> None:
    assert {"mlp", "small_cnn", "allcnn", "resnet18", "resnet18_tv", "vgg16_bn"} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name: str) -> None:
    model = build(name)
    shape = example_in_shape(name)
    torch.manual_seed(1)
    x = torch.randn(BATCH, *shape)
    y = torch.arange(BATCH) % NUM_CLASSES

    model.train()
    out = model(x)
    assert out.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(out).all()
    nn.functional.cross_entropy(out, y).backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params
    for n, p in params:
        assert p.grad is not None, f"{name}: no gradient for {n}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {n}"
    assert any(p.grad.abs().sum() > 0 for _, p in params)

    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_init_is_seeded(name: str) -> None:
    a, b, c = build(name, seed=0).state_dict(), build(name, seed=0).state_dict(), build(name, seed=1).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{name}: {k} differs under the same seed"
        assert not a[k].is_floating_point() or torch.isfinite(a[k]).all(), f"{name}: {k} not finite"
    assert any(not torch.equal(a[k], c[k]) for k in a), f"{name}: seed does not change the weights"


def test_unknown_model_is_one_line_error() -> None:
    with pytest.raises(UnlearnkitError, match=r"unknown model 'nope'.*known: .*resnet18") as err:
        create_model("nope", 10, (3, 32, 32))
    assert "\n" not in str(err.value)
    with pytest.raises(UnlearnkitError, match=r"did you mean 'resnet18'"):
        create_model("resnet81", 10, (3, 32, 32))


@pytest.mark.parametrize(
    ("name", "in_shape", "match"),
    [
        ("allcnn", (40,), r"allcnn .*\(C, H, W\)"),
        ("allcnn", (1, 40), r"allcnn .*\(C, H, W\)"),
        ("allcnn", (1, 2, 8, 8), r"allcnn .*\(C, H, W\)"),
        ("allcnn", (1, 4, 8), r"allcnn needs images of at least 8x8, got 4x8"),
        ("resnet18", (1, 40), r"resnet18 .*\(C, H, W\)"),
        ("resnet18", (3, 7, 7), r"resnet18 needs images of at least 8x8"),
        ("resnet18_tv", (3, 28, 28), r"resnet18_tv needs images of at least 32x32"),
        ("vgg16_bn", (1, 40), r"vgg16_bn .*\(C, H, W\)"),
        ("vgg16_bn", (3, 16, 16), r"vgg16_bn needs images of at least 32x32"),
    ],
)
def test_bad_in_shape_is_one_line_error(name: str, in_shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(UnlearnkitError, match=match) as err:
        create_model(name, 10, in_shape)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("allcnn", {"dropout": 1.0}),
        ("allcnn", {"filters": 0.001}),
        ("vgg16_bn", {"hidden": -1}),
        ("vgg16_bn", {"hidden": 64, "compact": False}),
    ],
)
def test_bad_options_are_errors(name: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(UnlearnkitError):
        create_model(name, 10, (3, 32, 32), **kwargs)


# --- All-CNN ---------------------------------------------------------------------------------------------


def test_allcnn_convs_are_biasless_and_batch_normed() -> None:
    model = create_model("allcnn", 10, (3, 32, 32))
    blocks = [m for m in model.modules() if isinstance(m, nn.Sequential) and isinstance(m[0], nn.Conv2d)]
    assert len(blocks) == 8  # All-CNN-C's eight hidden convs; its final 1x1 class conv is the linear head here
    for block in blocks:
        assert block[0].bias is None
        assert isinstance(block[1], nn.BatchNorm2d)
    # Boundary Unlearning / Selective Forgetting checkpoint layout.
    keys = model.state_dict().keys()
    assert {"features.0.0.weight", "features.9.0.weight", "classifier.0.weight"} <= keys
    assert model.classifier[0].in_features == 192


@pytest.mark.parametrize("in_shape", [(1, 8, 8), (3, 12, 20), (4, 32, 32)])
def test_allcnn_any_image_size(in_shape: tuple[int, ...]) -> None:
    model = create_model("allcnn", 3, in_shape, filters=0.25).eval()
    assert model(torch.randn(2, *in_shape)).shape == (2, 3)


@pytest.mark.parametrize(("dropout", "p"), [(True, 0.5), (0.3, 0.3), (False, None), (0.0, None)])
def test_allcnn_dropout(dropout: float | bool, p: float | None) -> None:
    model = create_model("allcnn", 10, (3, 32, 32), filters=0.25, dropout=dropout)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in drops] == ([p, p] if p is not None else [])


# --- ResNet-18 -------------------------------------------------------------------------------------------


def test_resnet18_cifar_stem() -> None:
    model = create_model("resnet18", 10, (1, 8, 8))
    assert isinstance(model, torchvision.models.ResNet)
    assert model.conv1.in_channels == 1
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.bias is None
    assert isinstance(model.maxpool, nn.Identity)
    assert model.fc.out_features == 10
    assert model.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_resnet18_tv_is_torchvision_resnet18() -> None:
    model = create_model("resnet18_tv", 7, (3, 32, 32))
    ref = torchvision.models.resnet18(weights=None, num_classes=7)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    assert model.conv1.kernel_size == (7, 7) and isinstance(model.maxpool, nn.MaxPool2d)
    gray = create_model("resnet18_tv", 7, (1, 64, 64))
    assert gray.conv1.in_channels == 1 and gray.conv1.kernel_size == (7, 7) and gray.conv1.stride == (2, 2)


@pytest.fixture
def fake_imagenet_weights(monkeypatch):
    """Make torchvision's weight enums return a made-up state dict instead of downloading one.

    Tensor ``i`` of the state dict is filled with ``i / 100`` (shapes from a model built on the meta
    device, so nothing big is initialised); the dict is kept under the model's name for comparison.
    """
    made: dict[str, dict[str, torch.Tensor]] = {}

    def fake(builder, key):
        def get_state_dict(self, *args, **kwargs):
            with torch.device("meta"):
                shapes = builder().state_dict()
            made[key] = {k: torch.full(v.shape, i / 100).to(v.dtype) for i, (k, v) in enumerate(shapes.items())}
            return made[key]

        return get_state_dict

    for weights, builder, key in [
        (torchvision.models.ResNet18_Weights, torchvision.models.resnet18, "resnet18"),
        (torchvision.models.VGG16_BN_Weights, torchvision.models.vgg16_bn, "vgg16_bn"),
    ]:
        monkeypatch.setattr(weights, "get_state_dict", fake(builder, key))
    return made


def test_resnet18_tv_pretrained(fake_imagenet_weights) -> None:
    model = create_model("resnet18_tv", 10, (1, 32, 32), pretrained=True)
    sd = fake_imagenet_weights["resnet18"]
    assert torch.equal(model.layer1[0].conv1.weight, sd["layer1.0.conv1.weight"])
    assert torch.allclose(model.conv1.weight, sd["conv1.weight"].sum(1, keepdim=True))
    assert model.fc.out_features == 10
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    keep_head = create_model("resnet18_tv", 1000, (3, 32, 32), pretrained=True)
    assert torch.equal(keep_head.fc.weight, fake_imagenet_weights["resnet18"]["fc.weight"])


# --- VGG-16-BN -------------------------------------------------------------------------------------------


def test_vgg16_bn_compact_features_match_torchvision() -> None:
    model = create_model("vgg16_bn", 10, (1, 32, 32))
    with torch.device("meta"):
        ref = torchvision.models.vgg16_bn(weights=None)
    ref.features[0] = nn.Conv2d(1, 64, 3, padding=1)
    ref_feats = [(k, v.shape) for k, v in ref.features.state_dict().items()]
    assert [(k, v.shape) for k, v in model.features.state_dict().items()] == ref_feats
    assert [type(m) for m in model.features] == [type(m) for m in ref.features]
    assert [m.out_features for m in model.classifier if isinstance(m, nn.Linear)] == [10]
    hidden = create_model("vgg16_bn", 10, (3, 32, 32), hidden=256)
    assert [m.out_features for m in hidden.classifier if isinstance(m, nn.Linear)] == [256, 10]
    assert hidden.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_vgg16_bn_full_head_for_large_images() -> None:
    with torch.device("meta"):  # shapes only: skips initialising the 120M-parameter head
        model = create_model("vgg16_bn", 10, (3, 64, 64))
        forced = create_model("vgg16_bn", 10, (3, 32, 32), compact=False)
        out = model.eval()(torch.empty(1, 3, 64, 64))
    assert isinstance(model, torchvision.models.VGG) and isinstance(forced, torchvision.models.VGG)
    assert model.classifier[0].in_features == 512 * 7 * 7 and model.classifier[-1].out_features == 10
    assert out.shape == (1, 10)


def test_vgg16_bn_pretrained(fake_imagenet_weights) -> None:
    model = create_model("vgg16_bn", 10, (3, 32, 32), pretrained=True)
    sd = fake_imagenet_weights["vgg16_bn"]
    assert torch.equal(model.features[0].weight, sd["features.0.weight"])
    assert torch.equal(model.features[40].weight, sd["features.40.weight"])
    assert model.classifier[-1].out_features == 10
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
