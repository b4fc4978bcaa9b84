import torch
from torch.autograd import gradcheck

from photostyle.losses import ContentLoss, PhotorealismLoss, SegmentStyleLoss, layer_masks, segment_grams


def _masks(h, w):
    m = torch.zeros(1, 2, h, w, dtype=torch.float64)
    m[:, 0, : h // 2] = 1
    m[:, 1, h // 2 :] = 1
    return m


def test_segment_grams_match_explicit_gram():
    f = torch.randn(1, 4, 6, 5, dtype=torch.float64)
    m = _masks(6, 5)
    grams, area = segment_grams(f, m)
    top = f[0, :, :3].flatten(1)
    assert torch.allclose(grams[0], top @ top.T / top.shape[1])
    assert torch.allclose(area, torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_style_loss_is_zero_at_target_and_segment_wise():
    torch.manual_seed(0)
    style = {"a": torch.randn(1, 3, 8, 8, dtype=torch.float64)}
    loss = SegmentStyleLoss(style, _masks(8, 8), _masks(8, 8))
    assert loss(style).item() < 1e-20
    # Swapping the two halves changes per-segment statistics, though the global Gram stays the same.
    swapped = {"a": torch.cat([style["a"][:, :, 4:], style["a"][:, :, :4]], dim=2)}
    assert loss(swapped).item() > 1e-2
    global_loss = SegmentStyleLoss(style, torch.ones(1, 1, 8, 8, dtype=torch.float64), torch.ones(1, 1, 8, 8, dtype=torch.float64))
    assert global_loss(swapped).item() < 1e-20


def test_layer_masks_resize_to_feature_size():
    m = _masks(16, 16)
    small = layer_masks(m, (4, 4))
    assert small.shape == (1, 2, 4, 4)
    assert torch.allclose(small.sum(1), torch.ones(1, 4, 4, dtype=torch.float64))


def test_content_loss_gradient_matches_finite_differences():
    target = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    loss = ContentLoss(target)
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(loss, (x,))


def test_style_loss_gradient_matches_finite_differences():
    style = {"a": torch.randn(1, 3, 6, 6, dtype=torch.float64), "b": torch.randn(1, 2, 3, 3, dtype=torch.float64)}
    loss = SegmentStyleLoss(style, _masks(6, 6), _masks(6, 6))
    a = torch.randn(1, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda a, b: loss({"a": a, "b": b}), (a, b))


def test_photorealism_loss_gradient_and_affine_invariance():
    torch.manual_seed(0)
    content = torch.rand(1, 3, 7, 8, dtype=torch.float64)
    loss = PhotorealismLoss(content)
    x = torch.rand(1, 3, 7, 8, dtype=torch.float64, requires_grad=True)
    assert gradcheck(loss, (x,))
    recoloured = torch.einsum("ij,bjhw->bihw", torch.rand(3, 3, dtype=torch.float64), content) + 0.1
    assert loss(recoloured).item() < 1e-6 * loss(x).item()


def test_segment_grams_and_their_gradient_match_the_plain_formula_for_soft_sparse_and_dense_masks():
    torch.manual_seed(0)
    f = torch.randn(1, 5, 9, 10, dtype=torch.float64, requires_grad=True)
    m = torch.zeros(1, 3, 9, 10, dtype=torch.float64)
    m[:, 0, :4] = 1.0
    m[:, 0, 4:6] = 0.3  # a soft border shared with segment 1
    m[:, 1, 4:] = 1.0 - m[:, 0, 4:]
    m[:, 2] = torch.rand(9, 10, dtype=torch.float64)  # touches every pixel: the dense path
    weights = torch.randn(3, 5, 5, dtype=torch.float64)
    grams, _ = segment_grams(f, m)
    flat, masks = f[0].flatten(1), m[0].flatten(1)
    plain = torch.stack([(flat * mk) @ flat.T / mk.sum() for mk in masks])
    assert torch.allclose(grams, plain)
    (mine,) = torch.autograd.grad((grams * weights).sum(), f)
    (expected,) = torch.autograd.grad((plain * weights).sum(), f)
    assert torch.allclose(mine, expected)
    assert gradcheck(lambda x: segment_grams(x, m)[0], (f,))
