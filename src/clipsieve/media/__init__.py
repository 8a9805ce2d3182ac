"""Media input: file discovery, safe image decoding and model preprocessing."""

from clipsieve.media.decode import Decoded, DecodeLimits, decode_image, read_bytes
from clipsieve.media.discover import IMAGE_EXTENSIONS, iter_files
from clipsieve.media.preprocess import Preprocess

__all__ = [
    "IMAGE_EXTENSIONS",
    "Decoded",
    "DecodeLimits",
    "Preprocess",
    "decode_image",
    "iter_files",
    "read_bytes",
]
