"""Padding-free packing (rllib_k15.core.packing): bins, the round trip, and a real model's
log-probs from packed rows equal to the padded forward's (and NOT equal when the rows are
laid end to end without restarting the position ids, i.e. when rows could see each other)."""

import pytest
import torch
from support.l2s_tiny import tiny_model

from rllib_k15.core.packing import (
    first_fit_decreasing,
    pack_rows,
    packed_logits_to_keep,
    unpack_rows,
)
from rllib_k15.core.sequences import logits_to_keep, token_logprobs


def _rows(lengths, width=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(3, 60, (n,), generator=gen)
        mask[b, :n] = 1
    return ids, mask


def test_first_fit_decreasing_respects_capacity_and_places_every_row_once():
    lengths = [9, 2, 7, 3, 3, 5, 1, 8]
    bins = first_fit_decreasing(lengths, capacity=10)
    assert sorted(r for b in bins for r in b) == list(range(len(lengths)))
    assert all(sum(lengths[r] for r in b) <= 10 for b in bins)
    assert len(bins) == 4  # 38 tokens in [9,1] [8,2] [7,3] [5,3]: the optimum
    assert bins[0] == [0, 6]  # longest first, then the first bin with room
    with pytest.raises(ValueError, match="does not fit"):
        first_fit_decreasing([11], capacity=10)


def test_pack_then_unpack_gives_back_every_real_token_and_zeros_elsewhere():
    ids, mask = _rows([6, 2, 3, 1, 4], width=8)
    packing = pack_rows(ids, mask, pad_token_id=0)
    assert packing.input_ids.shape[1] == 6  # capacity: the longest row
    assert packing.input_ids.shape[0] == 3  # 16 tokens in bins of 6: [6] [4,2] [3,1]
    assert packing.padded_fraction == pytest.approx(1 - 16 / 18)
    back = unpack_rows(packing.input_ids.float(), packing, width=8)
    expected = (ids * mask).float()
    expected[:, 0] = 0  # a row's first position has no prediction
    torch.testing.assert_close(back, expected)
    # position ids restart per row
    for b in range(len(ids)):
        start = int(packing.start_of_row[b])
        n = int(packing.lengths[b])
        row = packing.position_ids[packing.bin_of_row[b], start : start + n]
        assert row.tolist() == list(range(n))


def test_packed_logits_to_keep_covers_every_response_token():
    ids, mask = _rows([6, 2, 3, 4], width=6)
    response = mask.clone()
    response[:, :2] = 0  # first two tokens of each row are prompt
    packing = pack_rows(ids, mask)
    keep = packed_logits_to_keep(response, packing)
    first_needed = min(int(packing.start_of_row[b]) + 2 - 1 for b in range(4) if response[b].any())
    assert keep == packing.input_ids.shape[1] - first_needed
    assert logits_to_keep(response) == 6 - 1  # the padded rule, for comparison


def _padded_logp(model, ids, mask):
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    return token_logprobs(logits, ids) * mask


def test_packed_forward_matches_padded_log_probs_of_a_real_model():
    torch.manual_seed(0)
    model = tiny_model(seed=0).eval()
    ids, mask = _rows([12, 3, 7, 5, 2, 9], seed=1)
    packing = pack_rows(ids, mask)
    assert packing.input_ids.shape[0] < ids.shape[0]  # some rows share a bin
    with torch.no_grad():
        padded = _padded_logp(model, ids, mask)
        logits = model(
            input_ids=packing.input_ids, position_ids=packing.position_ids, use_cache=False
        ).logits
        packed = unpack_rows(token_logprobs(logits, packing.input_ids), packing, ids.shape[1])
        torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
        # control: the same bins with one running position id per bin are ONE sequence to
        # the model, so later rows attend to earlier ones and their log-probs change
        running = torch.arange(packing.input_ids.shape[1]).expand_as(packing.input_ids)
        leaked = model(input_ids=packing.input_ids, position_ids=running, use_cache=False).logits
        leaked = unpack_rows(token_logprobs(leaked, packing.input_ids), packing, ids.shape[1])
    shared = packing.start_of_row > 0  # rows placed after another row in their bin
    assert (leaked[shared] - padded[shared]).abs().max() > 1e-3


def test_packed_gradients_match_padded_gradients():
    model = tiny_model(seed=0)
    ids, mask = _rows([10, 4, 6, 3], seed=2)
    _padded_logp(model, ids, mask).sum().backward()
    padded_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    packing = pack_rows(ids, mask)
    logits = model(
        input_ids=packing.input_ids, position_ids=packing.position_ids, use_cache=False
    ).logits
    unpack_rows(token_logprobs(logits, packing.input_ids), packing, ids.shape[1]).sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, padded_grads[name], atol=1e-5, rtol=1e-4)


def test_pack_rows_refuses_an_empty_row():
    ids, mask = _rows([3, 2])
    mask[1] = 0
    with pytest.raises(ValueError, match="without tokens"):
        pack_rows(ids, mask)
