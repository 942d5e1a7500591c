"""The collator: frames equal the agent's (independent select_frames + packer), mismatches and bad
samples fail naming the sample (or are skipped and counted), image-file records pack like
transformers' processor, DataLoader workers give the same batches, one reader per video per process."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

from eva_fast.train import (
    EvaCollator,
    FrameMismatchError,
    ReaderCache,
    SampleTooLongError,
    record_from_image_conversation,
    records_dataset,
)
from eva_fast.video import select_frames
from eva_fast.vision import pack_qwen25vl
from tests.conftest import DATA


def test_pixel_values_equal_the_packed_recorded_frames(eva_records, renderer):
    """Independently: run each recorded call through select_frames and the packer, in order."""
    col = EvaCollator(renderer)
    batch = col(eva_records[:2])
    frames = []
    for rec in eva_records[:2]:
        for k, calls in sorted(rec.calls.items()):
            for c in calls:
                a = c.arguments
                b = select_frames(str(DATA / os.path.basename(rec.video)), a["start_time"], a["end_time"], a["nframes"], a["resize"])
                assert list(b.plan.frame_indices) == list(c.frame_indices)
                frames.append(b.frames)
    ref = pack_qwen25vl(frames)
    assert torch.equal(batch["pixel_values"], ref.pixel_values)
    assert torch.equal(batch["image_grid_thw"], ref.image_grid_thw)
    # right padding, mm_token_type_ids on image pads only, image pads == grid tokens
    n_pad = int((batch["input_ids"] == renderer.image_token_id).sum())
    assert n_pad == int(batch["mm_token_type_ids"].sum()) == sum(ref.tokens_per_image)
    assert batch["attention_mask"].sum(1).tolist() == [len(col.encode(r).input_ids) for r in eva_records[:2]]
    assert int(batch["eva_num_skipped"]) == 0


def test_frame_mismatch_names_the_sample(eva_records, renderer):
    rec = copy.deepcopy(eva_records[0])
    call = rec.calls[3][0]
    rec.calls[3][0] = type(call)(call.arguments, tuple(i + 1 for i in call.frame_indices), call.size, call.extra)
    with pytest.raises(FrameMismatchError, match=r"message 3 call 0 .* not the video or settings the agent used") as e:
        EvaCollator(renderer).encode(rec)
    assert rec.where in str(e.value)
    # another video at the same path: its metadata differs from the record's
    rec2 = copy.deepcopy(eva_records[0])
    rec2.video = str(DATA / "nasa_13013_vfr.mp4")
    with pytest.raises(FrameMismatchError, match="480x270, 12.813 s but the record was made on 480x270, 13.013 s"):
        EvaCollator(renderer).encode(rec2)


def test_bad_samples_raise_or_are_skipped_and_counted(eva_records, renderer, caplog):
    missing = copy.deepcopy(eva_records[1])
    missing.video = str(DATA / "no_such_video.mp4")
    with pytest.raises(FileNotFoundError, match="no_such_video"):
        EvaCollator(renderer)([eva_records[0], missing])
    col = EvaCollator(renderer, skip_bad_samples=True)
    batch = col([eva_records[0], missing])
    assert batch["input_ids"].shape[0] == 1 and int(batch["eva_num_skipped"]) == 1
    assert any("skipping a bad training sample" in r.message for r in caplog.records)
    with pytest.raises(RuntimeError, match="every sample of a batch of 1 was bad"):
        col([missing])


def test_too_long_samples_are_never_truncated(eva_records, renderer):
    n = len(EvaCollator(renderer).encode(eva_records[0]).input_ids)
    EvaCollator(renderer, max_length=n).encode(eva_records[0])
    with pytest.raises(SampleTooLongError, match=f"{n} tokens > max_length {n - 1}"):
        EvaCollator(renderer, max_length=n - 1).encode(eva_records[0])


def test_image_file_records_pack_like_transformers(tmp_path, renderer, eva_records):
    """Teacher data with image files: aligned frames are used as is; others are resized exactly as
    transformers' Qwen2-VL PIL image processor does."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    b = select_frames(str(DATA / "nasa_13013.mp4"), 0, 12, 2, 0.5)
    Image.fromarray(b.frames[0].numpy()).save(tmp_path / "f0.png")
    odd = np.random.default_rng(0).integers(0, 256, (61, 97, 3), dtype=np.uint8)
    Image.fromarray(odd).save(tmp_path / "f1.png")
    conv = {"video": "unused.mp4", "question": "Q? A. x B. y",
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                         {"role": "assistant", "content": "look"},
                         {"role": "tool", "content": [{"type": "text", "text": "<tool_response>"},
                                                      {"type": "image", "path": "f0.png"},
                                                      {"type": "image", "path": "f1.png"},
                                                      {"type": "text", "text": "</tool_response>"}]},
                         {"role": "assistant", "content": "<answer>A</answer>"}]}
    rec = record_from_image_conversation(conv, base_dir=tmp_path)
    batch = EvaCollator(renderer)([rec])
    ref = Qwen2VLImageProcessorPil(min_pixels=3136, max_pixels=12_845_056)(
        images=[b.frames[0].numpy(), odd], return_tensors="pt")
    assert torch.equal(batch["pixel_values"], ref["pixel_values"])
    assert torch.equal(batch["image_grid_thw"], ref["image_grid_thw"])
    (tmp_path / "f1.png").unlink()
    with pytest.raises(FileNotFoundError, match="f1.png"):
        EvaCollator(renderer)([rec])


def test_dataloader_workers_give_the_same_batches(eva_records, renderer):
    col = EvaCollator(renderer)
    ds = records_dataset(eva_records)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=col, num_workers=2)
    got = list(loader)
    want = [col(eva_records[:2]), col(eva_records[2:])]
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k in g:
            assert torch.equal(g[k], w[k]), k


def test_reader_cache_opens_each_video_once_per_process(monkeypatch):
    import eva_fast.video

    opened = []
    real = eva_fast.video.VideoReader

    class Counting(real):
        def __init__(self, path, *a, **kw):
            opened.append(path)
            super().__init__(path, *a, **kw)

    monkeypatch.setattr(eva_fast.video, "VideoReader", Counting)
    cache = ReaderCache(max_open=2)
    a, b, c = (str(DATA / n) for n in ("nasa_13013.mp4", "h265_video.mp4", "bigbuckbunny.mp4"))
    r1 = cache.get(a)
    assert cache.get(a) is r1 and cache.get(b) is not r1 and opened == [a, b]
    cache.get(c)  # evicts a (least recently used)
    assert cache.get(b) is not None and opened == [a, b, c]
    cache.get(a)
    assert opened == [a, b, c, a]
    cache._pid = -1  # as after a fork: nothing of the parent's is reused
    cache.get(a)
    assert opened == [a, b, c, a, a]
    with pytest.raises(ValueError, match="max_open"):
        ReaderCache(0)
