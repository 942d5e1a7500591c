"""GOP-parallel decoding, tested on the CPU (issue #24): the split of a request into GOP runs, the
per-device fair share of run decoders, and the slots each run writes into the one output — with
single-threaded CPU decoders standing in for NVDEC sessions. The NVDEC path runs the same native
code (``VideoDecoder`` -> GOP runs -> ``StreamDecoder`` per run -> device); its ``cuda`` tests are in
``test_nvdec.py``."""

from __future__ import annotations

import bisect
import random
import threading

import numpy as np
import pytest
import torch

from eva_fast import _C
from eva_fast.video import VideoReader, select_frames
from tests.conftest import DATA


# ----------------------------------------------------------------------------------- the schedule
def reference_runs(target_pts, keyframes, frame_dur, max_runs, min_frames=24):
    """The documented split, written independently: targets go to the GOP of the last keyframe at or
    before them (the first GOP for earlier ones); a GOP's work is frames from its keyframe to its
    last target (at least 1); with n = min(max_runs, GOPs) runs, a run ends after the GOP where the
    cumulative work first reaches each k/n share. [] = one decoder."""
    keys = sorted(set(keyframes))
    order = sorted(range(len(target_pts)), key=lambda i: (target_pts[i], i))
    if max_runs < 2 or len(keys) < 2 or len(target_pts) < 2:
        return []
    gop_of = {i: max(0, bisect.bisect_right(keys, target_pts[i]) - 1) for i in order}
    gops = sorted(set(gop_of.values()))
    if len(gops) < 2:
        return []
    work = [max(1.0, (max(target_pts[i] for i in order if gop_of[i] == g) - keys[g]) / frame_dur + 1.0)
            for g in gops]
    total = 0.0
    for w in work:
        total += w
    if total < min_frames:
        return []
    n = min(max_runs, len(gops))
    cum = np.cumsum(work)
    cuts = np.unique(np.clip(np.searchsorted(cum, total * np.arange(1, n) / n, side="left") + 1, 1, len(gops) - 1))
    runs = []
    for group in np.split(np.arange(len(gops)), cuts):
        members = {gops[k] for k in group}
        runs.append([i for i in order if gop_of[i] in members])
    return runs if len(runs) >= 2 else []


def test_split_equals_the_reference_rule_on_random_requests():
    rng = random.Random(0)
    split = 0
    for _ in range(3000):
        frame_dur = rng.choice([1, 40, 512, 1001, 3000])
        nkeys = rng.randint(1, 12)
        keys = sorted(rng.sample(range(0, 400 * frame_dur, max(1, frame_dur // 2)), nkeys))
        targets = [rng.randint(-3 * frame_dur, 420 * frame_dur) for _ in range(rng.randint(1, 40))]
        if rng.random() < 0.3:
            targets += rng.choices(targets, k=rng.randint(1, 5))  # duplicates
        max_runs = rng.randint(1, 9)
        got = _C._split_gop_runs(targets, keys, frame_dur, max_runs)
        assert got == reference_runs(targets, keys, frame_dur, max_runs), (targets, keys, frame_dur, max_runs)
        split += len(got) >= 2
    assert split > 500  # the cases exercise the split, not only its refusals


def test_runs_are_contiguous_whole_gops_of_about_equal_work():
    rng = random.Random(1)
    keys = list(range(0, 100_000, 1000))  # 100 GOPs of 1000 ticks, 10 ticks per frame
    for _ in range(200):
        targets = [rng.randrange(0, 100_000) for _ in range(rng.randint(20, 300))]
        n = rng.randint(2, 16)
        runs = _C._split_gop_runs(targets, keys, 10, n)
        assert 2 <= len(runs) <= n
        flat = [i for run in runs for i in run]
        assert sorted(flat) == list(range(len(targets)))  # every target exactly once
        gops = [[targets[i] // 1000 for i in run] for run in runs]
        for a, b in zip(gops, gops[1:]):
            assert max(a) < min(b)  # runs are contiguous in pts and never share a GOP
        work = [sum((max(t for t in targets if t // 1000 == g) - g * 1000) / 10 + 1 for g in set(run_gops))
                for run_gops in gops]
        biggest_gop = max(w for w in [(max(t for t in targets if t // 1000 == g) - g * 1000) / 10 + 1
                                      for g in set(t // 1000 for t in targets)])
        assert max(work) <= sum(work) / len(runs) + biggest_gop  # balanced up to one GOP


def test_small_or_single_gop_requests_stay_on_one_decoder():
    keys = [0, 1000, 2000]
    assert _C._split_gop_runs([10, 20, 30], keys, 10, 8) == []          # one GOP
    assert _C._split_gop_runs([10, 1010], keys, 100, 8) == []           # 2 frames of work < 24
    assert _C._split_gop_runs([900, 1900], keys, 10, 1) == []           # one worker
    assert _C._split_gop_runs([900, 1900], [0], 10, 8) == []            # no second keyframe
    assert _C._split_gop_runs([900, 1900], keys, 10, 8) == [[0], [1]]


# ---------------------------------------------------------------------------------- fair sharing
def test_worker_budget_alone_gets_all_it_asks_and_concurrent_requests_share():
    b = _C._WorkerBudget(7)
    first = b.acquire(7)
    assert first == 7  # alone: every engine
    second = b.acquire(7)
    assert second == 1  # the first holds the budget: decode on its own decoder
    assert (b.requests, b.in_use) == (2, 8)
    b.release(first)
    third = b.acquire(7)
    assert third == 3  # two in flight: at most 7 // 2, and what the other leaves
    b.release(second)
    b.release(third)
    assert (b.requests, b.in_use) == (0, 0)
    assert b.acquire(12) == 12  # alone, an explicit request above the budget is honoured
    b.release(12)


def test_worker_budget_settles_on_a_fair_share():
    """k requests that keep coming back (each re-asking when it finishes) converge on budget // k."""
    for k in (2, 3, 4):
        b = _C._WorkerBudget(8)
        held = [b.acquire(8) for _ in range(k)]
        for _ in range(5):  # each request finishes and asks again, in turn
            for i in range(k):
                b.release(held[i])
                held[i] = b.acquire(8)
        assert all(h <= 8 // k for h in held[1:]) and sum(held) <= 8 + k, (k, held)
        assert min(held) >= 1


# ------------------------------------------------------------------------------ frames and slots
def _same(a, b):
    assert torch.equal(a.pts_s, b.pts_s) and torch.equal(a.keyframe, b.keyframe) and torch.equal(a.corrupt, b.corrupt)
    assert torch.equal(a.frames, b.frames)


@pytest.mark.parametrize("workers", [2, 3, 8])
def test_unsorted_duplicate_times_land_in_their_slots(gop_clip, workers):
    """Each run writes its targets' slots of the one output: times in any order, repeated, at the
    native size (frames converted straight into the output) and resized, equal the serial decode."""
    par = VideoReader(gop_clip, gop_workers=workers)
    ser = VideoReader(gop_clip, gop_workers=1)
    rng = np.random.default_rng(workers)
    times = list(rng.uniform(0, 23.9, 40))
    times += [times[3], times[3], times[17], 0.0, 23.95, 12.0, 12.0]
    rng.shuffle(times)
    for size in (None, (90, 160)):
        for mode in ("get_frames_nearest", "get_frames_played_at"):
            a = getattr(par, mode)(times, size=size)
            b = getattr(ser, mode)(times, size=size)
            _same(a, b)
            assert a.stats.gop_workers == workers and b.stats.gop_workers == 1
            assert a.stats.worker_failures == 0


def test_select_frames_survey_equals_serial_and_uses_every_worker(gop_clip):
    par = VideoReader(gop_clip, gop_workers=6)
    ser = VideoReader(gop_clip, gop_workers=1)
    for args in ((0, 24, 48, 0.5), (3.3, 17.1, 16, 0.25), (0, 24, 6, 1.0)):
        a, b = select_frames(par, *args), select_frames(ser, *args)
        assert a.plan.frame_indices == b.plan.frame_indices and torch.equal(a.frames, b.frames)
    assert select_frames(par, 0, 24, 48, 0.5).stats.gop_workers == 6


def test_hevc_runs_equal_serial(gop_clip_hevc):
    par = VideoReader(gop_clip_hevc, gop_workers=5)
    ser = VideoReader(gop_clip_hevc, gop_workers=1)
    times = list(np.random.default_rng(5).uniform(0, 23.9, 30))
    a, b = par.get_frames_played_at(times, size=(90, 160)), ser.get_frames_played_at(times, size=(90, 160))
    _same(a, b)
    assert a.stats.gop_workers == 5


def test_skip_nonref_in_runs_keeps_frames_and_saves_work(gop_clip):
    fast = VideoReader(gop_clip, gop_workers=4)
    slow = VideoReader(gop_clip, gop_workers=4, skip_nonref=False)
    times = list(np.linspace(0.5, 23.5, 24))
    a, b = fast.get_frames_nearest(times), slow.get_frames_nearest(times)
    _same(a, b)
    assert a.stats.gop_workers == 4 and a.stats.skip_nonref_packets > 0
    assert a.stats.decoded_frames < b.stats.decoded_frames


def test_a_failed_run_is_redone_by_the_main_decoder(gop_clip):
    """A run's decoder fails after writing half of its slots (what a lost NVDEC session does): the
    main decoder decodes the run again, the output is the serial one, and the next request opens a
    new decoder for that run."""
    par = VideoReader(gop_clip, gop_workers=3)
    ser = VideoReader(gop_clip, gop_workers=1)
    times = list(np.linspace(0.2, 23.8, 30))
    ref = ser.get_frames_nearest(times, size=(90, 160))
    try:
        _C._fail_next_gop_runs(2)
        got = par.get_frames_nearest(times, size=(90, 160))
    finally:
        _C._fail_next_gop_runs(0)
    _same(got, ref)
    assert got.stats.worker_failures == 2 and got.stats.gop_workers == 3
    again = par.get_frames_nearest(times, size=(90, 160))
    _same(again, ref)
    assert again.stats.worker_failures == 0 and par.total_stats.worker_failures == 2


def test_concurrent_readers_each_get_the_serial_frames(gop_clip):
    ser = VideoReader(gop_clip, gop_workers=1)
    calls = [list(np.random.default_rng(s).uniform(0, 23.9, 20)) for s in range(6)]
    refs = [ser.get_frames_nearest(t, size=(90, 160)) for t in calls]
    errors = []

    def work(k):
        try:
            r = VideoReader(gop_clip, gop_workers=4)
            for i in range(len(calls)):
                j = (i + k) % len(calls)
                _same(r.get_frames_nearest(calls[j], size=(90, 160)), refs[j])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_gop_workers_default_is_uncapped(gop_clip):
    """Default gop_workers: every hardware thread (was min(cores, 4))."""
    assert VideoReader(gop_clip).gop_workers == _C.default_gop_workers() >= 1
    assert VideoReader(gop_clip, gop_workers=16).get_frames_nearest(list(np.linspace(0, 23, 24))).stats.gop_workers == 16


def test_native_workers_setting_is_validated():
    dec = _C.VideoDecoder(str(DATA / "nasa_13013.mp4"), -1, 0, -1)
    assert dec.workers == 1
    for bad in (0, 65, -2):
        with pytest.raises(ValueError, match="workers must be within 1..64"):
            dec.workers = bad
    for bad in (0, 65, 1.5, True, "2"):
        with pytest.raises(ValueError, match="gpu_workers"):
            VideoReader(DATA / "nasa_13013.mp4", gpu_workers=bad)


def test_cpu_reader_ignores_gpu_workers():
    r = VideoReader(DATA / "nasa_13013.mp4", gpu_workers=5, gop_workers=3)
    assert r.gpu_workers == 1 and r._dec.workers == 3


@pytest.mark.parametrize("name, engines", [
    ("NVIDIA H200", 7), ("NVIDIA H100 80GB HBM3", 7), ("NVIDIA H20", 7), ("NVIDIA GH200 480GB", 7),
    ("NVIDIA B200", 7), ("NVIDIA A100-SXM4-80GB", 5), ("NVIDIA A100 80GB PCIe", 5), ("NVIDIA A30", 4),
    ("NVIDIA L4", 4), ("NVIDIA L40S", 3), ("NVIDIA L40", 3), ("NVIDIA A10G", 2), ("NVIDIA A10", 2),
    ("NVIDIA A40", 2), ("Tesla T4", 2), ("Tesla V100-SXM2-16GB", 1), ("NVIDIA GeForce RTX 4090", 2),
])
def test_gpu_workers_table_by_model(name, engines):
    """NVDEC engines by GPU model (NVIDIA datasheets); names that contain a shorter model's name (an
    L40S holds 'L4', an A100 'A10') get their own row."""
    assert _C._gpu_workers_for_name(name) == engines
