"""How long the demo's server takes from a stroke to the updated probabilities, for the linear and the cnn models on
the CPU: the canvas as Gradio's Sketchpad sends it (280x280 PNGs) is decoded, prepared (`prepare_digit`), run through
the model with the loss's activation, and the answer encoded for the page. Also the whole round trip of the API's
`/predict` through HTTP on this machine. Run: `python benchmarks/demo_bench.py` (needs the `demo` extra)."""
import argparse, math, statistics, tempfile, time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from fastai_binary_digits import BinaryDigitsDataLoaders, binary_learner
from fastai_binary_digits.demo import DigitReader, demo, demo_app, zoom

SIZE = 280   # the demo's canvas, in pixels
WIDTH = 24   # its brush: radius 12
_T = lambda n: [6.2832*i/(n-1) for i in range(n)]
STROKES = {  # what a person draws, in 0..1 of the canvas
    '1': [[(0.5, 0.15), (0.5, 0.85)]],
    '0': [[(0.5 + 0.25*math.sin(t), 0.5 - 0.33*math.cos(t)) for t in _T(40)]],
    '4': [[(0.38, 0.12), (0.22, 0.58), (0.78, 0.58)], [(0.62, 0.15), (0.62, 0.88)]],
    '8': [[(0.5 + 0.4*math.sin(t)*math.cos(t), 0.5 - 0.36*math.sin(t)) for t in _T(48)]],
}


def canvas(strokes) -> Image.Image:
    "Black strokes on a transparent 280x280 canvas, as the Sketchpad's layer and composite arrive"
    im = Image.new('RGBA', (SIZE, SIZE), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    for s in strokes: d.line([(x*SIZE, y*SIZE) for x, y in s], fill=(0, 0, 0, 255), width=WIDTH, joint='curve')
    return im


def median_ms(f, n:int) -> float:
    f()  # warm up
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return 1000*statistics.median(ts)


def server_side(learn, files:dict, n:int) -> dict:
    "Median ms of each server step for one stroke: Gradio's decoding, preparation + model, Gradio's encoding"
    from gradio.components.image_editor import EditorData
    from gradio.data_classes import FileData
    app = demo_app(learn)
    pad = next(b for b in app.blocks.values() if getattr(b, 'elem_id', None) == 'pad')
    probs = next(b for b in app.blocks.values() if getattr(b, 'elem_id', None) == 'probs')
    seen = next(b for b in app.blocks.values() if getattr(b, 'elem_id', None) == 'seen')
    read = DigitReader(learn)
    res = {}
    for digit, (layer, white) in files.items():
        payload = EditorData(background=FileData(path=str(white)), layers=[FileData(path=str(layer))],
                             composite=FileData(path=str(layer)))
        value = pad.preprocess(payload)
        p, x28 = read(value['composite'])
        x = torch.from_numpy(x28).float().div(255).view(1, 28*28)
        def model():
            with torch.inference_mode(): return read.activation(learn.model(x))
        steps = dict(decode=lambda: pad.preprocess(payload), prepare=lambda: read(value['composite']), model=model,
                     encode=lambda: (probs.postprocess(p), seen.postprocess(zoom(x28))))
        times = {k: median_ms(f, n) for k, f in steps.items()}
        times['answer'] = max(p, key=p.get)
        res[digit] = times
    return res


def round_trip(learn, png:Path, n:int) -> float:
    "Median ms of the API's `/predict` through HTTP on 127.0.0.1 (upload, queue, answer), with `gradio_client`"
    from gradio_client import Client, handle_file
    app = demo(learn, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(app.local_url, verbose=False)
        return median_ms(lambda: client.predict(handle_file(str(png)), api_name='/predict'), n)
    finally: app.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--n', type=int, default=50, help='strokes timed per case (the median is printed)')
    p.add_argument('--threads', type=int, default=1, help='torch threads (0: torch\'s own choice)')
    args = p.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    white = tmp/'white.png'
    Image.new('RGBA', (SIZE, SIZE), 'white').save(white)
    print(f"torch threads: {torch.get_num_threads()}; canvas {SIZE}x{SIZE}; median of {args.n} strokes; "
          "target: server side under 100 ms")
    print(f"{'model':<8}{'drawn':>6}{'answer':>8}{'decode':>9}{'prepare+model':>15}{'(model)':>9}{'encode':>9}"
          f"{'server side':>13}")
    for arch, pair in (('linear', (0, 1)), ('cnn', (4, 8))):
        dls = BinaryDigitsDataLoaders.from_mnist(pair=pair, sample=True, seed=0, device='cpu')
        learn = binary_learner(dls, arch, seed=0)
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(3, 0.1 if arch == 'linear' else 0.3)
        files = {}
        for d in map(str, pair):
            files[d] = (tmp/f'{d}.png', white)
            canvas(STROKES[d]).save(files[d][0])
        for d, t in server_side(learn, files, args.n).items():
            total = t['decode'] + t['prepare'] + t['encode']
            print(f"{arch:<8}{d:>6}{t['answer']:>8}{t['decode']:>8.1f} {t['prepare']:>13.1f} {t['model']:>9.2f}"
                  f"{t['encode']:>8.1f} {total:>11.1f} ms")
        print(f"{arch:<8} API /predict round trip through HTTP (upload + queue + answer): "
              f"{round_trip(learn, files[str(pair[1])][0], max(10, args.n//5)):.1f} ms")


if __name__ == '__main__': main()
