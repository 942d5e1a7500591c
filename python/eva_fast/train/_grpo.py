"""GRPO of EVA on TRL's ``GRPOTrainer`` (paper §3.3, §4.1: 8 rollouts per question, rewards CSV for
multiple choice and ROUGE for open-ended answers plus a format reward, KL to the SFT+KTO reference).

TRL keeps what it owns: group advantages, the clipped objective, KL to the reference, importance
sampling, the optimizer, accelerate / DeepSpeed / FSDP, logging, checkpoints. eva_fast supplies the
rollouts: each completion is a whole EVA episode run by :class:`eva_fast.agent.AgentLoop` (the
protocol of ``eva-fast ask``/``eval``) on the live policy, token ids extended turn by turn, the
frames of a question's episodes shared (:mod:`eva_fast.train._rollout`).

Where eva_fast hooks in, and why there (TRL 1.16.0, ``trl/trainer/grpo_trainer.py``; see
``../shared/design/training.md``):

* ``_generate(prompts)`` is overridden (TRL's 8-tuple contract: ``prompt_ids, completion_ids,
  tool_mask, completions, logprobs, extra_fields, images, tool_images``). ``rollout_func`` is not
  used: on that path TRL sets ``images=None`` and the tool-turn frames never reach the loss forward
  (the ``<|image_pad|>`` tokens would be trained as text, silently). TRL's ``tools=`` loop is not
  used either: it refuses Qwen2.5-VL's template (``supports_tool_calling``), parses the template's
  ``"name"`` schema (EVA writes ``"tool"``), runs every call (EVA: the first block only), feeds
  errors back as text instead of ending the episode, and re-processes every image each turn.
* ``self.tools`` is set (to a stand-in ``frame_select``) after ``GRPOTrainer.__init__`` so the
  image branch of ``_generate_and_score_completions`` packs the episodes' frames (with eva_fast's
  image processor, :class:`EvaQwen25VLProcessor`: the frames are already smart_resized uint8, so
  nothing is resampled) and builds ``mm_token_type_ids`` from the image pads.
* ``_generate_and_score_completions`` is wrapped: it hands the batch's rows to ``_generate`` (TRL
  passes only the prompts) and afterwards checks TRL's silent guard — if any sample's image-pad
  count differs from its frames' grid, TRL drops every image of the batch — and raises instead.
* ``compute_loss`` is TRL's (``loss_type`` "grpo" by default: the paper's objective). The
  completion mask is TRL's ``completion_mask * tool_mask`` with our ``tool_mask`` = the episode's
  response mask (1 on generated ids incl. each turn's ``<|im_end|>``, 0 on tool turns and template
  text).
* Rewards are :mod:`eva_fast.train.rewards` functions by name (``reward_funcs``), bound to a
  per-step :class:`~eva_fast.train.rewards.RewardContext`. An infrastructure failure scores None
  from every function: TRL's "unscorable" path (NaN rewards, out of the group baseline, advantage
  0). ``_calculate_rewards`` is wrapped only to keep the gathered reward matrix, so the episodes TRL
  found unscorable also leave the loss: their ``tool_mask`` row is zeroed after
  ``_generate_and_score_completions`` (policy and KL terms alike).
* Rollouts are turn-synchronous (:mod:`eva_fast.agent._ticks`): with several processes each tick
  is agreed first, so every process makes the same ``generate`` calls — what transformers'
  ``synced_gpus`` (set under ZeRO-3/FSDP) and vLLM's server mode need; the in-process CSV judge
  batches its prompts the same way.

What a TRL upgrade would break (``tests/train/test_grpo.py`` checks each, so it breaks loudly):
the name, signature and 8-tuple of ``_generate``; ``_calculate_rewards``' signature and its gathered
NaN-for-None matrix, the unscorable mask and the loss's ``completion_mask * tool_mask``; that
``_generate_and_score_completions`` takes
the image branch when ``self.tools`` and ``tool_images`` are non-empty and calls
``processing_class.image_processor`` there; the output keys ``pixel_values`` / ``image_grid_thw`` /
``tool_mask``; that reward functions receive ``extra_fields`` and dataset columns as keyword
arguments; and ``_get_per_token_logps_and_entropies``' signature (the logprob test).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    import trl
    from trl import GRPOConfig, GRPOTrainer
    from trl.models.utils import disable_gradient_checkpointing, unwrap_model_for_generation
except ImportError as e:  # pragma: no cover - trl is the train extra
    raise ImportError("eva_fast.train needs TRL: pip install 'trl==1.16.0' peft accelerate rouge-score") from e
import torch
from accelerate.utils import gather_object  # TRL's dependencies
from datasets import Dataset
from transformers import Qwen2_5_VLForConditionalGeneration

from eva_fast._files import read_mapping
from eva_fast._logging import get_logger
from eva_fast.agent import NORMAL_STOP_REASONS, AgentConfig, TransformersBackend, get_backend, plot_timeline
from eva_fast.train._common import CheckpointExtrasMixin, ResumeWeightsMixin, base_model_and_tokenizer
from eva_fast.train._rl_data import RLSample, balance_types, load_rl_set  # noqa: F401  (balance_types: was defined here)
from eva_fast.train._rollout import CacheStats, GroupFrameCache, RolloutBatch, RolloutEngine, cross_process_max
from eva_fast.train._vllm import VLLMRolloutBackend
from eva_fast.train.rewards import CSVJudge, RewardContext, bind_rewards
from eva_fast.video import FrameOptions
from eva_fast.vision import EvaQwen2VLImageProcessor, EvaQwen25VLProcessor

logger = get_logger("train")

#: TRL releases this trainer's hooks were read from and tested against.
TESTED_TRL = ("1.16.0",)
JUDGES = ("reference", "policy", "openai", "none")
#: The agent's defaults, which the config's agent fields take.
_AGENT = AgentConfig()


def frame_select(start_time: float, end_time: float, nframes: int, resize: float = 1.0) -> str:
    """EVA's frame tool (stand-in: rollouts run the real tool through the agent loop; TRL only needs
    a non-empty ``tools`` list to pack tool-turn images)."""
    raise RuntimeError("frame_select is served by eva_fast's agent loop, not by TRL's tool loop")


@dataclass
class EvaGRPOConfig(GRPOConfig):
    """TRL's ``GRPOConfig`` with EVA's data, agent, frame and reward options.

    TRL fields keep their meaning; ``temperature``, ``top_p``, ``top_k``, ``min_p`` are the rollouts'
    sampling settings, ``num_generations`` the episodes per question (paper: 8; batch of 64
    questions = ``generation_batch_size`` 512). Defaults changed from TRL's: ``loss_type`` "grpo"
    (the paper's GRPO objective; TRL 1.16 defaults to "dapo"), ``beta`` 0.04 (the paper keeps a KL
    term to the SFT+KTO reference; TRL's default is 0; 0.04 is the GRPO paper's value, EVA's is not
    published), ``max_completion_length`` None (an episode is never truncated: cutting image pads
    breaks the vision/text alignment; it is bounded by ``max_turns`` x ``max_new_tokens`` + tool
    turns), ``remove_unused_columns=False``. Rewards: ``reward_funcs`` names functions of
    :mod:`eva_fast.train.rewards` (weights: TRL's ``reward_weights``).

    The agent fields carry :class:`eva_fast.agent.AgentConfig`'s names (``max_turns``,
    ``max_new_tokens``, ``decode_device``); ``frame_options`` embeds a
    :class:`eva_fast.video.FrameOptions` as its dict (YAML ``frame_options: {maxp: 360, policy:
    keyframe_snap}``, or JSON on the command line; fields left out keep their defaults).
    """

    train_file: str | None = field(default=None, metadata={"help": "RL question set (jsonl: video, question, answer, type)"})
    eval_file: str | None = field(default=None, metadata={"help": "optional evaluation question set"})
    video_root: str | None = field(default=None, metadata={"help": "folder relative video paths are resolved against"})
    roots: str | None = field(
        default=None,
        metadata={"help": "YAML/JSON file mapping a question's source name (its 'source' up to the first '#' or ':') "
                  "to the folder its relative video paths are under, like eval's --roots; others use video_root"},
    )
    mcq_ratio: float | None = field(
        default=None,
        metadata={"help": "fraction of multiple-choice questions in the training set (paper: 0.1); the other type is "
                  "subsampled to reach it; None keeps the set as is"},
    )
    max_turns: int = field(default=_AGENT.max_turns, metadata={"help": "model turns per episode"})
    max_new_tokens: int = field(default=_AGENT.max_new_tokens, metadata={"help": "tokens generated per model turn"})
    frame_options: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "frame tool settings (eva_fast.video.FrameOptions fields: max_visual_tokens, maxp, resample, "
                  "policy, smart_resize_by, min_pixels, max_pixels, snap_tolerance_s, snap_fraction) as a dict or "
                  "JSON; left-out fields keep EVA's defaults"},
    )
    decode_device: str = field(default=_AGENT.decode_device,
                               metadata={"help": "where frames are decoded: cpu or cuda[:N]"})
    share_frames: bool = field(default=True, metadata={"help": "share decoded frames among a question's episodes"})
    rollout_concurrency: int | None = field(default=None, metadata={"help": "episodes in flight at once (None: all)"})
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy", "format"],
        metadata={"help": "reward functions by registry name (eva_fast.train.rewards.REWARDS) or dotted path; "
                  "weights: reward_weights (TRL's, default 1 each)"},
    )
    format_reward: float = field(
        default=0.1, metadata={"help": "the format reward's value: a valid tool call's answer reward is topped up to it"})
    judge: str = field(
        default="reference",
        metadata={"help": "CSV judge of multiple-choice answers: reference (frozen reference/base model in process), "
                  "policy (the initial policy weights), openai (a server: judge_base_url), none (plain accuracy)"},
    )
    judge_base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible judge server URL (judge=openai)"})
    judge_model: str | None = field(default=None, metadata={"help": "judge model name on the server"})
    judge_max_new_tokens: int = field(default=16, metadata={"help": "judge reply length"})
    dump_every_steps: int = field(
        default=0, metadata={"help": "every N steps write the step's rollouts (jsonl, for failure mining) and timeline PNGs; 0 = never"})
    dump_num: int = field(default=2, metadata={"help": "timeline PNGs per dump"})
    beta: float = field(default=0.04, metadata={"help": "KL coefficient to the reference model"})
    loss_type: str = field(
        default="grpo",
        metadata={"help": "TRL's policy loss: grpo (the paper's: each episode's token mean, then the mean over "
                  "episodes), or TRL's others (dapo, dr_grpo, bnpo, cispo, sapo, ...)"},
    )
    rollout_batching: bool = field(
        default=True,
        metadata={"help": "in-process rollouts: one batched generate per turn tick over all live episodes (False: "
                  "one generate per episode turn; single process only)"},
    )
    max_completion_length: int | None = field(default=None, metadata={"help": "unused by EVA rollouts (never truncated)"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "must stay False"})

    def __post_init__(self) -> None:
        if self.remove_unused_columns:
            raise ValueError("EvaGRPOConfig.remove_unused_columns must be False: rollouts read the question rows")
        if self.judge not in JUDGES:
            raise ValueError(f"EvaGRPOConfig.judge must be one of {JUDGES}, got {self.judge!r}")
        if self.judge == "openai" and not self.judge_base_url:
            raise ValueError("EvaGRPOConfig.judge='openai' needs judge_base_url")
        if self.mcq_ratio is not None and not 0.0 <= self.mcq_ratio <= 1.0:
            raise ValueError(f"EvaGRPOConfig.mcq_ratio must be in [0, 1] or None, got {self.mcq_ratio!r}")
        if not 0.0 <= self.format_reward < 1.0:
            raise ValueError(f"EvaGRPOConfig.format_reward must be in [0, 1), got {self.format_reward!r}")
        if not self.reward_funcs:
            raise ValueError("EvaGRPOConfig.reward_funcs must name at least one reward function")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(f"EvaGRPOConfig.reward_weights has {len(self.reward_weights)} weights for "
                             f"{len(self.reward_funcs)} reward_funcs {self.reward_funcs}")
        options = self.frame_options
        if isinstance(options, str):
            try:
                options = json.loads(options)
            except json.JSONDecodeError as e:
                raise ValueError(f"EvaGRPOConfig.frame_options must be a dict or its JSON, got {options!r}") from e
        # validated here (named errors), kept as the plain dict TRL writes into its logs and checkpoints
        self.frame_options = FrameOptions.from_dict(options or {}).to_dict()
        self.agent_config()  # the agent settings' own checks, at config time
        super().__post_init__()

    def agent_config(self) -> AgentConfig:
        """The :class:`eva_fast.agent.AgentConfig` of the rollouts."""
        return AgentConfig(
            max_turns=self.max_turns, max_new_tokens=self.max_new_tokens, temperature=float(self.temperature),
            frame_options=FrameOptions.from_dict(self.frame_options), decode_device=self.decode_device,
        )


def load_roots(path: str | os.PathLike | None) -> dict[str, str]:
    """``source name -> video folder`` from a YAML or JSON mapping file (None: no mapping).

    Raises:
        FileNotFoundError, ValueError: a missing file or not a mapping.
    """
    return {} if path is None else read_mapping(path, "source name -> video folder")


def video_path(sample: RLSample, video_root: str | None, roots: dict[str, str]) -> str:
    """A question's video: absolute as written; relative under ``roots[source name]`` (the sample's
    ``source`` up to the first ``#`` or ``:``) when given, else under ``video_root``."""
    name = None
    if sample.source:
        name = sample.source.split("#", 1)[0].split(":", 1)[0]
    return sample.video_path(roots.get(name, video_root) if name else video_root)


def rl_dataset(samples: Sequence[RLSample], video_root: str | None, roots: dict[str, str] | None = None) -> Any:
    """A ``datasets.Dataset`` of RL questions for TRL (``prompt`` plus eva_fast's columns)."""
    roots = roots or {}
    return Dataset.from_dict({
        "prompt": [[{"role": "user", "content": s.prompt()}] for s in samples],
        "video": [video_path(s, video_root, roots) for s in samples],
        "question": [s.prompt() for s in samples],
        "answer": [s.answer for s in samples],
        "type": [s.type for s in samples],
        "category": [s.category or "" for s in samples],
    })


class EvaGRPOTrainer(ResumeWeightsMixin, CheckpointExtrasMixin, GRPOTrainer):
    """TRL's ``GRPOTrainer`` with EVA episodes as completions (see the module docstring).

    Args:
        model: checkpoint folder of the policy (the SFT+KTO model), or a loaded model.
        args: :class:`EvaGRPOConfig`.
        train_dataset: RL samples (list of :class:`RLSample`) or a jsonl path; None reads ``args.train_file``.
        eval_dataset: likewise, or ``args.eval_file``.
        processing_class: default: :class:`EvaQwen25VLProcessor` of the checkpoint's tokenizer and
            eva_fast's image processor.
        rollout_backend: override the rollout backend (an agent backend on token ids); default the
            live policy in process, or vLLM with ``use_vllm``.
        judge_backend: override the CSV judge's backend (an agent backend).
        peft_config, callbacks, optimizers: as TRL's.

    Raises:
        ValueError: no training questions; RLDataError for a malformed set.
    """

    def __init__(
        self,
        model: Any,
        args: EvaGRPOConfig,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        *,
        rollout_backend: Any = None,
        judge_backend: Any = None,
        peft_config: Any = None,
        callbacks: Any = None,
        optimizers: Any = (None, None),
    ) -> None:
        if not isinstance(args, EvaGRPOConfig):
            raise TypeError(f"args must be an EvaGRPOConfig, got {type(args).__name__}")
        if trl.__version__ not in TESTED_TRL:
            logger.warning("EvaGRPOTrainer hooks were tested with trl %s, found %s: run tests/train/test_grpo.py",
                           TESTED_TRL, trl.__version__)
        if processing_class is None:
            self.base_model_path, tok = base_model_and_tokenizer(model)
            ip = EvaQwen2VLImageProcessor()
            pre = Path(self.base_model_path) / "preprocessor_config.json"
            if pre.is_file():
                ip = EvaQwen2VLImageProcessor(**json.loads(pre.read_text()))
            processing_class = EvaQwen25VLProcessor(ip, tok)
        else:
            self.base_model_path, _ = base_model_and_tokenizer(model, processing_class)
        train = self._samples(train_dataset, args, args.train_file)
        if not train:
            raise ValueError("EvaGRPOTrainer: no training questions (give train_dataset or args.train_file)")
        train = balance_types(train, args.mcq_ratio, args.seed)
        evals = self._samples(eval_dataset, args, args.eval_file)
        self.reward_context = RewardContext(args.format_reward)
        super().__init__(
            model=model,
            reward_funcs=bind_rewards(args.reward_funcs, self.reward_context),
            args=args,
            train_dataset=rl_dataset(train, args.video_root, load_roots(args.roots)),
            eval_dataset=rl_dataset(evals, args.video_root, load_roots(args.roots)) if evals else None,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            peft_config=peft_config,
        )
        # enables the image branch of _generate_and_score_completions (see the module docstring)
        self.tools = [frame_select]
        self._standalone_tools = []
        self._rollout_backend = rollout_backend
        self._judge_backend = judge_backend
        self._eva_rows: list[dict[str, Any]] | None = None
        self._eva_groups: dict[str, GroupFrameCache] = {}
        self._eva_last: RolloutBatch | None = None
        self._eva_unscorable: Any = None
        self.eva_cache_total = CacheStats()
        self._sync = cross_process_max(self.accelerator)

    @staticmethod
    def _samples(data: Any, args: EvaGRPOConfig, file: str | None) -> list[RLSample]:
        """The questions (given, from a path, or from ``file``), each video checked to exist."""
        if data is None and file is None:
            return []
        samples = list(data) if isinstance(data, (list, tuple)) else load_rl_set(data if data is not None else file)
        roots = load_roots(args.roots)
        missing = [f"{s.where}: {video_path(s, args.video_root, roots)}" for s in samples
                   if not Path(video_path(s, args.video_root, roots)).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} question(s) of the RL set have no video, e.g. {missing[0]} "
                                    "(check video_root / roots)")
        return samples

    # -- backends ---------------------------------------------------------------------------------

    def _sampling_kwargs(self) -> dict[str, Any]:
        a = self.args
        if a.repetition_penalty != 1.0:
            logger.warning("repetition_penalty=%s: the recorded sampling logprobs then differ from the loss's", a.repetition_penalty)
        return {"top_p": a.top_p, "top_k": a.top_k or 0, "min_p": a.min_p, "repetition_penalty": a.repetition_penalty}

    def _policy_backend(self, unwrapped: Any) -> Any:
        return TransformersBackend(
            model=unwrapped, tokenizer=self._tokenizer, chat_template=self.processing_class.chat_template,
            generation_kwargs=self._sampling_kwargs(), batch_turns=self.args.rollout_batching, sync=self._sync,
        )

    def _ensure_judge(self) -> None:
        if self.reward_context.judge is not None or self.args.judge == "none":
            return
        backend = self._judge_backend
        if backend is None and self.args.judge == "openai":
            backend = get_backend("openai", base_url=self.args.judge_base_url, model=self.args.judge_model)
        if backend is None:
            judge_model = self.ref_model if self.args.judge == "reference" else None
            if judge_model is None:
                # no reference model (beta=0 or PEFT): a frozen copy of the initial policy
                if self.base_model_path is None:
                    raise ValueError("the CSV judge needs a reference model, judge_backend= or judge='openai'")
                judge_model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                    self.base_model_path, dtype=self.model.dtype).to(self.accelerator.device).eval()
                for p in judge_model.parameters():
                    p.requires_grad_(False)
            # the judge's prompts of a step go into batched ticks, the same number on every process
            # (the reference model is sharded like the policy under ZeRO-3/FSDP: its generate is a collective)
            backend = TransformersBackend(model=judge_model, tokenizer=self._tokenizer,
                                          chat_template=self.processing_class.chat_template, sync=self._sync)
        self.reward_context.judge = CSVJudge(backend, max_new_tokens=self.args.judge_max_new_tokens)

    # -- the hooks --------------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._eva_rows = inputs
        self._eva_unscorable = None
        self._ensure_judge()
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._eva_rows = None
            if self._eva_last is not None:
                self._eva_last.close()
            self._eva_groups = {}
        self._mask_unscorable(output, len(inputs))
        batch = self._eva_last
        n_images = sum(len(t.tokens.tokens_per_image) for t in batch.trajectories if t.tokens is not None)
        got = 0 if output.get("image_grid_thw") is None else int(output["image_grid_thw"].shape[0])
        if got != n_images:
            raise RuntimeError(
                f"TRL packed {got} images for rollouts that produced {n_images}: its image-pad/grid guard dropped the "
                "batch's frames (the loss forward would train image pads as text). This is a bug in the rollout ids."
            )
        return output

    def _calculate_rewards(self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any) -> Any:
        # TRL's rewards, gathered over processes ([all episodes, reward functions], NaN = None); kept
        # to find the unscorable episodes (every reward None) whose tokens _mask_unscorable masks
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._eva_unscorable = torch.isnan(rewards_per_func).all(dim=1).cpu()
        return rewards_per_func

    def _mask_unscorable(self, output: dict[str, Any], n_local: int) -> None:
        """Episodes every reward function left unscored (infrastructure failures: TRL already gives
        them advantage 0 and leaves them out of their group's baseline) also leave the loss: their
        ``tool_mask`` row becomes 0, so neither the policy term nor the KL term reaches their
        tokens. Logs ``eva/infra_failures``, the count over all processes."""
        unscorable = self._eva_unscorable
        if unscorable is None:  # pragma: no cover - TRL always computes rewards
            return
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["eva/infra_failures"].append(float(unscorable.sum()))
        start = self.accelerator.process_index * n_local
        local = unscorable[start:start + n_local]
        if local.any():
            mask = output["tool_mask"]
            mask[local.to(mask.device)] = 0

    def _rollouts(self, rows: Sequence[dict[str, Any]]) -> RolloutBatch:
        engine_cfg = self.args.agent_config()
        videos = [r["video"] for r in rows]
        questions = [r["question"] for r in rows]
        if self._rollout_backend is not None:
            engine = RolloutEngine(self._rollout_backend, engine_cfg, share_frames=self.args.share_frames,
                                   max_concurrency=self.args.rollout_concurrency)
            return engine.run_sync(videos, questions, keep_open=True)
        if self.use_vllm:
            if self.state.global_step != self._last_loaded_step:
                self.vllm_generation.sync_weights()
                self._last_loaded_step = self.state.global_step
            backend = VLLMRolloutBackend(self.vllm_generation, self._tokenizer, self.processing_class.chat_template,
                                         sync=self._sync)
            engine = RolloutEngine(backend, engine_cfg, share_frames=self.args.share_frames,
                                   max_concurrency=self.args.rollout_concurrency)
            try:
                return engine.run_sync(videos, questions, keep_open=True)
            finally:
                backend.finish()
        if not self.args.rollout_batching and self.accelerator.num_processes > 1:
            raise ValueError("rollout_batching=False makes one generate call per episode turn, a number that differs "
                             "between processes (a hang under ZeRO-3/FSDP): with several processes keep it True")
        with (
            unwrap_model_for_generation(
                self.model_wrapped, self.accelerator, gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
            ) as unwrapped,
            disable_gradient_checkpointing(unwrapped, self.args.gradient_checkpointing_kwargs),
            self._dist.summon_full_params(self.model_wrapped, recurse=False),
        ):
            was_training = unwrapped.training
            unwrapped.eval()
            try:
                engine = RolloutEngine(self._policy_backend(unwrapped), engine_cfg, share_frames=self.args.share_frames,
                                       max_concurrency=self.args.rollout_concurrency)
                return engine.run_sync(videos, questions, keep_open=True)
            finally:
                unwrapped.train(was_training)

    def _generate(self, prompts: list) -> tuple:
        mode = "train" if self.model.training else "eval"
        rows = self._eva_rows
        if rows is None or len(rows) != len(prompts):
            raise RuntimeError("EvaGRPOTrainer._generate runs inside _generate_and_score_completions (rows not set)")
        t0 = time.perf_counter()
        batch = self._rollouts(rows)
        self._eva_last = batch
        self._eva_groups = batch.caches
        self.reward_context.new_step(batch.caches)
        pad = self._tokenizer.pad_token_id
        eot = self.processing_class.tokenizer.convert_tokens_to_ids("<|im_end|>")
        prompt_ids, completion_ids, tool_mask, logprobs, images, completions = [], [], [], [], [], []
        for t in batch.trajectories:
            tr = t.tokens
            if tr is None or not tr.response_ids:
                # the episode failed before the model generated anything (e.g. an unreadable video):
                # one masked token keeps TRL's shapes; its reward is 0 and nothing is trained on it
                prompt_ids.append(tr.prompt_ids if tr is not None else [pad])
                completion_ids.append([eot])
                tool_mask.append([0])
                logprobs.append([0.0])
                images.append([])
            else:
                prompt_ids.append(list(tr.prompt_ids))
                completion_ids.append(list(tr.response_ids))
                tool_mask.append(list(tr.response_mask))
                logprobs.append(list(tr.response_logprobs))
                images.append([f for run in tr.frames for f in run])
            completions.append([{"role": "assistant", "content": t.turns[-1].text if t.turns else ""}])
        self._log_rollouts(batch, mode, time.perf_counter() - t0)
        if self.args.dump_every_steps and mode == "train" and self.state.global_step % self.args.dump_every_steps == 0:
            self._dump(batch, rows)
        has_images = any(images)
        return (
            prompt_ids,
            completion_ids,
            tool_mask,
            completions,
            logprobs,
            {"trajectory": batch.trajectories},
            [imgs or None for imgs in images] if has_images else None,
            images,
        )

    # -- observability ----------------------------------------------------------------------------

    def _log_rollouts(self, batch: RolloutBatch, mode: str, seconds: float) -> None:
        """Log the rollout metrics of this generation round over the episodes of *all* processes
        (gathered, like TRL's own completion metrics; TRL logs from the main process only): means
        per episode, stop-reason fractions, frame-cache counters summed over processes, and the
        stage times of the slowest process (``time/*``: the step waits for it)."""
        trajs = batch.trajectories
        calls = [c for t in trajs for c in t.tool_calls]
        stops = Counter(t.stop_reason if t.stop_reason in NORMAL_STOP_REASONS else
                        ("exception" if t.stop_reason.startswith("exception") else "tool_error") for t in trajs)
        local = {
            "episodes": len(trajs),
            "generated_tokens": sum(sum(t.tokens.response_mask) for t in trajs if t.tokens),
            "tokens": sum(len(t.tokens.prompt_ids) + len(t.tokens.response_ids) for t in trajs if t.tokens),
            "rounds": sum(t.num_rounds for t in trajs),
            "visual_tokens": sum(t.visual_tokens for t in trajs),
            "calls": len(calls),
            "valid_calls": sum(c.frames is not None for c in calls),
            "stops": dict(stops),
            "cache": asdict(batch.cache),
            "timings_ms": batch.timings_ms,
            "rollouts_s": seconds,
            "ticks": asdict(batch.tick_summary),
            "model_ms": batch.model_ms,
        }
        parts = gather_object([local])  # every process gets every process's part, in process order
        total = {k: sum(p[k] for p in parts) for k in ("episodes", "generated_tokens", "tokens", "rounds",
                                                        "visual_tokens", "calls", "valid_calls")}
        n = max(1, total["episodes"])
        m = self._metrics[mode]
        m["completions/mean_length"].append(total["generated_tokens"] / n)
        if mode == "train":
            self.state.num_input_tokens_seen += total["tokens"]
        m["num_tokens"] = [self.state.num_input_tokens_seen]
        m["eva/rounds"].append(total["rounds"] / n)
        m["eva/visual_tokens"].append(total["visual_tokens"] / n)
        m["eva/tool_calls_per_episode"].append(total["calls"] / n)
        m["eva/tool_call_validity"].append(total["valid_calls"] / total["calls"] if total["calls"] else 0.0)
        for r in (*NORMAL_STOP_REASONS, "tool_error", "exception"):
            m[f"eva/stop/{r}"].append(sum(p["stops"].get(r, 0) for p in parts) / n)
        cache = CacheStats()
        for p in parts:
            cache.add(CacheStats(**p["cache"]))
        m["eva/frame_cache_hit_rate"].append(cache.hit_rate)
        m["eva/frames_decoded"].append(float(cache.frames_decoded))
        m["eva/frames_saved"].append(float(cache.frames_saved))
        for k in sorted({k for p in parts for k in p["timings_ms"]}):
            m[f"time/{k}_ms"].append(max(p["timings_ms"].get(k, 0.0) for p in parts))
        m["time/rollouts_s"].append(max(p["rollouts_s"] for p in parts))
        m["time/model_ms"].append(max(p["model_ms"] for p in parts))
        ticks = [p["ticks"] for p in parts]
        if any(t["ticks"] for t in ticks):
            # turn-synchronous batching: ticks (equal on every process), turns per tick, padding
            busy = sum(t["ticks"] - t["empty_ticks"] for t in ticks)
            m["eva/rollout_ticks"].append(float(max(t["ticks"] for t in ticks)))
            m["eva/rollout_concurrency"].append(sum(t["turns"] for t in ticks) / busy if busy else 0.0)
            computed = sum(t["computed_slots"] for t in ticks)
            m["eva/padding_waste"].append(1.0 - sum(t["used_slots"] for t in ticks) / computed if computed else 0.0)
            m["eva/prefill_share"].append(sum(t["prefill_ms"] for t in ticks) / max(1e-9, sum(t["generate_ms"] for t in ticks)))
        self.eva_cache_total.add(cache)

    def _dump(self, batch: RolloutBatch, rows: Sequence[dict[str, Any]]) -> None:
        """Write this step's rollouts, gathered from all processes: ``rollouts/step-N.jsonl`` (one
        line per episode: the trajectory with the question's ``gt``, ``type`` and ``category`` and
        the ``process`` that ran it, the form ``eva-fast data enhance --failures`` reads) and
        timeline PNGs of the main process's first ``dump_num`` episodes."""
        step = self.state.global_step
        lines = [{"gt": row["answer"], "type": row["type"], "category": row.get("category") or None,
                  "source": f"grpo:step-{step}", "process": self.accelerator.process_index, "answer": t.answer,
                  "stop_reason": t.stop_reason, "trajectory": t.to_dict()}
                 for t, row in zip(batch.trajectories, rows)]
        lines = gather_object(lines)  # a collective: every process calls it at the same steps
        if not self.accelerator.is_main_process:
            return
        out = Path(self.args.output_dir) / "rollouts"
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"step-{step:06d}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        for k, t in enumerate(batch.trajectories[: self.args.dump_num]):
            try:
                plot_timeline(t, out / f"step-{step:06d}-{k}.png")
            except Exception as e:  # a plot must never stop training
                logger.warning("timeline plot of step %d failed: %s", step, e)
