"""Fixtures of the long2short tests; the builders live in ``l2s_tiny``."""

from __future__ import annotations

import pytest
from l2s_tiny import tiny_tokenizer
from transformers import PreTrainedTokenizerFast


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return tiny_tokenizer()
