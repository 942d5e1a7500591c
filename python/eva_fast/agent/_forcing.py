"""Making a real model say given text: a logits processor that leaves only the next token of a fixed
reply (greedy decoding then emits it), so the model does its real per-token work while the
conversation follows a script. Used by benchmarks and tests of the agent loop and GRPO rollouts;
not part of inference."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class ForceTokens:
    """``transformers`` logits processor: at generation step ``k`` every logit of row ``i`` but that
    of ``rows[i][k]`` becomes ``-inf`` (a row's last id repeats if generation runs longer; rows past
    the given ones follow the last given row).

    Args:
        token_ids: one reply's ids for every row, or one list of ids per row of the batch (a
            batched ``generate``); each should end with the end-of-turn id to stop there.
        prompt_len: length of the (padded) prompt ``generate`` was given (steps count from there).

    Raises:
        ValueError: an empty reply.
    """

    def __init__(self, token_ids: Sequence[int] | Sequence[Sequence[int]], prompt_len: int) -> None:
        rows = [list(r) for r in token_ids] if token_ids and not isinstance(token_ids[0], int) else [list(token_ids)]
        if not all(rows):
            raise ValueError("ForceTokens needs at least one token id per row")
        self.rows = rows
        self.prompt_len = prompt_len

    @property
    def token_ids(self) -> list[int]:
        """The first row's reply."""
        return self.rows[0]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_len
        out = torch.full_like(scores, float("-inf"))
        for i in range(scores.shape[0]):
            ids = self.rows[min(i, len(self.rows) - 1)]  # rows past the given ones (a dummy row) take the last
            out[i, ids[min(step, len(ids) - 1)]] = 0.0
        return out
