"""`prepare_digit`: any picture of a digit made to look like MNIST's, by MNIST's own procedure: find the ink, crop it,
fit it in a 20x20 box keeping its aspect ratio (anti-aliased), and place it in 28x28 with its centre of mass at the
centre. Pictures holding no digit (blank, one colour, pure noise) give `None`."""
from __future__ import annotations
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ['prepare_digit', 'show_prepared', 'NoDigitError']

_WORK = 256        # pictures are reduced (box-averaged) to between this and twice this on their longer side, for speed
_BLOCKS = 16       # the paper's colour is estimated in blocks, this many along the shorter side ...
_MIN_CONTRAST = 24 # ... and ink must differ from it by at least this many grey levels (of 255) ...
_MIN_SNR = 5.0     # ... and by this many times the picture's noise
_MAX_PIECES = 8    # ink in more pieces than this (specks of noise, texture) is not a digit
_MAX_INK = 0.5     # nor ink covering more than this share of the picture


class NoDigitError(ValueError):
    "Raised by `learn.predict` when the image holds no digit (blank, one colour, pure noise): see `prepare_digit`"


def load_image(o):
    """Any image (file path, PIL image, numpy array, torch tensor; any size, greyscale, RGB or with alpha) as a PIL
    image in mode 'L', 'LA', 'RGB' or 'RGBA', or a clear error. Files are turned upright as their EXIF data says."""
    from PIL import Image, ImageOps
    if isinstance(o, (str, Path)):
        fn = Path(o)
        if not fn.exists(): raise FileNotFoundError(f"Image file {fn} does not exist")
        if fn.is_dir(): raise IsADirectoryError(f"{fn} is a folder, not an image file")
        try:
            with Image.open(fn) as im:
                if im.format == 'JPEG' and max(im.size) > 4*_WORK: im.draft(im.mode, (im.size[0]//4, im.size[1]//4))
                im.load()
                o = ImageOps.exif_transpose(im)
        except (OSError, SyntaxError, ValueError) as e:
            raise ValueError(f"Could not read the image {fn}: {e}") from e
    if hasattr(o, 'detach') and hasattr(o, 'cpu'): o = o.detach().cpu().numpy()  # a torch tensor
    if isinstance(o, np.ndarray): o = _array_image(o)
    if not isinstance(o, Image.Image):
        raise TypeError(f"Cannot make an image of a {type(o).__name__}: give a file path, a PIL image, an array or a tensor")
    if o.mode in ('L', 'LA', 'RGB', 'RGBA'): return o
    if o.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):
        a = np.asarray(o, dtype=np.float32)
        return Image.fromarray(_to_uint8(a, 65535 if a.max(initial=0) > 255 else 255))
    if o.mode == '1': return o.convert('L')
    if o.mode == 'PA' or (o.mode == 'P' and 'transparency' in o.info): return o.convert('RGBA')
    return o.convert('RGB')


def _to_uint8(a:np.ndarray, top:float) -> np.ndarray:
    "Values from 0..`top` as uint8 0..255"
    return np.clip(np.rint(a*(255/top)), 0, 255).astype(np.uint8)


def _array_image(o:np.ndarray):
    "A numpy array (HxW, HxWxC, CxHxW or 784 long; uint8, ints, bools or floats in 0..1 or 0..255) as a PIL image"
    from PIL import Image
    a = o
    if a.ndim == 1 and a.size == 784: a = a.reshape(28, 28)
    if a.ndim == 3 and a.shape[0] in (1, 2, 3, 4) and a.shape[-1] not in (1, 2, 3, 4): a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1: a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (2, 3, 4)) or 0 in a.shape:
        raise ValueError(f"An image array must be HxW, HxWxC, CxHxW (C: 1 to 4) or 784 long, got shape {o.shape}")
    if a.dtype == bool: a = a.astype(np.uint8)*255
    elif a.dtype != np.uint8:
        a = a.astype(np.float32)
        if not np.isfinite(a).all(): raise ValueError("The image array holds NaN or infinite values")
        top = 1.0 if a.max() <= 1.0 else 65535.0 if a.max() > 255 else 255.0  # floats in 0..1, as the loaders serve them
        a = _to_uint8(a, top)
    return Image.fromarray(np.ascontiguousarray(a))  # 'L', 'LA', 'RGB' or 'RGBA' from the shape


def is_prepared(a:np.ndarray) -> bool:
    """Whether `a` already looks like one of MNIST's own images: 28x28, zero background, the digit's box 20 pixels at
    its longer side and its centre of mass within a pixel of the centre (preparing it again would only blur it)"""
    if a.shape != (28, 28) or (a == 0).mean() < 0.5: return False
    rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
    if max(rows[-1]-rows[0], cols[-1]-cols[0]) + 1 != 20: return False
    cy, cx = ndimage.center_of_mass(a.astype(np.float32))
    return abs(cy-14) <= 1 and abs(cx-14) <= 1


def _paper_blocks(a:np.ndarray, k:int) -> np.ndarray:
    """The paper's colour in each `k`x`k` block of `a` (H, W, C): the mean of the block's third of pixels closest in
    colour to the picture's border (the paper there), so that ink covering up to two thirds of a block is left out"""
    h, w, c = a.shape
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    paper = np.median(border, axis=0)
    gh, gw = h//k, w//k
    b = a[:gh*k, :gw*k].reshape(gh, k, gw, k, c).transpose(0, 2, 1, 3, 4).reshape(gh, gw, k*k, c)
    dist = np.abs(b - paper).sum(-1)
    n = max(1, k*k//3)
    closest = np.argpartition(dist, n-1, axis=-1)[..., :n]
    return np.take_along_axis(b, closest[..., None], axis=2).mean(2)


def _background(a:np.ndarray) -> np.ndarray:
    """The paper's colour at each pixel of `a` (H, W, C): a quadratic surface fitted to the paper of each block of the
    picture, leaving out blocks far from the fit (ink) in a few rounds; follows shading and uneven light"""
    h, w, c = a.shape
    k = max(2, min(h, w)//_BLOCKS)
    med = _paper_blocks(a, k)
    gh, gw = med.shape[:2]
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    yy, xx = (yy+0.5)*k/h - 0.5, (xx+0.5)*k/w - 0.5  # block centres in -0.5..0.5
    A = np.stack([np.ones_like(yy), yy, xx, yy*yy, xx*xx, yy*xx], -1).reshape(-1, 6)
    z = med.reshape(-1, c)
    dist = np.sqrt(((z - np.median(z, 0))**2).sum(1))  # first guess: the blocks on the paper's side of Otsu's split
    keep = dist <= _otsu(dist, dist.max()) if dist.max() > 0 else np.ones(len(z), bool)
    if keep.sum() < 6: keep[:] = True
    for _ in range(5):
        coef = np.linalg.lstsq(A[keep], z[keep], rcond=None)[0]
        res = np.sqrt(((z - A @ coef)**2).sum(1))
        scale = max(1.4826*np.median(res[keep]), 2.0)
        new = res <= 3*scale
        if new.sum() < 6 or (new == keep).all(): break
        keep = new
    Y, X = np.mgrid[0:h, 0:w].astype(np.float32)
    Y, X = (Y+0.5)/h - 0.5, (X+0.5)/w - 0.5
    return np.clip(coef[0] + coef[1]*Y[..., None] + coef[2]*X[..., None] + coef[3]*(Y*Y)[..., None] + coef[4]*(X*X)[..., None]
            + coef[5]*(Y*X)[..., None], 0, 255)


def _otsu(d:np.ndarray, top:float) -> float:
    "Otsu's threshold of the values `d` (0..`top`)"
    hist, edges = np.histogram(d, bins=128, range=(0, top))
    p = hist/hist.sum()
    w0 = np.cumsum(p)
    m = np.cumsum(p*edges[1:])
    var = (m[-1]*w0 - m)**2/np.maximum(w0*(1-w0), 1e-12)
    return float(edges[1:][np.argmax(var[:-1])])


def ink_map(image) -> np.ndarray|None:
    """How much ink each pixel of `image` holds, 0..1 (float32, at most about 512 pixels a side), or None when there is
    no digit. Ink is what differs from the paper: the paper's colour is estimated from the picture itself (so dark on
    light and light on dark, coloured ink and paper, shading all work); a transparent background means ink = alpha."""
    im = load_image(image)
    f = max(im.size)//_WORK
    if f > 1: im = im.reduce(f)  # box average: fast, anti-aliased
    a = np.asarray(im, dtype=np.float32)
    if a.ndim == 2: a = a[..., None]
    alpha = None
    if im.mode in ('LA', 'RGBA'):
        alpha, a = a[..., -1], a[..., :-1]
        border = np.concatenate([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
        if np.median(border) >= 128: alpha = None  # an opaque picture (its alpha says nothing about ink)
    if alpha is not None:  # a canvas: ink is where the alpha is
        d, c = ndimage.gaussian_filter(alpha, 0.6), 1
    else:
        c = a.shape[-1]
        if c == 3 and np.abs(a - a.mean(-1, keepdims=True)).max() < 1: a, c = a[..., :1], 1  # grey stored as RGB
        a = ndimage.gaussian_filter(a, (0.8, 0.8, 0))  # noise and JPEG artefacts
        d = np.sqrt((((a - _background(a))**2).sum(-1))/c)  # distance from the paper's colour, in grey levels
    top = float(d.max())
    if top < _MIN_CONTRAST: return None  # blank, one colour
    noise = max(float(np.median(d))/0.67, 1.0)
    t = _otsu(d, top)
    ink = d > t
    if not ink.any() or ink.mean() > _MAX_INK: return None
    level = float(np.median(d[ink]))
    if level < _MIN_CONTRAST or level < _MIN_SNR*noise: return None  # too faint, or noise
    labels, n = ndimage.label(ink, np.ones((3, 3)))
    areas = np.bincount(labels.ravel(), minlength=n+1)[1:]
    pieces = np.flatnonzero(areas >= 0.1*areas.max()) + 1
    if len(pieces) > _MAX_PIECES: return None  # specks scattered all over: noise or texture
    keep = ndimage.binary_dilation(np.isin(labels, pieces), np.ones((3, 3)), iterations=2)
    lo = max(0.5*t, min(3*noise, t))
    return np.where(keep, np.clip((d - lo)/max(level - lo, 1e-6), 0, 1), 0).astype(np.float32)


def _fit_20(ink:np.ndarray) -> np.ndarray:
    "The ink's bounding box scaled to fit a 20x20 box keeping its aspect ratio, anti-aliased (float32 0..1)"
    from PIL import Image
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    crop = ink[rows[0]:rows[-1]+1, cols[0]:cols[-1]+1]
    h, w = crop.shape
    s = 20/max(h, w)
    size = (max(1, round(w*s)), max(1, round(h*s)))
    out = np.asarray(Image.fromarray(crop).resize(size, Image.LANCZOS), dtype=np.float32)
    return np.clip(out, 0, 1)


def _centre(digit:np.ndarray) -> np.ndarray:
    "`digit` placed in a 28x28 image with its centre of mass at the centre (pixel 14, 14), as MNIST's"
    h, w = digit.shape
    cy, cx = ndimage.center_of_mass(digit)
    top, left = int(np.clip(round(14 - cy), 0, 28-h)), int(np.clip(round(14 - cx), 0, 28-w))
    out = np.zeros((28, 28), np.float32)
    out[top:top+h, left:left+w] = digit
    return out


def prepare_digit(image) -> np.ndarray|None:
    """`image` (a file path, PIL image, numpy array or torch tensor; any size, colour and polarity; a transparent
    canvas) as MNIST's own images are: a 28x28 uint8 array, a light digit on black, fitted in a 20x20 box, its centre
    of mass at the centre. None when it holds no digit: blank, one colour, or pure noise."""
    if not (isinstance(image, (str, Path)) or hasattr(image, 'mode')):  # an array or tensor: already prepared?
        a = np.asarray(image.detach().cpu() if hasattr(image, 'detach') else image)
        if a.shape == (28, 28) and a.dtype == np.uint8 and is_prepared(a): return a.copy()
    ink = ink_map(image)
    if ink is None: return None
    return np.rint(_centre(_fit_20(ink))*255).astype(np.uint8)


def show_prepared(images, titles=None, ncols:int|None=None, figsize=None):
    """Each of `images` beside the 28x28 the model sees (`prepare_digit`'s result, or 'no digit found'); returns the
    matplotlib figure"""
    import matplotlib.pyplot as plt
    if isinstance(images, (str, Path)) or hasattr(images, 'mode') or hasattr(images, 'shape'): images = [images]
    images = list(images)
    n = len(images)
    ncols = ncols or min(n, 3)
    nrows = -(-n//ncols)
    fig, axs = plt.subplots(nrows, 2*ncols, figsize=figsize or (4.4*ncols, 2.4*nrows), squeeze=False)
    for ax in axs.flat: ax.axis('off')
    for i, o in enumerate(images):
        ax0, ax1 = axs[i//ncols, 2*(i % ncols)], axs[i//ncols, 2*(i % ncols)+1]
        im = load_image(o)
        ax0.imshow(im, cmap='gray' if im.mode in ('L', 'LA') else None)
        ax0.set_title(titles[i] if titles is not None else (Path(o).name if isinstance(o, (str, Path)) else 'image'),
                      fontsize=9)
        p = prepare_digit(o)
        if p is None: ax1.text(0.5, 0.5, 'no digit\nfound', ha='center', va='center', color='red')
        else: ax1.imshow(p, cmap='gray', vmin=0, vmax=255)
        ax1.set_title('what the model sees', fontsize=9)
    fig.tight_layout()
    return fig
