"""Structure-aware mutation of real videos, as replayable recipes.

A recipe is a JSON-ready dict ``{"seed": "<file in tests/data>", "ops": [op, ...]}``; :func:`apply`
turns the seed's bytes into the mutant, deterministically, so a finding is stored as its recipe (a
few hundred bytes) and replayed as a regression test. :func:`draw` makes a random recipe from the
seed's parsed structure. Operations:

* ``{"op": "flip", "at": [offsets], "xor": [bytes]}``: XOR bytes anywhere.
* ``{"op": "truncate", "length": n}``: keep the first ``n`` bytes.
* ``{"op": "mp4", "box": "moov/trak/mdia/minf/stbl/stco", "nth": k, "field": f, "value": v}``: the
  ``k``-th box at that path (ISO BMFF, ISO/IEC 14496-12); ``field`` is ``"size"`` (the box header's
  32-bit size), ``"count"`` (a full box's entry count), ``"entry"`` (``v`` = ``[i, word]``: entry
  ``i``'s first 32-bit word), or ``"u32"`` (``v`` = ``[offset, word]`` inside the payload).
  Tables: stco, co64, stsz, stss, stts, ctts, stsc, elst; headers: mdhd, tkhd, mvhd.
* ``{"op": "mkv", "at": offset, "len": n, "value": v}``: rewrite the EBML size field of the element
  whose size starts at ``offset`` (``n`` bytes long, as in the seed) with ``v`` (``"unknown"`` = all
  ones, or an int that fits ``n`` bytes) (Matroska/WebM, RFC 8794 EBML).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"

#: Seeds: every real video of tests/data (MP4/MOV, Matroska/WebM).
SEEDS = (
    "nasa_13013.mp4", "nasa_13013_vfr.mp4", "nasa_13013_rotated.mp4", "nasa_13013_hdr.mp4", "cockatoo.mp4",
    "bigbuckbunny.mp4", "h265_video.mp4", "test_non_zero_start.mp4", "unordered.mov", "corrupted.mp4",
    "av1_video.mkv", "cockatoo_vp9.webm",
)

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"mvex", b"moof", b"traf", b"udta"}
#: Tables with a version/flags word, then a 32-bit entry count, then entries of this many bytes.
_TABLES = {b"stco": 4, b"co64": 8, b"stss": 4, b"stts": 8, b"ctts": 8, b"stsc": 12, b"elst": 12}
_HEADERS = {b"mdhd", b"tkhd", b"mvhd"}


@dataclass(frozen=True)
class Box:
    path: str       # e.g. "moov/trak/mdia/minf/stbl/stco"
    offset: int     # of the box header
    size: int       # header + payload bytes
    header: int     # 8, or 16 for a 64-bit size


def mp4_boxes(data: bytes) -> list[Box]:
    """Every box of an ISO BMFF file (containers descended), in file order; stops at malformed sizes."""
    out: list[Box] = []

    def walk(start: int, end: int, prefix: str) -> None:
        pos = start
        while pos + 8 <= end:
            size, kind = struct.unpack(">I4s", data[pos:pos + 8])
            header = 8
            if size == 1:
                if pos + 16 > end:
                    return
                size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
                header = 16
            elif size == 0:
                size = end - pos
            if size < header or pos + size > end:
                return
            try:
                name = kind.decode("ascii")
            except UnicodeDecodeError:
                return
            path = f"{prefix}/{name}" if prefix else name
            out.append(Box(path, pos, size, header))
            if kind in _CONTAINERS:
                walk(pos + header, pos + size, path)
            pos += size

    walk(0, len(data), "")
    return out


@dataclass(frozen=True)
class Element:
    id: int
    offset: int       # of the ID
    size_at: int      # offset of the size field
    size_len: int     # bytes of the size field
    size: int | None  # None: unknown size
    data_at: int


_EBML_MASTERS = {0x1A45DFA3, 0x18538067, 0x114D9B74, 0x1549A966, 0x1654AE6B, 0xAE, 0xE0, 0x1F43B675, 0x1C53BB6B,
                 0xBB, 0xB7, 0xA0, 0x4DBB, 0x1254C367, 0x7373}


def _vint(data: bytes, pos: int, keep_marker: bool) -> tuple[int, int] | None:
    if pos >= len(data) or data[pos] == 0:
        return None
    first = data[pos]
    n = 8 - first.bit_length() + 1
    if pos + n > len(data):
        return None
    value = first if keep_marker else first & ((1 << (8 - n)) - 1)
    for b in data[pos + 1:pos + n]:
        value = (value << 8) | b
    return value, n


def mkv_elements(data: bytes, limit: int = 4000) -> list[Element]:
    """EBML elements of a Matroska/WebM file (master elements descended), in file order, at most
    ``limit``; stops at the first unparsable element of a level."""
    out: list[Element] = []

    def walk(start: int, end: int) -> None:
        pos = start
        while pos < end and len(out) < limit:
            ident = _vint(data, pos, keep_marker=True)
            if ident is None:
                return
            id_value, id_len = ident
            sz = _vint(data, pos + id_len, keep_marker=False)
            if sz is None:
                return
            size, size_len = sz
            unknown = size == (1 << (7 * size_len)) - 1
            data_at = pos + id_len + size_len
            out.append(Element(id_value, pos, pos + id_len, size_len, None if unknown else size, data_at))
            stop = end if unknown else min(end, data_at + size)
            if id_value in _EBML_MASTERS:
                walk(data_at, stop)
            if unknown:
                return
            pos = data_at + size

    walk(0, len(data))
    return out


# --------------------------------------------------------------------------------------------- apply


def apply(recipe: dict) -> bytes:
    """The mutant's bytes for ``recipe`` (see the module doc)."""
    data = bytearray((DATA / recipe["seed"]).read_bytes())
    for op in recipe["ops"]:
        kind = op["op"]
        if kind == "flip":
            for at, x in zip(op["at"], op["xor"]):
                if at < len(data):
                    data[at] ^= x
        elif kind == "truncate":
            del data[op["length"]:]
        elif kind == "mp4":
            _apply_mp4(data, op)
        elif kind == "mkv":
            _apply_mkv(data, op)
        else:
            raise ValueError(f"unknown mutation op {kind!r}")
    return bytes(data)


def _put_u32(data: bytearray, at: int, value: int) -> None:
    if 0 <= at and at + 4 <= len(data):
        data[at:at + 4] = struct.pack(">I", value & 0xFFFFFFFF)


def _apply_mp4(data: bytearray, op: dict) -> None:
    boxes = [b for b in mp4_boxes(bytes(data)) if b.path == op["box"]]
    if op["nth"] >= len(boxes):
        return
    box = boxes[op["nth"]]
    body = box.offset + box.header
    field, value = op["field"], op["value"]
    if field == "size":
        _put_u32(data, box.offset, value)
    elif field == "count":
        _put_u32(data, body + (8 if op["box"].endswith("stsz") else 4), value)
    elif field == "entry":
        i, word = value
        kind = op["box"].rsplit("/", 1)[-1].encode()
        if kind == b"stsz":
            _put_u32(data, body + 12 + 4 * i, word)
        else:
            _put_u32(data, body + 8 + _TABLES.get(kind, 4) * i, word)
    elif field == "u32":
        off, word = value
        _put_u32(data, body + off, word)


def _apply_mkv(data: bytearray, op: dict) -> None:
    at, n, value = op["at"], op["len"], op["value"]
    if at + n > len(data) or n < 1 or n > 8:
        return
    if value == "unknown":
        raw = (1 << (7 * n)) - 1
    else:
        raw = int(value) & ((1 << (7 * n)) - 1)
    encoded = (raw | (1 << (7 * n))).to_bytes(n, "big")  # the length marker bit in the first byte
    data[at:at + n] = encoded


# --------------------------------------------------------------------------------------------- draw

_INTERESTING_U32 = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE,
                    0xFFFFFFFF)


def _interesting(rng: random.Random, current: int | None = None) -> int:
    r = rng.random()
    if current is not None and r < 0.35:
        return max(0, current + rng.choice((-2, -1, 1, 2, 7, -7, 1000, -1000)) * rng.choice((1, 1, 1, 16)))
    if r < 0.8:
        return rng.choice(_INTERESTING_U32)
    return rng.getrandbits(32)


def draw(rng: random.Random, seed: str | None = None) -> dict:
    """A random recipe: 1-3 operations, each a byte flip burst, a truncation, or a structure-aware
    corruption of an MP4 box (tables and headers above) or a Matroska element size."""
    seed = seed or rng.choice(SEEDS)
    data = (DATA / seed).read_bytes()
    mkv = seed.endswith((".mkv", ".webm"))
    boxes = [] if mkv else mp4_boxes(data)
    elements = mkv_elements(data) if mkv else []
    ops = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        r = rng.random()
        if r < 0.2:
            n = rng.choice((1, 1, 2, 4, 16, 64))
            ops.append({"op": "flip", "at": [rng.randrange(len(data)) for _ in range(n)],
                        "xor": [rng.randrange(1, 256) for _ in range(n)]})
        elif r < 0.32:
            cut = rng.choice((rng.randrange(len(data)), int(len(data) * rng.uniform(0.5, 1.0)),
                              rng.randrange(min(len(data), 4096))))
            ops.append({"op": "truncate", "length": cut})
        elif mkv and elements:
            e = rng.choice(elements)
            v = rng.choice(("unknown", 0, 1, (e.size or 0) + rng.choice((-1, 1, 8, -8)), (1 << (7 * e.size_len)) - 2,
                            rng.randrange(1 << min(56, 7 * e.size_len))))
            if v != "unknown":
                v = max(0, v) & ((1 << (7 * e.size_len)) - 1)
            ops.append({"op": "mkv", "at": e.size_at, "len": e.size_len, "value": v})
        elif boxes:
            targets = [b for b in boxes if b.path.rsplit("/", 1)[-1].encode() in _TABLES.keys() | _HEADERS | {b"stsz"}]
            box = rng.choice(targets or boxes)
            nth = [b.offset for b in boxes if b.path == box.path].index(box.offset)
            kind = box.path.rsplit("/", 1)[-1].encode()
            body = box.offset + box.header
            if kind in _HEADERS:
                payload = box.size - box.header
                off = 4 * rng.randrange(max(1, payload // 4))
                cur = struct.unpack(">I", data[body + off:body + off + 4])[0] if body + off + 4 <= len(data) else 0
                ops.append({"op": "mp4", "box": box.path, "nth": nth, "field": "u32", "value": [off, _interesting(rng, cur)]})
                continue
            field = rng.choice(("count", "count", "entry", "entry", "size"))
            if kind not in _TABLES and kind != b"stsz":
                field = "size"
            if field == "size":
                ops.append({"op": "mp4", "box": box.path, "nth": nth, "field": "size", "value": _interesting(rng, box.size)})
            elif field == "count":
                at = body + (8 if kind == b"stsz" else 4)
                cur = struct.unpack(">I", data[at:at + 4])[0] if at + 4 <= len(data) else 0
                ops.append({"op": "mp4", "box": box.path, "nth": nth, "field": "count", "value": _interesting(rng, cur)})
            else:
                width = 4 if kind == b"stsz" else _TABLES[kind]
                first = body + (12 if kind == b"stsz" else 8)
                n_entries = max(1, (box.offset + box.size - first) // width)
                i = rng.randrange(n_entries)
                at = first + width * i
                cur = struct.unpack(">I", data[at:at + 4])[0] if at + 4 <= len(data) else 0
                ops.append({"op": "mp4", "box": box.path, "nth": nth, "field": "entry", "value": [i, _interesting(rng, cur)]})
        else:
            ops.append({"op": "flip", "at": [rng.randrange(len(data))], "xor": [rng.randrange(1, 256)]})
    return {"seed": seed, "ops": ops}
