"""The EVA reference frame tool as its evaluation runs it: one fresh Python process per tool call.

    python _eva_reference_tool.py '{"video": ..., "indices": [...], "size": [h, w], "out_dir": ...}'

decord ``VideoReader`` + ``get_batch(indices)``, OpenCV ``INTER_CUBIC`` resize to the 28-aligned size,
one PNG per frame written with ``cv2.imwrite``. The caller (bench/_systems.py, in the parent
process) reads the PNGs back and runs transformers' Qwen2-VL image processor, as the agent does.
Prints one JSON line: the PNG paths and this process's own timings.

Stand-alone on purpose: it imports only decord, OpenCV and NumPy (no eva_fast), like the reference.
"""

import json
import os
import sys
import time


def main() -> int:
    t0 = time.perf_counter()
    args = json.loads(sys.argv[1])
    import cv2
    import decord
    import numpy  # noqa: F401

    t_import = time.perf_counter()
    vr = decord.VideoReader(args["video"], ctx=decord.cpu(0))
    frames = vr.get_batch(list(args["indices"])).asnumpy()
    t_decode = time.perf_counter()
    h, w = args["size"]
    os.makedirs(args["out_dir"], exist_ok=True)
    paths = []
    for i, rgb in enumerate(frames):
        img = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC)
        p = os.path.join(args["out_dir"], f"frame_{i:04d}.png")
        cv2.imwrite(p, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        paths.append(p)
    t_end = time.perf_counter()
    print(json.dumps({
        "paths": paths,
        "import_ms": (t_import - t0) * 1e3,
        "decode_ms": (t_decode - t_import) * 1e3,
        "resize_write_ms": (t_end - t_decode) * 1e3,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
