"""The package's layering rules (issue #25): training uses only the agent's public seams, frame
settings are spelled once (``FrameOptions``), and every import inside a function says why."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import eva_fast.agent
from eva_fast.video import FrameOptions

PKG = Path(eva_fast.agent.__file__).resolve().parents[1]


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_training_imports_only_public_agent_names():
    bad = []
    for path in _modules(PKG / "train"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("eva_fast.agent._"):
                bad.append(f"{path.relative_to(PKG)}:{node.lineno}: from {node.module} import ...")
            elif isinstance(node, ast.ImportFrom) and node.module == "eva_fast.agent":
                missing = [a.name for a in node.names if a.name not in eva_fast.agent.__all__]
                if missing:
                    bad.append(f"{path.relative_to(PKG)}:{node.lineno}: {missing} not in eva_fast.agent.__all__")
    assert not bad, "\n".join(bad)


def test_frame_settings_are_not_declared_outside_frame_options():
    """Above the decoder no dataclass or function signature declares a frame setting with its own
    default: they hold a FrameOptions (AgentConfig, TrajectoryRecord), embed its dict
    (EvaGRPOConfig) or take ``options=`` plus ``**settings`` (plan_frames, select_frames). (The
    reader's ``resample=`` and the image processor's pixel bounds are their own, lower-level APIs.)"""
    names = {f.name for f in dataclasses.fields(FrameOptions)} | {"frame_policy"}
    files = [*_modules(PKG / "agent"), *_modules(PKG / "eval"), *_modules(PKG / "train"), PKG / "cli.py",
             PKG / "video" / "_plan.py", PKG / "video" / "_select.py"]
    bad = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.target.id in names:
                        if node.name not in ("FramePlan",):  # the plan records what it was made with
                            bad.append(f"{path.relative_to(PKG)}:{item.lineno}: {node.name}.{item.target.id}")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                for arg, default in zip((a.args + a.kwonlyargs)[::-1], (a.defaults + a.kw_defaults)[::-1]):
                    if arg.arg in names and default is not None:
                        bad.append(f"{path.relative_to(PKG)}:{node.lineno}: {node.name}({arg.arg}=...)")
    assert not bad, "\n".join(bad)

def test_imports_inside_functions_say_why():
    """Imports sit at module top; the few left inside functions (optional heavy dependencies, the
    native module where import order matters, a lazily loaded sibling) carry a comment on their line,
    or on the ``try:`` line above them."""
    bad = []
    for path in _modules(PKG):
        lines = path.read_text().splitlines()

        def visit(node: ast.AST, in_function: bool, explained: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                    if "#" not in lines[child.lineno - 1] and not explained:
                        bad.append(f"{path.relative_to(PKG)}:{child.lineno}: {lines[child.lineno - 1].strip()}")
                # a `try:  # why` block explains the imports in it
                why = explained or (isinstance(child, ast.Try) and "#" in lines[child.lineno - 1])
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)),
                      why if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else False)

        visit(ast.parse("\n".join(lines)), False, False)
    assert not bad, "imports inside functions without a reason:\n" + "\n".join(bad)
