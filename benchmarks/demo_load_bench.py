"""The draw-a-digit page under a classroom's load: a `cnn` 3-vs-7 model served by `demo` in its own process, and
clients that speak to it as the page does (each stroke: one request through Gradio's queue with the drawing's points,
its answer read from the queue's event stream, then the 28x28 picture downloaded), all on this machine.
1. 30 clients each drawing once every 2 s (open loop: a stroke is sent on time whether or not the last was answered);
2. 30 clients drawing back to back (closed loop); 3. 30 clients uploading a PNG back to back through the API's
`/predict` (upload, queue, answer, picture); 4. a huge PNG (13,000 x 13,000), a 160-megapixel strip and a 49-megapixel
picture uploaded while a client keeps drawing: how long each takes, and the drawing client's latency meanwhile.
Prints per phase the requests sent and answered, errors (an answer lost, wrong, or with a picture that cannot be
downloaded whole), answers per second and latency percentiles; the server's memory and its temporary folder.
Run: `python benchmarks/demo_load_bench.py` (needs the `demo` extra; `--help` for the options)."""
import argparse, asyncio, io, json, math, os, random, shutil, socket, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
CANVAS = 280
_T = lambda n: [2*math.pi*i/(n-1) for i in range(n)]
DIGITS = {  # a 3 and a 7 as a person draws them, in 0..1 of the canvas
    '3': [[(0.5 + 0.25*math.sin(t), 0.3 - 0.16*math.cos(t)) for t in _T(20)[:16]] +
          [(0.5 + 0.27*math.sin(t), 0.68 - 0.2*math.cos(t)) for t in _T(20)[4:]]],
    '7': [[(0.25, 0.15), (0.5, 0.15), (0.75, 0.15), (0.62, 0.45), (0.5, 0.7), (0.42, 0.9)]],
}


def strokes(digit:str, rng:random.Random) -> list:
    "The points the page sends for `digit`, moved and scaled a little at random: each request a different drawing"
    s, dx, dy = rng.uniform(0.8, 1.1), rng.uniform(-0.08, 0.08), rng.uniform(-0.05, 0.05)
    return [[round(CANVAS*(0.5 + s*(v - 0.5) + (dy if i % 2 else dx))) for p in k for i, v in enumerate(p)]
            for k in DIGITS[digit]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def folder(d:Path) -> str:
    "How much the server's temporary folder holds"
    files = [f.stat().st_size for f in d.rglob('*') if f.is_file()]
    return f"{sum(files)/2**20:.1f} MB in {len(files)} files"


def rss_mb(pid:int) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'): return int(line.split()[1])/1024
    return float('nan')


class Page:
    "One client: a session of the page, its requests sent as the browser sends them"
    def __init__(self, http:httpx.AsyncClient, url:str, config:dict, rng:random.Random):
        self.http, self.url, self.rng = http, url, rng
        self.session = f'{rng.getrandbits(48):012x}'
        ids = {c['props'].get('elem_id'): c['id'] for c in config['components']}
        deps = {tuple(d['targets'][0]): d['id'] for d in config['dependencies'] if d['targets']}
        self.draw_fn, self.pad = deps[ids['pad'], 'draw'], ids['pad']
        self.predict_fn, self.upload_id = deps[ids['upload'], 'upload'], ids['upload']

    async def _call(self, fn:int, trigger:int, data:list) -> list:
        "Join the queue, read the answer from the session's event stream; the answer's data, or an error"
        r = await self.http.post(f'{self.url}gradio_api/queue/join', json=dict(
            data=data, event_data={}, fn_index=fn, trigger_id=trigger, session_hash=self.session))
        r.raise_for_status()
        event = r.json()['event_id']
        async with self.http.stream('GET', f'{self.url}gradio_api/queue/data',
                                    params={'session_hash': self.session}) as s:
            async for line in s.aiter_lines():
                if not line.startswith('data:'): continue
                msg = json.loads(line[5:])
                if msg.get('event_id') != event or msg.get('msg') != 'process_completed': continue
                if not msg.get('success'): raise RuntimeError(f"answered with an error: {msg.get('output')}")
                return msg['output']['data']
        raise RuntimeError('the event stream closed before the answer')

    async def _picture(self, seen:dict):
        "Download the 28x28 picture as the browser does; it must be a whole PNG"
        r = await self.http.get(seen['url'])
        r.raise_for_status()
        with Image.open(io.BytesIO(r.content)) as im:
            im.load()
            if im.size != (168, 168): raise RuntimeError(f"the picture is {im.size}, not 168x168")

    async def draw(self, digit:str) -> float:
        "One stroke's answer: seconds from sending it to the probabilities (then the picture is checked)"
        t = time.perf_counter()
        label, seen = await self._call(self.draw_fn, self.pad, [strokes(digit, self.rng)])
        dt = time.perf_counter() - t
        if label.get('label') not in ('3', '7'): raise RuntimeError(f"no answer for a drawn {digit}: {label}")
        await self._picture(seen)
        return dt

    async def predict(self, png:bytes, name:str='digit.png', check:bool=True):
        "One upload through `/predict` as `gradio_client` sends it: seconds to the answer (not `check`ed: and the answer)"
        t = time.perf_counter()
        r = await self.http.post(f'{self.url}gradio_api/upload', files={'files': (name, png, 'image/png')})
        r.raise_for_status()
        path = r.json()[0]
        label, seen = await self._call(self.predict_fn, self.upload_id, [dict(path=path, orig_name=name,
                                                                          meta={'_type': 'gradio.FileData'})])
        dt = time.perf_counter() - t
        if not check: return label, dt
        if label.get('label') not in ('3', '7'): raise RuntimeError(f"no answer for an uploaded digit: {label}")
        await self._picture(seen)
        return dt


def summary(name:str, times:list, errors:list, sent:int, seconds:float):
    q = statistics.quantiles(times, n=100) if len(times) > 1 else [float('nan')]*99
    print(f"{name:<40}{sent:>6}{len(times):>6}{len(errors):>7}{len(times)/seconds:>9.1f}"
          f"{1000*q[49]:>8.0f}{1000*q[94]:>8.0f}{1000*q[98]:>8.0f}{1000*max(times, default=float('nan')):>8.0f}")
    for e in sorted(set(errors))[:3]: print(f"    error: {e}")


async def open_loop(pages:list, seconds:float, every:float):
    "Each client sends a stroke every `every` s, whether or not its last one was answered"
    times, errors, tasks = [], [], []
    async def one(p, d):
        try: times.append(await p.draw(d))
        except Exception as e: errors.append(f'{type(e).__name__}: {e}'[:200])
    t0 = time.perf_counter()
    async def client(i, p):
        await asyncio.sleep(every*i/len(pages))  # spread over the period, as a classroom is
        k = 0
        while (t := t0 + every*(i/len(pages) + k)) < t0 + seconds:
            await asyncio.sleep(max(0, t - time.perf_counter()))
            tasks.append(asyncio.create_task(one(p, '37'[k % 2])))
            k += 1
    await asyncio.gather(*(client(i, p) for i, p in enumerate(pages)))
    await asyncio.gather(*tasks)
    return times, errors, len(tasks), time.perf_counter() - t0


async def closed_loop(pages:list, seconds:float, call):
    "Each client sends its next request as soon as the last is answered"
    times, errors, sent = [], [], [0]
    t0 = time.perf_counter()
    async def client(i, p):
        k = 0
        while time.perf_counter() - t0 < seconds:
            sent[0] += 1
            try: times.append(await call(p, '37'[(i + k) % 2]))
            except Exception as e: errors.append(f'{type(e).__name__}: {e}'[:200])
            k += 1
    await asyncio.gather(*(client(i, p) for i, p in enumerate(pages)))
    return times, errors, sent[0], time.perf_counter() - t0


def big_pngs(d:Path) -> dict:
    """A 13,000 x 13,000 PNG (169 megapixels) and a 4 x 40,000,000 strip, each a few hundred kB, to be refused; and a
    7 on a 7,000 x 7,000 photo-sized picture (49 megapixels, under the limit), answered after seconds of work"""
    out = {}
    for name, size in (('square_13000.png', (13_000, 13_000)), ('strip_4x40M.png', (4, 40_000_000))):
        Image.new('L', size, 255).save(d/name, compress_level=9)
    im = Image.new('RGB', (7000, 7000), (235, 235, 235))
    ImageDraw.Draw(im).line([(2000, 1500), (5000, 1500), (3000, 5500)], fill=(20, 20, 20), width=500)
    im.save(d/'photo_7000.png', compress_level=1)
    return {name: (d/name).read_bytes() for name in ('square_13000.png', 'strip_4x40M.png', 'photo_7000.png')}


async def big_uploads(url:str, config:dict, d:Path):
    "Each big upload sent while a client draws every 0.25 s: its time and answer, and the drawing client's latencies"
    async with httpx.AsyncClient(timeout=600) as http:
        rng = random.Random(1)
        drawer, sender = Page(http, url, config, rng), Page(http, url, config, rng)
        usual = [await drawer.draw('37'[k % 2]) for k in range(10)]
        print(f"a drawing client alone: median {1000*statistics.median(usual):.0f} ms, max {1000*max(usual):.0f} ms")
        for name, png in big_pngs(d).items():
            during, done = [], asyncio.Event()
            async def keep_drawing():
                while not done.is_set():
                    during.append(await drawer.draw('3'))
                    await asyncio.sleep(0.25)
            task = asyncio.create_task(keep_drawing())
            t = time.perf_counter()
            try: answer = f"answered {(await sender.predict(png, name, check=False))[0]['label']}"
            except Exception as e: answer = f'refused: {str(e)[:160]}'
            dt = time.perf_counter() - t
            done.set(); await task
            print(f"{name} ({len(png)/1024:.0f} kB) in {dt:.2f} s, {answer}\n    the drawing client meanwhile: "
                  f"{len(during)} answers, median {1000*statistics.median(during):.0f} ms, "
                  f"max {1000*max(during):.0f} ms")


def serve(model:Path, port:int, tmp:Path, cache_life:tuple) -> subprocess.Popen:
    code = (f"from fastai_binary_digits import demo, load_model_file\n"
            f"demo(load_model_file({str(model)!r}), port={port}, delete_cache={cache_life!r})")
    env = {**os.environ, 'GRADIO_TEMP_DIR': str(tmp),
           'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    log = tmp.parent/'server.log'
    proc = subprocess.Popen([sys.executable, '-c', code], env=env, stdout=log.open('w'), stderr=subprocess.STDOUT)
    while proc.poll() is None:
        if 'Running on local URL' in log.read_text(): return proc
        time.sleep(0.2)
    raise RuntimeError(f"the server did not start:\n{log.read_text()[-2000:]}")


def train(d:Path) -> Path:
    from fastai_binary_digits import BinaryDigitsDataLoaders, binary_learner
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(3, 7), sample=True, seed=0, device='cpu')
    learn = binary_learner(dls, 'cnn', seed=0)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(3, 0.3)
    learn.export(d/'cnn_37.safetensors')
    return d/'cnn_37.safetensors'


async def run(args, url:str, proc, tmp:Path, work:Path):
    config = httpx.get(f'{url}config').json()
    state = lambda: f"server memory {rss_mb(proc.pid):.0f} MB, temporary folder {folder(tmp)}"
    png = io.BytesIO()
    im = Image.new('L', (280, 280), 255)
    ImageDraw.Draw(im).line([(70, 40), (210, 40), (120, 250)], fill=0, width=24)  # a 7 on white paper
    im.save(png, 'png')
    png = png.getvalue()
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as http:
        pages = [Page(http, url, config, random.Random(i)) for i in range(args.clients)]
        for call in (lambda p, d: p.draw(d), lambda p, d: p.predict(png)):  # the server's threads and buffers made
            await closed_loop(pages, args.warmup/2, call)
        print(f"after {args.warmup:g} s of warm-up: {state()}")
        print(f"{'phase':<40}{'sent':>6}{'done':>6}{'errors':>7}{'per s':>9}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}")
        summary(f'{args.clients} clients drawing every {args.every:g} s',
                *await open_loop(pages, args.seconds, args.every))
        print(f"    {state()}")
        summary(f'{args.clients} clients drawing back to back',
                *await closed_loop(pages, args.seconds, lambda p, d: p.draw(d)))
        print(f"    {state()}")
        summary(f'{args.clients} clients uploading back to back',
                *await closed_loop(pages, args.seconds, lambda p, d: p.predict(png)))
        print(f"    {state()}")
    rss = rss_mb(proc.pid)
    await asyncio.sleep(args.settle)
    print(f"after {args.settle:g} s idle: {state()} (just after the load: {rss:.0f} MB)")
    if args.big: await big_uploads(url, config, work)
    print(f"at the end: {state()}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', type=Path, help='a model file to serve (default: a cnn 3 vs 7 trained on the sample)')
    p.add_argument('--clients', type=int, default=30)
    p.add_argument('--every', type=float, default=2.0, help='seconds between one client\'s strokes in the open loop')
    p.add_argument('--seconds', type=float, default=30, help='length of each phase')
    p.add_argument('--warmup', type=float, default=10, help='seconds of load before the memory is first read')
    p.add_argument('--settle', type=float, default=30, help='idle seconds before the memory is read again')
    p.add_argument('--cache-life', type=int, nargs=2, default=(10, 20), metavar=('EVERY', 'AGE'),
                   help="the server's `delete_cache`, seconds (the page's default: 60 600), short so that the run "
                        "shows the folder bounded")
    p.add_argument('--no-big', dest='big', action='store_false', help="skip the big uploads (without the package's "
                   "pixel limits, the 13,000 x 13,000 PNG takes minutes and gigabytes)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp())
    tmp = work/'gradio'
    try:
        model = args.model or train(work)
        port = free_port()
        proc = serve(model, port, tmp, tuple(args.cache_life))
        try: asyncio.run(run(args, f'http://127.0.0.1:{port}/', proc, tmp, work))
        finally:
            proc.terminate(); proc.wait(20)
    finally: shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__': main()
