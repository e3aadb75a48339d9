"""Fixtures of the long2short tests; the builders live in ``support.l2s_tiny``."""

from __future__ import annotations

import pytest
from support.l2s_tiny import tiny_tokenizer
from transformers import PreTrainedTokenizerFast


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return tiny_tokenizer()
