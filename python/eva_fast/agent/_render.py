"""Chat rendering shared by inference and training: one function turns a conversation into token ids.

Every consumer of a Qwen2.5-VL conversation goes through :class:`ChatRenderer`:

* the agent's ``transformers`` backend (eval, ``eva-fast ask``) and GRPO rollouts: the first prompt
  is :meth:`ChatRenderer.render`\\ ed; every later tool turn is appended with
  :meth:`ChatRenderer.continuation` after the model's own generated ids (ids are extended turn by
  turn, never re-rendered and re-tokenized);
* the training collator (SFT, KTO): a stored conversation is :meth:`ChatRenderer.render`\\ ed whole,
  with the assistant mask that becomes the labels.

Rendering is the checkpoint's own chat template (``apply_chat_template``) with one
``<|image_pad|>`` per image, expanded to that image's LLM token count: the ids transformers'
``Qwen2_5_VLProcessor`` produces for the same conversation (tested). The assistant mask is 1 on each
assistant message's content tokens and on its end-of-turn token (``<|im_end|>``), 0 on everything
else (system, user and tool text, image pads, the template's ``<|im_start|>assistant\\n`` scaffolding
and the ``\\n`` after ``<|im_end|>``): exactly the tokens a model generates in a turn.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: The image placeholder token of Qwen2.5-VL (one per image in the template, expanded to the image's tokens).
IMAGE_PAD = "<|image_pad|>"
#: Qwen's end-of-turn token (the EOS of every assistant turn).
END_OF_TURN = "<|im_end|>"


def load_chat_template(model_path: str | os.PathLike, tokenizer: Any = None) -> str:
    """The checkpoint's chat template: ``chat_template.jinja``, else ``chat_template.json``, else the
    tokenizer's ``chat_template``.

    Raises:
        ValueError: none of them exists.
    """
    path = Path(model_path)
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").is_file():
        tmpl = json.loads((path / "chat_template.json").read_text()).get("chat_template")
        if isinstance(tmpl, str) and tmpl:
            return tmpl
    tmpl = getattr(tokenizer, "chat_template", None)
    if isinstance(tmpl, str) and tmpl:
        return tmpl
    raise ValueError(f"no chat template in {path} (chat_template.jinja, chat_template.json or tokenizer_config.json)")


def expand_image_tokens(ids: torch.Tensor, image_token_id: int, tokens_per_image: Sequence[int]) -> torch.Tensor:
    """Repeat the i-th ``image_token_id`` of ``ids`` ``tokens_per_image[i]`` times.

    Args:
        ids: int64 ``[L]`` token ids with exactly one image token per image.
        image_token_id: id of ``<|image_pad|>``.
        tokens_per_image: LLM tokens of each image, in order.

    Returns:
        int64 ``[L - n + sum(tokens_per_image)]``.

    Raises:
        ValueError: the number of image tokens in ``ids`` differs from ``len(tokens_per_image)``
            (e.g. a reply that spelled out ``<|image_pad|>`` as text).
    """
    is_img = ids == image_token_id
    n = int(is_img.sum())
    if n != len(tokens_per_image):
        raise ValueError(f"prompt has {n} {IMAGE_PAD} tokens for {len(tokens_per_image)} images")
    if n == 0:
        return ids
    counts = torch.ones_like(ids)
    counts[is_img] = torch.tensor(list(tokens_per_image), dtype=ids.dtype)
    return ids.repeat_interleave(counts)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


@dataclass(frozen=True)
class RenderedChat:
    """A conversation as token ids.

    Attributes:
        input_ids: token ids, image pads expanded (``sum(tokens_per_image)`` pad tokens).
        assistant_mask: same length; 1 on assistant content tokens and each assistant turn's
            end-of-turn token, else 0.
        num_images: images in the conversation (image-pad runs in ``input_ids``).
    """

    input_ids: list[int]
    assistant_mask: list[int]
    num_images: int

    def __len__(self) -> int:
        return len(self.input_ids)


class ChatRenderer:
    """Renders chat-template conversations of Qwen2.5-VL into token ids (see the module docstring).

    Messages are chat-template dicts: ``{"role": ..., "content": str}`` or content as a list of
    ``{"type": "text", "text": ...}`` / ``{"type": "image"}`` parts.

    Args:
        tokenizer: the checkpoint's (fast) tokenizer.
        chat_template: Jinja chat template text (the checkpoint's; see :func:`load_chat_template`).

    Raises:
        ValueError: the tokenizer does not know ``<|image_pad|>`` or ``<|im_end|>``.
    """

    def __init__(self, tokenizer: Any, chat_template: str) -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        vocab = tokenizer.get_vocab()
        for tok in (IMAGE_PAD, END_OF_TURN):
            if tok not in vocab:
                raise ValueError(f"the tokenizer has no {tok!r} token: not a Qwen2.5-VL tokenizer")
        self.image_token_id = int(vocab[IMAGE_PAD])
        self.end_of_turn_id = int(vocab[END_OF_TURN])

    @classmethod
    def from_pretrained(cls, model_path: str | os.PathLike, chat_template: str | None = None) -> ChatRenderer:
        """Tokenizer and chat template of a checkpoint folder."""
        from transformers import AutoTokenizer  # optional heavy dependency, needed only here

        tok = AutoTokenizer.from_pretrained(model_path)
        return cls(tok, chat_template or load_chat_template(model_path, tok))

    # -- text ---------------------------------------------------------------------------------

    def text(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False) -> str:
        """The chat template applied to ``messages`` (one ``<|image_pad|>`` per image)."""
        return self.tokenizer.apply_chat_template(
            list(messages), chat_template=self.chat_template, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _encode(self, text: str, offsets: bool = False) -> dict[str, Any]:
        return self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=offsets)

    def _expand(self, ids: list[int], mask: list[int], tokens_per_image: Sequence[int]) -> tuple[list[int], list[int]]:
        n = sum(1 for i in ids if i == self.image_token_id)
        if n != len(tokens_per_image):
            raise ValueError(f"the conversation has {n} {IMAGE_PAD} tokens for {len(tokens_per_image)} images")
        if n == 0:
            return ids, mask
        out_ids: list[int] = []
        out_mask: list[int] = []
        k = 0
        for i, m in zip(ids, mask):
            if i == self.image_token_id:
                out_ids.extend([i] * int(tokens_per_image[k]))
                out_mask.extend([0] * int(tokens_per_image[k]))
                k += 1
            else:
                out_ids.append(i)
                out_mask.append(m)
        return out_ids, out_mask

    # -- whole conversations ------------------------------------------------------------------

    def assistant_spans(self, messages: Sequence[dict[str, Any]], text: str | None = None) -> list[tuple[int, int]]:
        """Character spans ``[start, end)`` of each assistant message's content plus its end-of-turn
        token in the rendered text (found by rendering each prefix with the generation prompt).

        Raises:
            ValueError: the template is not prefix-stable (a conversation's rendering does not
                start with the rendering of its first messages) or does not end an assistant turn
                with ``<|im_end|>``; both hold for Qwen2.5-VL's template.
        """
        text = self.text(messages) if text is None else text
        spans = []
        for k, m in enumerate(messages):
            if m.get("role") != "assistant":
                continue
            prefix = self.text(messages[:k], add_generation_prompt=True)
            content = _content_text(m.get("content", ""))
            start = len(prefix)
            if not text.startswith(prefix) or text[start : start + len(content)] != content:
                raise ValueError(
                    f"the chat template is not prefix-stable at message {k}: the rendered conversation does not "
                    "continue its prefix with the assistant's content"
                )
            end = start + len(content)
            if not text.startswith(END_OF_TURN, end):
                raise ValueError(f"the chat template does not end assistant message {k} with {END_OF_TURN!r}")
            spans.append((start, end + len(END_OF_TURN)))
        return spans

    def render(
        self,
        messages: Sequence[dict[str, Any]],
        tokens_per_image: Sequence[int] = (),
        *,
        add_generation_prompt: bool = False,
    ) -> RenderedChat:
        """Token ids and assistant mask of a whole conversation.

        Args:
            messages: chat-template dicts (see the class docstring).
            tokens_per_image: LLM tokens of each image in order (``(H/28) * (W/28)`` per frame).
            add_generation_prompt: append ``<|im_start|>assistant\\n`` (the prompt of the next turn).

        Returns:
            :class:`RenderedChat`; ``input_ids`` equal ``Qwen2_5_VLProcessor``'s for the same
            conversation and images.

        Raises:
            ValueError: image count mismatch, or a template that is not prefix-stable.
        """
        text = self.text(messages, add_generation_prompt=add_generation_prompt)
        spans = self.assistant_spans(messages, text)
        enc = self._encode(text, offsets=True)
        ids = list(enc["input_ids"])
        mask = [0] * len(ids)
        if spans:
            j = 0
            for t, (a, b) in enumerate(enc["offset_mapping"]):
                while j < len(spans) and spans[j][1] <= a:
                    j += 1
                if j < len(spans) and a < spans[j][1] and b > spans[j][0]:
                    mask[t] = 1
        ids, mask = self._expand(ids, mask, tokens_per_image)
        return RenderedChat(ids, mask, len(tokens_per_image))

    # -- turn by turn -------------------------------------------------------------------------

    def continuation(
        self,
        history: Sequence[dict[str, Any]],
        new_messages: Sequence[dict[str, Any]],
        tokens_per_image: Sequence[int] = (),
    ) -> list[int]:
        """Ids that follow an assistant turn's end-of-turn token up to the next assistant turn.

        ``history`` ends with an assistant message whose generated ids (ending with
        ``<|im_end|>``) are already in the sequence; ``new_messages`` (e.g. one tool turn) come
        next. Returns the ids of the template text between that ``<|im_end|>`` and the next
        assistant content: for Qwen2.5-VL ``"\\n<|im_start|>tool\\n...<|im_end|>\\n<|im_start|>assistant\\n"``,
        image pads expanded with ``tokens_per_image`` (the new messages' images, in order).

        Raises:
            ValueError: ``history`` does not end with an assistant message, the template is not
                prefix-stable, or the image count does not match.
        """
        if not history or history[-1].get("role") != "assistant":
            raise ValueError("continuation: the history must end with an assistant message")
        before = self.text(history)
        after = self.text(list(history) + list(new_messages), add_generation_prompt=True)
        if not after.startswith(before):
            raise ValueError("the chat template is not prefix-stable: appending messages changed the earlier text")
        eot = before.rfind(END_OF_TURN)
        if eot < 0:
            raise ValueError(f"the chat template does not end assistant turns with {END_OF_TURN!r}")
        bridge = before[eot + len(END_OF_TURN) :] + after[len(before) :]
        ids = list(self._encode(bridge)["input_ids"])
        ids, _ = self._expand(ids, [0] * len(ids), tokens_per_image)
        return ids
