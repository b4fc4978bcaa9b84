import pytest
import torch

from photostyle.errors import InputError, WeightsError
from photostyle.masks import Segmentation
from photostyle.segmentation import available_segmenters, get_segmenter
from photostyle.segmentation.coseg import CoSegmenter, nmf
from photostyle.weights import status

REAL_WEIGHTS = next(s for s in status() if s.name == "vgg16-imagenet").available
needs_vgg16 = pytest.mark.skipif(not REAL_WEIGHTS, reason="vgg16-imagenet not cached (weights.ensure gets it)")


def _sky(h: int, w: int, tint: tuple[float, float, float], g: torch.Generator) -> torch.Tensor:
    """Smooth vertical gradient with faint noise, (3, h, w)."""
    ramp = torch.linspace(0.85, 1.0, h).view(1, h, 1)
    base = torch.tensor(tint).view(3, 1, 1) * ramp
    return (base + 0.01 * torch.randn(3, h, w, generator=g)).expand(3, h, w)


def _grass(h: int, w: int, tint: tuple[float, float, float], g: torch.Generator) -> torch.Tensor:
    """Dark/bright vertical blades with strong noise, (3, h, w)."""
    blades = (torch.rand(1, 1, w, generator=g) > 0.5).float().expand(1, h, w)
    shade = 0.45 + 0.4 * blades + 0.15 * torch.randn(1, h, w, generator=g)
    return torch.tensor(tint).view(3, 1, 1) * shade


@pytest.fixture(scope="module")
def synthetic_pair():
    """Content: sky left, grass right. Style: sky on top, grass below, other tints. With the true masks."""
    g = torch.Generator().manual_seed(0)
    h, w = 96, 128
    content = torch.cat([_sky(h, w // 2, (0.55, 0.75, 0.95), g), _grass(h, w // 2, (0.25, 0.6, 0.2), g)], dim=2)
    style = torch.cat([_sky(h // 2, w, (0.95, 0.7, 0.5), g), _grass(h // 2, w, (0.5, 0.55, 0.15), g)], dim=1)
    content_sky = torch.zeros(h, w, dtype=torch.bool)
    content_sky[:, : w // 2] = True
    style_sky = torch.zeros(h, w, dtype=torch.bool)
    style_sky[: h // 2] = True
    return content.clamp(0, 1)[None], style.clamp(0, 1)[None], content_sky, style_sky


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_nmf_recovers_a_low_rank_nonnegative_matrix():
    g = torch.Generator().manual_seed(1)
    v = torch.rand(60, 3, generator=g) @ torch.rand(3, 40, generator=g)
    w, h = nmf(v, 3, iterations=300)
    assert w.shape == (60, 3) and h.shape == (3, 40)
    assert bool((w >= 0).all() and (h >= 0).all())
    assert float((w @ h - v).norm() / v.norm()) < 0.05
    w2, h2 = nmf(v, 3, iterations=300)
    assert torch.equal(w, w2) and torch.equal(h, h2)  # seeded: deterministic


def test_nmf_rejects_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        nmf(torch.randn(5, 4), 2)
    with pytest.raises(ValueError, match="at least 1"):
        nmf(torch.rand(5, 4), 0)


def test_registered_as_unlabelled():
    assert "coseg" in available_segmenters()
    segmenter = get_segmenter("coseg", weights=None)
    assert isinstance(segmenter, CoSegmenter) and segmenter.name == "coseg" and not segmenter.labelled


def test_pair_shares_labels_and_partitions_each_photo():
    """Random VGG weights: only the contract is checked (shapes, shared labels, partition, determinism)."""
    torch.manual_seed(0)
    content, style = torch.rand(1, 3, 40, 56), torch.rand(1, 3, 48, 36)
    segmenter = CoSegmenter(weights=None, size=64, iterations=30, min_fraction=0.05)
    c, s = segmenter.segment_pair(content, style)
    assert isinstance(c, Segmentation) and c.labels == s.labels
    assert c.labels == [f"concept-{n}" for n in range(len(c.labels))]
    assert c.masks.shape == (1, len(c.labels), 40, 56) and s.masks.shape == (1, len(s.labels), 48, 36)
    for seg in (c, s):
        assert seg.is_hard() and torch.equal(seg.masks.sum(dim=1), torch.ones(1, *seg.size))
        if len(seg.labels) > 1:
            assert bool((seg.coverage() >= 0.05).all())
    c2, s2 = segmenter.segment_pair(content, style)
    assert torch.equal(c.masks, c2.masks) and torch.equal(s.masks, s2.masks)


def test_rejects_non_images():
    with pytest.raises(InputError, match=r"\(1, 3, H, W\)"):
        CoSegmenter(weights=None).segment(torch.rand(3, 20, 20))


def test_missing_weights_file_is_a_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        CoSegmenter(weights=str(tmp_path / "absent.safetensors")).segment(torch.rand(1, 3, 32, 32))


@needs_vgg16
def test_recovers_known_regions_consistently_across_photos(synthetic_pair):
    content, style, content_sky, style_sky = synthetic_pair
    c, s = CoSegmenter().segment_pair(content, style)
    assert c.labels == s.labels and len(c.labels) >= 2
    # the content label that best matches the sky must be the style's sky too, and likewise for grass
    for truth_c, truth_s in ((content_sky, style_sky), (~content_sky, ~style_sky)):
        scores = [_iou(c.masks[0, k] > 0.5, truth_c) for k in range(len(c.labels))]
        k = max(range(len(scores)), key=scores.__getitem__)
        assert scores[k] > 0.8, (c.labels, scores)
        assert _iou(s.masks[0, k] > 0.5, truth_s) > 0.8


@needs_vgg16
def test_segment_alone_splits_one_photo(synthetic_pair):
    content, _, content_sky, _ = synthetic_pair
    seg = CoSegmenter().segment(content)
    assert seg.size == tuple(content.shape[-2:])
    assert max(_iou(seg.masks[0, k] > 0.5, content_sky) for k in range(len(seg.labels))) > 0.8
