"Any picture a person gives (a file, a PIL image, an array, a tensor) as a PIL image the package can prepare"
from __future__ import annotations
from pathlib import Path

import numpy as np

from .checks import BinaryDigitsError

__all__ = ['as_pil_image']

_DRAFT = 256  # JPEGs this many pixels or more on their longer side are decoded at 1/2, 1/4 or 1/8 of their size: fast


def as_pil_image(o):
    """`o` (a file path, PIL image, numpy array or torch tensor; any size, greyscale, RGB or with alpha) as a PIL image
    in mode 'L', 'LA', 'RGB' or 'RGBA', or a clear error; files are turned upright as their EXIF data says"""
    from PIL import Image
    if isinstance(o, (str, Path)): o = _open(Path(o).expanduser())
    if hasattr(o, 'detach') and hasattr(o, 'cpu'): o = o.detach().cpu().numpy()  # a torch tensor
    if isinstance(o, np.ndarray): o = _array_image(o)
    if not isinstance(o, Image.Image):
        raise TypeError(f"Cannot make an image of a {type(o).__name__}: give a file path, a PIL image, an array or a tensor")
    if o.mode in ('L', 'LA', 'RGB', 'RGBA'): return o
    if o.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):
        a = np.asarray(o, dtype=np.float32)
        return Image.fromarray(_to_uint8(a, 65535 if a.max(initial=0) > 255 else 255))
    if o.mode == '1': return o.convert('L')
    return o.convert('RGBA' if o.mode == 'PA' or (o.mode == 'P' and 'transparency' in o.info) else 'RGB')


def _open(fn:Path):
    "The decoded image in file `fn`, upright"
    from PIL import Image, ImageOps
    if not fn.exists(): raise FileNotFoundError(f"Image file {fn} does not exist")
    if fn.is_dir(): raise IsADirectoryError(f"{fn} is a folder, not an image file")
    try:
        with Image.open(fn) as im:
            if im.format == 'JPEG' and max(im.size) >= 2*_DRAFT:
                im.draft(im.mode, tuple(n*_DRAFT//max(im.size) for n in im.size))
            im.load()
            return ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BinaryDigitsError(f"Could not read the image {fn}: {e}") from e


def _to_uint8(a:np.ndarray, top:float) -> np.ndarray:
    "Values from 0..`top` as uint8 0..255"
    return np.clip(np.rint(a*(255/top)), 0, 255).astype(np.uint8)


def _array_image(o:np.ndarray):
    "A numpy array (HxW, HxWxC, CxHxW or 784 long; uint8, ints, bools or floats in 0..1 or 0..255) as a PIL image"
    from PIL import Image
    a = o.reshape(28, 28) if o.ndim == 1 and o.size == 784 else o
    if a.ndim == 3 and a.shape[0] in (1, 2, 3, 4) and a.shape[-1] not in (1, 2, 3, 4): a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1: a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (2, 3, 4)) or 0 in a.shape:
        raise BinaryDigitsError(f"An image array must be HxW, HxWxC, CxHxW (C: 1 to 4) or 784 long, got shape {o.shape}")
    if a.dtype == bool: a = a.astype(np.uint8)*255
    elif a.dtype != np.uint8:
        a = a.astype(np.float32)
        if not np.isfinite(a).all(): raise BinaryDigitsError("The image array holds NaN or infinite values")
        a = _to_uint8(a, 1.0 if a.max() <= 1.0 else 65535.0 if a.max() > 255 else 255.0)  # 0..1: as the loaders serve
    return Image.fromarray(np.ascontiguousarray(a))  # 'L', 'LA', 'RGB' or 'RGBA' from the shape
