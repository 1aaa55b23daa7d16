"`prepare_digit`: any picture of a digit made MNIST-like by MNIST's procedure (crop the ink, fit 20x20, centre by mass)"
import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from .checks import BinaryDigitsError
from .images import as_pil_image

__all__ = ['prepare_digit', 'NoDigitError', 'ManyDigitsError']

_WORK = 256        # pictures are reduced (box-averaged) to about this many pixels on their longer side, for speed
_BLOCKS = 32       # the paper's colour is estimated in blocks, this many along the shorter side, where ink stands
_SE = 14           # ... out of the paper around it over fewer than this many blocks (shadows over more) ...
_FLAT = 6.0        # ... by this many grey levels at least (and 4.5 times the blocks' median)
_MAX_GAIN = 2.5    # in a shadow, ink's contrast is dimmed as the paper is: it is scaled back, at most this many times
_MAX_SHADE = 130   # paper lit more than this many grey levels better in one place than in another is no page (blobs)
_MIN_CONTRAST = 24 # ink must differ from the paper by at least this many grey levels (of 255) ...
_MIN_SNR = 5.0     # ... and by this many times the picture's noise
_MAX_PIECES = 8    # ink in more pieces than this (specks of noise, texture) is not a digit
_MAX_INK = 0.7     # nor ink covering more than this share of the picture
_MIN_LENGTH = 2.5  # nor ink no longer than this many of its own stroke widths (a dot, a dash) ...
_SMALL = 0.25      # ... that is also smaller than this share of the picture's shorter side (a bold digit is not small)
_GAP = 0.1         # digits side by side: parted by empty columns this share of their height wide
# MNIST's stroke widths in pixels (10th percentile, median, 95th): others are thickened or thinned to the median
MNIST_STROKE = (1.5, 2.1, 3.5)


class NoDigitError(BinaryDigitsError):
    "Raised by `learn.predict` when the image holds no digit (blank, one colour, pure noise): see `prepare_digit`"


class ManyDigitsError(NoDigitError):
    "Raised by `learn.predict` when the image holds several digits side by side ('3 7'), not one: see `count_digits`"


def is_prepared(a:np.ndarray) -> bool:
    "Whether `a` is already MNIST-like: 28x28, zero background, a 20-pixel box, centred (preparing it would blur it)"
    if a.shape != (28, 28) or (a == 0).mean() < 0.5 or not a.any() or max(_crop(a).shape) != 20: return False
    cy, cx = ndimage.center_of_mass(a.astype(np.float32))
    return abs(cy-14) <= 1 and abs(cx-14) <= 1


def _paper_blocks(a:np.ndarray, k:int, paper:np.ndarray) -> np.ndarray:
    "The paper's colour in each `k`x`k` block of `a` (H, W, C): the mean of its third closest to `paper` (ink left out)"
    h, w, c = a.shape
    gh, gw = h//k, w//k
    b = a[:gh*k, :gw*k].reshape(gh, k, gw, k, c).transpose(0, 2, 1, 3, 4).reshape(gh, gw, k*k, c)
    dist = np.abs(b - paper).sum(-1)
    n = max(1, k*k//3)
    closest = np.argpartition(dist, n-1, axis=-1)[..., :n]
    return np.take_along_axis(b, closest[..., None], axis=2).mean(2)


def _edges(a:np.ndarray) -> np.ndarray: return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def _background(a:np.ndarray) -> np.ndarray|None:
    """The paper's colour at each pixel of `a` (H, W, C): a quadratic surface fitted to the blocks of paper, plus what
    it misses (shadows) carried to the blocks of ink from the nearest paper; None if its light varies as no shadow's"""
    h, w = a.shape[:2]
    k = max(2, min(h, w)//_BLOCKS)
    edges = _edges(a)
    light = edges.sum(-1)
    paper = np.median(edges[light >= np.median(light)], axis=0)  # at the edges: their lighter half, beyond a shadow
    z = _paper_blocks(a, k, paper)
    keep = _paper_mask(z, paper)
    inner = z.mean(-1)[2:-2, 2:-2][keep[2:-2, 2:-2]]  # (not along the edges: a stroke there passes for a shadow)
    if len(inner) >= 6 and np.ptp(np.percentile(inner, (1, 99))) > _MAX_SHADE: return None
    yy, xx = np.mgrid[0:keep.shape[0], 0:keep.shape[1]].astype(np.float32)
    yy, xx = (yy+0.5)*k/h - 0.5, (xx+0.5)*k/w - 0.5  # block centres in -0.5..0.5
    A = np.stack([np.ones_like(yy), yy, xx, yy*yy, xx*xx, yy*xx], -1)
    Ak = A[keep]  # least squares by the normal equations, in einsum: numpy's BLAS would start threads for these
    coef = np.linalg.solve(np.einsum('ni,nj->ij', Ak, Ak) + 1e-6*np.eye(6), np.einsum('ni,nc->ic', Ak, z[keep]))
    surface = np.einsum('yxi,ic->yxc', A, coef)
    iy, ix = ndimage.distance_transform_edt(~keep, return_distances=False, return_indices=True)
    missed = ndimage.gaussian_filter((z - surface)[iy, ix], (1, 1, 0), mode='nearest')
    return _upsample(np.where(keep[..., None], z, surface + missed), h, w, k)


def _upsample(blocks:np.ndarray, h:int, w:int, k:int) -> np.ndarray:
    "`blocks` (GH, GW, C), the colours of `k`x`k` blocks from the top left, interpolated bilinearly to (`h`, `w`, C)"
    b = np.pad(blocks.astype(np.float32), ((1, 1), (1, 1), (0, 0)), mode='edge')  # beyond the last blocks' centres
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(b[..., i]), 'F').resize(
        (w, h), Image.BILINEAR, box=(1, 1, 1 + w/k, 1 + h/k))) for i in range(b.shape[-1])], -1)


def _paper_mask(z:np.ndarray, paper:np.ndarray) -> np.ndarray:
    """Which blocks of `z` (GH, GW, C) are paper: ink stands out from `paper` as peaks narrower than `_SE` blocks
    (a grey opening), with the blocks beside them; shadows, deepening smoothly towards a side, pass the opening"""
    dist = np.sqrt(((z - paper)**2).mean(-1))
    # the paper goes on beyond the edges as at the edges, so that a shadow along an edge is wider than `_SE` there too
    out = dist - ndimage.grey_opening(np.pad(dist, _SE, mode='edge'), _SE)[_SE:-_SE, _SE:-_SE]
    ink = ndimage.binary_dilation(out > max(_FLAT, 4.5*np.median(out)), np.ones((3, 3), bool))
    return ~ink if (~ink).sum() >= 6 else np.ones_like(ink)


def _otsu(d:np.ndarray, top:float) -> float:
    "Otsu's threshold of the values `d` (0..`top`)"
    hist = np.bincount(np.minimum((d*(128/top)).astype(np.int32).ravel(), 127), minlength=128)
    edges = np.arange(1, 129)*(top/128)
    p = hist/hist.sum()
    w0, m = np.cumsum(p), np.cumsum(p*edges)
    var = (m[-1]*w0 - m)**2/np.maximum(w0*(1-w0), 1e-12)
    return float(edges[np.argmax(var[:-1])])


def ink_map(image) -> np.ndarray|None:
    """How much ink each pixel of `image` holds, 0..1 (float32, about `_WORK` pixels a side), or None: no digit. Ink
    is what differs from the paper, estimated from the picture (any polarity, colour, shadow); on a canvas, alpha"""
    im = as_pil_image(image)
    if min(im.size) < 4: return None  # too small to hold a digit
    f = min(round(max(im.size)/_WORK), min(im.size)//4)
    if f > 1: im = im.reduce(f)  # box average: fast, anti-aliased
    if im.mode in ('LA', 'RGBA'):
        canvas = np.median(_edges(np.asarray(im.getchannel('A')))) < 128  # else opaque: its alpha says nothing of ink
        im = im.getchannel('A') if canvas else im.convert(im.mode[:-1])
    a = np.atleast_3d(np.asarray(im.filter(ImageFilter.GaussianBlur(0.8)), np.float32))  # less noise, JPEG artefacts
    if (a == a[..., :1]).all(): a = a[..., :1]  # one channel: grey, or grey stored as RGB
    bg = _background(a)
    if bg is None: return None  # blobs of noise, no page
    light = bg.mean(-1)  # `d`: how far from the paper, in grey levels of lit paper (a shadow dims ink too)
    d = np.sqrt(((a - bg)**2).mean(-1))*np.clip(np.percentile(light, 99)/np.maximum(light, 1), 1, _MAX_GAIN)
    if d.max() < _MIN_CONTRAST: return None  # blank, one colour
    t = _otsu(d, float(d.max()))
    ink = d > t
    if not ink.any() or ink.mean() > _MAX_INK: return None
    noise = max(float(np.median(d[~ink]))/0.67, 1.0)  # the paper's own spread (noise, grain)
    level = float(np.median(d[ink]))
    if level < _MIN_CONTRAST or level < _MIN_SNR*noise: return None  # too faint, or noise
    labels, n = ndimage.label(ink, np.ones((3, 3)))
    areas = np.bincount(labels.ravel(), minlength=n+1)[1:]
    pieces = np.flatnonzero(areas >= 0.1*areas.max()) + 1
    if len(pieces) > _MAX_PIECES: return None  # specks scattered all over: noise or texture
    keep = ndimage.maximum_filter(np.isin(labels, pieces).view(np.uint8), 5).view(bool)  # and their soft edges
    lo = max(0.5*t, min(3*noise, t))
    return np.where(keep, np.clip((d - lo)/max(level - lo, 1e-6), 0, 1), 0).astype(np.float32)


def _crop(ink:np.ndarray) -> np.ndarray:
    "The bounding box of the ink"
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    return ink[rows[0]:rows[-1]+1, cols[0]:cols[-1]+1]


def stroke_width(ink:np.ndarray) -> float:
    "The ink's typical stroke width in pixels: twice the mean distance to the edge along the strokes' middles, less one"
    m = ink >= 0.5
    if not m.any(): return 0.0
    e = ndimage.distance_transform_edt(np.pad(m, 1))
    ridge = (e >= ndimage.maximum_filter(e, 3)) & (e > 0)
    return float(2*e[ridge].mean() - 1)


def _restroke(crop:np.ndarray) -> np.ndarray:
    "`crop` with its strokes thickened or thinned into MNIST's range once scaled to 20 pixels (see `MNIST_STROKE`)"
    s, w = 20/max(crop.shape), stroke_width(crop)
    lo, mid, hi = MNIST_STROKE
    r = abs(mid/s - w)/2  # how far the strokes' edges move, in pixels of `crop`
    if w*s < lo:  # every pixel within `r` of the ink becomes ink, with a soft edge
        crop = np.pad(crop, int(np.ceil(r)) + 1)
        dist = ndimage.distance_transform_edt(crop < 0.5)
        return _crop(np.maximum(crop, np.clip(r + 0.5 - dist, 0, 1)).astype(np.float32))
    if w*s > hi:  # only pixels further than `r` inside the ink stay ink
        dist = ndimage.distance_transform_edt(np.pad(crop >= 0.5, 1))[1:-1, 1:-1]
        thin = np.minimum(crop, np.clip(dist - r + 0.5, 0, 1)).astype(np.float32)
        if thin.max() > 0: return _crop(thin)
    return crop


def _fit_28(crop:np.ndarray) -> np.ndarray:
    "The ink's `crop` scaled to fit 20x20 (anti-aliased, aspect kept), its centre of mass at pixel (14, 14) of 28x28"
    crop = _restroke(crop)
    s = 20/max(crop.shape)
    size = (max(1, round(crop.shape[1]*s)), max(1, round(crop.shape[0]*s)))
    digit = np.clip(np.asarray(Image.fromarray(crop).resize(size, Image.LANCZOS), dtype=np.float32), 0, 1)
    h, w = digit.shape
    cy, cx = ndimage.center_of_mass(digit)
    top, left = int(np.clip(round(14 - cy), 0, 28-h)), int(np.clip(round(14 - cx), 0, 28-w))
    return np.pad(digit, ((top, 28-h-top), (left, 28-w-left)))


def count_digits(ink:np.ndarray) -> int:
    """How many digits `ink_map`'s `ink` holds side by side ('3 7'): groups parted by empty columns (`_GAP` of its
    height), each half as tall as all the ink and a fifth of the largest group's ink (touching digits count as one)"""
    m = ink >= 0.5
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    if not len(rows): return 0
    height = rows[-1] - rows[0] + 1
    groups = [m[:, g[0]:g[-1]+1] for g in np.split(cols, np.flatnonzero(np.diff(cols) > _GAP*height) + 1)]
    areas = [g.sum() for g in groups]
    tall = [np.ptp(np.flatnonzero(g.any(1))) + 1 >= height/2 for g in groups]
    return max(1, sum(bool(t and a >= max(areas)/5) for t, a in zip(tall, areas)))


def _prepare(image) -> tuple:
    "`prepare_digit`'s 28x28 of `image` (or None), and how many digits it holds side by side (`count_digits`)"
    im = as_pil_image(image)
    if im.size == (28, 28) and im.mode == 'L':  # one of MNIST's own images passes as it is
        a = np.array(im)
        if is_prepared(a): return a, 1
    ink = ink_map(im)
    if ink is None: return None, 0
    crop = _crop(ink)  # a dot or a dash: no longer than a few of its stroke widths, and small in the picture
    if max(crop.shape) < min(_MIN_LENGTH*stroke_width(crop), _SMALL*min(ink.shape)): return None, 0
    return np.rint(_fit_28(crop)*255).astype(np.uint8), count_digits(ink)


def prepare_digit(image) -> np.ndarray|None:
    """`image` (a file, PIL image, array or tensor; any size, colour, polarity) as MNIST's images are: 28x28 uint8,
    light on black, in a 20x20 box, centred by mass; None when it holds no digit (blank, one colour, noise, a dot)"""
    return _prepare(image)[0]


def digit_image(o, prepare:bool=True) -> tuple:
    "`o` as the 28x28 uint8 the model sees (or None: no digit), and how many digits it holds side by side (0, 1, more)"
    row = hasattr(o, 'shape') and hasattr(o, 'ndim') and o.ndim == 1 and o.shape[0] == 784  # as the loaders serve it
    if prepare and not row: return _prepare(o)
    return np.asarray(as_pil_image(o).convert('L').resize((28, 28), Image.BILINEAR)), 1  # MNIST-like: resized whole


def digit_images(items, prepare:bool=True, counts:bool=False) -> tuple:
    "Each of `items` as `digit_image` makes it (blank: no digit), one at a time, and whether (`counts`: how many) found"
    images, digits = np.zeros((len(items), 28, 28), np.uint8), np.ones(len(items), np.int64)
    for i, o in enumerate(items):
        a, digits[i] = digit_image(o, prepare)
        if a is not None: images[i] = a
    return images, digits if counts else digits > 0
