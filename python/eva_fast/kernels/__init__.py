"""Device kernels for eva_fast, shipped as ``eva_fast.kernels``.

Layout (house style §7):

* ``eva_fast.kernels.reference``: readable plain-torch references (CPU or GPU), the ground truth
  that every fast path is tested against.
* ``eva_fast.kernels.pack_qwen25vl``: the Triton packing kernel and its launcher. It imports
  Triton at module import, so import it lazily (``eva_fast.vision.pack_qwen25vl`` does).

Importing this package never imports Triton and never fails without a GPU.
"""

from __future__ import annotations

from eva_fast.kernels._utils import triton_available

__all__ = ["triton_available"]
