"""Nothing depends on the working directory (issue #12 item 9): from the repository root, where
Python puts the root on ``sys.path`` (``python -c``, ``python -m``, pytest's rootdir), no top-level
``kernels`` package resolves to this checkout (Hugging Face libraries probe an optional package of
that name and import it), and transformers and eva_fast import cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_PROBE = r"""
import importlib.util, json, sys
from transformers import AutoProcessor  # probes the optional `kernels` package
import transformers.utils.import_utils as iu
import eva_fast, eva_fast.kernels, eva_fast.kernels.reference, eva_fast.video, eva_fast.vision
spec = importlib.util.find_spec("kernels")
mod = sys.modules.get("kernels")
print(json.dumps({
    "root_on_path": sys.path[0] in ("", sys.argv[1]) or sys.argv[1] in sys.path,
    "kernels_origin": None if spec is None else (spec.origin or list(spec.submodule_search_locations or [])),
    "kernels_module_file": None if mod is None else getattr(mod, "__file__", None),
    "is_kernels_available": bool(iu.is_kernels_available()),
    "eva_fast_kernels": eva_fast.kernels.__file__,
}))
"""


def test_imports_from_the_repository_root_do_not_see_a_kernels_package():
    out = subprocess.run([sys.executable, "-c", _PROBE, str(REPO)], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["root_on_path"]  # the situation the check is about
    origin = json.dumps(info["kernels_origin"])
    assert str(REPO) not in origin, f"`kernels` resolves into the checkout: {origin}"
    assert str(REPO) not in str(info["kernels_module_file"])  # None, or a real install elsewhere
    assert info["eva_fast_kernels"].startswith(str(REPO / "python" / "eva_fast" / "kernels"))


def test_no_top_level_python_package_named_kernels_in_the_checkout():
    assert not (REPO / "kernels").exists()
    assert (REPO / "python" / "eva_fast" / "kernels" / "cuda" / "yuv_coeffs.h").is_file()
