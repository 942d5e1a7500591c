"""EVA's published tool protocol: prompts, answer extraction, tool-call parsing, tool-turn labels.

Parity target: the published evaluation of EVA (wangruohui/EfficientVideoAgent, ``eval-eva.py``),
which the released checkpoint (WRHC/EfficientVideoAgent) was evaluated with. Everything here is
pure string/number work on untrusted model output, written to run in linear time (a hostile
10 MB reply is parsed in well under a second) while returning exactly what the reference's
regular expressions return; ``tests/agent/test_protocol.py`` checks that equivalence against the
regexes themselves on generated inputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any

from eva_fast.video import FrameOptions, apply_token_budget

#: The system turn the model was trained with (verbatim, typo included).
SYSTEM_PROMPT = "Use Frame Select Tool to Anlysis the video and generate an answer to the question."
#: The only tool.
TOOL_NAME = "frame_select"
#: Argument keys the frame tool takes; every other key of a call is ignored.
TOOL_ARGUMENT_KEYS = ("start_time", "end_time", "nframes", "resize")
#: Per-call error names (the reference's spelling; a turn whose calls all fail stops with them
#: joined by ``"; "``).
ERR_NOT_JSON = "arguments_not_json"
ERR_NO_TIMES = "no_start_or_end_time"
ERR_NO_NFRAMES = "no_nframes"
ERR_TOOL_FAILED = "call_frame_select_failed"
#: Stop reasons (besides the joined per-call errors and ``"exception"``, whose ``error`` says why).
STOP_ANSWER = "answer_found"
STOP_NO_TOOL_CALL = "no_answer_no_tool_call"
STOP_NO_VALID_TOOL_CALL = "no_valid_tool_call"
STOP_MAX_TURNS = "max_turns_exceeded"
STOP_BAD_REQUEST = "openai_bad_request"
STOP_EXCEPTION = "exception"
NORMAL_STOP_REASONS = (STOP_ANSWER, STOP_NO_TOOL_CALL, STOP_NO_VALID_TOOL_CALL, STOP_MAX_TURNS)
#: Timestamp label formats of the tool turn (``"mmss"`` is what the checkpoint was trained with).
TIMESTAMP_FORMATS = ("mmss", "seconds", "none")

_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_CALL_OPEN, _CALL_CLOSE = "<tool_call>", "</tool_call>"
#: "Answer: X" fallback of the reference (applied to the whole reply, DOTALL).
_ANSWER_LETTER_RE = re.compile(r"[Aa]nswer[\.:\s]\s*(\w)(\W.{,100}|)$", re.DOTALL)
#: Header of one call inside a ``<tool_call>`` block, up to the opening brace of its arguments.
_CALL_HEADER_RE = re.compile(r'{\s*"tool":\s*"frame_select",\s*"(?:arguments|parameters)":\s*(?={)', re.DOTALL)
#: A ``}`` that can close a call's arguments: followed by optional whitespace and the call's ``}``.
_ARGS_CLOSE_RE = re.compile(r"}(?=(\s*)})")


def first_user_text(question: str, *, duration_s: float, height: int, width: int) -> str:
    """The first user turn: ``"Video Length: {int(max(duration_s - 0.5, 1))} seconds. Original video
    resolution: {min(H, W)}p. {question}"`` (the question stripped, as the reference does).

    Args:
        question: the question text (options included).
        duration_s: stream duration, seconds (finite, >= 0).
        height, width: frame size in pixels (positive ints; keyword-only).

    Raises:
        ValueError: non-finite or negative duration, non-positive size.
    """
    if not (isinstance(duration_s, numbers.Real) and math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError(f"duration_s must be a finite number >= 0, got {duration_s!r}")
    if int(width) < 1 or int(height) < 1:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    return (
        f"Video Length: {int(max(duration_s - 0.5, 1))} seconds. "
        f"Original video resolution: {min(int(width), int(height))}p. {question.strip()}"
    )


def tool_turn_tail(question: str) -> str:
    """Last text part of a tool turn (the reference's newest wording)."""
    return (
        "\nIf more information is needed, call the frame selection tool again.\n\n"
        f"Question: {question.strip()}</tool_response>"
    )


def _first_tagged(text: str, open_tag: str, close_tag: str) -> str | None:
    """Content of the first ``open_tag ... close_tag`` span, as ``re.search(open(.*?)close, DOTALL)``
    finds it: the first opening tag that has a closing tag after it, up to the first such closing
    tag. If the first opening tag has no closing tag after it, no later one has either."""
    start = text.find(open_tag)
    if start < 0:
        return None
    start += len(open_tag)
    end = text.find(close_tag, start)
    if end < 0:
        return None
    return text[start:end]


def extract_answer(text: str) -> str:
    """The answer in a model reply, ``""`` if none (reference ``extract_answer_anyway``).

    1. the stripped content of the first ``<answer>...</answer>``; if that is empty,
    2. the letter of a trailing "Answer: X" (regex ``[Aa]nswer[\\.:\\s]\\s*(\\w)(\\W.{,100}|)$``).
    """
    tagged = _first_tagged(text, _ANSWER_OPEN, _ANSWER_CLOSE)
    if tagged is not None and tagged.strip():
        return tagged.strip()
    m = _ANSWER_LETTER_RE.search(text)
    return m.group(1).strip() if m else ""


def tool_call_blocks(text: str, which: str = "first") -> list[str]:
    """The ``<tool_call>...</tool_call>`` blocks of a reply, each stripped.

    Args:
        text: the model reply.
        which: ``"first"``: only the first block (the published evaluation's ``re.search``, so a
            second block is never executed: parity); ``"all"``: every non-overlapping block
            (``re.findall``), their calls executed in order.

    Raises:
        ValueError: unknown ``which``.
    """
    if which == "first":
        block = _first_tagged(text, _CALL_OPEN, _CALL_CLOSE)
        return [] if block is None else [block.strip()]
    if which != "all":
        raise ValueError(f"which must be 'first' or 'all', got {which!r}")
    out, pos = [], 0
    while True:
        start = text.find(_CALL_OPEN, pos)
        if start < 0:
            return out
        end = text.find(_CALL_CLOSE, start + len(_CALL_OPEN))
        if end < 0:
            return out
        out.append(text[start + len(_CALL_OPEN) : end].strip())
        pos = end + len(_CALL_CLOSE)


def call_argument_strings(block: str) -> list[str]:
    """Argument objects (as text) of the ``frame_select`` calls in one tool-call block.

    Same result as the reference's ``re.findall(r'{\\s*"tool":\\s*"frame_select",\\s*"(?:arguments|
    parameters)":\\s*({.*?})\\s*}', block, re.DOTALL)``: the arguments run from their ``{`` to the
    first ``}`` that is followed by optional whitespace and another ``}`` (so nested objects inside
    the arguments are cut there and then fail as JSON, as in the reference). Linear time.
    """
    closers = [(m.start(), m.start() + 1 + len(m.group(1)) + 1) for m in _ARGS_CLOSE_RE.finditer(block)]
    out: list[str] = []
    pos, ci = 0, 0
    while True:
        m = _CALL_HEADER_RE.search(block, pos)
        if m is None:
            return out
        args_start = m.end()  # the '{' of the arguments
        while ci < len(closers) and closers[ci][0] <= args_start:
            ci += 1
        if ci == len(closers):
            # no closer after this header, nor after any later one
            return out
        close_at, match_end = closers[ci]
        out.append(block[args_start : close_at + 1])
        pos = match_end


@dataclass(frozen=True)
class ParsedCall:
    """One ``frame_select`` call of a reply, parsed.

    Attributes:
        raw: the argument text as the model wrote it (possibly not JSON).
        arguments: the JSON object (all keys the model gave) or None when it did not parse.
        error: protocol error (``arguments_not_json``, ``no_start_or_end_time``, ``no_nframes``) or None.
    """

    raw: str
    arguments: dict[str, Any] | None
    error: str | None

    def tool_arguments(self) -> dict[str, Any]:
        """The four tool arguments (other keys dropped); ``resize`` missing or null becomes 1.0.

        Raises:
            ValueError: the call has a protocol error.
        """
        if self.error is not None or self.arguments is None:
            raise ValueError(f"call has error {self.error!r}; it has no tool arguments")
        args = {k: self.arguments[k] for k in TOOL_ARGUMENT_KEYS if k in self.arguments}
        if args.get("resize") is None:
            args["resize"] = 1.0
        return args


def parse_call(raw: str) -> ParsedCall:
    """Parse one argument object (reference order of checks: JSON, times, nframes)."""
    try:
        parsed = json.loads(raw.strip())
    except (json.JSONDecodeError, RecursionError, ValueError):
        return ParsedCall(raw, None, ERR_NOT_JSON)
    if not isinstance(parsed, dict):  # cannot happen for text that starts with '{', kept for safety
        return ParsedCall(raw, None, ERR_NOT_JSON)
    if "start_time" not in parsed or "end_time" not in parsed:
        return ParsedCall(raw, parsed, ERR_NO_TIMES)
    if "nframes" not in parsed:
        return ParsedCall(raw, parsed, ERR_NO_NFRAMES)
    return ParsedCall(raw, parsed, None)


def parse_tool_calls(text: str, which: str = "first") -> tuple[bool, list[ParsedCall]]:
    """All ``frame_select`` calls of a reply.

    Returns:
        ``(has_block, calls)``: whether the reply had a ``<tool_call>`` block at all, and the calls
        found in the block(s) used (see :func:`tool_call_blocks`), in order.
    """
    blocks = tool_call_blocks(text, which)
    calls = [parse_call(raw) for block in blocks for raw in call_argument_strings(block)]
    return bool(blocks), calls


def label_seconds(start_time: Any, end_time: Any, nframes: int) -> list[int]:
    """Label times of a call's frames, seconds: ``int(start + i * (end - start) / max(1, n - 1))``
    from the call's own (unclamped) arguments as the model wrote them, with Python's arithmetic,
    as the reference labels them.

    Raises:
        TypeError, ValueError, OverflowError: where the reference's own expression raises (a
            string time, an infinite or NaN label, an int too large for a float); in the published
            evaluation that ends the episode with stop reason ``exception``.
    """
    step = (end_time - start_time) / max(1, nframes - 1)
    return [int(start_time + i * step) for i in range(nframes)]


#: argparse (Python <= 3.12) reads an argument that starts with "-" as an option unless it looks
#: like a negative number; the reference's tool process then exits with a usage error.
_ARGPARSE_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


@dataclass(frozen=True)
class ReferenceToolCall:
    """What EVA's published evaluation does with one parsed ``frame_select`` call, computed from the
    model's raw arguments (:func:`reference_tool_call`).

    Attributes:
        budget: the visual-token budget outcome on the raw values (``apply_token_budget``); for a
            served call its ``nframes`` and ``resize`` are the values the tool parsed (int, float).
        estimated_visual_tokens: ``int`` of the final estimate, which the reference adds to the
            trajectory's ``estimated_visual_tokens`` before running the tool (also when it fails).
        start_time, end_time: the window as the reference's tool process parses it (seconds, may
            be infinite; ``end_time`` None = the stream end).
        nframes, resize: what the tool process runs with (``int``, ``float``).
        request_nframes, request_resize: the request as the budget saw it (``int(nframes)``,
            ``float(resize)``), for the frame plan's record.
        refusal: why the reference's tool process would fail (then the call errs with
            ``call_frame_select_failed``); None when it serves the call.
    """

    budget: Any
    estimated_visual_tokens: int
    start_time: float | None = None
    end_time: float | None = None
    nframes: int = 0
    resize: float = 0.0
    request_nframes: int = 0
    request_resize: float = 0.0
    refusal: str | None = None


def _tool_time(value: Any, name: str) -> tuple[float | None, str | None]:
    """A time as the tool process reads ``--{name} str(value)``: seconds or ``[[HH:]MM:]SS``."""
    text = str(value)
    if text.startswith("-") and not _ARGPARSE_NEGATIVE_NUMBER.match(text):
        return None, f"{name}={text!r} reads as an option to the tool's argument parser"
    text = text.strip()
    if text == "":
        return (None, f"{name} is empty") if name == "start_time" else (None, None)
    try:
        if ":" not in text:
            return float(text), None
        total = 0.0
        for i, part in enumerate(reversed(text.split(":"))):
            total += float(part) * (60**i)
        return total, None
    except ValueError:
        return None, f"{name}={str(value)[:80]!r} is not seconds or [[HH:]MM:]SS"


def reference_tool_call(arguments: dict[str, Any], options: FrameOptions, *, height: int, width: int
                        ) -> ReferenceToolCall:
    """The published evaluation's handling of one call's arguments (``eval-eva.py`` and its
    ``select_frame_fallback.py``), so untrusted model output gets the reference's outcome.

    1. ``nframes`` and ``resize`` (missing or null: 1.0) go through the token estimate and budget
       with Python's arithmetic on the raw values (:func:`~eva_fast.video.apply_token_budget`): a
       string ``resize``, a NaN or infinite value, or a string ``nframes`` that the cube-root step
       multiplies raise here, which ends the reference's episode (stop reason ``exception``).
    2. The four values go to the tool process as ``str(value)`` and are parsed there: times as
       seconds or ``[[HH:]MM:]SS``, ``nframes`` with ``int()`` (so ``4.0`` or ``true`` fail,
       ``"8"`` works), ``resize`` with ``float()``. A value starting with ``-`` that does not look
       like a negative number is an argparse error. Any failure of the tool process, or
       ``nframes <= 0``, ``resize <= 0``, a NaN time (its frame choice fails), is a refusal.
       There is no cap on ``nframes`` or ``resize`` (the budget bounds the tokens; eva_fast's
       reader bounds the decoded bytes, where the reference's process would run out of memory).

    Args:
        arguments: the parsed call's four keys (:meth:`ParsedCall.tool_arguments`), raw JSON values.
        options: the frame settings; their ``max_visual_tokens`` and ``maxp`` are the budget
            (``max_visual_tokens`` None disables it; the reference always has one).
        height, width: the video's frame size, pixels (the reference's ffprobe size; the estimate
            is symmetric in the two; keyword-only).

    Raises:
        TypeError, ValueError, OverflowError: where the reference raises (step 1).
    """
    nframes = arguments["nframes"]
    resize = arguments.get("resize", 1.0)
    if resize is None:
        resize = 1.0
    budget = apply_token_budget(nframes, resize, height=height, width=width,
                                max_visual_tokens=options.max_visual_tokens, maxp=options.maxp)
    estimate = int(budget.final_estimated_tokens)
    out = {"budget": budget, "estimated_visual_tokens": estimate}
    start, why = _tool_time(arguments["start_time"], "start_time")
    if why is None:
        end, why = _tool_time(arguments["end_time"], "end_time")
    if why is not None:
        return ReferenceToolCall(**out, refusal=why)
    n_text, r_text = str(budget.nframes), str(budget.resize)
    for name, text in (("nframes", n_text), ("resize", r_text)):
        if text.startswith("-") and not _ARGPARSE_NEGATIVE_NUMBER.match(text):
            return ReferenceToolCall(**out, refusal=f"{name}={text!r} reads as an option to the tool's argument parser")
    try:
        n = int(n_text)
    except ValueError:
        return ReferenceToolCall(**out, refusal=f"nframes={n_text!r} is not an integer (the tool parses it with int())")
    try:
        r = float(r_text)
    except ValueError:
        return ReferenceToolCall(**out, refusal=f"resize={r_text!r} is not a number")
    if n <= 0:
        return ReferenceToolCall(**out, refusal=f"nframes must be a positive integer, got {n}")
    if not r > 0:
        return ReferenceToolCall(**out, refusal=f"resize must be > 0, got {r_text}")
    if math.isnan(start) or (end is not None and math.isnan(end)):
        return ReferenceToolCall(**out, refusal="a NaN time selects no frame")
    return ReferenceToolCall(budget=dataclasses.replace(budget, nframes=n, resize=r), estimated_visual_tokens=estimate,
                             start_time=start, end_time=end, nframes=n, resize=r, request_nframes=int(nframes),
                             request_resize=float(resize))


def frame_label(i: int, seconds: int, fmt: str = "mmss") -> str | None:
    """Text part before frame ``i`` (numbered across all calls of the turn).

    ``"mmss"``: ``"Frame {i} at [MM:SS]: "`` with a leading newline from the second frame on
    (``MM = seconds // 60``, ``SS = seconds % 60``, Python floor semantics as in the reference);
    ``"seconds"``: ``"\\nFrame {i} at {s} seconds:"``; ``"none"``: no label (None).
    """
    if fmt == "mmss":
        minutes, secs = divmod(seconds, 60)
        return f"{'' if i == 0 else chr(10)}Frame {i} at [{minutes:02d}:{secs:02d}]: "
    if fmt == "seconds":
        return f"\nFrame {i} at {seconds} seconds:"
    if fmt == "none":
        return None
    raise ValueError(f"timestamp format must be one of {TIMESTAMP_FORMATS}, got {fmt!r}")


def tool_turn_layout(
    calls: list[tuple[int, list[int]]], question: str, fmt: str = "mmss"
) -> list[str | tuple[int, int]]:
    """The parts of a tool turn in order, as the loop sends them: text strings and ``(call, frame)``
    references to the frames of the turn's successful calls.

    ``"<tool_response>"``, then for each frame (numbered across the turn's calls) its label
    (:func:`frame_label`) and the frame, then :func:`tool_turn_tail`. Calls that failed contribute
    nothing (the reference skips them).

    Args:
        calls: for each successful call of the turn, ``(nframes, label_s)`` (``label_s`` from
            :func:`label_seconds`).
        question: the question (repeated in the tail).
        fmt: frame label format (``TIMESTAMP_FORMATS``).
    """
    parts: list[str | tuple[int, int]] = ["<tool_response>"]
    frame_no = 0
    for c, (nframes, labels) in enumerate(calls):
        for i in range(nframes):
            label = frame_label(frame_no, labels[i], fmt)
            if label is not None:
                parts.append(label)
            parts.append((c, i))
            frame_no += 1
    parts.append(tool_turn_tail(question))
    return parts
