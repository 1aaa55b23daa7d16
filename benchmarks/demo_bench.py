"""How fast the draw-a-digit page answers, for the linear (0 vs 1) and the cnn (4 vs 8) models on the CPU:
1. in headless Chromium, from releasing the mouse to the new probabilities on the page (median and 90th percentile of
   20 strokes; target: median at most 250 ms, 90th percentile at most 400 ms), timed inside the page itself;
2. the server's own steps for one stroke: the strokes drawn again, `prepare_digit` + model + activation, the picture;
3. the API's `/predict` through HTTP with `gradio_client` (upload, queue, answer, picture).
Run: `python benchmarks/demo_bench.py` (needs the `demo` extra, Playwright and Debian's chromium)."""
import argparse, math, os, socket, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import torch

from fastai_binary_digits import BinaryDigitsDataLoaders, binary_learner
from fastai_binary_digits.demo import CANVAS, DigitReader, strokes_image, _picture_file

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = '/usr/bin/chromium'  # Debian's package: Playwright never downloads a browser here
_T = lambda n: [2*math.pi*i/(n-1) for i in range(n)]
STROKES = {  # one stroke per digit, as a person draws it, in 0..1 of the canvas
    '1': [(0.5, 0.15), (0.5, 0.3), (0.5, 0.5), (0.5, 0.7), (0.5, 0.85)],
    '0': [(0.5 + 0.25*math.sin(t), 0.5 - 0.33*math.cos(t)) for t in _T(40)],
    '4': [(0.38, 0.12), (0.22, 0.58), (0.78, 0.58), (0.62, 0.58), (0.62, 0.15), (0.62, 0.88)],
    '8': [(0.5 + 0.4*math.sin(t)*math.cos(t), 0.5 - 0.36*math.sin(t)) for t in _T(48)],
}
# In the page: the time of each pointer release on the canvas and of each answer (the probabilities' heading appearing)
_WATCH = '''() => { window.ups = []; window.answers = [];
  document.querySelector('#pad canvas').addEventListener('pointerup', () => window.ups.push(performance.now()));
  const probs = document.querySelector('#probs');
  new MutationObserver(() => { if (probs.querySelector('[data-testid="label-output-value"]'))
    window.answers.push(performance.now()); }).observe(probs, {subtree: true, childList: true, characterData: true});
}'''


def median_ms(f, n:int) -> float:
    f()  # warm up
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return 1000*statistics.median(ts)


def points(digit:str) -> list: return [[round(CANVAS*v) for p in STROKES[digit] for v in p]]


def server_side(learn, n:int) -> dict:
    "Median ms of each server step for one stroke: the strokes drawn again, preparation + model, the picture's file"
    read, folder = DigitReader(learn), Path(tempfile.mkdtemp())
    res = {}
    for digit in map(str, learn.dls.vocab):
        image = strokes_image(points(digit))
        r = read(image)
        x = torch.from_numpy(r.x28).float().div(255).view(1, 28*28)
        def model():
            with torch.inference_mode(): return read.activation(learn.model(x))
        steps = dict(draw=lambda: strokes_image(points(digit)), prepare=lambda: read(image), model=model,
                     picture=lambda: _picture_file(r.x28, folder))
        res[digit] = {k: median_ms(f, n) for k, f in steps.items()}
        res[digit]['answer'] = max(r.probs, key=r.probs.get)
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def serve(model:Path, port:int, log:Path) -> subprocess.Popen:
    "`fastai-binary-digits demo MODEL --port PORT` in its own process, as a person starts it"
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    proc = subprocess.Popen([sys.executable, '-m', 'fastai_binary_digits', 'demo', str(model), '--port', str(port)],
                            env=env, stdout=log.open('w'), stderr=subprocess.STDOUT)
    while proc.poll() is None:
        if 'Running on local URL' in log.read_text(): return proc
        time.sleep(0.2)
    raise RuntimeError(f"the server did not start:\n{log.read_text()[-2000:]}")


def in_browser(url:str, digits:tuple, n:int) -> list:
    "Seconds from each stroke's mouse release to the new probabilities on the page, `n` strokes of the pair's digits"
    from playwright.sync_api import sync_playwright, expect
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu'])
        page = browser.new_page(viewport={'width': 1100, 'height': 900})
        page.goto(url)
        page.wait_for_selector('#pad canvas')
        page.evaluate(_WATCH)
        box = page.locator('#pad canvas').bounding_box()
        heading = page.locator('#probs [data-testid="label-output-value"]')
        times = []
        for i in range(n + 1):  # the first stroke warms up
            page.click('#clear')
            expect(heading).to_have_count(0)
            ups = page.evaluate('window.ups.length')
            m, stroke = page.mouse, STROKES[str(digits[i % 2])]
            m.move(box['x'] + stroke[0][0]*box['width'], box['y'] + stroke[0][1]*box['height'])
            m.down()
            for x, y in stroke[1:]: m.move(box['x'] + x*box['width'], box['y'] + y*box['height'])
            m.up()
            expect(heading).to_have_count(1)
            up, answers = page.evaluate(f'[window.ups[{ups}], window.answers]')
            if i: times.append((min(a for a in answers if a > up) - up)/1000)
        browser.close()
    return times


def round_trip(url:str, png:Path, n:int) -> float:
    "Median ms of the API's `/predict` through HTTP on 127.0.0.1 (upload, queue, answer, picture), with `gradio_client`"
    from gradio_client import Client, handle_file
    client = Client(url, verbose=False)
    return median_ms(lambda: client.predict(handle_file(str(png)), api_name='/predict'), n)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--n', type=int, default=20, help='strokes timed in the browser per model')
    p.add_argument('--threads', type=int, default=1, help="torch threads of the server-side steps (0: torch's choice)")
    args = p.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    print(f"Chromium: mouse release to new probabilities, {args.n} strokes (target: median <= 250 ms, "
          f"90th percentile <= 400 ms); server steps: median of 50, {torch.get_num_threads()} torch thread(s)")
    print(f"{'model':<8}{'median':>8}{'p90':>8}{'max':>8}  |{'drawn':>6}{'answer':>7}{'draw':>7}{'prepare+model':>15}"
          f"{'(model)':>9}{'picture':>9}  | API /predict")
    for arch, pair in (('linear', (0, 1)), ('cnn', (4, 8))):
        dls = BinaryDigitsDataLoaders.from_mnist(pair=pair, sample=True, seed=0, device='cpu')
        learn = binary_learner(dls, arch, seed=0)
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(3, 0.1 if arch == 'linear' else 0.3)
        learn.export(tmp/f'{arch}.safetensors')
        steps = server_side(learn, 50)
        strokes_image(points(str(pair[1]))).save(tmp/'digit.png')
        proc = serve(tmp/f'{arch}.safetensors', port := free_port(), tmp/'server.log')
        try:
            url = f'http://127.0.0.1:{port}/'
            ts = in_browser(url, pair, args.n)
            api = round_trip(url, tmp/'digit.png', 10)
        finally: proc.terminate(); proc.wait(20)
        q = statistics.quantiles(ts, n=10)
        for k, (d, t) in enumerate(steps.items()):
            head = (f"{arch:<8}{1000*statistics.median(ts):>6.0f}ms{1000*q[8]:>6.0f}ms{1000*max(ts):>6.0f}ms" if k == 0
                    else ' '*32)
            tail = f"  | {api:.0f} ms" if k == 0 else ''
            print(f"{head}  |{d:>6}{t['answer']:>7}{t['draw']:>6.1f} {t['prepare']:>13.1f} {t['model']:>9.2f}"
                  f"{t['picture']:>8.1f}{tail}")


if __name__ == '__main__': main()
