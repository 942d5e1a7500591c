"""Training data construction (paper §3.2-§3.3): the public datasets' questions, teacher trajectories
for SFT, KTO labels, the initial RL set, and data-enhanced GRPO questions. Command line: ``eva-fast
data {import,teacher,kto-label,rl-set,enhance}``; the whole recipe: ``eva-fast recipe``.

Every step writes jsonl in the one trajectory format (:mod:`eva_fast.train._records`) or the RL set
format (:mod:`eva_fast.train._rl_data`), plus a short report (``*.report.json`` / ``*.report.md``).
Prompts are editable templates in :data:`PROMPT_DIR` (copy the folder, edit, pass ``--prompt-dir``).
"""

from eva_fast.train.data._common import (
    DEFAULT_ROUGE_THRESHOLD,
    PROMPT_DIR,
    Case,
    infer_answer_type,
    iter_cases,
    load_prompt,
    render_prompt,
    score_answer,
)
from eva_fast.train.data._enhance import (
    DedupeIndex,
    FailureCase,
    QuestionWriter,
    aenhance,
    collect_failures,
    list_videos,
    normalize_text,
    pick_examples,
    static_problems,
)
from eva_fast.train.data._label import (
    DEFAULT_CHOSEN_FRACTION,
    EXTRA_REJECTIONS,
    INPUT_ROLES,
    FailureRules,
    GuessingJudge,
    alabel,
    balance_labels,
    call_windows,
    failure_flags,
    judge_transcript,
)
from eva_fast.train.data._rl_set import PAPER_MCQ_RATIO, RLSetResult, abuild_rl_set, merge_rl_set
from eva_fast.train.data._sources import (
    ImportResult,
    ReadResult,
    import_sources,
    read_cgbench,
    read_hdvila,
    read_llava_video,
)
from eva_fast.train.data._teacher import (
    PROMPT_FAMILIES,
    TeacherEpisodes,
    TeacherPrompt,
    TeacherResult,
    arun_teacher,
    arun_teacher_episodes,
    experience_summary,
    load_experiences,
    select_teacher_data,
    structure_problems,
    teacher_meta,
)

__all__ = [
    "DEFAULT_CHOSEN_FRACTION",
    "EXTRA_REJECTIONS",
    "INPUT_ROLES",
    "PAPER_MCQ_RATIO",
    "ImportResult",
    "RLSetResult",
    "ReadResult",
    "TeacherEpisodes",
    "abuild_rl_set",
    "arun_teacher_episodes",
    "import_sources",
    "merge_rl_set",
    "read_cgbench",
    "read_hdvila",
    "read_llava_video",
    "select_teacher_data",
    "teacher_meta",
    "DEFAULT_ROUGE_THRESHOLD",
    "PROMPT_DIR",
    "PROMPT_FAMILIES",
    "Case",
    "DedupeIndex",
    "FailureCase",
    "FailureRules",
    "GuessingJudge",
    "QuestionWriter",
    "TeacherPrompt",
    "TeacherResult",
    "aenhance",
    "alabel",
    "arun_teacher",
    "balance_labels",
    "call_windows",
    "collect_failures",
    "experience_summary",
    "failure_flags",
    "infer_answer_type",
    "iter_cases",
    "judge_transcript",
    "list_videos",
    "load_experiences",
    "load_prompt",
    "normalize_text",
    "pick_examples",
    "render_prompt",
    "score_answer",
    "static_problems",
    "structure_problems",
]
