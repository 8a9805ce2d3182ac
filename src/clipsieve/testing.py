"""Build small or randomly initialised CLIP checkpoints offline, for tests and benchmarks.

The checkpoints are written with ``save_pretrained`` into a folder and then loaded through
exactly the path users take (``--model /that/folder``). The tokenizer is a real byte-level BPE
written from scratch into ``vocab.json`` + ``merges.txt``: every byte has a token, so any text
tokenizes, and a few merges exercise the BPE path. These weights are random: never use them
for real predictions.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

#: A handful of merges so BPE actually merges something.
_MERGES = [("t", "h"), ("th", "e</w>"), ("a", "t</w>"), ("c", "at</w>"), ("o", "g</w>"),
           ("d", "og</w>"), ("i", "n"), ("p", "h"), ("o", "t"), ("ph", "ot")]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_byte_bpe_tokenizer(folder: str | Path) -> int:
    """Write vocab.json, merges.txt and tokenizer_config.json; returns the vocabulary size."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for a, b in _MERGES:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in _MERGES) + "\n", encoding="utf-8"
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps({
            "tokenizer_class": "CLIPTokenizer",
            "model_max_length": 77,
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
        }),
        encoding="utf-8",
    )
    return len(vocab)


#: Architectures: vision/text tower sizes. ``vit-b-32`` matches openai/clip-vit-base-patch32;
#: ``small-224`` is tiny but takes 224-pixel input like real checkpoints.
ARCHS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        vision=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                    num_hidden_layers=2, image_size=32, patch_size=8),
        text=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                  num_hidden_layers=2),
        projection_dim=16, image_size=32,
    ),
    "small-224": dict(
        vision=dict(hidden_size=64, intermediate_size=128, num_attention_heads=2,
                    num_hidden_layers=2, image_size=224, patch_size=32),
        text=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                  num_hidden_layers=2),
        projection_dim=32, image_size=224,
    ),
    "vit-b-32": dict(
        vision=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                    num_hidden_layers=12, image_size=224, patch_size=32),
        text=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8,
                  num_hidden_layers=12),
        projection_dim=512, image_size=224,
    ),
}


def build_random_clip(folder: str | Path, arch: str = "tiny", seed: int = 0) -> Path:
    """Write a randomly initialised CLIP checkpoint (model, tokenizer, image processor).

    Args:
        folder: destination (created).
        arch: a key of :data:`ARCHS`.
        seed: torch seed for the weights.
    """
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor  # transformers 5
    except ImportError:  # pragma: no cover - transformers 4
        from transformers import CLIPImageProcessor as ImageProcessor  # type: ignore[assignment]

    spec = ARCHS[arch]
    folder = Path(folder)
    vocab_size = write_byte_bpe_tokenizer(folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    bos = tok.convert_tokens_to_ids("<|startoftext|>")
    cfg = CLIPConfig(
        text_config=dict(spec["text"], vocab_size=vocab_size, max_position_embeddings=77,
                         bos_token_id=bos, eos_token_id=eos, pad_token_id=eos),
        vision_config=spec["vision"],
        projection_dim=spec["projection_dim"],
    )
    torch.manual_seed(seed)
    model = CLIPModel(cfg)
    model.eval()
    model.save_pretrained(str(folder))
    size = spec["image_size"]
    ImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    ).save_pretrained(str(folder))
    return folder


def build_random_siglip(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny randomly initialised SigLIP checkpoint (square resize, no crop, 0.5 mean/std).

    It uses the byte-level BPE tokenizer of :func:`write_byte_bpe_tokenizer` (real SigLIP uses a
    SentencePiece model, which cannot be written offline), so it exercises the SigLIP model and
    preprocessing paths: ``max_length`` text padding and an exact (height, width) resize.
    """
    import torch
    from transformers import AutoTokenizer, SiglipConfig, SiglipModel

    try:
        from transformers import SiglipImageProcessorPil as ImageProcessor  # transformers 5
    except ImportError:  # pragma: no cover - transformers 4
        from transformers import SiglipImageProcessor as ImageProcessor  # type: ignore[assignment]

    folder = Path(folder)
    vocab_size = write_byte_bpe_tokenizer(folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = SiglipConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_attention_heads=2, num_hidden_layers=2, max_position_embeddings=16,
                         pad_token_id=eos, eos_token_id=eos, bos_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                           num_hidden_layers=2, image_size=32, patch_size=8),
    )
    torch.manual_seed(seed)
    model = SiglipModel(cfg)
    model.eval()
    model.save_pretrained(str(folder))
    ImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return folder


#: Capabilities that let root ignore file permissions (dropped by :func:`unprivileged_prefix`).
_DAC_CAPS = "-dac_override,-dac_read_search"


def unprivileged_prefix() -> list[str] | None:
    """A command prefix that runs a process without root's powers over files, for permission
    tests.

    As root, file permissions do not apply (root reads a ``chmod 000`` file), so tests of
    "permission denied" run the command through util-linux ``setpriv`` with the two
    capabilities that override them (``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``) dropped
    from its bounding set: still uid 0, so it can read the checkout and its ``.venv`` even
    where they sit in a private folder, but a ``chmod 000`` file or folder, or a read-only
    file, is refused as for any other owner. Where the capabilities cannot be dropped (no
    ``CAP_SETPCAP``), it runs as the user ``nobody`` (uid and gid 65534) instead. Returns
    ``[]`` when this process is not root (permissions already apply), or ``None`` when it is
    root and ``setpriv`` is missing or unusable (skip the test).
    """
    import os

    if os.geteuid() != 0:
        return []
    found = _working_setpriv_prefix()
    return None if found is None else list(found)


@functools.lru_cache(maxsize=1)
def _working_setpriv_prefix() -> tuple[str, ...] | None:
    """The first setpriv prefix under which a ``chmod 000`` file really is unreadable (probed
    once per process: without ``CAP_SETPCAP`` setpriv leaves the bounding set as it is and
    still exits 0, so only the effect tells)."""
    import os
    import shutil
    import subprocess
    import tempfile

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    fd, probe = tempfile.mkstemp(prefix="clipsieve-perm-")
    os.close(fd)
    os.chmod(probe, 0)
    try:
        for prefix in ((setpriv, f"--bounding-set={_DAC_CAPS}", "--"),
                       (setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--")):
            try:
                runs = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
                reads = subprocess.run([*prefix, "cat", probe], capture_output=True, timeout=30)
            except (OSError, subprocess.SubprocessError):
                continue
            if runs.returncode == 0 and reads.returncode != 0:
                return prefix
        return None
    finally:
        os.unlink(probe)


def public_temp_dir(prefix: str = "clipsieve-test-") -> Path:
    """A new folder under the system temp dir that every user may enter and write (mode 1777),
    for files that a test reads or writes without root's powers (:func:`unprivileged_prefix`,
    which may run as ``nobody``). The caller removes it."""
    import os
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o1777)
    return path


#: Codec and pixel format per container file ending, for :func:`write_test_video`.
_VIDEO_CODECS: dict[str, tuple[str, str]] = {
    ".mp4": ("libx264", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".webm": ("libvpx", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
    ".gif": ("gif", "rgb8"),
    ".webp": ("libwebp_anim", "yuv420p"),
}


def write_test_video(
    path: str | Path,
    shots: list[tuple[Any, float]],
    *,
    fps: int = 10,
    size: tuple[int, int] = (320, 240),
    bit_rate: int | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Write a video of shots with PyAV: hard cuts between photos at known times.

    Args:
        path: the file; its ending picks container and codec (``.mp4``, ``.mov``, ``.mkv``:
            H.264; ``.webm``: VP8; ``.avi``: MPEG-4; ``.gif``; ``.webp``: animated WebP).
        shots: ``(source, seconds)`` in order. ``source`` is an RGB array (a photo: the shot
            pans slowly across it, so consecutive frames differ), ``"black"`` (black frames) or
            ``"freeze"`` (the previous frame repeated: a frozen stretch).
        fps: frame rate.
        size: (width, height); even numbers.
        bit_rate: target bit rate (a low one makes a low-bitrate video).
        options: encoder options (e.g. ``{"preset": "veryfast"}``).

    Returns:
        The path. Shot ``k`` starts at ``sum(seconds[:k])`` seconds.
    """
    import av
    import numpy as np
    from PIL import Image

    path = Path(path)
    codec, pix_fmt = _VIDEO_CODECS[path.suffix.lower()]
    w, h = size
    out = av.open(str(path), "w")
    try:
        stream: Any = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if bit_rate:
            stream.bit_rate = bit_rate
        opts = dict(options or {})
        if codec == "libx264":
            opts.setdefault("preset", "veryfast")
        if codec == "libvpx":
            opts.setdefault("deadline", "realtime")
            opts.setdefault("cpu-used", "8")
        if opts:
            stream.options = opts
        last = np.zeros((h, w, 3), np.uint8)
        for source, seconds in shots:
            n = int(round(seconds * fps))
            if isinstance(source, str) and source == "black":
                frames = (np.zeros((h, w, 3), np.uint8) for _ in range(n))
            elif isinstance(source, str) and source == "freeze":
                frames = (last for _ in range(n))
            else:
                mw, mh = int(w * 1.4), int(h * 1.4)
                big = np.asarray(Image.fromarray(np.asarray(source)).convert("RGB").resize(
                    (mw, mh), Image.Resampling.BILINEAR))
                span_x, span_y = mw - w, mh - h

                def panned(big: Any = big, n: int = n, sx: int = span_x, sy: int = span_y) -> Any:
                    for i in range(n):
                        # back and forth across the margin, about 0.8 width per 4 seconds
                        p = (i / fps) / 2.0
                        frac = p % 2.0
                        frac = frac if frac <= 1.0 else 2.0 - frac
                        x, y = int(frac * sx), int(frac * sy)
                        yield np.ascontiguousarray(big[y : y + h, x : x + w])

                frames = panned()
            for arr in frames:
                last = arr
                frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    finally:
        out.close()
    return path
