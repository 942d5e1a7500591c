"""Fixtures for the vision API tests: shared with tests/kernels."""

from tests.kernels.conftest import _seed, decode_frames, hf_pil_processor  # noqa: F401
