"""KTO on TRL's KTOTrainer with EVA trajectories: real KTO steps of the tiny Qwen2.5-VL on
real-video trajectories made by the agent loop; the masks against spans found independently in the
rendered chat text; the frames every forward (policy, reference, main and KL) feeds the vision tower
against the frames the agent saw; the loss against TRL's formula recomputed by hand; the TRL
contract the trainer relies on; the CLI."""

from __future__ import annotations

import inspect
import json
import math
import re

import pytest
import torch

from eva_fast.train import (
    IGNORE_INDEX,
    RecordError,
    load_records,
    recommended_kto_weights,
    record_from_trajectory,
    write_records,
)
from tests.conftest import DATA
from tests.train.conftest import run_scripted, tool_call

pytest.importorskip("trl")
IMAGE_PAD_ID = 151655  # Qwen2.5-VL's <|image_pad|> (tests/_tiny_qwen.py)

# (replies, label, video, question): one tool turn; two; none (an answer straight away, no images);
# one frame. Distinct questions and videos, so every row of every forward names its sample.
SCRIPTS = [
    (["plan " + tool_call(0, 12, 2, 0.25), "<answer>A</answer>"], True, "nasa_13013.mp4", "Is it Earth? A. yes B. no"),
    (["plan " + tool_call(0, 5, 2, 0.25), "look " + tool_call(2, 3, 1, 0.5), "<answer>B</answer>"], False,
     "bigbuckbunny.mp4", "Is the rabbit white? A. yes B. no"),
    (["<answer>A</answer>"], True, "nasa_13013.mp4", "Is it dark? A. yes B. no"),
    (["scan " + tool_call(0, 8, 1, 0.5), "<answer>B</answer>"], False, "test_non_zero_start.mp4",
     "Is anything moving? A. yes B. no"),
]


@pytest.fixture(scope="module")
def kto_data(tmp_path_factory):
    """Four labelled records (eva_fast.trajectory jsonl) and, per record, the frames the agent fed
    its backend (the independent reference for the pixels)."""
    d = tmp_path_factory.mktemp("kto_data")
    records, frames = [], []
    for replies, label, video, question in SCRIPTS:
        traj, seen = run_scripted(replies, str(DATA / video), question)
        assert traj.stop_reason == "answer_found"
        records.append(record_from_trajectory(traj, gt="A", label=label, source="test"))
        frames.append(seen)
    path = d / "kto.jsonl"
    write_records(path, records)
    return path, load_records(path), frames


def _config(tmp_path, **kw):
    from eva_fast.train import EvaKTOConfig

    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_steps=2, use_cpu=True, bf16=False,
                gradient_checkpointing=False, learning_rate=1e-3, logging_steps=1, report_to="none", save_strategy="no",
                shuffle_records=False, seed=0)
    base.update(kw)
    return EvaKTOConfig(**base)


def independent_encoding(tokenizer, template: str, record):
    """Ids, assistant mask and prompt length of a record, from the chat text alone: spans
    ``<|im_start|>assistant\\n(...<|im_end|>)`` found by a regular expression, tokens with offsets,
    image pads repeated by ``(H/28)*(W/28)`` of each recorded frame."""
    msgs = record.template_messages()
    text = tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=False)
    prompt = tokenizer.apply_chat_template(msgs[:2], chat_template=template, tokenize=False, add_generation_prompt=True)
    assert text.startswith(prompt)
    spans = [(m.start(1), m.end(1)) for m in re.finditer(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>)", text, re.S)]
    assert len(spans) == record.num_turns
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    sizes = [record.calls[k][p["call"]].size for k, p in record.image_parts()]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, mask, n_prompt, k = [], [], 0, 0
    for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
        rep = 1
        if tid == pad:
            h, w = sizes[k]
            rep, k = (h // 28) * (w // 28), k + 1
        m = int(tid != pad and any(s <= a and b <= e for s, e in spans))
        ids += [tid] * rep
        mask += [m] * rep
        n_prompt += rep if b <= len(prompt) else 0
    assert k == len(sizes)
    # nothing of a tool turn is in the mask: every tool turn lies outside the spans
    for t in re.finditer(r"<\|im_start\|>tool\n.*?<\|im_end\|>", text, re.S):
        assert not any(s < t.end() and t.start() < e for s, e in spans)
    return ids, mask, n_prompt


def _unpad(row_ids, row_attention):
    return row_ids[row_attention.bool()].tolist()


# ---------------------------------------------------------------------------------------------
# no model
# ---------------------------------------------------------------------------------------------


def test_trl_contract():
    """What EvaKTOTrainer relies on in trl==1.16.0 (module docstring); an upgrade that changes any
    of it fails here."""
    import trl
    from trl import KTOTrainer

    assert trl.__version__ == "1.16.0"
    sig = {name: list(inspect.signature(getattr(KTOTrainer, name)).parameters)
           for name in ("_compute_kl_logps", "_prepare_dataset", "_compute_loss", "compute_loss")}
    assert sig == {
        "_compute_kl_logps": ["self", "model", "batch"],
        "_prepare_dataset": ["self", "dataset", "processing_class", "args", "dataset_name"],
        "_compute_loss": ["self", "model", "inputs", "return_outputs"],
        "compute_loss": ["self", "model", "inputs", "return_outputs", "num_items_in_batch"],
    }
    loss_src = inspect.getsource(KTOTrainer._compute_loss)
    for needle in (
        "KL_logps = self._compute_kl_logps(model, batch)",
        "self._compute_kl_logps(self.ref_model, batch)",
        'completion_labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)',
        '"KL_mm_token_type_ids",',
        "chosen_losses = 1 - F.sigmoid(self.beta * (chosen_logratios - kl))",
        "rejected_losses = 1 - F.sigmoid(self.beta * (kl - rejected_logratios))",
        "(self.desirable_weight * chosen_losses, self.undesirable_weight * rejected_losses)",
        "kl = (KL_logps - ref_KL_logps).mean().detach()",
        "loss = losses.nanmean()",
    ):
        assert needle in loss_src, needle
    kl_src = inspect.getsource(KTOTrainer._compute_kl_logps)
    for needle in (
        "KL_model_kwargs = {k: v for k, v in batch.items() if k not in _non_model_keys}",
        'KL_model_kwargs["input_ids"] = KL_model_kwargs.pop("KL_input_ids")',
        'KL_model_kwargs["mm_token_type_ids"] = batch["KL_mm_token_type_ids"]',
        'KL_labels = batch["KL_input_ids"].masked_fill(batch["KL_completion_mask"] == 0, -100)',
    ):
        assert needle in kl_src, needle
    init_src = inspect.getsource(KTOTrainer.__init__)
    assert "train_dataset = self._prepare_dataset(train_dataset, processing_class, args, \"train\")" in init_src


def test_recommended_weights_follow_kto_eq8():
    # the paper's mix: chosen is the majority, so the undesirable weight rises to n_D / n_U
    w = recommended_kto_weights(63, 37)
    assert w.desirable_weight == 1.0 and w.undesirable_weight == pytest.approx(63 / 37)
    assert w.ratio == pytest.approx(1.0)
    assert w.undesirable_range == pytest.approx((63 / 37 / (4 / 3), 63 / 37))
    # TRL's own bounds (kto_trainer.py, "Calculate dataset desirability balance"), rounded as TRL does
    assert round(63 * 1.0 / 37 / 1.33, 2) <= round(w.undesirable_weight, 2) <= round(63 * 1.0 / 37, 2)
    w = recommended_kto_weights(0.3, 0.7, ratio=4 / 3)
    assert w.undesirable_weight == 1.0 and w.desirable_weight == pytest.approx(4 / 3 * 0.7 / 0.3)
    assert w.desirable_weight * 0.3 / (w.undesirable_weight * 0.7) == pytest.approx(4 / 3)
    for bad in ((0, 1), (1, -2), (float("nan"), 1)):
        with pytest.raises(ValueError, match="positive number"):
            recommended_kto_weights(*bad)
    with pytest.raises(ValueError, match="ratio"):
        recommended_kto_weights(1, 1, ratio=2.0)


def test_permute_visual_moves_whole_samples():
    from eva_fast.train import permute_visual

    grid = torch.tensor([[1, 2, 2], [1, 2, 4], [1, 2, 2]])  # 4, 8, 4 patches
    pv = torch.arange(16).float()[:, None].repeat(1, 3)
    counts = torch.tensor([2, 0, 1])  # sample 0: images 0-1 (patches 0-11), sample 1: none, sample 2: image 2
    out, g = permute_visual(pv, grid, counts, torch.tensor([2, 0, 1]))
    assert out[:, 0].tolist() == [12, 13, 14, 15] + list(range(12)) and g.tolist() == [[1, 2, 2], [1, 2, 2], [1, 2, 4]]
    assert permute_visual(pv, grid, counts, torch.tensor([1])) == (None, None)
    with pytest.raises(ValueError, match="does not add up"):
        permute_visual(pv, grid, torch.tensor([1, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="outside"):
        permute_visual(pv, grid, counts, torch.tensor([3]))


def test_collator_masks_exclude_tool_turns(kto_data, tiny_qwen_dir):
    """completion_mask = the assistant turns (content + <|im_end|>) of each sample; KL row i =
    prompt of sample i + completion of sample i-1 with that completion's mask; both checked against
    spans found independently in the chat text."""
    from eva_fast.agent import ChatRenderer
    from eva_fast.train import EvaKTOCollator

    _, records, _ = kto_data
    renderer = ChatRenderer.from_pretrained(tiny_qwen_dir)
    tok, template = renderer.tokenizer, renderer.chat_template
    batch = EvaKTOCollator(renderer)(records)
    assert batch["label"].tolist() == [True, False, True, False]
    assert batch["eva_images_per_sample"].tolist() == [2, 3, 0, 1]
    assert batch["KL_sample_order"].tolist() == [3, 0, 1, 2]
    assert "labels" not in batch  # TRL builds the labels from completion_mask
    ref = [independent_encoding(tok, template, r) for r in records]
    pad = renderer.image_token_id
    for i, (ids, mask, n_prompt) in enumerate(ref):
        assert _unpad(batch["input_ids"][i], batch["attention_mask"][i]) == ids
        n = len(ids)
        assert batch["completion_mask"][i, :n].tolist() == mask
        assert not batch["completion_mask"][i, n:].any() and not batch["completion_mask"][i, :n_prompt].any()
        trained = batch["input_ids"][i][batch["completion_mask"][i].bool()]
        assert pad not in trained.tolist() and trained[-1].item() == renderer.end_of_turn_id
        # KL row: own prompt, the previous sample's completion and mask
        j = (i - 1) % len(ref)
        ids_j, mask_j, p_j = ref[j]
        kl_ids = _unpad(batch["KL_input_ids"][i], batch["KL_attention_mask"][i])
        assert kl_ids == ids[:n_prompt] + ids_j[p_j:]
        m = len(kl_ids)
        assert batch["KL_completion_mask"][i, :m].tolist() == [0] * n_prompt + mask_j[p_j:]
        assert batch["KL_mm_token_type_ids"][i, :m].tolist() == [int(t == pad) for t in kl_ids]


def test_unlabelled_records_are_refused(kto_data, tiny_qwen_dir, tmp_path):
    from eva_fast.train import EvaKTOConfig, EvaKTOTrainer

    path, _, _ = kto_data
    records = load_records(path)  # a copy: the fixture's records are shared
    records[1].label = None
    bad = tmp_path / "bad.jsonl"
    write_records(bad, records)
    with pytest.raises(RecordError, match=r"bad\.jsonl:2: KTO needs 'label'"):
        EvaKTOTrainer(str(tiny_qwen_dir), _config(tmp_path), train_dataset=str(bad))
    with pytest.raises(ValueError, match="precompute_ref_log_probs"):
        EvaKTOConfig(output_dir=str(tmp_path), precompute_ref_log_probs=True, use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="undesirable_weight"):
        EvaKTOConfig(output_dir=str(tmp_path), undesirable_weight=0.0, use_cpu=True, bf16=False)


# ---------------------------------------------------------------------------------------------
# real KTO steps (tiny model)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(kto_data, tiny_qwen_dir, tmp_path_factory):
    """Two KTO steps (batches [r0, r1] and [r2, r3]) with hooks on the policy's and the reference's
    language model and vision tower; desirable_weight 1.7, undesirable_weight 0.6."""
    import trl.trainer.utils as tu

    from eva_fast.train import EvaKTOTrainer

    mp = pytest.MonkeyPatch()
    mp.setattr(tu, "_use_triton", lambda device: True)  # see conftest.cuda_layout_lm_head
    path, records, frames = kto_data
    trainer = EvaKTOTrainer(str(tiny_qwen_dir), _config(tmp_path_factory.mktemp("kto"), desirable_weight=1.7,
                                                         undesirable_weight=0.6), train_dataset=str(path))
    calls = []

    def hooks(model, who):
        lm, visual = model.model, model.model.visual

        def on_lm(mod, args, kwargs):
            calls.append({"who": who, "input_ids": kwargs["input_ids"].clone(),
                          "attention_mask": kwargs["attention_mask"].clone(), "pixel_values": None})

        def on_visual(mod, args, kwargs):
            calls[-1]["pixel_values"] = args[0].detach().clone()
            calls[-1]["grid_thw"] = kwargs["grid_thw"].clone()

        return [lm.register_forward_pre_hook(on_lm, with_kwargs=True),
                visual.register_forward_pre_hook(on_visual, with_kwargs=True)]

    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    handles = hooks(trainer.model, "policy") + hooks(trainer.ref_model, "ref")
    trainer.train()
    for h in handles:
        h.remove()
    yield trainer, records, frames, calls, before
    mp.undo()


def test_kto_steps_train_the_policy_against_the_sft_reference(trained, tiny_qwen_dir):
    from transformers import Qwen2_5_VLForConditionalGeneration

    trainer, _, _, _, before = trained
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in logs)
    assert trainer.state.global_step == 2
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("language_model" in k for k in changed) and any("visual" in k for k in changed)
    # the reference is the SFT checkpoint the policy started from, and stays frozen
    sft = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_qwen_dir).state_dict()
    ref = trainer.ref_model.state_dict()
    assert all(torch.equal(ref[k], sft[k]) for k in sft)
    assert trainer.num_chosen == 2 and trainer.num_rejected == 2


def test_every_forward_sees_its_own_frames(trained):
    """Policy and reference, main and KL forwards: each row's image pads get the frames of the
    sample whose completion the row carries (the frames the agent saw), checked at the vision tower."""
    from eva_fast.vision import pack_qwen25vl

    trainer, records, frames, calls, _ = trained
    collator = trainer.data_collator
    enc = [collator.encode(r) for r in records]
    plen = [collator.prompt_length(s) for s in enc]
    completions = [s.input_ids[p:].tolist() for s, p in zip(enc, plen)]
    prompts = [s.input_ids[:p].tolist() for s, p in zip(enc, plen)]
    assert len(calls) == 8  # 2 steps x (policy KL, policy main, reference KL, reference main)
    kinds = []
    for c in calls:
        rows = [_unpad(i, a) for i, a in zip(c["input_ids"], c["attention_mask"])]
        owners, kind = [], []
        for row in rows:
            own = [k for k in range(4) if row[len(row) - len(completions[k]):] == completions[k]
                   and row[: len(row) - len(completions[k])] in prompts]
            assert len(own) == 1, "every row is one prompt + one sample's completion"
            owners.append(own[0])
            kind.append("main" if row == prompts[own[0]] + completions[own[0]] else "kl")
        assert len(set(kind)) == 1
        kinds.append((c["who"], kind[0], tuple(owners)))
        expected = [f for k in owners for f in frames[k]]
        packed = pack_qwen25vl([f[None] for f in expected])
        assert c["pixel_values"] is not None and torch.equal(c["pixel_values"], packed.pixel_values.to(c["pixel_values"].dtype))
        assert torch.equal(c["grid_thw"], packed.image_grid_thw)
    # batches [0, 1] and [2, 3] in order; KL rows carry the rotated completions (TRL's pairing)
    assert kinds == [
        ("policy", "kl", (1, 0)), ("policy", "main", (0, 1)), ("ref", "kl", (1, 0)), ("ref", "main", (0, 1)),
        ("policy", "kl", (3, 2)), ("policy", "main", (2, 3)), ("ref", "kl", (3, 2)), ("ref", "main", (2, 3)),
    ]


def _logp(model, ids, mask, pv, grid):
    """Sum of log p(token | prefix) over the masked tokens: one unpadded forward of the model's
    backbone, its LM head on the positions that predict masked tokens, a plain log_softmax."""
    ids = torch.tensor(ids)[None]
    kw = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
          "mm_token_type_ids": (ids == IMAGE_PAD_ID).to(torch.int32)}
    if pv is not None:
        kw.update(pixel_values=pv, image_grid_thw=grid)
    target = torch.nonzero(torch.tensor(mask)[1:]).view(-1) + 1  # positions of masked tokens
    with torch.no_grad():
        hidden = model.model(**kw).last_hidden_state[0]
        logits = model.lm_head(hidden[target - 1]).float()
    return float(torch.log_softmax(logits, -1).gather(-1, ids[0, target, None]).sum())


def test_loss_terms_match_trl_formula(trained):
    """TRL's KTO loss on a batch of all four records (weights 1.7 / 0.6), recomputed by hand from
    per-sample forwards of the policy and the reference: policy and reference log-probs of each
    sample's assistant tokens, the KL rows' log-probs (prompt i + completion i-1 with its frames),
    kl = max(mean(policy KL - reference KL), 0), and
    loss = mean([w_d * (1 - sigmoid(beta (r_c - kl))), w_u * (1 - sigmoid(beta (kl - r_r)))]); the
    weights are the configured ones (1.7 / 0.6), not TRL's defaults nor swapped."""
    from eva_fast.train._kto import EvaKTOTrainer
    from eva_fast.vision import pack_qwen25vl

    trainer, records, frames, _, _ = trained
    tok, template = trainer.processing_class, trainer.processing_class.chat_template
    ref = [independent_encoding(tok, template, r) for r in records]
    visual = [pack_qwen25vl([f[None] for f in fr]) if fr else None for fr in frames]
    policy, reference = trainer.model.eval(), trainer.ref_model

    def lp(model, ids, mask, k):
        v = visual[k]
        return _logp(model, ids, mask, None if v is None else v.pixel_values, None if v is None else v.image_grid_thw)

    pol = [lp(policy, ids, m, k) for k, (ids, m, _) in enumerate(ref)]
    rf = [lp(reference, ids, m, k) for k, (ids, m, _) in enumerate(ref)]
    kl_rows = []
    for i, (ids, _, p) in enumerate(ref):
        j = (i - 1) % 4
        ids_j, m_j, p_j = ref[j]
        kl_rows.append((ids[:p] + ids_j[p_j:], [0] * p + m_j[p_j:], j))
    pol_kl = [lp(policy, ids, m, j) for ids, m, j in kl_rows]
    ref_kl = [lp(reference, ids, m, j) for ids, m, j in kl_rows]

    batch = trainer.data_collator(records)
    seen = []
    real = EvaKTOTrainer._compute_kl_logps

    def spy(self, model, b):
        out = real(self, model, b)
        seen.append(out.detach().clone())
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(EvaKTOTrainer, "_compute_kl_logps", spy)
    try:
        with torch.no_grad():
            loss = float(trainer.compute_loss(policy, batch))
    finally:
        mp.undo()
    assert torch.allclose(seen[0], torch.tensor(pol_kl), rtol=1e-4, atol=1e-3)
    assert torch.allclose(seen[1], torch.tensor(ref_kl), rtol=1e-4, atol=1e-3)
    assert any(abs(a - b) > 1e-3 for a, b in zip(pol_kl, ref_kl)), "policy and reference must differ after training"

    beta = trainer.beta
    kl = max(sum(a - b for a, b in zip(pol_kl, ref_kl)) / 4, 0.0)
    sig = lambda x: 1 / (1 + torch.exp(-torch.tensor(x)))  # noqa: E731
    labels = [r.label for r in records]

    def expected(wd, wu):
        chosen = [wd * (1 - sig(beta * ((pol[k] - rf[k]) - kl))) for k in range(4) if labels[k]]
        rejected = [wu * (1 - sig(beta * (kl - (pol[k] - rf[k])))) for k in range(4) if not labels[k]]
        return float(torch.stack(chosen + rejected).mean())

    assert (trainer.desirable_weight, trainer.undesirable_weight) == (1.7, 0.6)
    assert loss == pytest.approx(expected(1.7, 0.6), rel=1e-4, abs=1e-6)
    # the weights matter here: with TRL's default weights the loss would be another number
    assert abs(expected(1.0, 1.0) - loss) > 1e-3 and abs(expected(0.6, 1.7) - loss) > 1e-3


def test_a_trl_that_skips_the_kl_hook_fails_loudly(trained):
    from trl import KTOTrainer

    trainer, records, _, _, _ = trained
    mp = pytest.MonkeyPatch()
    mp.setattr(KTOTrainer, "_compute_loss", lambda self, model, inputs, return_outputs: torch.zeros(()))
    try:
        with pytest.raises(RuntimeError, match="0 time"):
            trainer.compute_loss(trainer.model, trainer.data_collator(records[:2]))
    finally:
        mp.undo()


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def test_cli_train_kto_and_resume(kto_data, tiny_qwen_dir, tmp_path, capsys, cuda_layout_lm_head):
    """3 steps from the YAML config (checkpoint at step 2), saved for eva-fast ask / vLLM; then a
    run resumed from checkpoint-2 repeats step 3 with the same weights, data and loss."""
    from safetensors.torch import load_file

    from eva_fast.cli import main

    path, _, _ = kto_data
    out = tmp_path / "kto_model"
    cfg = tmp_path / "kto.yaml"
    cfg.write_text(
        f"model_name_or_path: {tiny_qwen_dir}\ntrain_file: {path}\noutput_dir: {out}\nper_device_train_batch_size: 2\n"
        "max_steps: 3\nlearning_rate: 0.001\nuse_cpu: true\nbf16: false\ngradient_checkpointing: false\n"
        "logging_steps: 1\nsave_strategy: steps\nsave_steps: 2\nreport_to: none\nbalance_weights: true\n"
    )
    assert main(["train", "kto", "--config", str(cfg), "--beta", "0.2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["chosen"] == 2 and summary["rejected"] == 2
    assert (out / "checkpoint-2" / "model.safetensors").is_file()
    resumed = tmp_path / "resumed"
    assert main(["train", "kto", "--config", str(cfg), "--beta", "0.2", "--output_dir", str(resumed),
                 "--resume_from_checkpoint", str(out / "checkpoint-2")]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["steps"] == 3 and again["loss_last"] == pytest.approx(summary["loss_last"], rel=1e-4)
    assert again["loss_last"] != pytest.approx(summary["loss_first"], rel=1e-3)  # not a restart from step 1
    assert summary["desirable_weight"] == summary["undesirable_weight"] == 1.0  # balanced data
    assert all(isinstance(summary[k], float) for k in ("loss_first", "loss_last"))
    for name in ("model.safetensors", "config.json", "tokenizer_config.json", "chat_template.json",
                 "preprocessor_config.json"):
        assert (out / name).is_file(), name
    new, old = load_file(out / "model.safetensors"), load_file(tiny_qwen_dir / "model.safetensors")
    assert set(new) == set(old) and any(not torch.equal(new[k], old[k]) for k in old)
    assert main(["train", "kto", "--use_cpu", "true", "--bf16", "false"]) == 2  # no model: a clear error
    assert "model_name_or_path is required" in capsys.readouterr().err


def test_ignore_index_is_the_collators():
    assert IGNORE_INDEX == -100


def test_two_processes_train_and_save(kto_data, tiny_qwen_dir, tmp_path):
    """``eva-fast train kto`` in two processes (torchrun, gloo; 2 records each per step, so the KL
    rows pair samples within a process and TRL gathers the KL estimate across both): it trains,
    logs the right counts and saves one servable model with its processor files."""
    from tests.train.conftest import launch_failure, launch_two_processes

    path, _, _ = kto_data
    out = tmp_path / "kto2"
    cfg = tmp_path / "kto.yaml"
    cfg.write_text(
        f"model_name_or_path: {tiny_qwen_dir}\ntrain_file: {path}\noutput_dir: {out}\nper_device_train_batch_size: 2\n"
        "max_steps: 2\nlearning_rate: 0.001\nuse_cpu: true\nbf16: false\ngradient_checkpointing: false\n"
        "logging_steps: 1\nsave_strategy: steps\nsave_steps: 2\nreport_to: none\nbalance_weights: true\nbeta: 0.2\n"
    )
    proc = launch_two_processes("train", "kto", "--config", str(cfg))
    assert proc.returncode == 0, launch_failure(proc)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["chosen"] == 2 and summary["rejected"] == 2
    logs = [h for h in json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert [h["step"] for h in logs] == [1, 2] and all(math.isfinite(h["loss"]) for h in logs)
    assert all(h["epoch"] == h["step"] for h in logs)  # 2 processes x 2 records = the whole set per step
    for d in (out, out / "checkpoint-2"):
        for name in ("model.safetensors", "config.json", "chat_template.json", "preprocessor_config.json"):
            assert (d / name).is_file(), d / name
