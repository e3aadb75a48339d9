"""Padding-free learner batches: several ``prompt + response`` rows packed into one.

A right-padded micro-batch of B rows, longest W, costs B·W token positions in every linear
layer; only Σ_b n_b of them are real. Packing lays the rows end to end in bins of
``capacity`` ≥ W positions (first-fit decreasing), with position ids restarting at 0 for
each row, and runs the model with ``attention_mask=None``: Hugging Face ``transformers``
then reads the sequence boundaries off the position ids and attends block-diagonally
(``masking_utils.find_packed_sequence_indices``; flash-attention's varlen kernel on a GPU,
a block-diagonal mask for SDPA/eager on a CPU). Every row sees exactly its own prefix, so
its log-probs equal the padded forward's up to float summation order.

Cost model (why bins instead of one long row): with a dense block-diagonal mask the
attention scores of a bin of C positions cost O(C²), so one row of all B·n tokens would pay
B× the padded attention. Bins of C = W never cost more attention than the padded batch
(N·W ≤ B·W² for N real tokens), and the linear layers see ⌈N / W⌉·W ≈ N positions.

These helpers are pure (tensors in, tensors out) and importable without Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "PackedRows",
    "first_fit_decreasing",
    "pack_rows",
    "packed_logits_to_keep",
    "unpack_rows",
]


@dataclass(frozen=True)
class PackedRows:
    """A packed micro-batch and where each original row went.

    input_ids:     (P, C) token ids of the P bins; a bin's unused tail holds ``pad_token_id``.
    position_ids:  (P, C) 0 … n_b - 1 for each row b in the bin (the unused tail counts
                   from 0 as well, a separate "sequence" whose outputs are never read).
    bin_of_row:    (B,) bin index of each original row.
    start_of_row:  (B,) first position of each row in its bin.
    lengths:       (B,) real tokens of each row (its attention-mask sum).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    bin_of_row: torch.Tensor
    start_of_row: torch.Tensor
    lengths: torch.Tensor

    @property
    def padded_fraction(self) -> float:
        """Share of the packed positions that hold no real token."""
        return 1.0 - float(self.lengths.sum()) / self.input_ids.numel()


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins of row indices whose lengths sum to ≤ ``capacity``: rows longest first, each into
    the first bin with room (≤ 11/9 · optimum + 1 bins). Stable for equal lengths."""
    if any(n > capacity for n in lengths):
        raise ValueError(f"a row of {max(lengths)} tokens does not fit a bin of {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    room: list[int] = []
    for row in order:
        for b, free in enumerate(room):
            if lengths[row] <= free:
                bins[b].append(row)
                room[b] -= lengths[row]
                break
        else:
            bins.append([row])
            room.append(capacity - lengths[row])
    return bins


def pack_rows(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    pad_token_id: int = 0,
    capacity: int | None = None,
) -> PackedRows:
    """Pack right-padded rows (real tokens first, then padding) into bins of ``capacity``
    positions (default, and at least: the longest row, so by default no bin is wider than
    the padded batch)."""
    lengths = attention_mask.sum(-1).to(torch.long)
    if bool((lengths == 0).any()):
        raise ValueError("pack_rows got a row without tokens")
    width = int(lengths.max())
    capacity = width if capacity is None else max(int(capacity), width)
    bins = first_fit_decreasing(lengths.tolist(), capacity)
    device = input_ids.device  # the packed rows go where the model is (CPU or GPU)
    packed_ids = torch.full(
        (len(bins), capacity), pad_token_id, dtype=input_ids.dtype, device=device
    )
    positions = torch.zeros((len(bins), capacity), dtype=torch.long, device=device)
    bin_of_row = torch.zeros(len(lengths), dtype=torch.long, device=device)
    start_of_row = torch.zeros(len(lengths), dtype=torch.long, device=device)
    for b, rows in enumerate(bins):
        start = 0
        for row in rows:
            n = int(lengths[row])
            packed_ids[b, start : start + n] = input_ids[row, :n]
            positions[b, start : start + n] = torch.arange(n, device=device)
            bin_of_row[row], start_of_row[row] = b, start
            start += n
        positions[b, start:] = torch.arange(capacity - start, device=device)
    return PackedRows(packed_ids, positions, bin_of_row, start_of_row, lengths.to(device))


def unpack_rows(values: torch.Tensor, packing: PackedRows, width: int) -> torch.Tensor:
    """Per-token values of the packed bins, (P, C), back to the padded layout (B, ``width``).

    Row b's position t < n_b reads bin[b], position start_b + t; positions t ≥ n_b and t = 0
    (no prediction of a row's first token: the value there belongs to the previous row in
    the bin) are 0, as in the padded forward's :func:`rllib_k15.core.sequences.
    token_logprobs`. Differentiable (a gather)."""
    steps = torch.arange(width, device=values.device)
    real = (steps < packing.lengths[:, None]) & (steps > 0)  # (B, width)
    flat = packing.bin_of_row[:, None] * values.shape[1] + packing.start_of_row[:, None] + steps
    flat = torch.where(real, flat, torch.zeros_like(flat))
    gathered = values.reshape(-1)[flat.reshape(-1)].reshape(flat.shape)
    return torch.where(real, gathered, torch.zeros_like(gathered))


def packed_logits_to_keep(response_mask: torch.Tensor, packing: PackedRows) -> int:
    """Trailing packed positions whose logits score every response token (as
    :func:`rllib_k15.core.sequences.logits_to_keep` for the padded rows): response token t
    of row b is predicted at bin position start_b + t - 1."""
    capacity = packing.input_ids.shape[1]
    has_response = response_mask.any(dim=1)
    if not bool(has_response.any()):
        return capacity
    first_t = response_mask.float().argmax(dim=1)  # first response token of each row
    first = int((packing.start_of_row + first_t)[has_response].min())
    return capacity - max(first - 1, 0)
