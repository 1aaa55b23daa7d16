"""Hostile pictures against the bounds of `as_pil_image`, each measured in a fresh process (peak resident memory from
the process's own `getrusage`), against its targets:

(a) the 160-megapixel strip (a 4 x 40,000,000 PNG of about 156 KB) and a 13,000 x 13,000 16-bit PNG, each refused in
    under 0.5 s and under 300 MB: through `as_pil_image` (the door the page uses) in a process holding only the image
    module, and through `learn.predict` and the command line's `predict` in a process that has loaded the model and
    answered a good picture first (what the refusal adds to that);
(a') the largest picture read (49 megapixels, 16 bits a pixel) through `prepare_digit`: the bound on memory;
(b) a FIFO and a 1x600 JPEG among good pictures on the command line: one error line each, the good ones answered;
    the time each refusal takes, as `predict` reads it;
(c) 200 photos of 2000 x 2000 in one `predict`, under 1.5 GB: the process's peak memory against one photo's, for PNG
    (decoded whole) and JPEG (decoded at a quarter of its size); and through `test_dl` in the Python API.

    python benchmarks/hostile_bench.py                   # about two minutes on two cores
    python benchmarks/hostile_bench.py --baseline DIR    # (c) also with the package of another checkout, such as main
"""
from __future__ import annotations
import argparse, io, json, os, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'benchmarks'))

# The process's peak resident memory, MB: Linux's VmHWM, which starts afresh at `exec` (`getrusage`'s `ru_maxrss` would
# carry the parent's peak into the child)
RSS = ("rss = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])/1024\n")
DOOR = RSS + """
import json, sys, time
from fastai_binary_digits.images import as_pil_image
before, times = rss(), []
for _ in range(2):  # the first call also imports PIL's readers
    t = time.perf_counter()
    try: as_pil_image(sys.argv[1]); err = None
    except Exception as e: err = f'{type(e).__name__}: {e}'
    times.append(time.perf_counter() - t)
print(json.dumps(dict(seconds=times[0], again=times[1], before=before, peak=rss(), error=err)))
"""
PREPARE = RSS + """
import json, sys, time
from fastai_binary_digits import prepare_digit
before, t = rss(), time.perf_counter()
a = prepare_digit(sys.argv[1])
print(json.dumps(dict(seconds=time.perf_counter() - t, before=before, peak=rss(), found=a is not None)))
"""
PREDICT = RSS + """
import json, sys, time, warnings
warnings.simplefilter('ignore')
from fastai_binary_digits import load_model_file
learn = load_model_file(sys.argv[1])
learn.predict(sys.argv[2])  # a good picture first: the model, torch and fastai are in memory
before, t = rss(), time.perf_counter()
try: learn.predict(sys.argv[3]); err = None
except Exception as e: err = f'{type(e).__name__}: {e}'
print(json.dumps(dict(seconds=time.perf_counter() - t, before=before, peak=rss(), error=err)))
"""
CLI = RSS + """
import contextlib, io, json, sys, time
from fastai_binary_digits.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    main(['predict', sys.argv[1], sys.argv[2]])  # a good picture first
    before, t = rss(), time.perf_counter()
    code = main(['predict', sys.argv[1], *sys.argv[3:]])
    seconds = time.perf_counter() - t
print(json.dumps(dict(seconds=seconds, before=before, peak=rss(), code=code, err=err.getvalue().splitlines()[-1:],
                      out=len(out.getvalue().splitlines()))))
"""
MANY = RSS + """
import contextlib, io, json, sys, time
from fastai_binary_digits.cli import main
out, err = io.StringIO(), io.StringIO()
t = time.perf_counter()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = main(['predict', *sys.argv[1:]])
print(json.dumps(dict(seconds=time.perf_counter() - t, peak=rss(), code=code, answers=len(out.getvalue().splitlines()),
                      errors=err.getvalue().splitlines()[:3])))
"""
TEST_DL = RSS + """
import json, sys, time, warnings
warnings.simplefilter('ignore')
from fastai_binary_digits import load_model_file
learn = load_model_file(sys.argv[1])
t = time.perf_counter()
probs = learn.get_preds(dl=learn.dls.test_dl(sys.argv[2:]))[0]
print(json.dumps(dict(seconds=time.perf_counter() - t, peak=rss(), answers=len(probs))))
"""
REFUSE = """
import json, sys, time
from fastai_binary_digits.prepare import digit_image
res = {}
for fn in sys.argv[1:]:
    t = time.perf_counter()
    try: digit_image(fn); res[fn] = 'read'
    except Exception as e: res[fn] = f'{type(e).__name__}'
    res[fn] = (res[fn], time.perf_counter() - t)
print(json.dumps(res))
"""


def child(code:str, *args, package:Path=ROOT, timeout:float=600) -> dict:
    "Run `code` in a fresh Python with `package`'s fastai_binary_digits; the JSON it prints last"
    env = {**os.environ, 'PYTHONPATH': str(package)}
    res = subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True, text=True, env=env,
                         timeout=timeout, cwd=package)
    if res.returncode: raise RuntimeError(f'the child failed:\n{res.stderr[-3000:]}')
    return json.loads(res.stdout.splitlines()[-1])


def make_files(d:Path) -> dict:
    "The hostile pictures, real ones (written in a child: the strip alone is 160 MB of pixels), and a good one"
    code = """
import sys
from PIL import Image
d = sys.argv[1]
Image.new('L', (4, 40_000_000), 255).save(f'{d}/strip.png', optimize=True)
Image.new('I;16', (13_000, 13_000), 1000).save(f'{d}/big16.png')
Image.new('L', (1, 600), 128).save(f'{d}/thin.jpg')
big = Image.new('I;16', (7_000, 7_000), 60_000)  # the largest read: 49 megapixels, 16 bits, a dark digit-like bar
big.paste(5_000, (3_000, 1_500, 4_000, 5_500))
big.save(f'{d}/large16.png')
"""
    subprocess.run([sys.executable, '-c', code, str(d)], check=True)
    os.mkfifo(d/'fifo.png')
    return {n: d/n for n in ('strip.png', 'big16.png', 'thin.jpg', 'fifo.png', 'large16.png')}


def make_model(d:Path) -> tuple:
    "A linear 4-vs-8 model trained for a few epochs on the bundled sample, and two of its testing digits as PNGs"
    from PIL import Image
    from fastai_binary_digits import BinaryDigitsDataLoaders, binary_learner
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=0, device='cpu')
    learn = binary_learner(dls, seed=0)
    with learn.no_bar(), learn.no_logging(): learn.fit(3, 0.1)
    learn.export(d/'model.safetensors')
    x = dls.valid.dataset.x[:2].view(-1, 28, 28).mul(255).byte().numpy()
    for i, a in enumerate(x): Image.fromarray(a).save(d/f'good{i}.png')
    return d/'model.safetensors', d/'good0.png', d/'good1.png', x[0]


def make_photos(d:Path, digit:np.ndarray, n:int) -> dict:
    "`n` names (hard links) of one 2000 x 2000 photo of a digit, as PNG and as JPEG"
    from PIL import Image
    from prepare_bench import photo
    im = Image.open(io.BytesIO(photo(digit, size=2000)))
    res = {}
    for fmt in ('png', 'jpg'):
        (d/fmt).mkdir()
        first = d/fmt/f'photo0.{fmt}'
        im.save(first)
        for i in range(1, n): os.link(first, d/fmt/f'photo{i}.{fmt}')
        res[fmt] = sorted((d/fmt).iterdir(), key=lambda p: int(p.stem[5:]))
    return res


def line(what:str, r:dict, target_s:float|None=None, target_mb:float|None=None) -> str:
    grew = f", {r['peak'] - r['before']:,.0f} MB above the {r['before']:,.0f} MB before it" if 'before' in r else ''
    ok = ''
    if target_s is not None:
        ok = '  OK' if r['seconds'] < target_s and r['peak'] - r.get('before', 0) < target_mb else '  OVER'
    again = f" (again: {r['again']*1000:.1f} ms)" if 'again' in r else ''
    return f"  {what:<34} {r['seconds']*1000:7.1f} ms{again}, peak {r['peak']:,.0f} MB{grew}{ok}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--photos', type=int, default=200, help='photos of 2000 x 2000 in one predict')
    p.add_argument('--baseline', metavar='DIR', help='a checkout holding another fastai_binary_digits, for (c)')
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        files = make_files(d)
        model, good, good1, digit = make_model(d)
        print(f"(a) refused from the header: the strip ({files['strip.png'].stat().st_size/1e3:,.0f} KB on disk), "
              f"the 16-bit 13,000 x 13,000 ({files['big16.png'].stat().st_size/1e3:,.0f} KB); target 0.5 s, 300 MB")
        for name in ('strip.png', 'big16.png'):
            fn = files[name]
            door = child(DOOR, fn)
            print(line(f'{name}: as_pil_image', door, 0.5, 300), '\n   ', door['error'])
            print(line(f'{name}: learn.predict', child(PREDICT, model, good, fn), 0.5, 300))
            cli = child(CLI, model, good, fn)
            print(line(f'{name}: command line predict', cli, 0.5, 300), '\n   ', cli['err'])
        r = child(PREPARE, files['large16.png'])
        print(f"(a') the largest picture read, a 7,000 x 7,000 16-bit PNG (49 megapixels), through prepare_digit: "
              f"{r['seconds']:.2f} s, peak {r['peak']:,.0f} MB ({r['before']:,.0f} MB before it); digit found: {r['found']}")
        print("(b) a FIFO and a 1x600 JPEG among good pictures on the command line")
        bad = [files['fifo.png'], files['thin.jpg']]
        res = subprocess.run([sys.executable, '-m', 'fastai_binary_digits', 'predict', model, good, *bad, good1],
                             capture_output=True, text=True, timeout=300, env={**os.environ, 'PYTHONPATH': str(ROOT)})
        print(f"  exit status {res.returncode}; stdout:", *res.stdout.splitlines(), 'stderr:', *res.stderr.splitlines(),
              sep='\n    ')
        for fn, (what, s) in child(REFUSE, *bad).items(): print(f"  {Path(fn).name}: {what} in {s*1000:.1f} ms")
        print(f"(c) {args.photos} photos of 2000 x 2000 in one predict; target 1.5 GB")
        photos = make_photos(d, digit, args.photos)
        for label, package in [('this checkout', ROOT)] + ([(f'baseline {args.baseline}', Path(args.baseline))]
                                                          if args.baseline else []):
            for fmt, fns in photos.items():
                one, many = child(MANY, model, fns[0], package=package), child(MANY, model, *fns, package=package)
                print(f"  {label}, {fmt.upper()}: 1 photo peak {one['peak']:,.0f} MB; {len(fns)} photos peak "
                      f"{many['peak']:,.0f} MB ({many['answers']} answers, {many['seconds']:.1f} s), "
                      f"{'OK' if many['peak'] < 1536 else 'OVER'}; ratio {many['peak']/one['peak']:.2f}")
        for fmt, fns in photos.items():
            one, many = child(TEST_DL, model, fns[0]), child(TEST_DL, model, *fns)
            print(f"  test_dl, {fmt.upper()}: 1 photo peak {one['peak']:,.0f} MB; {len(fns)} photos peak "
                  f"{many['peak']:,.0f} MB ({many['answers']} answers, {many['seconds']:.1f} s); "
                  f"ratio {many['peak']/one['peak']:.2f}")


if __name__ == '__main__': main()
