"""How far results move between CPU code paths (issue #9).

Scans the same real photos (and byte-identical copies of them) in float32 under each
``ATEN_CPU_CAPABILITY`` torch offers here (``default`` = no SIMD, ``avx2``, and the native
path, e.g. AVX-512/AMX), each in its own process, with a randomly initialised CLIP ViT-B/32,
then prints the largest differences against the native run: embedding cosine, moderation
probabilities and quality scores (0–10). Also checks that copies within one scan are
bit-identical.

    python benchmarks/cpu_agreement.py [--arch vit-b-32] [--copies 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys
import numpy as np
from clipsieve import Analyzer
from clipsieve.moderation import ModerationHead
from clipsieve.quality import QualityHead
an = Analyzer(model=sys.argv[1], store=False, precision="float32", batch_size=4)
out = {}
for r in an.scan([sys.argv[2]], heads=[ModerationHead("default"), QualityHead()]):
    out[r.path] = {"emb": r.embedding.tolist(), "q": r.quality.score,
                   "tech": r.quality.technical, "mod": r.moderation.to_dict()["categories"]}
json.dump(out, open(sys.argv[3], "w"))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="vit-b-32")
    ap.add_argument("--copies", type=int, default=2)
    args = ap.parse_args()
    from PIL import Image
    from skimage import data

    from clipsieve.testing import build_random_clip

    tmp = Path(tempfile.mkdtemp())
    model = build_random_clip(tmp / "model", args.arch)
    photos = tmp / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "horse"):
        arr = getattr(data, name)()
        if arr.dtype == bool:
            arr = (arr * 255).astype(np.uint8)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        Image.fromarray(arr[..., :3]).save(photos / f"{name}.jpg", quality=92)
        for c in range(args.copies):
            shutil.copy(photos / f"{name}.jpg", photos / f"{name}_copy{c}.jpg")
    runs = {}
    for cap in ("native", "avx2", "default"):
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        env.pop("ATEN_CPU_CAPABILITY", None)
        if cap != "native":
            env["ATEN_CPU_CAPABILITY"] = cap
        dest = tmp / f"{cap}.json"
        subprocess.run([sys.executable, "-c", CHILD, str(model), str(photos), str(dest)],
                       env=env, check=True)
        runs[cap] = json.loads(dest.read_text())
    base = runs["native"]
    print(f"{len(base)} files ({args.arch}, float32); differences against the native run")
    print(f"{'capability':<10} {'1 - min cos':>12} {'max |Δemb|':>11} {'max |Δmod|':>11} "
          f"{'max |Δquality|':>15} {'max |Δtech|':>12} {'copies equal':>13}")
    for cap, run in runs.items():
        cos, demb, dmod, dq, dt = 1.0, 0.0, 0.0, 0.0, 0.0
        for path, r in run.items():
            a, b = np.array(r["emb"]), np.array(base[path]["emb"])
            cos = min(cos, float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
            demb = max(demb, float(np.abs(a - b).max()))
            dmod = max(dmod, max(abs(v - base[path]["mod"][k]) for k, v in r["mod"].items()))
            dq = max(dq, abs(r["q"] - base[path]["q"]))
            dt = max(dt, abs(r["tech"] - base[path]["tech"]))
        same = all(
            run[p]["emb"] == run[p.replace(f"_copy{c}", "")]["emb"]
            and run[p]["q"] == run[p.replace(f"_copy{c}", "")]["q"]
            for p in run for c in range(args.copies) if f"_copy{c}" in p
        )
        print(f"{cap:<10} {1 - cos:>12.2e} {demb:>11.2e} {dmod:>11.2e} {dq:>15.2e} {dt:>12.2e} "
              f"{str(same):>13}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
