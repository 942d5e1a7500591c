"""Where the bench tests find a small real video."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CANDIDATES = [ROOT / "tests" / "data", ROOT.parent / "shared" / "media"]


def find(name: str) -> Path | None:
    for d in CANDIDATES:
        if (d / name).is_file():
            return d / name
    return None
