"""token_logprobs with trailing logits only (logits_to_keep) equals the full computation."""

import torch

from rllib_k15.core.sequences import logits_to_keep, token_logprobs


def test_logits_to_keep_counts_from_first_response_position():
    mask = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]])
    # first response position 3 -> logits needed at positions 2..5
    assert logits_to_keep(mask) == 4
    assert logits_to_keep(torch.zeros(2, 6)) == 6
    assert logits_to_keep(torch.tensor([[1, 1, 0]])) == 3


def test_trailing_logits_give_the_same_response_logprobs():
    torch.manual_seed(0)
    ids = torch.randint(0, 11, (3, 7))
    logits = torch.randn(3, 7, 11)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 0, 0]])
    keep = logits_to_keep(mask)
    full = token_logprobs(logits, ids) * mask
    tail = token_logprobs(logits[:, -keep:], ids) * mask
    torch.testing.assert_close(tail, full)
    assert tail.shape == ids.shape
    # positions before the kept window are exactly zero
    assert torch.all(token_logprobs(logits[:, -keep:], ids)[:, : ids.shape[1] - keep + 1] == 0)
