"""EVA's rewards (paper §3.3, "Reward design"), as plain functions of a finished trajectory, and the
reward functions GRPO trains with, in a registry by name.

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
  answer so it cannot be farmed; default 0.1): :func:`format_reward`. With a graded answer reward
  (ROUGE) "wrong" is read so the total never decreases as the answer improves: the format reward
  tops the answer reward up to ``value`` (``max(0, value - answer reward)``), so answer + format =
  ``max(answer, value)`` — for a right/wrong answer exactly the paper's rule.

Every function takes the trajectory (an :class:`eva_fast.agent.Trajectory`) and returns a float
in [0, 1]; none raises on a broken or hostile episode (it just scores 0).

**GRPO reward functions** (TRL's contract: ``f(prompts, completions, completion_ids, **columns)``
returning one value per completion, ``None`` = no score): :data:`REWARDS`, filled with
:func:`register_reward`; the trainer's config lists them by name with weights
(``reward_funcs: [accuracy, format]``, TRL's ``reward_weights``). Each also receives ``ctx``, the
step's :class:`RewardContext` (settings, the CSV judge, the groups' frame caches). Adding a reward
is one function and one decorator line::

    @register_reward("brevity")
    def brevity(completions, trajectory, *, ctx, **kwargs):
        return [None if infra_failure(t) else 1.0 / max(1, t.num_rounds) for t in trajectory]

An episode that failed for the machinery's sake (:func:`infra_failure`: the backend or the video
failed, not the model) gets ``None`` from every built-in reward: TRL then leaves it out of its
group's baseline and gives it advantage 0 ("unscorable"), and the trainer keeps its tokens out of
the loss. A hostile or broken *model* output is scored (0).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eva_fast._logging import get_logger
from eva_fast.agent import (
    INFRA_ERROR_SOURCES,
    STOP_EXCEPTION,
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

logger = get_logger("train")

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


def format_reward(traj: Trajectory, accuracy: float | bool, value: float = DEFAULT_FORMAT_REWARD) -> float:
    """The compensation for a well-formed episode whose answer is wrong: ``max(0, value - accuracy)``
    when the episode made a valid tool call, else 0.

    For a right/wrong answer (``accuracy`` 1 or 0, or a bool) this is the paper's rule: ``value``
    when wrong, 0 when right. For a graded answer reward (ROUGE in [0, 1]) the answer reward plus
    this one is ``max(accuracy, value)``: never lower for a better answer (a format reward added
    only below a "correct" threshold would make a ROUGE of 0.47 outscore one of 0.53).

    Args:
        traj: the episode.
        accuracy: its answer reward in [0, 1] (True/False read as 1/0).
        value: the reward of a wrong answer after a valid call, below chance accuracy (1/4-1/5).

    Raises:
        ValueError: ``value`` outside [0, 1), or ``accuracy`` outside [0, 1].
    """
    if not 0.0 <= value < 1.0:
        raise ValueError(f"format reward value must be in [0, 1), got {value!r}")
    acc = float(accuracy)
    if not 0.0 <= acc <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy!r}")
    return max(0.0, value - acc) if made_valid_tool_call(traj) else 0.0


def infra_failure(traj: Trajectory) -> bool:
    """Whether the episode ended because the machinery failed — the model backend (a server error,
    a timeout, out of memory, a failed batched call), the video, the caller — rather than because of
    anything the model wrote (:attr:`Trajectory.error_source`). Such an episode says nothing about
    the policy: GRPO leaves it unscored."""
    return traj.stop_reason == STOP_EXCEPTION and traj.error_source in INFRA_ERROR_SOURCES


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
        reward: 1.0 iff the policy and the judge are both right, else 0.0; None when the judge
            itself failed (its backend raised, the frames could not be served again): no score.
        policy_correct: the policy's answer is right.
        judge_answer: the judge's extracted answer ("" when not asked or none).
        judge_correct: the judge's answer is right.
        frames: frames the judge saw.
        error: why the judge did not run (no frames: reward 0) or failed (reward None), or None.
        reply: the judge's raw reply.
    """

    reward: float | None
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
            :class:`JudgeResult`, never an exception: an episode that answered without frames
            gets 0 with ``error`` set (the model's doing); a judge failure (its backend raised,
            the recorded calls no longer resolve) gets None with ``error`` set (no score).
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
        except Exception as e:  # a judge failure must not stop training, nor score the episode
            return JudgeResult(None, True, error=f"{type(e).__name__}: {e}")
        ans = judge_answer(gen.text)
        right = mcq_accuracy(ans, gt) == 1.0
        return JudgeResult(
            1.0 if right else 0.0, True, ans, right, sum(b.plan.nframes for b in batches), None, gen.text,
            {"judge": (time.perf_counter() - t0) * 1e3},
        )

    async def judge_many(self, trajs: Sequence[Trajectory], gts: Sequence[str],
                         frame_tools: dict[str, Any] | None = None) -> list[JudgeResult]:
        """The CSV rewards of a step's episodes, the judge's prompts batched: one round of the
        backend's turn-synchronous batching (:mod:`eva_fast.agent._ticks`; one ``generate`` for
        all prompts of this process, the same number of calls on every process of a distributed
        run — call it on every process each step, with whatever episodes it has, none included).
        Backends without rounds (a server) get the prompts concurrently.

        Args:
            trajs, gts: the episodes and their ground truths.
            frame_tools: video path -> :class:`eva_fast.train.GroupFrameCache` (its reader and frames).
        """
        if len(trajs) != len(gts):
            raise ValueError(f"{len(trajs)} trajectories for {len(gts)} ground truths")
        frame_tools = frame_tools or {}
        b = self.backend
        asks = [i for i, (t, g) in enumerate(zip(trajs, gts)) if mcq_accuracy(t, g) == 1.0]
        out = [JudgeResult(0.0, False) for _ in trajs]
        expect = getattr(b, "expect", None)
        if expect is not None:
            expect(len(asks))

        async def one(i: int) -> None:
            try:
                cache = frame_tools.get(trajs[i].video_path)
                out[i] = await self.judge(trajs[i], gts[i], reader=cache.reader if cache else None, frame_tool=cache)
            finally:
                done = getattr(b, "episode_done", None)
                if done is not None:
                    done()

        await asyncio.gather(*(one(i) for i in asks))
        drain = getattr(b, "drain", None)
        if drain is not None:
            await drain()
        return out

    def judge_sync(self, traj: Trajectory, gt: str, batches: Sequence[Any] | None = None) -> JudgeResult:
        """:meth:`judge` from synchronous code."""
        return asyncio.run(self.judge(traj, gt, batches))


# ---------------------------------------------------------------------------------------------
# GRPO reward functions: a registry by name
# ---------------------------------------------------------------------------------------------

#: Reward functions by name (:func:`register_reward`); what ``EvaGRPOConfig.reward_funcs`` names.
REWARDS: dict[str, Callable[..., Any]] = {}


def register_reward(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a GRPO reward function under ``name`` (see the module docstring).

    The function gets TRL's keyword arguments (``prompts``, ``completions``, ``completion_ids``,
    the dataset's columns ``answer``, ``type``, ``category``, the episodes as ``trajectory``,
    ``log_metric``, ...) and ``ctx`` (:class:`RewardContext`), and returns one float or None per
    completion; it may be ``async``.

    Raises:
        ValueError: ``name`` is taken by another function.
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        old = REWARDS.get(name)
        if old is not None and old is not fn:
            raise ValueError(f"reward name {name!r} is already registered to {old.__qualname__}")
        REWARDS[name] = fn
        return fn

    return deco


def get_reward(name: str) -> Callable[..., Any]:
    """A reward function by registry name, or by dotted path ``package.module.function`` (which
    must accept ``ctx`` as a keyword, e.g. through ``**kwargs``).

    Raises:
        ValueError: unknown name (the message lists the registered ones).
    """
    if name in REWARDS:
        return REWARDS[name]
    if "." in name:
        mod, _, attr = name.rpartition(".")
        try:
            fn = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"reward {name!r}: cannot import {attr!r} from {mod!r} ({e})") from e
        if not callable(fn):
            raise ValueError(f"reward {name!r} is not callable")
        return fn
    raise ValueError(f"unknown reward {name!r}; registered: {sorted(REWARDS)} (or a dotted path package.module.function)")


def bind_rewards(names: Sequence[str], ctx: RewardContext) -> list[Callable[..., Any]]:
    """TRL reward callables for ``names`` with ``ctx`` bound, each named by its registry name (what
    TRL logs as ``rewards/<name>/mean``), async where the function is.

    Raises:
        ValueError: an unknown or repeated name.
    """
    if len(set(names)) != len(names):
        raise ValueError(f"reward_funcs names a reward twice: {list(names)}")
    out = []
    for name in names:
        fn = get_reward(name)
        if inspect.iscoroutinefunction(fn):
            async def bound(*args: Any, _fn: Callable[..., Any] = fn, **kw: Any) -> Any:
                return await _fn(*args, ctx=ctx, **kw)
        else:
            def bound(*args: Any, _fn: Callable[..., Any] = fn, **kw: Any) -> Any:
                return _fn(*args, ctx=ctx, **kw)
        bound.__name__ = bound.__qualname__ = name.rpartition(".")[2]
        out.append(bound)
    return out


@dataclass
class AnswerScore:
    """The answer reward of one episode (:meth:`RewardContext.answer_scores`).

    Attributes:
        reward: in [0, 1]; None = no score (an infrastructure failure, or the judge failed).
        metrics: values to log per episode (``eva/rouge``, ``eva/mcq_accuracy``, ``eva/judge_agreement``).
    """

    reward: float | None
    metrics: dict[str, float] = field(default_factory=dict)


class RewardContext:
    """What EVA's reward functions share within a step, besides TRL's per-completion arguments.

    Args:
        format_value: :func:`format_reward`'s value (paper: 0.1).
        judge: the CSV judge (None: plain multiple-choice accuracy).

    Attributes:
        frame_tools: video path -> the step's group frame cache (set by the trainer each step).
    """

    def __init__(self, format_value: float = DEFAULT_FORMAT_REWARD, judge: CSVJudge | None = None) -> None:
        if not 0.0 <= format_value < 1.0:
            raise ValueError(f"format reward value must be in [0, 1), got {format_value!r}")
        self.format_value = format_value
        self.judge = judge
        self.frame_tools: dict[str, Any] = {}
        self._memo: tuple[tuple[int, ...], asyncio.Future] | None = None

    def new_step(self, frame_tools: dict[str, Any]) -> None:
        """A new batch of episodes: its groups' frame caches; forget the last batch's scores."""
        self.frame_tools = dict(frame_tools)
        self._memo = None

    async def answer_scores(self, trajs: Sequence[Trajectory], answers: Sequence[str], types: Sequence[str]
                            ) -> list[AnswerScore]:
        """Each episode's answer reward — ROUGE for open-ended, CSV (or plain accuracy without a
        judge) for multiple choice, None for an infrastructure failure or a failed judge —
        computed once per batch of episodes however many reward functions ask (the judge's
        batched round runs once per step on every process)."""
        key = tuple(id(t) for t in trajs)
        if self._memo is not None and self._memo[0] == key:
            return await asyncio.shield(self._memo[1])
        fut = asyncio.ensure_future(self._answer_scores(list(trajs), list(answers), list(types)))
        self._memo = (key, fut)
        return await asyncio.shield(fut)

    async def _answer_scores(self, trajs: list[Trajectory], answers: list[str], types: list[str]) -> list[AnswerScore]:
        out: list[AnswerScore | None] = [None] * len(trajs)
        mcq: list[int] = []
        for i, (t, a, ty) in enumerate(zip(trajs, answers, types, strict=True)):
            if infra_failure(t):
                out[i] = AnswerScore(None)
            elif ty == "open":
                r = rouge_reward(t, a)
                out[i] = AnswerScore(r, {"eva/rouge": r})
            else:
                mcq.append(i)
        if self.judge is None:
            for i in mcq:
                plain = mcq_accuracy(trajs[i], answers[i])
                out[i] = AnswerScore(plain, {"eva/mcq_accuracy": plain})
        else:
            # every process runs the judge's round, also with no multiple-choice episode of its own
            results = await self.judge.judge_many([trajs[i] for i in mcq], [answers[i] for i in mcq], self.frame_tools)
            for i, res in zip(mcq, results):
                metrics = {"eva/mcq_accuracy": mcq_accuracy(trajs[i], answers[i])}
                if res.policy_correct and res.error is None:
                    metrics["eva/judge_agreement"] = float(res.judge_correct)
                if res.reward is None:
                    logger.warning("CSV judge failed on %s: %s (episode left unscored)", trajs[i].video_path, res.error)
                out[i] = AnswerScore(res.reward, metrics)
        return out  # type: ignore[return-value]


def _log(log_metric: Any, scores: Sequence[AnswerScore]) -> None:
    # one value per episode: TRL averages log_metric values over calls and processes, so this
    # logs the mean over all processes' episodes (not a mean of per-process means)
    if log_metric is None:
        return
    for s in scores:
        for k, v in s.metrics.items():
            log_metric(k, v)


@register_reward("accuracy")
async def accuracy_reward(completions: Any, trajectory: Sequence[Trajectory], answer: Sequence[str],
                          type: Sequence[str], *, ctx: RewardContext, log_metric: Any = None, **kwargs: Any  # noqa: A002
                          ) -> list[float | None]:
    """EVA's answer reward (paper §3.3): ROUGE for open-ended questions, CSV for multiple choice
    (plain accuracy without a judge); None for an infrastructure failure or a failed judge."""
    scores = await ctx.answer_scores(trajectory, answer, type)
    _log(log_metric, scores)
    return [s.reward for s in scores]


@register_reward("format")
async def format_reward_fn(completions: Any, trajectory: Sequence[Trajectory], answer: Sequence[str],
                           type: Sequence[str], *, ctx: RewardContext, **kwargs: Any  # noqa: A002
                           ) -> list[float | None]:
    """EVA's format reward (paper §3.3, :func:`format_reward`): tops a valid-call episode's answer
    reward up to ``ctx.format_value``; None where the answer reward is None."""
    scores = await ctx.answer_scores(trajectory, answer, type)
    return [None if s.reward is None else format_reward(t, s.reward, ctx.format_value)
            for t, s in zip(trajectory, scores, strict=True)]
