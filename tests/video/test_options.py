"""FrameOptions (issue #25): every frame setting once, with its default, unit and check; ``options=``
and the keyword convenience give the same plan; the CLI flags are made from its fields."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from eva_fast._checks import check_choice, int_in_range, is_int, positive_int, positive_number
from eva_fast.video import (
    FrameOptions,
    VideoReader,
    add_frame_option_flags,
    frame_options_from_flags,
    plan_frames,
    select_frames,
)
from tests.conftest import DATA


def test_defaults_are_the_published_evaluation_s():
    # select_frame_fallback.py: 12 000-token budget, maxp 720, cubic, the checkpoint's smart_resize bounds
    assert FrameOptions().to_dict() == {
        "max_visual_tokens": 12000, "maxp": 720, "resample": "cubic", "policy": "parity",
        "smart_resize_by": "processor", "min_pixels": 3136, "max_pixels": 12_845_056,
        "snap_tolerance_s": 2.0, "snap_fraction": 0.25,
    }
    for f in dataclasses.fields(FrameOptions):  # every field documents itself (help; unit or choices)
        assert f.metadata["help"] and ("unit" in f.metadata or "choices" in f.metadata), f.name


@pytest.mark.parametrize("bad, match", [
    ({"max_visual_tokens": 0}, r"FrameOptions.max_visual_tokens must be a positive int or None, got 0"),
    ({"max_visual_tokens": True}, "max_visual_tokens"),
    ({"maxp": 7.5}, r"FrameOptions.maxp must be a positive int, got 7.5"),
    ({"resample": "lanczos"}, r"FrameOptions.resample must be one of \('cubic', 'antialias'\)"),
    ({"policy": "random"}, "policy must be one of"),
    ({"smart_resize_by": "model"}, "smart_resize_by must be one of"),
    ({"max_pixels": 0}, "max_pixels"),
    ({"min_pixels": 10_000, "max_pixels": 100}, "min_pixels <= max_pixels"),
    ({"min_pixels": float("nan")}, "min_pixels must be a finite number"),
    ({"snap_tolerance_s": 0}, "snap_tolerance_s must be a positive finite number of seconds"),
    ({"snap_fraction": 0.5}, r"snap_fraction must be in \(0, 0.5\)"),
])
def test_bad_values_name_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        FrameOptions(**bad)


def test_dict_round_trip_and_unknown_keys():
    o = FrameOptions(maxp=360, policy="keyframe_snap", max_visual_tokens=None)
    assert FrameOptions.from_dict(json.loads(json.dumps(o.to_dict()))) == o
    assert FrameOptions.from_dict({"maxp": 360}) == FrameOptions(maxp=360)  # missing fields: defaults
    with pytest.raises(ValueError, match=r"unknown frame options \['speed'\]"):
        FrameOptions.from_dict({"speed": 2})
    with pytest.raises(TypeError, match="unknown frame settings"):
        FrameOptions.build(None, frame_policy="parity")  # the old AgentConfig name is not a setting
    assert repr(FrameOptions(maxp=360)) == "FrameOptions(maxp=360)"


def test_options_and_keyword_convenience_give_the_same_plan():
    r = VideoReader(DATA / "cockatoo.mp4")
    o = FrameOptions(maxp=360, max_visual_tokens=2000, resample="antialias", policy="keyframe_snap")
    a = plan_frames(r, 0, 14, 16, 1.0, options=o)
    b = plan_frames(r, 0, 14, 16, 1.0, **o.to_dict())
    c = plan_frames(r, 0, 14, 16, 1.0, options=FrameOptions(maxp=360), max_visual_tokens=2000, resample="antialias",
                    policy="keyframe_snap")
    assert a == b == c
    assert a.budget_steps == ("maxp", "cube_root") and (a.resample, a.policy) == ("antialias", "keyframe_snap")
    assert a != plan_frames(r, 0, 14, 16, 1.0)  # the options matter
    batch = select_frames(r, 0, 14, 16, 1.0, options=o)
    assert batch.plan == a
    with pytest.raises(TypeError, match="options must be a FrameOptions"):
        plan_frames(r, 0, 14, 16, 1.0, options={"maxp": 360})
    with pytest.raises(TypeError, match="unknown frame settings"):
        select_frames(r, 0, 14, 16, 1.0, frame_policy="parity")


def test_cli_flags_are_made_from_the_fields():
    p = argparse.ArgumentParser()
    add_frame_option_flags(p)
    flags = {a.dest: a for a in p._actions if a.dest in {f.name for f in dataclasses.fields(FrameOptions)}}
    assert set(flags) == {f.name for f in dataclasses.fields(FrameOptions)}
    assert flags["policy"].option_strings == ["--policy"] and flags["policy"].choices == ("parity", "keyframe_snap")
    assert frame_options_from_flags(p.parse_args([])) == FrameOptions()
    args = p.parse_args(["--maxp", "360", "--policy", "keyframe_snap", "--max-visual-tokens", "0",
                         "--snap-fraction", "0.1"])
    assert frame_options_from_flags(args) == FrameOptions(maxp=360, policy="keyframe_snap", max_visual_tokens=None,
                                                          snap_fraction=0.1)
    only_given = argparse.ArgumentParser()
    add_frame_option_flags(only_given, defaults=False)
    base = FrameOptions(resample="antialias")
    assert frame_options_from_flags(only_given.parse_args(["--maxp", "100"]), base) == FrameOptions(
        resample="antialias", maxp=100)


def test_argument_checks_refuse_bools_and_name_the_value():
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert positive_int("n", 5) == 5 and positive_int("n", None, allow_none=True) is None
    for bad in (0, -1, True, 2.0, "3", None):
        with pytest.raises(ValueError, match=rf"n must be a positive int, got {bad!r}"):
            positive_int("n", bad)
    with pytest.raises(ValueError, match=r"threads must be an int in 0..256 \(0 = auto\), got 300"):
        int_in_range("threads", 300, 0, 256, note=" (0 = auto)")
    assert positive_number("w", 2) == 2.0
    for bad in (0, float("inf"), False):
        with pytest.raises(ValueError, match="w must be a positive number"):
            positive_number("w", bad)
    with pytest.raises(ValueError, match=r"x must be one of \('a', 'b'\), got 'c'"):
        check_choice("x", "c", ["a", "b"])
