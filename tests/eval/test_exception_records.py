"""Records of episodes that end in an exception carry what EVA's eval-eva.py writes (issue #26).

Reference (wangruohui/EfficientVideoAgent @ 758ad8d, eval-eva.py): ``single()`` adds each call's
``estimated_tokens(nframes, resize)`` to ``estimated_visual_tokens`` *before* running the tool;
``call_frame_select`` then computes ``arguments["end_time"] - arguments["start_time"]``, which raises
``TypeError`` for a string ``start_time``. The exception leaves ``single()``; ``process_single_item``
catches it and returns a fresh record: ``answer ""``, ``stop_reason "exception"``, ``error
"<Type>: <message>"``, ``messages []`` and literal ``num_rounds 0, total_tokens 0,
estimated_visual_tokens 0``, whatever the episode had used. EVA's summary averages
``num_rounds``/``total_tokens`` over all records, zeros included.

The scripted episode on bigbuckbunny.mp4 (1280x720): round 1 asks 2 frames at resize 0.25
(estimate 2 * round(180/28) * round(320/28) = 2 * 6 * 11 = 132 tokens), round 2 asks 2 frames from
start_time "1" at resize 0.1 (2 * round(72/28) * round(128/28) = 2 * 3 * 5 = 30, charged, then the
label arithmetic raises).
"""

from __future__ import annotations

from eva_fast.agent import AgentConfig, AgentLoop, get_backend
from eva_fast.eval import load_records, run_benchmark, score_records
from tests.conftest import DATA
from tests.eval.conftest import MINI

CALL_OK = ('<tool_call>{"tool": "frame_select", "arguments": {"start_time": 0, "end_time": 4, "nframes": 2, '
           '"resize": 0.25}}</tool_call>')
CALL_STR = ('<tool_call>{"tool": "frame_select", "arguments": {"start_time": "1", "end_time": 4, "nframes": 2, '
            '"resize": 0.1}}</tool_call>')


def _run(tmp_path, replies):
    loop = AgentLoop(get_backend("scripted", replies=replies), AgentConfig(max_turns=4))
    run_benchmark(loop, MINI, DATA, tmp_path, limit=1, concurrency=1)
    (rec,) = load_records(tmp_path / "mini_bench.jsonl")
    return rec


def test_exception_record_has_the_reference_handlers_counts(tmp_path):
    rec = _run(tmp_path, [CALL_OK, CALL_STR])
    assert rec["videos"] == ["bigbuckbunny.mp4"] and rec["answer"] == ""
    assert rec["stop_reason"] == "exception"
    assert rec["error"] == "TypeError: unsupported operand type(s) for -: 'int' and 'str'"
    # what process_single_item writes (before: 2 rounds, the last round's tokens and 132)
    assert (rec["num_rounds"], rec["total_tokens"], rec["estimated_visual_tokens"]) == (0, 0, 0)
    # eva_fast's own counts: both rounds ran, and the failing call's 30 estimated tokens were charged
    # before it raised, as in the reference's loop (before: 132, the 30 left out)
    at_stop = rec["counts_at_stop"]
    assert at_stop["num_rounds"] == 2 and at_stop["estimated_visual_tokens"] == 132 + 30
    assert at_stop["total_tokens"] == rec["trajectory"]["total_tokens"] > 0
    # the averages EVA prints count the question as 0 rounds and 0 tokens
    s = score_records([rec])
    assert (s.avg_rounds, s.avg_total_tokens) == (0.0, 0.0)


def test_normal_stop_keeps_its_counts(tmp_path):
    rec = _run(tmp_path, [CALL_OK, "<answer>A</answer>"])
    assert rec["stop_reason"] == "answer_found" and "counts_at_stop" not in rec
    assert rec["num_rounds"] == 2 and rec["estimated_visual_tokens"] == 132
    assert rec["total_tokens"] == rec["trajectory"]["total_tokens"] > 0
