"""Shared-prompt packing: the k samples of one prompt computed with ONE copy of the prompt.

A group of k responses to the same prompt (the GRPO/k1.5 batch shape) costs k·(P + R) token
positions in every layer as separate rows, though the k prompt copies compute identical
hidden states. Here the group becomes one sequence ``prompt, response_1, …, response_k``
with the positions each token has in its own row (prompt 0 … P-1, every response P … P+m_j-1)
and a 4-D attention mask in which response j sees the prompt and its own earlier tokens,
never another response:

    allowed[i, j] = (j ≤ i) ∧ (doc_i = doc_j) ∧ (seg_j = 0 ∨ seg_j = seg_i)

(seg 0 = the prompt, seg s = response s; doc = which group, several groups share a bin).
Every response token then has exactly the keys, values and positions of the padded forward,
so its log-prob is the same up to float summation order, and the backward sums the k
responses' gradients through the one prompt copy — the gradient of the k separate rows.
Cost: P + Σ m_j positions instead of k·(P + R); attention over a dense mask of the bin
(O(C²) for a bin of C positions), so long groups can be split (``capacity``).

The shared prefix of a row is everything before its first response-mask position; rows
whose prefixes are identical token for token share it. Pure tensors in, tensors out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rllib_k15.core.packing import first_fit_decreasing

__all__ = [
    "SharedPromptRows",
    "pack_shared_prompts",
    "shared_logits_to_keep",
    "shared_prompt_groups",
    "shared_token_logprobs",
]


@dataclass(frozen=True)
class SharedPromptRows:
    """A micro-batch laid out with one prompt copy per group (chunk).

    input_ids:     (S, C) token ids of the S bins (pad id in unused tails).
    position_ids:  (S, C) each token's position in its own original row.
    allowed:       (S, C, C) bool, query i may attend key j.
    source:        (B, T) flat index (bin · C + position) of the hidden state that predicts
                   token t of original row b (the position of token t-1); 0 where unused.
    scored:        (B, T) bool, token t of row b gets a log-prob (its own segment, t ≥ 1).
    row_tokens:    real tokens of the original rows (Σ attention mask).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    allowed: torch.Tensor
    source: torch.Tensor
    scored: torch.Tensor
    row_tokens: int

    @property
    def positions_per_real_token(self) -> float:
        """Packed positions ÷ tokens of the original rows (< 1: the prompts are shared)."""
        return self.input_ids.numel() / max(self.row_tokens, 1)


def _prefix_lengths(attention_mask: torch.Tensor, response_mask: torch.Tensor) -> list[int]:
    """Tokens before each row's first response token (the whole row if it has none)."""
    lengths = attention_mask.sum(-1).to(torch.long)
    has = response_mask.bool().any(-1)
    first = response_mask.float().argmax(-1)
    return [int(f) if h else int(n) for f, h, n in zip(first, has, lengths)]


def shared_prompt_groups(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    capacity: int | None = None,
) -> list[tuple[int, list[int], int]]:
    """(prefix length P, member rows, positions P + Σ m_j) per shared sequence: rows with
    identical prefixes, in order of first appearance, split so that P + Σ m_j ≤ ``capacity``
    (None: never split; a single row longer than ``capacity`` stays whole)."""
    lengths = attention_mask.sum(-1).to(torch.long).tolist()
    prefix = _prefix_lengths(attention_mask, response_mask)
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, p in enumerate(prefix):
        groups.setdefault(tuple(input_ids[row, :p].tolist()), []).append(row)
    out: list[tuple[int, list[int], int]] = []
    for key, rows in groups.items():
        p, current, used = len(key), [], len(key)
        for row in rows:
            own = lengths[row] - p
            if current and capacity is not None and used + own > capacity:
                out.append((p, current, used))
                current, used = [], p
            current.append(row)
            used += own
        out.append((p, current, used))
    return out


def pack_shared_prompts(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    pad_token_id: int = 0,
    capacity: int | None = None,
) -> SharedPromptRows:
    """Lay right-padded rows out with shared prompts (module doc). ``capacity``: at most
    this many positions per shared sequence and bin (at least the longest row); None: a
    group is never split and bins are as wide as the longest group sequence."""
    lengths = attention_mask.sum(-1).to(torch.long).tolist()
    if min(lengths) == 0:
        raise ValueError("pack_shared_prompts got a row without tokens")
    if capacity is not None:
        capacity = max(int(capacity), max(lengths))
    chunks = shared_prompt_groups(input_ids, attention_mask, response_mask, capacity)
    sizes = [size for _, _, size in chunks]
    width = capacity if capacity is not None else max(sizes)
    bins = first_fit_decreasing(sizes, width)
    device = input_ids.device
    n_bins, (batch, t_max) = len(bins), input_ids.shape
    ids = torch.full((n_bins, width), pad_token_id, dtype=input_ids.dtype, device=device)
    pos = torch.zeros((n_bins, width), dtype=torch.long, device=device)
    doc = torch.full((n_bins, width), -1, dtype=torch.long, device=device)
    seg = torch.zeros((n_bins, width), dtype=torch.long, device=device)
    source = torch.zeros((batch, t_max), dtype=torch.long, device=device)
    scored = torch.zeros((batch, t_max), dtype=torch.bool, device=device)
    for b, members in enumerate(bins):
        start = 0
        for chunk_index in members:
            p, rows, _ = chunks[chunk_index]
            ids[b, start : start + p] = input_ids[rows[0], :p]
            pos[b, start : start + p] = torch.arange(p, device=device)
            doc[b, start : start + p] = chunk_index
            prompt_last, cursor = start + p - 1, start + p
            for s, row in enumerate(rows, start=1):
                m = lengths[row] - p
                ids[b, cursor : cursor + m] = input_ids[row, p : p + m]
                pos[b, cursor : cursor + m] = torch.arange(p, p + m, device=device)
                doc[b, cursor : cursor + m], seg[b, cursor : cursor + m] = chunk_index, s
                # token p is predicted by the prompt's last position, p+u by segment pos u-1
                if m and p >= 1:
                    source[row, p] = b * width + prompt_last
                    scored[row, p] = True
                if m > 1:
                    steps = torch.arange(1, m, device=device)
                    source[row, p + steps] = b * width + cursor + steps - 1
                    scored[row, p + steps] = True
                cursor += m
            start = cursor
        tail = width - start  # unused tail: its own causal "document", never read
        pos[b, start:] = torch.arange(tail, device=device)
    i = torch.arange(width, device=device)
    causal = i[None, :] <= i[:, None]  # (C, C): key j ≤ query i
    same_doc = doc[:, :, None] == doc[:, None, :]
    own_or_prompt = (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])
    allowed = causal[None] & same_doc & own_or_prompt
    return SharedPromptRows(ids, pos, allowed, source, scored, int(sum(lengths)))


def shared_token_logprobs(
    logits: torch.Tensor, packing: SharedPromptRows, input_ids: torch.Tensor
) -> torch.Tensor:
    """(B, T) float32 log p(x_t | x_<t) of the original rows from the packed logits.

    logits: (S, L, V) for the LAST L positions of each bin (``logits_to_keep=L``). Entry
    [b, t] = logits[source_bt] [x_t] − logsumexp(logits[source_bt]) where ``scored``; 0
    elsewhere (prompt tokens, padding). Differentiable (a gather)."""
    offset = packing.input_ids.shape[1] - logits.shape[1]
    flat_source = packing.source[packing.scored]  # (N,) bin · C + position
    width = packing.input_ids.shape[1]
    bin_index, position = flat_source // width, flat_source % width
    if bool((position < offset).any()):
        raise ValueError("logits_to_keep dropped a position that predicts a response token")
    picked = logits[bin_index, position - offset].float()  # (N, V)
    targets = input_ids[packing.scored]  # (N,)
    values = picked.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(picked, dim=-1)
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=logits.device)
    return out.masked_scatter(packing.scored, values)


def shared_logits_to_keep(packing: SharedPromptRows) -> int:
    """Trailing positions per bin that cover every predicting position."""
    width = packing.input_ids.shape[1]
    if not bool(packing.scored.any()):
        return width
    first = int((packing.source[packing.scored] % width).min())
    return width - first
