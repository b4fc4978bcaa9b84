import os
import shutil
import sys

import pytest
import torch

from photostyle.errors import InputError, WeightsError
from photostyle.masks import Segmentation
from photostyle.segmentation import Segmenter, available_segmenters, get_segmenter, register_segmenter
from photostyle.segmentation.ade20k import ADE20K_CLASSES, ADE20KSegmenter

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised 150-class SegFormer with ADE20K names, saved like a hub checkpoint."""
    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2], decoder_hidden_size=16,
        num_labels=150, id2label=dict(enumerate(ADE20K_CLASSES)),
        label2id={name: i for i, name in enumerate(ADE20K_CLASSES)},
    )
    model = transformers.SegformerForSemanticSegmentation(config)
    with torch.no_grad():  # a strong spatial signal so several classes win somewhere
        model.decode_head.classifier.weight.normal_(0, 5.0)
    path = tmp_path_factory.mktemp("segformer-tiny")
    model.save_pretrained(path)
    return path


def test_ade20k_class_list():
    assert len(ADE20K_CLASSES) == 150 == len(set(ADE20K_CLASSES))
    assert ADE20K_CLASSES[2] == "sky" and ADE20K_CLASSES[20].startswith("car, auto")


def test_registry():
    assert "ade20k" in available_segmenters()
    with pytest.raises(InputError, match="ade20k"):
        get_segmenter("no-such-backend")


def test_segment_partitions_image_with_ade_labels(tiny_checkpoint):
    torch.manual_seed(1)
    segmenter = get_segmenter("ade20k", checkpoint=tiny_checkpoint, local_files_only=True, size=64)
    assert isinstance(segmenter, ADE20KSegmenter) and segmenter.labelled and segmenter.name == "ade20k"
    image = torch.rand(1, 3, 37, 53)
    seg = segmenter.segment(image)
    assert isinstance(seg, Segmentation)
    k = len(seg.labels)
    assert k >= 2 and seg.masks.shape == (1, k, 37, 53)
    assert set(seg.labels) <= set(ADE20K_CLASSES)
    assert seg.is_hard()
    assert torch.equal(seg.masks.sum(dim=1), torch.ones(1, 37, 53))
    assert bool((seg.masks.sum(dim=(0, 2, 3)) > 0).all())
    assert seg.labels == sorted(seg.labels, key=ADE20K_CLASSES.index)  # class-index order
    again = segmenter.segment(image)
    assert again.labels == seg.labels and torch.equal(again.masks, seg.masks)


def test_segment_rejects_bad_image(tiny_checkpoint):
    segmenter = ADE20KSegmenter(tiny_checkpoint, local_files_only=True, size=32)
    with pytest.raises(InputError, match=r"\(1, 3, H, W\)"):
        segmenter.segment(torch.rand(3, 16, 16))


def test_missing_weights_say_what_to_do(tmp_path):
    with pytest.raises(WeightsError, match="photostyle weights --fetch ade20k"):
        ADE20KSegmenter(tmp_path / "not-there", local_files_only=True)


def test_segment_pair_default_segments_each():
    class Halves(Segmenter):
        def segment(self, image):
            h, w = image.shape[-2:]
            left = torch.zeros(1, 1, h, w)
            left[..., : w // 2] = 1
            return Segmentation(torch.cat([left, 1 - left], dim=1), ["segment-0", "segment-1"])

    content, style = Halves().segment_pair(torch.rand(1, 3, 8, 10), torch.rand(1, 3, 6, 4))
    assert content.masks.shape == (1, 2, 8, 10) and style.masks.shape == (1, 2, 6, 4)
    assert not Halves.labelled


def test_register_segmenter_rejects_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        register_segmenter("ade20k")(type("Other", (Segmenter,), {"segment": lambda self, image: None}))


def test_missing_transformers_gives_install_command(monkeypatch, tiny_checkpoint):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(WeightsError, match=r"pip install 'photostyle\[ade20k\]'"):
        ADE20KSegmenter(tiny_checkpoint, local_files_only=True)


def test_classes_sharing_a_name_share_a_mask(tiny_checkpoint):
    segmenter = ADE20KSegmenter(tiny_checkpoint, local_files_only=True, size=64)
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    fine = segmenter.segment(image)
    segmenter.class_names = ["even" if i % 2 == 0 else "odd" for i in range(150)]
    coarse = segmenter.segment(image)
    assert set(coarse.labels) <= {"even", "odd"} and len(fine.labels) > len(coarse.labels)
    assert torch.equal(coarse.masks.sum(dim=1), torch.ones(1, 40, 40))
    even = sum(fine.masks[:, k] for k, name in enumerate(fine.labels) if ADE20K_CLASSES.index(name) % 2 == 0)
    assert torch.equal(coarse.masks[:, coarse.labels.index("even")], even)


def _refuse_hub(monkeypatch):
    """Make any call that would ask the hub (a load by hub id) fail the test."""
    real = transformers.AutoModelForSemanticSegmentation.from_pretrained

    def local_only(path, *args, **kwargs):
        assert os.path.isdir(path), f"from_pretrained was given a hub id ({path!r}), which may open a socket"
        return real(path, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForSemanticSegmentation, "from_pretrained", local_only)


def test_a_hub_id_missing_from_the_cache_is_refused_without_asking_the_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    _refuse_hub(monkeypatch)
    with pytest.raises(WeightsError, match="not on this machine.*photostyle weights --fetch ade20k"):
        ADE20KSegmenter("nvidia/segformer-b0-finetuned-ade-512-512", local_files_only=True)


def test_a_cached_hub_id_loads_from_its_snapshot_folder(monkeypatch, tmp_path, tiny_checkpoint):
    repo = tmp_path / "models--someone--tiny-segformer"
    shutil.copytree(tiny_checkpoint, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    _refuse_hub(monkeypatch)
    segmenter = ADE20KSegmenter("someone/tiny-segformer", local_files_only=True, size=32)
    assert len(segmenter.class_names) == 150
