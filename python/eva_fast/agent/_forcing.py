"""Making a real model say given text: a logits processor that leaves only the next token of a fixed
reply (greedy decoding then emits it), so the model does its real per-token work while the
conversation follows a script. Used by benchmarks and tests of the agent loop and GRPO rollouts;
not part of inference."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class ForceTokens:
    """``transformers`` logits processor: at generation step ``k`` every logit but that of
    ``token_ids[k]`` becomes ``-inf`` (the last id repeats if generation runs longer).

    Args:
        token_ids: the reply's ids (end with the end-of-turn id to stop there).
        prompt_len: length of the prompt ``generate`` was given (steps count from there).
    """

    def __init__(self, token_ids: Sequence[int], prompt_len: int) -> None:
        if not token_ids:
            raise ValueError("ForceTokens needs at least one token id")
        self.token_ids = list(token_ids)
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_len
        out = torch.full_like(scores, float("-inf"))
        out[:, self.token_ids[min(step, len(self.token_ids) - 1)]] = 0.0
        return out
