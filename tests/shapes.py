"""Pictures that are not digits, drawn as a person draws on the page's canvas (seeded, generated, never stored): letters
drawn with lines, scribbles, rings, crosses, single dots, short strokes and noise; what the pair check is tried on
(tests/test_pair_check.py, benchmarks/pair_check_bench.py)"""
import numpy as np
from PIL import Image, ImageDraw

CANVAS = 280  # the page's canvas, pixels a side

LETTERS = {  # letters drawn with straight lines, in a unit box (x right, y down), one polyline per list
    'A': [[(0, 1), (0.5, 0), (1, 1)], [(0.22, 0.6), (0.78, 0.6)]],
    'E': [[(1, 0), (0, 0), (0, 1), (1, 1)], [(0, 0.5), (0.75, 0.5)]],
    'F': [[(1, 0), (0, 0), (0, 1)], [(0, 0.5), (0.75, 0.5)]],
    'H': [[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(0, 0.5), (1, 0.5)]],
    'K': [[(0, 0), (0, 1)], [(1, 0), (0, 0.55), (1, 1)]],
    'M': [[(0, 1), (0, 0), (0.5, 0.6), (1, 0), (1, 1)]],
    'N': [[(0, 1), (0, 0), (1, 1), (1, 0)]],
    'W': [[(0, 0), (0.25, 1), (0.5, 0.35), (0.75, 1), (1, 0)]],
}


def _pen(rng) -> int: return int(rng.integers(8, 25))  # the brush's width, as a person picks it


def _box(rng, aspect:float=1.0) -> tuple:
    "A random box for a shape: 40-90% of the canvas's height, `aspect` (width/height) jittered, wholly inside"
    h = CANVAS*rng.uniform(0.4, 0.9)
    w = min(CANVAS*0.95, h*aspect*rng.uniform(0.75, 1.25))
    x0, y0 = rng.uniform(5, CANVAS - w - 5), rng.uniform(5, CANVAS - h - 5)
    return x0, y0, w, h


def _wobble(points, rng, w:float, h:float) -> list:
    "Points in a unit box placed in a box of `w`x`h`, each moved a little, as a hand draws"
    return [(x*w + rng.normal(0, 0.03*w), y*h + rng.normal(0, 0.03*h)) for x, y in points]


def _canvas(draw_fn, rng) -> Image.Image:
    "Black ink drawn by `draw_fn(draw, rng)` on a white canvas"
    im = Image.new('L', (CANVAS, CANVAS), 255)
    draw_fn(ImageDraw.Draw(im), rng)
    return im


def letter(rng, name:str|None=None) -> Image.Image:
    "One of `LETTERS`, drawn with a pen, each line a little off"
    name = name or str(rng.choice(list(LETTERS)))
    x0, y0, w, h = _box(rng, 0.8)
    pen = _pen(rng)
    def draw(d, rng):
        for line in LETTERS[name]:
            d.line([(x0 + x, y0 + y) for x, y in _wobble(line, rng, w, h)], fill=0, width=pen, joint='curve')
    return _canvas(draw, rng)


def scribble(rng) -> Image.Image:
    "A random smooth scrawl through 5-10 points of its box"
    x0, y0, w, h = _box(rng, 1.0)
    pts = rng.uniform(0, 1, (int(rng.integers(5, 11)), 2))
    t = np.linspace(0, 1, len(pts))
    tt = np.linspace(0, 1, 200)
    curve = [(x0 + np.interp(s, t, pts[:, 0])*w, y0 + np.interp(s, t, pts[:, 1])*h) for s in tt]
    pen = _pen(rng)
    return _canvas(lambda d, rng: d.line(curve, fill=0, width=pen, joint='curve'), rng)


def ring(rng) -> Image.Image:
    "An ellipse's outline"
    x0, y0, w, h = _box(rng, rng.uniform(0.6, 1.4))
    pen = _pen(rng)
    return _canvas(lambda d, rng: d.ellipse([x0, y0, x0 + w, y0 + h], outline=0, width=pen), rng)


def cross(rng) -> Image.Image:
    "A plus or a saltire (x): two crossing lines"
    x0, y0, w, h = _box(rng, 1.0)
    lines = [[(0.5, 0), (0.5, 1)], [(0, 0.5), (1, 0.5)]] if rng.random() < 0.5 else [[(0, 0), (1, 1)], [(1, 0), (0, 1)]]
    pen = _pen(rng)
    def draw(d, rng):
        for line in lines: d.line([(x0 + x, y0 + y) for x, y in _wobble(line, rng, w, h)], fill=0, width=pen)
    return _canvas(draw, rng)


def dot(rng) -> Image.Image:
    "A single click of the brush: a disc as wide as the pen"
    r = _pen(rng)/2
    x, y = rng.uniform(r + 5, CANVAS - r - 5, 2)
    return _canvas(lambda d, rng: d.ellipse([x - r, y - r, x + r, y + r], fill=0), rng)


def dash(rng) -> Image.Image:
    "A stroke too short to be a digit: 1-2 times as long as the pen is wide, any direction"
    pen = _pen(rng)
    length, a = pen*rng.uniform(1, 2), rng.uniform(0, np.pi)
    x, y = rng.uniform(60, CANVAS - 60, 2)
    dx, dy = np.cos(a)*length/2, np.sin(a)*length/2
    return _canvas(lambda d, rng: d.line([(x - dx, y - dy), (x + dx, y + dy)], fill=0, width=pen), rng)


def noise(rng) -> Image.Image:
    "Random pixels, smooth blobs or speckle on the canvas"
    kind = rng.integers(3)
    if kind == 0: a = rng.uniform(0, 256, (CANVAS, CANVAS))
    elif kind == 1:
        small = rng.uniform(0, 256, (int(rng.integers(4, 12)),)*2).astype(np.float32)
        a = np.asarray(Image.fromarray(small).resize((CANVAS, CANVAS), Image.BICUBIC))
    else: a = np.where(rng.random((CANVAS, CANVAS)) < rng.uniform(0.02, 0.3), 0, 255)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


SHAPES = dict(letters=letter, scribbles=scribble, rings=ring, crosses=cross, dots=dot, dashes=dash, noise=noise)


def shapes(kind:str, n:int, seed:int=0) -> list:
    "`n` pictures of `kind` (a name in `SHAPES`), seeded"
    rng = np.random.default_rng(seed)
    return [SHAPES[kind](rng) for _ in range(n)]
