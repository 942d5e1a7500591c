"""The public-dataset readers (``eva-fast data import``) on small annotation files written to each
dataset's published schema (``tests/data/datasets``: LLaVA-Video-178K's conversation json, CG-Bench's
``cgbench_mini.json`` layout, HD-VILA-100M's metadata jsonl) over folders of real test videos laid out
as the datasets unpack: every question parsed as the file says, videos resolved, missing videos and
malformed items reported with counts, the teacher / RL pool split by video."""

from __future__ import annotations

import json
import os

import pytest

from eva_fast.train import load_rl_set
from eva_fast.train.data._sources import (
    import_sources,
    llava_file_kind,
    parse_llava_mcq,
    parse_span_s,
    read_cgbench,
    read_hdvila,
    read_llava_video,
)
from tests.conftest import DATA

FIXTURES = DATA / "datasets"
LLAVA = FIXTURES / "llava_video_178k" / "0_30_s_academic_v0_1"
LLAVA_FILES = [str(LLAVA / n) for n in ("0_30_s_academic_mc_v0_1_qa_processed.json",
                                        "0_30_s_academic_oe_v0_1_qa_processed.json",
                                        "0_30_s_academic_v0_1_cap_processed.json")]
CGBENCH = str(FIXTURES / "cg_bench" / "cgbench_mini.json")
HDVILA = str(FIXTURES / "hd_vila_100m" / "hdvila_part0.jsonl")


def _link(dst, src):
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(DATA / src, dst)


def make_roots(base):
    """Video folders as the datasets unpack, holding real test videos (one video of each dataset's
    annotations is left missing on purpose)."""
    llava, cg, hd = base / "llava", base / "cgbench", base / "hdvila"
    _link(llava / "academic_source" / "Charades" / "RW587.mp4", "nasa_13013.mp4")  # tarball unpacked at the root
    _link(llava / "0_30_s_academic_v0_1" / "academic_source" / "youcook2" / "bunny01.mp4", "bigbuckbunny.mp4")  # in the subset
    _link(cg / "cg_videos_720p" / "3ZpmN3-2-Zo.mp4", "cockatoo.mp4")
    _link(cg / "BV1Rm41117YT.mp4", "h265_video.mp4")
    _link(hd / "QMi8x8o55Ns.mp4", "nasa_13013_vfr.mp4")
    _link(hd / "--0LwtsNa54.webm", "cockatoo_vp9.webm")
    return {"llava_video": str(llava), "cgbench": str(cg), "hdvila": str(hd)}


@pytest.fixture
def roots(tmp_path):
    return make_roots(tmp_path / "videos")


def test_llava_video_questions(roots):
    res = read_llava_video(LLAVA_FILES, roots["llava_video"])
    # independent count: every human/gpt pair of the mc and oe files is a question (the cap file has none)
    pairs = sum(len(item.get("conversations", [])) // 2 for f in LLAVA_FILES[:2] for item in json.load(open(f)))
    assert pairs == 9 and res.items == 9
    assert res.skipped == {"caption_not_qa": 1, "bad_question": 1, "malformed": 1}
    assert len(res.missing) == 2 and pairs - 1 - len(res.missing) == len(res.samples)  # the bad one, the missing ones
    nasa = os.path.join(roots["llava_video"], "academic_source", "Charades", "RW587.mp4")
    bunny = os.path.join(roots["llava_video"], "0_30_s_academic_v0_1", "academic_source", "youcook2", "bunny01.mp4")
    got = [(s.type, s.video, s.question, s.options, s.answer, s.source) for s in res.samples]
    assert got == [
        ("mcq", nasa, "What large object fills most of the view?",
         ("A. A planet", "B. A car", "C. A tree", "D. A boat"), "A", "llava_video#0_30_s_academic_v0_1/mcq/v_RW587/0"),
        ("mcq", nasa, "Where is the camera?", ("A. On a street", "B. In orbit above the clouds", "C. Under water"), "B",
         "llava_video#0_30_s_academic_v0_1/mcq/v_RW587/1"),
        ("mcq", bunny, "Which animal appears in the video?", ("A. A cat", "B. A rabbit", "C. A dog"), "B",
         "llava_video#0_30_s_academic_v0_1/mcq/v_bunny01/0"),
        ("open", nasa, "What does the video show?", None, "The planet Earth seen from orbit.",
         "llava_video#0_30_s_academic_v0_1/open/v_RW587/0"),
        ("open", nasa, "What color are the oceans?", None, "Deep blue.", "llava_video#0_30_s_academic_v0_1/open/v_RW587/1"),
        ("open", bunny, "What animal is the main character?", None, "A large white rabbit.",
         "llava_video#0_30_s_academic_v0_1/open/v_bunny01/0"),
    ]
    assert res.samples[0].prompt() == "What large object fills most of the view?\nA. A planet\nB. A car\nC. A tree\nD. A boat"
    assert res.samples[0].provenance["instruction"] == "Please respond with only the letter of the correct answer."
    assert res.samples[0].category == "0_30_s_academic_v0_1" and len({s.id for s in res.samples}) == 6
    assert {m["video"] for m in res.missing} == {"academic_source/Charades/GONE1.mp4", "academic_source/Charades/GONE2.mp4"}
    gone = next(m for m in res.missing if "GONE1" in m["video"])
    assert gone["tried"][0] == os.path.join(roots["llava_video"], "academic_source", "Charades", "GONE1.mp4")
    assert "E" in res.examples["bad_question"][0] and "mc_v0_1_qa_processed.json[3]#0" in res.examples["bad_question"][0]
    assert read_llava_video(LLAVA_FILES, roots["llava_video"], max_questions=2).samples == res.samples[:2]


def test_llava_mcq_parsing_and_errors(roots, tmp_path):
    q, opts, ans, ins = parse_llava_mcq("<video>\nWhat is it?\nA) x\nB) y\nAnswer briefly.", "B) y")
    assert (q, opts, ans, ins) == ("What is it?", ["A. x", "B. y"], "B", "Answer briefly.")
    with pytest.raises(ValueError, match="no option lines"):
        parse_llava_mcq("<image>\nWhat is it?", "A")
    with pytest.raises(ValueError, match=r"lettered A, B, C, \.\.\. in order"):
        parse_llava_mcq("Q?\nA. x\nC. y", "A")
    with pytest.raises(ValueError, match="does not start with one of the option letters"):
        parse_llava_mcq("Q?\nA. x\nB. y", "The answer is probably B")
    assert llava_file_kind("2_3_m_nextqa_oe_qa_processed.json") == "open"
    with pytest.raises(ValueError, match="cannot tell the kind"):
        llava_file_kind("annotations.json")
    bad = tmp_path / "x_mc_y.json"
    bad.write_text('[{"id": 1}, ')
    with pytest.raises(ValueError, match=r"x_mc_y.json: not JSON \(Expecting value at line 1"):
        read_llava_video(str(bad), roots["llava_video"])
    bad.write_text('{"id": 1}\nnot json\n')  # a jsonl file: each bad line counted, never dropped silently
    res = read_llava_video(str(bad), roots["llava_video"])
    assert res.skipped == {"malformed": 2} and res.samples == []
    where = {m.split(": ")[0]: m for m in res.examples["malformed"]}  # each names its file:line
    assert sorted(where) == [f"{bad}:1", f"{bad}:2"] and "not valid JSON" in where[f"{bad}:2"]
    bad.write_text('{\n  "id": 1\n}\n')  # one pretty-printed object: not a list, not one item per line
    with pytest.raises(ValueError, match=r"x_mc_y.json: expected a JSON list of annotation items .* got one dict"):
        read_llava_video(str(bad), roots["llava_video"])
    with pytest.raises(FileNotFoundError, match="matches no file"):
        read_llava_video(str(tmp_path / "*_mc_*.jsonx"), roots["llava_video"])


def test_cgbench_questions(roots):
    res = read_cgbench(CGBENCH, roots["cgbench"])
    assert res.items == 4 and res.skipped == {"inconsistent": 1} and len(res.missing) == 1
    assert "right_answer C is 'Three' but answer is 'One'" in res.examples["inconsistent"][0]
    bird = os.path.join(roots["cgbench"], "cg_videos_720p", "3ZpmN3-2-Zo.mp4")
    gray = os.path.join(roots["cgbench"], "BV1Rm41117YT.mp4")
    got = [(s.type, s.video, s.answer, s.source, s.category) for s in res.samples]
    assert got == [("mcq", bird, "B", "cgbench#14", "Entity Perception"),
                   ("open", bird, "A bird", "cgbench#14/open", "Entity Perception"),
                   ("mcq", gray, "C", "cgbench#19", "Scene Perception"),
                   ("open", gray, "gray", "cgbench#19/open", "Scene Perception")]
    # the option CG-Bench's letter picks is its answer text
    for s in res.samples[::2]:
        assert s.option_lines()[ord(s.answer) - ord("A")] == f"{s.answer}. {res.samples[res.samples.index(s) + 1].answer}"
    assert res.samples[0].provenance["clue_intervals_s"] == [[0, 5]] and res.samples[0].provenance["duration_s"] == 14
    assert res.missing[0]["video"] == "JuBBIJ7adjM.mp4" and len(res.missing[0]["tried"]) == 2
    assert [s.type for s in read_cgbench(CGBENCH, roots["cgbench"], form="open").samples] == ["open", "open"]
    with pytest.raises(ValueError, match="form must be one of"):
        read_cgbench(CGBENCH, roots["cgbench"], form="mc")


def test_hdvila_videos(roots):
    res = read_hdvila(HDVILA, roots["hdvila"])
    assert res.items == 4 and len(res.videos) == 2 and res.skipped == {"malformed": 1}
    assert [v["video"] for v in res.videos] == [os.path.join(roots["hdvila"], "QMi8x8o55Ns.mp4"),
                                                os.path.join(roots["hdvila"], "--0LwtsNa54.webm")]
    assert res.videos[0]["clips"] == 2 and res.videos[0]["url"].endswith("QMi8x8o55Ns")
    assert [m["video"] for m in res.missing] == ["zzMissing00"] and len(res.missing[0]["tried"]) == 3
    assert res.examples["malformed"][0].startswith(f"{HDVILA}:4: span time '0:61:00' is not HH:MM:SS.mmm")
    assert parse_span_s(["00:04:52.140", "00:05:03.350"]) == pytest.approx((292.14, 303.35))
    clips = read_hdvila(HDVILA, roots["hdvila"], unit="clip")
    assert clips.videos == [] and len(clips.missing) == 4  # no clip cut in this folder


def test_import_writes_the_question_sets(roots, tmp_path, capsys):
    from eva_fast.cli import main

    (tmp_path / "roots.yaml").write_text("".join(f"{k}: {v}\n" for k, v in roots.items()))
    out = tmp_path / "data"
    assert main(["data", "import", "--llava-video", str(LLAVA / "*_qa_processed.json"), str(LLAVA_FILES[2]),
                 "--cgbench", CGBENCH, "--hdvila", HDVILA, "--roots", str(tmp_path / "roots.yaml"),
                 "--out", str(out)]) == 0
    cap = capsys.readouterr()
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert summary["teacher_qa"] + summary["rl_pool"] == 10 and summary["missing_videos"] == 4
    assert summary["enhance_videos"] == 2
    assert "[import] llava_video: 9 items, 6 questions (3 mcq, 3 open), 2 skipped for a missing video" in cap.err
    teacher = load_rl_set(out / "teacher_qa.jsonl", check_videos=True)
    pool = load_rl_set(out / "rl_pool.jsonl", check_videos=True)
    assert len(teacher) + len(pool) == 10 and teacher and pool
    # a video's questions all land on one side
    assert not ({s.video for s in teacher} & {s.video for s in pool})
    missing = [json.loads(line) for line in open(out / "import.missing.jsonl")]
    assert sorted(m["source"] for m in missing) == ["cgbench", "hdvila", "llava_video", "llava_video"]
    assert (out / "enhance_videos.txt").read_text().splitlines() == [
        os.path.join(roots["hdvila"], "QMi8x8o55Ns.mp4"), os.path.join(roots["hdvila"], "--0LwtsNa54.webm")]
    report = json.loads((out / "import.report.json").read_text())
    assert report["counts"]["cgbench"]["questions"] == 4 and report["counts"]["hdvila"]["videos"] == 2
    # every item to one side at the ends of the fraction
    all_teacher = import_sources(tmp_path / "t", roots, llava_video=LLAVA_FILES, rl_pool_fraction=0.0)
    assert (len(load_rl_set(all_teacher.teacher_qa)), len(load_rl_set(all_teacher.rl_pool))) == (6, 0)
    with pytest.raises(ValueError, match="--roots has no 'cgbench' entry"):
        import_sources(tmp_path / "x", {"llava_video": roots["llava_video"]}, cgbench=CGBENCH)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        import_sources(tmp_path / "x", {"cgbench": str(tmp_path / "nope")}, cgbench=CGBENCH)
