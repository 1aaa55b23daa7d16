"""MNIST's real testing digits drawn as people's digits are (seeded, generated, never stored), and pictures holding no
digit; the test set of `prepare_digit` (tests/test_prepare.py)"""
import io

import numpy as np
from PIL import Image
from scipy import ndimage


def _upscale(img:np.ndarray, height:float) -> np.ndarray:
    "The 28x28 uint8 `img` scaled so its digit (20 pixels tall in MNIST) is `height` pixels tall: float ink 0..1"
    size = max(28, round(28*height/20))
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC), dtype=np.float32).clip(0, 255)/255


def _place(ink:np.ndarray, rng, canvas=None, where='any') -> np.ndarray:
    "`ink` at a random place of a zero canvas of `canvas` (h, w), wholly inside; `where='off'`: near an edge"
    h, w = canvas
    out = np.zeros((h, w), np.float32)
    # the ink's own 28x28 frame is 4 pixels of background around the 20x20 box: it may go past the canvas's edge
    m = ink.shape[0]*4//28
    ih, iw = ink.shape
    lo_y, hi_y, lo_x, hi_x = -m, h - ih + m, -m, w - iw + m
    if where == 'off':  # a corner region: the digit's centre in the outer third of both sides
        y = rng.integers(lo_y, max(lo_y, lo_y + (hi_y-lo_y)//4) + 1) if rng.random() < 0.5 else rng.integers(hi_y - (hi_y-lo_y)//4, hi_y+1)
        x = rng.integers(lo_x, max(lo_x, lo_x + (hi_x-lo_x)//4) + 1) if rng.random() < 0.5 else rng.integers(hi_x - (hi_x-lo_x)//4, hi_x+1)
    else: y, x = rng.integers(lo_y, hi_y+1), rng.integers(lo_x, hi_x+1)
    ys, xs = slice(max(0, y), min(h, y+ih)), slice(max(0, x), min(w, x+iw))
    out[ys, xs] = ink[ys.start-y:ys.stop-y, xs.start-x:xs.stop-x]
    return out


def _canvas_for(rng, frac_lo=0.4, frac_hi=0.9, lo=100, hi=500):
    "A canvas height and width of `lo`-`hi` pixels and the digit's height, `frac_lo`-`frac_hi` of the canvas's"
    h = int(rng.integers(lo, hi+1))
    height = h*rng.uniform(frac_lo, frac_hi)
    w = int(max(rng.integers(lo, hi+1), height*1.1))
    return (h, w), height


def _jpeg(a:np.ndarray, quality:int) -> Image.Image:
    "`a` (uint8) through JPEG compression at `quality`"
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format='JPEG', quality=quality)
    buf.seek(0)
    return Image.open(buf).convert('RGB' if a.ndim == 3 else 'L')


def _u8(a): return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def ink_on_white(img, rng) -> Image.Image:
    "Dark ink on a white canvas of 100-500 pixels, the digit 40-90% of its height, at a random place"
    canvas, height = _canvas_for(rng)
    ink = _place(_upscale(img, height), rng, canvas)
    return Image.fromarray(_u8(255 - ink*(255 - rng.uniform(0, 60))))


def colour_jpeg(img, rng) -> Image.Image:
    "Coloured ink on coloured paper, JPEG-compressed"
    canvas, height = _canvas_for(rng)
    ink = _place(_upscale(img, height), rng, canvas)[..., None]
    paper = rng.uniform(150, 255, 3)
    while True:
        colour = rng.uniform(0, 255, 3)
        if np.linalg.norm(colour - paper) > 150: break
    return _jpeg(_u8(paper*(1-ink) + colour*ink), int(rng.integers(60, 90)))


def thick(img, rng) -> Image.Image:
    "Dark ink on white in thick strokes, as a marker draws: the digit dilated"
    canvas, height = _canvas_for(rng)
    ink = _upscale(img, height)
    r = max(1, round(height*rng.uniform(0.03, 0.06)))
    dist = ndimage.distance_transform_edt(np.pad(ink, r) < 0.5)  # every pixel within `r` of the ink becomes ink
    ink = np.maximum(np.pad(ink, r), np.clip(r + 1 - dist, 0, 1))
    ink = _place(ink, rng, (max(canvas[0], ink.shape[0]), max(canvas[1], ink.shape[1])))
    return Image.fromarray(_u8(255 - ink*220))


def photo(img, rng) -> Image.Image:
    "A phone photo of paper: dark ink, shading across the page, noise, slightly tinted, JPEG-compressed"
    canvas, height = _canvas_for(rng)
    ink = _place(_upscale(img, height), rng, canvas)
    h, w = canvas
    yy, xx = np.arange(h, dtype=np.float32)[:, None]/max(h, w), np.arange(w, dtype=np.float32)/max(h, w)
    angle = rng.uniform(0, 2*np.pi)
    along = np.float32(np.cos(angle))*yy + np.float32(np.sin(angle))*xx
    shade = 1 - np.float32(rng.uniform(0.25, 0.45))*(along - along.min())
    paper = 235*shade[..., None]*np.array([1, rng.uniform(0.93, 1), rng.uniform(0.85, 1)], np.float32)
    ink_colour = rng.uniform(20, 70)
    noise = rng.standard_normal((h, w, 1), dtype=np.float32)*rng.uniform(5, 12)
    return _jpeg(_u8(paper*(1 - ink[..., None]) + ink_colour*ink[..., None] + noise), int(rng.integers(70, 92)))


def transparent_png(img, rng) -> Image.Image:
    "A web canvas's export: black ink on a transparent background (ink is alpha), through PNG"
    canvas, height = _canvas_for(rng)
    ink = _place(_upscale(img, height), rng, canvas)
    rgba = np.zeros((*canvas, 4), np.uint8)
    rgba[..., 3] = _u8(ink*255)
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format='PNG')
    buf.seek(0)
    return Image.open(buf)


def small_light_on_dark(img, rng) -> Image.Image:
    "A small light digit (12-25% of the height) off-centre on a large dark canvas of 300-500 pixels"
    canvas, height = _canvas_for(rng, 0.12, 0.25, 300, 500)
    ink = _place(_upscale(img, height), rng, canvas, where='off')
    bg, fg = rng.uniform(0, 50), rng.uniform(180, 255)
    return Image.fromarray(_u8(bg + ink*(fg - bg)))


def _shaded(ink:np.ndarray, rng, shadow:np.ndarray) -> Image.Image:
    """`ink` in dark ink on paper of a random brightness (120-250, slightly tinted), darkened as a phone photo is where
    `shadow` is 1 (0: lit) by 60-120 grey levels of the paper (at most 60% of its brightness), noisy, JPEG-compressed"""
    h, w = ink.shape
    paper = rng.uniform(120, 250)
    depth = min(rng.uniform(60, 120), 0.6*paper)
    tint = np.array([1, rng.uniform(0.93, 1), rng.uniform(0.85, 1)], np.float32)
    page = paper - (paper - rng.uniform(20, 70))*ink  # light falls on paper and ink alike: shadows multiply both
    noise = rng.standard_normal((h, w, 1), dtype=np.float32)*rng.uniform(3, 8)
    return _jpeg(_u8((page*(1 - depth/paper*shadow))[..., None]*tint + noise), int(rng.integers(75, 92)))


def _ramp(u:np.ndarray, rng) -> np.ndarray:
    """A shadow's edge: 1 (shadowed) where `u` (0 at the shadowed side, 1 across the picture) is below 0.2-0.5 of the
    picture, falling to 0 (lit) over 0.1-0.4 of it"""
    end, width = rng.uniform(0.2, 0.5), rng.uniform(0.1, 0.4)
    return np.clip((end - u)/width, 0, 1)


def _shadowed_digit(img, rng):
    "`img` placed on a canvas as `ink_on_white` places it, and the canvas's coordinates in 0..1: y (a column), x (a row)"
    canvas, height = _canvas_for(rng)
    ink = _place(_upscale(img, height), rng, canvas)
    return ink, np.linspace(0, 1, canvas[0], dtype=np.float32)[:, None], np.linspace(0, 1, canvas[1], dtype=np.float32)


def shadow_side(img, rng) -> Image.Image:
    "A phone photo with a straight shadow over one side (its edge tilted up to 20 degrees), on paper of any brightness"
    ink, yy, xx = _shadowed_digit(img, rng)
    side, tilt = rng.integers(4), rng.uniform(-0.35, 0.35)
    u = [yy, 1 - yy, xx, 1 - xx][side] + tilt*([xx, xx, yy, yy][side] - 0.5)
    return _shaded(ink, rng, _ramp(u, rng))


def shadow_corner(img, rng) -> Image.Image:
    "A phone photo with a straight shadow over one corner, on paper of any brightness"
    ink, yy, xx = _shadowed_digit(img, rng)
    ys, xs = (yy, 1 - yy)[rng.integers(2)], (xx, 1 - xx)[rng.integers(2)]
    t = rng.uniform(0.3, 0.7)  # the edge's direction: its weight on the vertical
    return _shaded(ink, rng, _ramp(t*ys + (1-t)*xs, rng))


def shadow_curved(img, rng) -> Image.Image:
    "A phone photo with a round-edged shadow, its centre beyond a side or a corner, on paper of any brightness"
    ink, yy, xx = _shadowed_digit(img, rng)
    cy, cx = [(-0.4, -0.4), (-0.4, 0.5), (-0.4, 1.4), (0.5, 1.4), (1.4, 1.4), (1.4, 0.5), (1.4, -0.4), (0.5, -0.4)
              ][rng.integers(8)] + rng.uniform(-0.15, 0.15, 2)
    r = np.sqrt((yy - np.float32(cy))**2 + (xx - np.float32(cx))**2)
    return _shaded(ink, rng, _ramp(r - r.min(), rng))


RENDERINGS = dict(ink_on_white=ink_on_white, colour_jpeg=colour_jpeg, thick=thick, photo=photo,
                  transparent_png=transparent_png, small_light_on_dark=small_light_on_dark,
                  shadow_side=shadow_side, shadow_corner=shadow_corner, shadow_curved=shadow_curved)


def render(images, kind:str, seed:int) -> list:
    "Each 28x28 uint8 image of `images` drawn as `kind` (a name in `RENDERINGS`), seeded"
    rng = np.random.default_rng(seed)
    return [RENDERINGS[kind](np.asarray(im), rng) for im in images]


def no_digit_images(seed:int=0) -> dict:
    "Pictures that hold no digit: blank pages, uniform colours, pure noise, an empty canvas, a photo of blank paper"
    rng = np.random.default_rng(seed)
    h, w = 240, 320
    out = {'white': np.full((h, w), 255, np.uint8), 'black': np.zeros((h, w), np.uint8),
           'grey 28x28': np.full((28, 28), 128, np.uint8), 'zeros 28x28 float': np.zeros((28, 28), np.float32)}
    for i in range(3): out[f'uniform colour {i}'] = np.broadcast_to(_u8(rng.uniform(0, 255, 3)), (h, w, 3)).copy()
    out['gaussian noise'] = _u8(rng.normal(128, 40, (h, w)))
    out['uniform noise'] = _u8(rng.uniform(0, 256, (h, w)))
    out['colour noise'] = _u8(rng.uniform(0, 256, (h, w, 3)))
    out['noise 28x28'] = _u8(rng.uniform(0, 256, (28, 28)))
    for i, n in enumerate((4, 7, 11)):  # smooth blobs of any grey: light varying more than a shadow's
        blobs = Image.fromarray(rng.uniform(0, 256, (n, n)).astype(np.float32)).resize((w, h), Image.BICUBIC)
        out[f'smooth blobs {i}'] = _u8(np.asarray(blobs))
    sp = np.full((h, w), 200, np.uint8)
    sp[rng.random((h, w)) < 0.03] = 0
    sp[rng.random((h, w)) < 0.03] = 255
    out['salt and pepper'] = sp
    yy = np.linspace(0, 1, h)[:, None]
    out['photo of blank paper'] = np.asarray(_jpeg(_u8(235 - 80*yy + rng.normal(0, 8, (h, w))), 80))
    out['jpeg of white'] = np.asarray(_jpeg(np.full((h, w, 3), 250, np.uint8), 50))
    out['empty transparent canvas'] = Image.fromarray(np.zeros((h, w, 4), np.uint8))
    return out
