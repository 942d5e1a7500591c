"""EVA's rewards (paper §3.3, "Reward design"), as plain functions of a finished trajectory.

* multiple choice: the answer is extracted as the agent extracts it (``<answer>...</answer>``, else a
  trailing "Answer: X"; :func:`eva_fast.agent.extract_answer`) and compared with the ground truth
  after ``strip().upper()`` (EVA's ``accuracy.py``): :func:`mcq_accuracy`;
* CSV, completeness self-verification (from TimeSearch-R; EVA §3.3): a judge — the same base model —
  re-answers the question from the frames of the policy's *last* round only; the reward is 1 iff the
  policy's answer and the judge's are both right, so an answer the gathered evidence cannot support
  earns nothing: :class:`CSVJudge`;
* open-ended: the mean of ROUGE-1, ROUGE-2 and ROUGE-L F1 with Porter stemming (``rouge-score``):
  :func:`rouge_reward`;
* format: a small compensatory reward when the episode made a valid ``frame_select`` call but the
  final answer is wrong (the paper keeps it well below the 1/4-1/5 of guessing a multiple-choice
  answer so it cannot be farmed; default 0.1): :func:`format_reward`.

Every function takes the trajectory (an :class:`eva_fast.agent.Trajectory`) and returns a float
in [0, 1]; none raises on a broken or hostile episode (it just scores 0).
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eva_fast.agent import (
    ImagePart,
    Message,
    ModelBackend,
    TextPart,
    Trajectory,
    extract_answer,
    frame_label,
    plan_tool_call,
)
from eva_fast.video import VideoReader, decode_plan

#: Default value of :func:`format_reward` (well below chance accuracy of 1/4-1/5).
DEFAULT_FORMAT_REWARD = 0.1
#: ROUGE variants averaged by :func:`rouge_reward`.
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def final_answer(traj: Trajectory | str) -> str:
    """The episode's answer: ``traj.answer`` (set by the loop with :func:`extract_answer`), or
    :func:`extract_answer` of a reply text."""
    if isinstance(traj, str):
        return extract_answer(traj)
    return traj.answer or ""


def mcq_accuracy(answer: Trajectory | str, gt: str) -> float:
    """1.0 when the answer equals the ground truth after ``strip().upper()`` (EVA's ``accuracy.py``),
    else 0.0; an empty answer is wrong.

    Args:
        answer: a trajectory (its extracted answer) or an already extracted answer string.
        gt: the ground-truth option letter (or text).
    """
    a = (answer.answer or "") if isinstance(answer, Trajectory) else str(answer)
    a = a.strip().upper()
    return 1.0 if a and a == str(gt).strip().upper() else 0.0


@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    try:
        from rouge_score import rouge_scorer  # optional (the train extra), only for open-ended rewards
    except ImportError as e:  # pragma: no cover - a dependency of the train extra
        raise ImportError("the open-ended reward needs rouge-score: pip install rouge-score") from e
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge_reward(answer: Trajectory | str, reference: str) -> float:
    """Mean F1 of ROUGE-1, ROUGE-2 and ROUGE-L between the answer and the reference answer, with
    Porter stemming (``rouge_score.rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"],
    use_stemmer=True)``); 0.0 for an empty answer. In [0, 1]."""
    a = (answer.answer or "") if isinstance(answer, Trajectory) else str(answer)
    if not a.strip() or not str(reference).strip():
        return 0.0
    scores = _rouge_scorer().score(str(reference), a)
    return sum(scores[t].fmeasure for t in ROUGE_TYPES) / len(ROUGE_TYPES)


def made_valid_tool_call(traj: Trajectory) -> bool:
    """Whether any ``frame_select`` call of the episode returned frames."""
    return any(c.frames is not None for c in traj.tool_calls)


def format_reward(traj: Trajectory, correct: bool, value: float = DEFAULT_FORMAT_REWARD) -> float:
    """``value`` when the episode made a valid tool call and its answer is wrong, else 0.

    The compensation keeps a well-formed but wrong episode above a malformed one without making
    tool calls a goal of their own; ``value`` must stay below chance accuracy (1/4-1/5).

    Raises:
        ValueError: ``value`` outside [0, 1).
    """
    if not 0.0 <= value < 1.0:
        raise ValueError(f"format reward value must be in [0, 1), got {value!r}")
    return value if (not correct and made_valid_tool_call(traj)) else 0.0


# ---------------------------------------------------------------------------------------------
# CSV: completeness self-verification
# ---------------------------------------------------------------------------------------------

#: The judge's question (after the last round's frames); ``{question}`` is the question with options.
DEFAULT_JUDGE_PROMPT = (
    "\nThe frames above are all you can see of the video.\nQuestion: {question}\n"
    "Answer with the option's letter from the given choices directly."
)
_LETTER_RE = re.compile(r"^\W*([A-Za-z])(?:\W|$)")


def judge_answer(text: str) -> str:
    """The option letter of a judge reply: :func:`extract_answer` (``<answer>`` tags, "Answer: X"),
    else a reply that starts with a single letter ("B", "B.", "(B) ...")."""
    a = extract_answer(text)
    if a:
        return a
    m = _LETTER_RE.match(text.strip())
    return m.group(1).upper() if m else ""


def last_round_calls(traj: Trajectory) -> list[Any]:
    """The successful tool calls of the last round that fetched frames (the evidence the final
    answer rests on), in order."""
    for turn in reversed(traj.turns):
        ok = [c for c in turn.tool_calls if c.frames is not None]
        if ok:
            return ok
    return []


@dataclass
class JudgeResult:
    """Outcome of one CSV check.

    Attributes:
        reward: 1.0 iff the policy and the judge are both right, else 0.0.
        policy_correct: the policy's answer is right.
        judge_answer: the judge's extracted answer ("" when not asked or none).
        judge_correct: the judge's answer is right.
        frames: frames the judge saw.
        error: why the judge could not run (e.g. no frames), or None.
        reply: the judge's raw reply.
    """

    reward: float
    policy_correct: bool
    judge_answer: str = ""
    judge_correct: bool = False
    frames: int = 0
    error: str | None = None
    reply: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)


class CSVJudge:
    """Completeness self-verification (EVA §3.3, from TimeSearch-R): the judge model re-answers the
    question from the frames of the policy's last round only.

    The judge sees one user turn: the last round's frames, each labelled as in the agent's tool turn
    (``Frame i at [MM:SS]: ``), then ``prompt`` with the question. Its frames are the policy's own:
    decoded again from the recorded calls (same ``select_frames`` arguments and settings, checked to
    resolve to the recorded frame indices), or taken from ``frames_for`` when given (the GRPO
    trainer passes its group frame cache).

    Args:
        backend: any agent backend (:func:`eva_fast.agent.get_backend`): the frozen base/reference
            model in process (``transformers``), or an OpenAI-compatible server (``openai``).
        prompt: the text after the frames; ``{question}`` is replaced by the question.
        max_new_tokens: judge reply length.
        temperature: judge sampling temperature (0 = greedy).
        system: system turn of the judge conversation (None: the template's default).
    """

    def __init__(
        self,
        backend: Any,
        prompt: str = DEFAULT_JUDGE_PROMPT,
        *,
        max_new_tokens: int = 16,
        temperature: float = 0.0,
        system: str | None = None,
    ) -> None:
        if not isinstance(backend, ModelBackend):
            raise TypeError(f"backend must be an eva_fast.agent ModelBackend, got {type(backend).__name__}")
        if "{question}" not in prompt:
            raise ValueError("the judge prompt must contain '{question}'")
        self.backend = backend
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.system = system

    def messages(self, traj: Trajectory, batches: Sequence[Any]) -> list[Any]:
        """The judge conversation for a trajectory and its last round's frame batches."""
        fmt = traj.config.get("timestamp_fmt", "mmss")
        parts: list[Any] = []
        frame_no = 0
        calls = last_round_calls(traj)
        for call, batch in zip(calls, batches):
            for i in range(batch.plan.nframes):
                label = frame_label(frame_no, call.frames.label_s[i], fmt)
                if label is not None:
                    parts.append(TextPart(label))
                parts.append(ImagePart(batch, i))
                frame_no += 1
        parts.append(TextPart(self.prompt.format(question=traj.question.strip())))
        msgs = [Message("system", self.system)] if self.system is not None else []
        msgs.append(Message("user", tuple(parts)))
        return msgs

    def last_round_batches(self, traj: Trajectory, reader: Any = None, frame_tool: Any = None) -> list[Any]:
        """Decode the last round's frames again from the recorded calls (see the class docstring).

        Args:
            traj: the episode.
            reader: an open reader of its video (default: opened here).
            frame_tool: a :class:`eva_fast.train.GroupFrameCache` of the video to serve the plans
                from (the GRPO trainer passes the question's, so the judge's frames cost nothing).

        Raises:
            ValueError: a call resolves to other frames than recorded.
        """
        options = traj.frame_options()
        calls = last_round_calls(traj)
        if not calls:
            return []
        reader = reader or VideoReader(traj.video_path)
        out = []
        for c in calls:
            plan = plan_tool_call(reader, c.arguments or {}, options)  # the loop's own planning of the call
            if list(plan.frame_indices) != list(c.frames.plan.frame_indices):
                raise ValueError(
                    f"{traj.video_path}: call {c.arguments} resolves to frames {list(plan.frame_indices)} but the "
                    f"trajectory recorded {list(c.frames.plan.frame_indices)}"
                )
            out.append(frame_tool.serve(plan) if frame_tool is not None else decode_plan(reader, plan))
        return out

    async def judge(self, traj: Trajectory, gt: str, batches: Sequence[Any] | None = None, *,
                    reader: Any = None, frame_tool: Any = None) -> JudgeResult:
        """The CSV reward of one trajectory.

        The judge runs only when the policy is right (otherwise the reward is 0 anyway).

        Args:
            traj: the policy's finished episode.
            gt: the ground-truth option letter.
            batches: the last round's ``FrameBatch``\\ es (None: decoded again from the record).
            reader, frame_tool: passed to :meth:`last_round_batches` when ``batches`` is None.

        Returns:
            :class:`JudgeResult`; a judge failure (no frames, backend error) gives reward 0 with
            ``error`` set, never an exception.
        """
        ok = mcq_accuracy(traj, gt) == 1.0
        if not ok:
            return JudgeResult(0.0, False)
        t0 = time.perf_counter()
        try:
            if batches is None:
                batches = await asyncio.to_thread(self.last_round_batches, traj, reader, frame_tool)
            if not batches:
                return JudgeResult(0.0, True, error="no frames: the episode answered without a successful tool call")
            session = self.backend.session()
            try:
                gen = await session.generate(
                    self.messages(traj, batches), max_new_tokens=self.max_new_tokens, temperature=self.temperature
                )
            finally:
                await session.aclose()
        except Exception as e:  # a judge failure must not stop training: the reward is 0, with the reason
            return JudgeResult(0.0, True, error=f"{type(e).__name__}: {e}")
        ans = judge_answer(gen.text)
        right = mcq_accuracy(ans, gt) == 1.0
        return JudgeResult(
            1.0 if right else 0.0, True, ans, right, sum(b.plan.nframes for b in batches), None, gen.text,
            {"judge": (time.perf_counter() - t0) * 1e3},
        )

    def judge_sync(self, traj: Trajectory, gt: str, batches: Sequence[Any] | None = None) -> JudgeResult:
        """:meth:`judge` from synchronous code."""
        return asyncio.run(self.judge(traj, gt, batches))
