"""Native robustness (issue #12 item 5): the decoder's lock covers every entry that touches its
state, FFmpeg objects are owned (no growth over thousands of failed and successful opens), and a
failed device free is reported instead of swallowed. The CUDA-only parts (NVDEC without libavcodec
frame threads, the event instead of a stream synchronize) need a GPU: tests/video/test_nvdec.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eva_fast import _C
from tests.conftest import DATA

VIDEO = str(DATA / "nasa_13013.mp4")


_RACE_SCRIPT = r"""
import sys, threading
import numpy as np
from eva_fast import _C
VIDEO = sys.argv[1]
dec = _C.VideoDecoder(VIDEO, -1, 1)
times_rgb, times_yuv = [1.0, 7.0, 3.0], [5.0, 11.0]
ref_rgb = _C.VideoDecoder(VIDEO, -1, 1).decode(times_rgb, "nearest", height=56, width=112).frames.copy()
ref_yuv = _C.VideoDecoder(VIDEO, -1, 1).decode_yuv(times_yuv, "nearest")
errors = []
stop = threading.Event()

def rgb():
    for _ in range(25):
        if not np.array_equal(dec.decode(times_rgb, "nearest", height=56, width=112).frames, ref_rgb):
            errors.append("rgb frames differ")

def yuv():
    for _ in range(25):
        if dec.decode_yuv(times_yuv, "nearest") != ref_yuv:
            errors.append("yuv planes differ")

def poke():
    while not stop.is_set():
        dec.skip_nonref = not dec.skip_nonref  # identical output either way
        assert dec.total_stats.decoded_frames >= 0

threads = [threading.Thread(target=f) for f in (rgb, yuv)]
poker = threading.Thread(target=poke)
poker.start()
for t in threads:
    t.start()
for t in threads:
    t.join()
stop.set()
poker.join()
print(len(errors), errors[:3])
"""


def test_decode_yuv_total_stats_and_skip_nonref_are_serialised_with_decode():
    """decode_yuv used to set its capture pointer without the decoder's lock: a decode running at
    the same time on another thread then wrote into the wrong buffers (before the fix this script
    died with SIGSEGV). Run in a child so a regression shows as a failed test, not a dead run."""
    out = subprocess.run([sys.executable, "-c", _RACE_SCRIPT, VIDEO], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"exit {out.returncode} (negative: killed by that signal): {out.stderr[-500:]}"
    assert out.stdout.strip().startswith("0 "), out.stdout


_LEAK_SCRIPT = r"""
import resource, sys
from eva_fast import _C
paths = sys.argv[1:]
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
def rounds(n):
    for _ in range(n):
        for p in paths:
            try:
                d = _C.VideoDecoder(p, -1, 1)
                d.decode([0.5], "nearest", height=28, width=28)
            except Exception:
                pass
rounds(30)
base = rss_mb()
rounds(400)
print(rss_mb() - base)
"""


def test_no_memory_growth_over_failed_and_successful_opens(tmp_path):
    text = tmp_path / "text.mp4"
    text.write_text("not a video")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes((DATA / "nasa_13013.mp4").read_bytes()[:20000])
    paths = [str(text), str(truncated), str(DATA / "nasa_13013.mp4"), str(DATA / "corrupted.mp4")]
    out = subprocess.run([sys.executable, "-c", _LEAK_SCRIPT, *paths], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    growth_mb = float(out.stdout.strip().splitlines()[-1])
    assert growth_mb < 16, f"RSS grew {growth_mb:.1f} MB over 1600 opens"


def test_a_failed_device_free_is_reported_not_swallowed():
    before, _ = _C.device_free_errors()
    err = _C._free_device_frames(0xDEAD000, 0)
    assert err, "free_device_frames must say why it failed"
    if _C.build_info()["cuda"]:
        count, last = _C.device_free_errors()
        assert count == before + 1 and last == err and "cuda:0" in err
    else:
        assert "without CUDA" in err
    assert _C._free_device_frames(0, 0) == ""  # null is a no-op


@pytest.mark.parametrize("times", [[float("nan")], [1.0, float("inf")]])
def test_native_decode_rejects_non_finite_times_before_allocating(times):
    dec = _C.VideoDecoder(VIDEO)
    with pytest.raises(ValueError, match="finite"):
        dec.decode(times, "nearest", height=16384, width=16384)


def test_native_output_allocation_failure_is_a_value_error():
    dec = _C.VideoDecoder(VIDEO)
    with pytest.raises(ValueError, match="too large to allocate"):
        dec.decode([0.0] * 100_000, "nearest", height=16384, width=16384)  # 80 TB
