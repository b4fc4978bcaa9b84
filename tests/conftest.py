"""Fixtures shared by the test files. Plain helpers (random photos, broken files) are in helpers.py."""

from __future__ import annotations

import pytest
import torch

from photostyle import weights, wordnet
from photostyle.errors import WeightsError


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Every test, and every module fixture, runs torch on one thread; the count is restored at the end.

    Tiny images run fastest on one thread, and the test machines are shared. Session scope so
    that it is in place before module-scoped fixtures that compute (``test_bench_runner``'s
    ``bench``), and so that hypothesis does not see a function-scoped fixture. Nothing in the
    package or the tests changes the count, so it holds for every test.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def wn():
    """NLTK's WordNet reader, after ``ensure_wordnet``; the test is skipped when the data is unavailable."""
    try:
        wordnet.ensure_wordnet()
    except WeightsError as err:
        pytest.skip(f"WordNet data unavailable: {err}")
    from nltk.corpus import wordnet as reader

    return reader


@pytest.fixture(scope="module")
def vgg16():
    """The ImageNet VGG16 weights are on disk; the test is skipped when they cannot be had."""
    try:
        weights.ensure("vgg16-imagenet")
    except WeightsError as err:
        pytest.skip(f"VGG16 weights not fetched: {err}")
