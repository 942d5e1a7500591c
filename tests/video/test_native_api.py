"""Names and types across Python and ``eva_fast._C`` (issue #12 item 7): typed native results,
(height, width) order, the shipped ``_C.pyi`` stub, ``VideoReader.close()`` / ``with``."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import eva_fast
from eva_fast import _C
from eva_fast.cli import frames_summary
from eva_fast.video import DecodedFrames, VideoReader, select_frames
from tests.conftest import DATA

STUB = Path(eva_fast.__file__).parent / "_C.pyi"


def test_native_results_are_typed_not_dicts():
    dec = _C.VideoDecoder(str(DATA / "nasa_13013.mp4"))
    assert isinstance(dec.info, _C.VideoInfo) and dec.info.width == 480 and dec.info.height == 270
    assert len(dec.info.time_base) == 2 and all(isinstance(v, int) and v > 0 for v in dec.info.time_base)
    out = dec.decode([0.5, 1.0], "nearest", height=56, width=112)
    assert isinstance(out, _C.DecodeOutput) and isinstance(out.stats, _C.DecodeStats)
    assert out.pts_s.dtype == np.float64 and out.corrupt.dtype == np.bool_ and out.keyframe.dtype == np.bool_
    assert out.stats.decoded_frames >= 2 and isinstance(dec.total_stats, _C.DecodeStats)
    for obj in (dec.info, out, out.stats):
        assert not isinstance(obj, dict)


def test_height_width_order_everywhere():
    """(height, width) in _C.VideoDecoder.decode, get_frames_* and the plan; 56x112 is not square."""
    dec = _C.VideoDecoder(str(DATA / "nasa_13013.mp4"))
    assert dec.decode([0.5], "nearest", height=56, width=112).frames.shape == (1, 56, 112, 3)
    assert dec.decode([0.5], "nearest", height=84, width=28).frames.shape == (1, 84, 28, 3)
    r = VideoReader(DATA / "nasa_13013.mp4")
    assert r.get_frames_nearest([0.5], size=(56, 112)).frames.shape == (1, 56, 112, 3)
    assert _C.resize_rgb(np.zeros((10, 20, 3), np.uint8), 30, 40).shape == (30, 40, 3)
    with pytest.raises(ValueError, match=r"\(height, width\) must be within 1..16384 per side, got \(20000, 56\)"):
        dec.decode([0.5], "nearest", height=20000, width=56)
    with pytest.raises(TypeError):  # sizes are keyword-only: a positional pair could be read either way
        dec.decode([0.5], "nearest", 56, 112)


def test_max_side_is_defined_once_in_cpp():
    """The C++ limit (kMaxSide, exported as _C.MAX_SIDE) is the one Python checks sizes against, and the
    decoder accepts exactly up to it."""
    from eva_fast.video import _reader

    assert _C.MAX_SIDE == _reader.MAX_SIDE == 16384
    dec = _C.VideoDecoder(str(DATA / "nasa_13013.mp4"))
    assert dec.decode([0.5], "nearest", height=1, width=_C.MAX_SIDE).frames.shape == (1, 1, _C.MAX_SIDE, 3)
    with pytest.raises(ValueError, match=f"within 1..{_C.MAX_SIDE} per side"):
        dec.decode([0.5], "nearest", height=1, width=_C.MAX_SIDE + 1)
    with pytest.raises(ValueError, match=f"ints in 1..{_C.MAX_SIDE}"):
        VideoReader(DATA / "nasa_13013.mp4").get_frames_nearest([0.5], size=(1, _C.MAX_SIDE + 1))


def test_renamed_fields_and_keywords():
    r = VideoReader(DATA / "nasa_13013.mp4")
    out = r.get_frames_played_at(times_s=[0.0, 1.0])
    assert isinstance(out, DecodedFrames) and out.frames.shape[0] == 2 and out.pts_s.shape == (2,)
    assert not hasattr(out, "data") and not hasattr(out, "pts_seconds")
    assert r.metadata.start_pts_s >= 0 and isinstance(r.metadata.keyframe_pts_s, tuple)
    with pytest.raises(TypeError):
        r.get_frames_nearest(seconds=[1.0])  # the old keyword is gone
    b = select_frames(r, 0, 5, 2, 0.5)
    assert len(b.pts_s) == 2 and "pts_s" in frames_summary(b) and "pts_seconds" not in frames_summary(b)


def _stub_names() -> dict[str, set[str]]:
    tree = ast.parse(STUB.read_text())
    out: dict[str, set[str]] = {"": set()}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[""].add(node.name)
        if isinstance(node, ast.AnnAssign):  # module constants (MAX_SIDE)
            out[""].add(node.target.id)
        if isinstance(node, ast.ClassDef):
            out[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)} | {
                n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
    return out


def test_stub_is_shipped_and_matches_the_module():
    assert STUB.is_file() and (STUB.parent / "py.typed").is_file()
    stub = _stub_names()
    public = {n for n in dir(_C) if not n.startswith("__")}
    assert stub[""] == public, f"in _C only: {public - stub['']}; in the stub only: {stub[''] - public}"
    for cls in ("VideoDecoder", "VideoInfo", "DecodeStats", "DecodeOutput"):
        native = {n for n in dir(getattr(_C, cls)) if not n.startswith("_")}
        declared = {n for n in stub[cls] if not n.startswith("_")}
        assert declared == native, f"{cls}: native only {native - declared}, stub only {declared - native}"


def test_close_and_context_manager_release_decoders_and_gop_pool():
    before = _C.open_decoders()
    with VideoReader(DATA / "cockatoo.mp4", gop_workers=2) as r:
        b = select_frames(r, 0, 14, 8, 0.25)  # spans GOPs: uses the GOP workers
        assert b.stats.gop_workers == 2 and _C.open_decoders() == before + 3  # main + 2 GOP-run decoders
        assert r.total_stats.decoded_frames > 0 and r.total_stats.gop_workers == 3
    assert r.closed and _C.open_decoders() == before
    assert r.metadata.width == 1280  # metadata stays readable
    for call in (lambda: r.get_frames_nearest([1.0]), lambda: select_frames(r, 0, 1, 1), r.frame_table,
                 lambda: r.total_stats):
        with pytest.raises(ValueError, match="closed VideoReader"):
            call()
    r.close()  # idempotent
    assert "closed" in repr(r)
