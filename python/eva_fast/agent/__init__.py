"""EVA's agent loop: the model plans, asks for frames with ``frame_select``, and answers.

    from eva_fast.agent import AgentConfig, AgentLoop, get_backend
    backend = get_backend("transformers", model_path="hf_model", device="cuda")   # or "openai"
    loop = AgentLoop(backend, AgentConfig())
    traj = loop.run_sync("video.mp4", "Question ... A. ... B. ...")
    traj.answer, traj.stop_reason, traj.to_dict()

The protocol (prompts, tool-call parsing, tool-turn labels, stop reasons) is the published EVA
evaluation's, so the released checkpoint (WRHC/EfficientVideoAgent) works unchanged.

Modules: ``_protocol`` (prompts, answer extraction, tool-call parsing, the reference's handling of
a call's raw arguments, tool-turn labels and layout: pure string/number work), ``_config``
(``AgentConfig``), ``_types`` (messages, generations, ``Trajectory`` and its JSON layout), ``_loop``
(the state machine, and ``plan_tool_call``: how a call becomes a ``FramePlan``), ``_render``
(``ChatRenderer``: conversations -> token ids, shared by the transformers backend and training),
``_backend`` (backend registry), ``_ticks`` (turn-synchronous batching of many episodes' turns) and
the backends ``_transformers``, ``_openai``, ``_scripted``;
``_viz`` (timeline plot), ``_cli`` (``eva-fast ask``).

What training builds on is exported here and kept stable: the renderer (``ChatRenderer``,
``RenderedChat``, ``load_chat_template``, ``expand_image_tokens``), the loop's own call planning
(``plan_tool_call``, ``recorded_frame_options``), the protocol pieces (``frame_label``,
``first_user_text``, ``tool_turn_layout``, ``TIMESTAMP_FORMATS``), the token-level backend
(``TransformersBackend``, ``TokenSession``, ``TokenTrace``), turn-synchronous batching
(``TurnBatcher``, ``TurnRequest``, ``TickStats``, ``SyncFn``: ``_ticks``), which stop reasons are
the machinery's (``STOP_EXCEPTION`` with ``INFRA_ERROR_SOURCES``) and ``plot_timeline``.
"""

from eva_fast.agent._backend import (
    BackendBadRequest,
    ModelBackend,
    Session,
    get_backend,
    list_backends,
    register_backend,
)
from eva_fast.agent._config import AgentConfig, recorded_frame_options
from eva_fast.agent._loop import AgentLoop, AgentState, EventCallback, plan_tool_call
from eva_fast.agent._protocol import (
    NORMAL_STOP_REASONS,
    STOP_EXCEPTION,
    SYSTEM_PROMPT,
    TIMESTAMP_FORMATS,
    extract_answer,
    first_user_text,
    frame_label,
    parse_tool_calls,
    tool_turn_layout,
)
from eva_fast.agent._render import ChatRenderer, RenderedChat, expand_image_tokens, load_chat_template
from eva_fast.agent._ticks import SyncFn, TickStats, TickSummary, TurnBatcher, TurnRequest, summarize_ticks
from eva_fast.agent._transformers import TokenSession, TransformersBackend
from eva_fast.agent._types import (
    INFRA_ERROR_SOURCES,
    FramesReturned,
    Generation,
    ImagePart,
    Message,
    TextPart,
    TokenTrace,
    ToolCall,
    Trajectory,
    Turn,
)
from eva_fast.agent._viz import plot_timeline

__all__ = [
    "INFRA_ERROR_SOURCES",
    "NORMAL_STOP_REASONS",
    "STOP_EXCEPTION",
    "SYSTEM_PROMPT",
    "TIMESTAMP_FORMATS",
    "AgentConfig",
    "AgentLoop",
    "AgentState",
    "BackendBadRequest",
    "ChatRenderer",
    "EventCallback",
    "FramesReturned",
    "Generation",
    "ImagePart",
    "Message",
    "ModelBackend",
    "RenderedChat",
    "Session",
    "SyncFn",
    "TextPart",
    "TickStats",
    "TickSummary",
    "TokenSession",
    "TokenTrace",
    "ToolCall",
    "Trajectory",
    "TransformersBackend",
    "Turn",
    "TurnBatcher",
    "TurnRequest",
    "expand_image_tokens",
    "extract_answer",
    "first_user_text",
    "frame_label",
    "get_backend",
    "list_backends",
    "load_chat_template",
    "parse_tool_calls",
    "plan_tool_call",
    "plot_timeline",
    "recorded_frame_options",
    "register_backend",
    "summarize_ticks",
    "tool_turn_layout",
]
