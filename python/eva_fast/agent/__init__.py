"""EVA's agent loop: the model plans, asks for frames with ``frame_select``, and answers.

    from eva_fast.agent import AgentConfig, AgentLoop, get_backend
    backend = get_backend("transformers", model_path="hf_model", device="cuda")   # or "openai"
    loop = AgentLoop(backend, AgentConfig())
    traj = loop.run_sync("video.mp4", "Question ... A. ... B. ...")
    traj.answer, traj.stop_reason, traj.to_dict()

The protocol (prompts, tool-call parsing, tool-turn labels, stop reasons) is the published EVA
evaluation's, so the released checkpoint (WRHC/EfficientVideoAgent) works unchanged.
"""

from eva_fast.agent._backend import (
    BackendBadRequest,
    ModelBackend,
    Session,
    get_backend,
    list_backends,
    register_backend,
)
from eva_fast.agent._config import AgentConfig
from eva_fast.agent._loop import AgentLoop, AgentState, EventCallback
from eva_fast.agent._protocol import (
    NORMAL_STOP_REASONS,
    STOP_EXCEPTION,
    SYSTEM_PROMPT,
    extract_answer,
    first_user_text,
    parse_tool_calls,
)
from eva_fast.agent._ticks import SyncFn, TickStats, TickSummary, TurnBatcher, TurnRequest, summarize_ticks
from eva_fast.agent._types import (
    INFRA_ERROR_SOURCES,
    FramesReturned,
    Generation,
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    Trajectory,
    Turn,
)

__all__ = [
    "INFRA_ERROR_SOURCES",
    "NORMAL_STOP_REASONS",
    "STOP_EXCEPTION",
    "SYSTEM_PROMPT",
    "AgentConfig",
    "AgentLoop",
    "AgentState",
    "BackendBadRequest",
    "EventCallback",
    "FramesReturned",
    "Generation",
    "ImagePart",
    "Message",
    "ModelBackend",
    "Session",
    "SyncFn",
    "TextPart",
    "TickStats",
    "TickSummary",
    "ToolCall",
    "Trajectory",
    "Turn",
    "TurnBatcher",
    "TurnRequest",
    "extract_answer",
    "first_user_text",
    "get_backend",
    "list_backends",
    "parse_tool_calls",
    "register_backend",
    "summarize_ticks",
]
