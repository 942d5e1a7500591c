"""``python -m tests.train._synced_cli ARGS`` = ``eva-fast ARGS`` in one process of a torchrun job,
with generation synced across processes exactly as transformers syncs it under DeepSpeed ZeRO-3 or
FSDP (``synced_gpus=True``: each ``generate`` steps until every process's call is done, one
all-reduce per step), which gloo on CPU cannot shard for real (accelerate runs FSDP on GPUs only).

For tests only. From environment variables:

* ``EVA_FAST_TEST_FORCE``: a JSON file ``{"assistant": [ids of "<|im_start|>assistant"], "scripts":
  {"<rank>": [[ids of turn 0], [ids of turn 1], ...]}}``: every generated row of this process
  follows its rank's script (a logits processor leaves only the script's next token), the turn
  being the number of assistant turns in the row's prompt; so the processes' episodes have the
  lengths the test chose, whatever the tiny model would say. The rows still run through the
  model's forward (prefill with frames, one step per token).
* ``EVA_FAST_TEST_COUNTS``: a folder; at exit each process writes ``rank<r>.json``: its number of
  ``generate`` calls and vision-tower forwards (what must be equal on every process for sharded
  generation not to hang).
"""

from __future__ import annotations

import atexit
import json
import os
import sys

import torch
import transformers.generation.utils as generation_utils
from transformers import Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl

RANK = int(os.environ.get("RANK", "0"))

# what transformers' generate checks to set synced_gpus=True (with a world size > 1)
generation_utils.is_fsdp_managed_module = lambda module: True

COUNTS = {"generate": 0, "vision": 0}
_generate = Qwen2_5_VLForConditionalGeneration.generate
_vision_forward = modeling_qwen2_5_vl.Qwen2_5_VisionTransformerPretrainedModel.forward


class _FollowScript:
    """Per row: only the next token of the rank's reply for the row's turn survives."""

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, assistant: list[int],
                 script: list[list[int]]) -> None:
        self.prompt_len = input_ids.shape[1]
        self.rows = []
        n = len(assistant)
        pattern = torch.tensor(assistant)
        for i, row in enumerate(input_ids.cpu()):
            if attention_mask is not None:
                row = row[attention_mask[i].cpu().bool()]
            turns = sum(1 for k in range(len(row) - n + 1) if torch.equal(row[k:k + n], pattern))
            self.rows.append(script[min(max(turns - 1, 0), len(script) - 1)])

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_len
        out = torch.full_like(scores, float("-inf"))
        for i, ids in enumerate(self.rows):
            out[i, ids[min(step, len(ids) - 1)]] = 0.0
        return out


def _counted_generate(self, *args, **kwargs):
    COUNTS["generate"] += 1
    force = os.environ.get("EVA_FAST_TEST_FORCE")
    if force:
        spec = json.loads(open(force).read())
        follow = _FollowScript(kwargs["input_ids"], kwargs.get("attention_mask"), spec["assistant"],
                               spec["scripts"][str(RANK)])
        kwargs["logits_processor"] = [*(kwargs.get("logits_processor") or []), follow]
    return _generate(self, *args, **kwargs)


def _counted_vision_forward(self, *args, **kwargs):
    COUNTS["vision"] += 1
    return _vision_forward(self, *args, **kwargs)


Qwen2_5_VLForConditionalGeneration.generate = _counted_generate
modeling_qwen2_5_vl.Qwen2_5_VisionTransformerPretrainedModel.forward = _counted_vision_forward


@atexit.register
def _write_counts() -> None:
    folder = os.environ.get("EVA_FAST_TEST_COUNTS")
    if folder:
        with open(os.path.join(folder, f"rank{RANK}.json"), "w") as f:
            json.dump(COUNTS, f)


if __name__ == "__main__":
    from eva_fast.cli import main

    sys.exit(main())
