"Draw a digit: a Gradio page (an optional extra; local unless asked), a learner answering each stroke, with its 28x28"
import contextlib, hashlib, importlib, math, os, shutil, sys, tempfile, threading, time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw
from fastai.torch_core import getcallable
from fastcore.xtras import modified_env

from .checks import BinaryDigitsError, check_port
from .files import atomic_path
from .images import as_pil_image
from .prepare import prepare_digit

__all__ = ['demo', 'demo_app', 'write_space']

INSTALL = 'pip install "gradio>=6,<7" (in a clone of the repository: pip install -e ".[demo]")'  # adds Gradio
NO_DIGIT = 'no digit found'  # what the page says for a drawing or an image that holds no digit
NEITHER = 'Neither {0} nor {1}: this model only knows {0} and {1}'  # ... for a digit `pair_check` finds not of the pair
CANVAS = 280                 # the canvas, pixels a side; the server draws the strokes again at this size
BRUSH = 24                   # the brush's width, pixels of the canvas
MAX_POINTS = 10_000          # a drawing of more points is refused: every request costs bounded time
MAX_UPLOAD = '20mb'          # larger uploads are refused by Gradio before they are stored
QUEUE_SIZE = 256             # requests waiting at most; more are told that the page is busy
WORKERS = 4                  # requests of each kind (strokes, uploads) answered at once: a slow one holds up no other
CACHE_LIFE = (60, 600)       # every 60 s Gradio deletes the page's uploads and pictures older than 600 s
_ZOOM = 6                    # the 28x28 picture is shown 6 times larger, pixels kept sharp
_GRADIO_ENV = {'GRADIO_ANALYTICS_ENABLED': 'False', 'HF_HUB_DISABLE_TELEMETRY': '1',  # no analytics, no version check
               # Gradio's queue tables its last 10,000 events after each one, for its monitoring page: 1,000, every 100
               'GRADIO_ANALYTICS_MAX_EVENTS': '1000', 'GRADIO_ANALYTICS_CACHE_FREQUENCY': '100'}


def import_gradio():
    "Gradio, its analytics off and its queue's bookkeeping light unless the user chose otherwise; or how to install it"
    for k, v in _GRADIO_ENV.items(): os.environ.setdefault(k, v)
    try: import gradio
    except ModuleNotFoundError as e:
        if e.name != 'gradio': raise
        raise ModuleNotFoundError(f"The demo needs Gradio, an optional extra: {INSTALL}", name='gradio') from None
    return gradio


class Reading(NamedTuple):
    "What `DigitReader` found in one image"
    probs: dict|None       # each digit of the pair (as text) and its probability; None when no digit was found
    x28: np.ndarray|None   # the 28x28 uint8 picture the model received
    in_pair: bool = True   # False where the learner's `pair_check` says the digit is not one of the pair


class DigitReader:
    """What the page runs on every stroke: `prepare_digit`, the model and its loss's activation as `get_preds` runs
    them (eval mode, no gradients) without a `test_dl` each time, and the learner's `pair_check`, if any"""
    def __init__(self, learn):
        vocab = getattr(getattr(learn, 'dls', None), 'vocab', None)
        if vocab is None or len(vocab) != 2:
            raise TypeError(f"`learn` must be a learner of two digits (`binary_learner` or a loaded model), got a "
                            f"{type(learn).__name__} without a two-digit `dls.vocab`")
        self.learn, self.vocab = learn, tuple(int(d) for d in vocab)
        self.activation = getcallable(learn.loss_func, 'activation')  # fastai's own: the identity when there is none

    def __call__(self, image) -> Reading:
        "The probability of each digit of the pair for `image`, the 28x28 the model saw, and whether it is of the pair"
        x28 = prepare_digit(image)
        if x28 is None: return Reading(None, None)
        model, check = self.learn.model, getattr(self.learn, 'pair_check', None)
        device = next(model.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(x28)).to(device).float().div_(255).view(1, 28*28)  # as `test_dl`
        model.eval()
        with torch.inference_mode():
            p = float(self.activation(model(x)).view(-1)[0])
            in_pair = True if check is None else bool(check.in_pair(x)[0][0])
        a, b = self.vocab
        return Reading({str(a): 1-p, str(b): p}, x28, in_pair)


def strokes_image(strokes) -> Image.Image:
    "The page's `strokes` (lists x0, y0, x1, y1, ... of canvas pixels) drawn as the canvas showed them, or an error"
    ok = isinstance(strokes, list) and len(strokes) <= MAX_POINTS and all(
        isinstance(s, list) and len(s) >= 2 and len(s) % 2 == 0 for s in strokes)
    if not ok or sum(map(len, strokes)) > 2*MAX_POINTS:
        raise BinaryDigitsError(f"A drawing is a list of strokes, each a list x0, y0, x1, y1, ... of at most "
                                f"{MAX_POINTS} points in all: clear the canvas and draw again")
    if not all(type(v) in (int, float) and math.isfinite(v) for s in strokes for v in s):
        raise BinaryDigitsError("A drawing's points must be finite numbers (pixels of the canvas)")
    im = Image.new('L', (CANVAS, CANVAS), 0)
    draw, r = ImageDraw.Draw(im), BRUSH/2
    for s in strokes:
        xy = [tuple(p) for p in np.clip(np.array(s, np.float64).reshape(-1, 2), -BRUSH, CANVAS+BRUSH)]
        if len(xy) > 1: draw.line(xy, fill=255, width=BRUSH, joint='curve')
        for x, y in (xy[0], xy[-1]): draw.ellipse((x-r, y-r, x+r, y+r), fill=255)  # the brush's round ends
    return im


def _picture_file(x28:np.ndarray, folder:Path) -> str:
    "`x28`, made larger, as a PNG in `folder` named by its content, renamed into place: never rewritten as it is read"
    fn = folder/f'{hashlib.sha1(x28.tobytes()).hexdigest()}.png'
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.', suffix='.png')
    with os.fdopen(fd, 'wb') as f: Image.fromarray(x28).resize((28*_ZOOM, 28*_ZOOM), Image.NEAREST).save(f, 'png')
    os.replace(tmp, fn)  # a fresh file each time, so Gradio's `delete_cache` ages it from now
    return str(fn)


def _refuse(gr, what:str, e:Exception, fn:str|None=None):
    "`e`'s message on one line in the server's log and on the page (`gradio.Error`), without the upload `fn`'s folder"
    msg = str(e)
    if fn is not None:
        for d in {str(Path(fn).parent), str(Path(fn).resolve().parent)}: msg = msg.replace(d + os.sep, '')
    print(f"The page refused {what}: {msg}", file=sys.stderr, flush=True)
    raise gr.Error(msg, print_exception=False) from None


# The page's canvas: mouse, pen and touch draw at once; each stroke's end makes all strokes its value and fires 'draw';
# Clear fires 'draw' too, so that no answer to an earlier stroke arrives after it (Gradio queues them in order).
_PAD_HTML = f'''<div class="pad"><div class="pad-label">Draw a digit</div>
<canvas width="{CANVAS}" height="{CANVAS}" aria-label="Draw a digit here with the mouse or a finger"></canvas>
<button id="clear" type="button">Clear</button></div>'''
_PAD_CSS = '''.pad { display: flex; flex-direction: column; align-items: flex-start; gap: 8px; }
.pad-label { font-size: var(--block-label-text-size); color: var(--block-label-text-color); }
canvas { width: min(100%, 280px); aspect-ratio: 1; background: #fff; border: 1px solid var(--border-color-primary);
  border-radius: 4px; touch-action: none; cursor: crosshair; }
#clear { padding: 4px 16px; border: 1px solid var(--border-color-primary); border-radius: 4px;
  background: var(--button-secondary-background-fill); color: var(--button-secondary-text-color); }'''
_PAD_JS = f'''const c = element.querySelector('canvas'), g = c.getContext('2d');
let strokes = [], cur = null, n = 0;
g.lineWidth = {BRUSH}; g.lineCap = g.lineJoin = 'round'; g.strokeStyle = g.fillStyle = '#000';
const at = (e) => {{ const r = c.getBoundingClientRect();
  return [Math.round((e.clientX - r.left)*c.width/r.width), Math.round((e.clientY - r.top)*c.height/r.height)]; }};
c.addEventListener('pointerdown', (e) => {{
  if (e.button > 0 || n >= {MAX_POINTS}) return;
  e.preventDefault(); c.setPointerCapture(e.pointerId);
  const [x, y] = at(e); cur = [x, y]; strokes.push(cur); n += 1;
  g.beginPath(); g.arc(x, y, g.lineWidth/2, 0, 2*Math.PI); g.fill(); }});
c.addEventListener('pointermove', (e) => {{
  if (!cur || n >= {MAX_POINTS}) return;
  const [x, y] = at(e), k = cur.length;
  if (Math.abs(x - cur[k-2]) + Math.abs(y - cur[k-1]) < 2) return;
  g.beginPath(); g.moveTo(cur[k-2], cur[k-1]); g.lineTo(x, y); g.stroke(); cur.push(x, y); n += 1; }});
const send = () => {{ props.value = strokes.map((s) => s.slice()); trigger('draw'); }};
const end = () => {{ if (!cur) return; cur = null; send(); }};
c.addEventListener('pointerup', end); c.addEventListener('pointercancel', end);
const wipe = () => {{ strokes = []; cur = null; n = 0; g.clearRect(0, 0, c.width, c.height); send(); }};
const clear = element.querySelector('#clear');  // on release: a finger's tap right after a stroke may make no click
clear.addEventListener('pointerup', (e) => {{ if (e.button === 0) wipe(); }});
clear.addEventListener('click', (e) => {{ if (e.detail === 0) wipe(); }});  // the keyboard's Enter or Space'''


class _Answers:
    "What the page's events run: the learner's answer to a drawing or an upload, as the page shows it"
    def __init__(self, gr, learn, delete_cache:tuple|None):
        self.gr, self.read, self.folder, self.app = gr, DigitReader(learn), None, None
        self.life, self.tidied, self.tidying = delete_cache, time.monotonic(), threading.Lock()

    def tidy(self):
        """Delete the app's uploads and pictures older than `delete_cache`'s age plus period, once a period: Gradio's
        own deleting stops for good once a request adds a file while it runs (this walks copies of Gradio's sets)"""
        if self.life is None or self.app is None or time.monotonic() - self.tidied < self.life[0]: return
        if not self.tidying.acquire(blocking=False): return
        try:
            self.tidied, cutoff = time.monotonic(), time.time() - sum(self.life)
            keep = set().union(*(getattr(b, 'keep_in_cache', ()) for b in self.app.blocks.values()))
            for files in self.app.temp_file_sets:
                for fn in set(files) - keep:  # a copy: other requests add files meanwhile
                    with contextlib.suppress(OSError):
                        if os.lstat(fn).st_ctime < cutoff: os.remove(fn)
                    if not os.path.lexists(fn): files.discard(fn)
        finally: self.tidying.release()

    def show(self, r:Reading) -> tuple:
        "The probabilities (or what stands for them) and the 28x28 picture's file in Gradio's cache"
        if r.probs is None: return NO_DIGIT, None
        if self.folder is None:  # the page's own folder, made on its first answer
            from gradio.utils import get_upload_folder
            self.folder = Path(tempfile.mkdtemp(prefix='fastai_binary_digits_', dir=get_upload_folder()))
        return (r.probs if r.in_pair else NEITHER.format(*self.read.vocab)), _picture_file(r.x28, self.folder)

    def draw(self, strokes):
        "The answer to the canvas's strokes (the pad's value)"
        self.tidy()
        if strokes == []: return None, None  # a cleared canvas: nothing drawn, nothing claimed
        try: image = strokes_image(strokes)
        except BinaryDigitsError as e: _refuse(self.gr, 'a drawing', e)
        return self.show(self.read(image))

    def predict(self, file:dict|None):
        "The answer to an uploaded file (Gradio's `FileData`, checked to be in its upload folder), or why there is none"
        self.tidy()
        if file is None: return None, None
        fn = file['path']
        try: return self.show(self.read(as_pil_image(fn)))
        except (BinaryDigitsError, OSError) as e: _refuse(self.gr, f'the upload {Path(fn).name}', e, fn)


def demo_app(learn, title:str|None=None, delete_cache:tuple|None=CACHE_LIFE) -> 'gradio.Blocks':
    """The Gradio page for `learn`: a canvas, an upload, the probabilities and the 28x28 input, through a bounded queue.
    `delete_cache`: Gradio's (every, age) in seconds for deleting uploads and pictures (None: kept until it stops)"""
    gr = import_gradio()
    answers = _Answers(gr, learn, delete_cache)
    a, b = answers.read.vocab
    title = title or f'Draw a {a} or a {b}'
    limit = ("it says so when it is shown another digit." if getattr(learn, 'pair_check', None) is not None
             else "to it, any other digit is one of the two.")
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=delete_cache) as app:
        gr.Markdown(f"# {title}\nA model trained to tell **{a}** from **{b}** (MNIST, chapter 4 of the fastai book). "
                    "Draw with the mouse or a finger: it answers after every stroke. On the right, the 28x28 picture "
                    "the model received: your drawing cropped, scaled into a 20x20 box and centred as MNIST's digits "
                    f"are. It only knows {a} and {b}: {limit}")
        with gr.Row():
            with gr.Column():
                pad = gr.HTML(html_template=_PAD_HTML, css_template=_PAD_CSS, js_on_load=_PAD_JS, elem_id='pad')
                upload = gr.File(label='Or upload an image file', elem_id='upload', file_types=['image'],
                                 type='filepath', height=120)
            with gr.Column():
                probs = gr.Label(label=f'{a} or {b}?', elem_id='probs', num_top_classes=2)
                seen = gr.Image(label='What the model sees (28x28)', elem_id='seen', interactive=False, format='png',
                                height=28*_ZOOM+40, buttons=[])
        outputs = [probs, seen]
        # each stroke's end: the drawing so far; strokes that come while one is answered wait, the last one wins
        pad.draw(answers.draw, pad, outputs, api_visibility='private', show_progress='hidden',
                 trigger_mode='always_last')
        upload.clear(lambda: (None, None), None, outputs, api_visibility='private', show_progress='hidden')
        # the API's one endpoint, `/predict`: an image file in, the probabilities and the 28x28 picture out. The file
        # as Gradio stored it: `gr.File`'s own preprocessing leaves an empty temporary file behind on every upload
        upload.upload(answers.predict, upload, outputs, api_name='predict', show_progress='hidden', preprocess=False)
    answers.app = app
    return app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=WORKERS, api_open=False)


def demo(learn, port:int|None=None, share:bool=False, host:str='127.0.0.1', delete_cache:tuple|None=CACHE_LIFE,
         **kwargs) -> 'gradio.Blocks':
    """Serve the page for `learn` at http://`host`:`port` (default: the first free from 7860), inline in Jupyter, until
    interrupted from a script; returns the app. `kwargs` go to Gradio's `launch` (`max_file_size`: `MAX_UPLOAD`)"""
    gr = import_gradio()
    app = demo_app(learn, delete_cache=delete_cache)
    if port is not None: check_port(host, port)
    quiet, wait = kwargs.pop('quiet', False), not kwargs.pop('prevent_thread_lock', False)
    kwargs = {'theme': gr.themes.Default(), 'ssr_mode': False, 'mcp_server': False, 'pwa': False,
              'max_file_size': MAX_UPLOAD, **kwargs}
    # Gradio checks the page it starts through httpx, which would ask a proxy set in the environment: never for it
    local = ','.join(filter(None, (os.environ.get('no_proxy') or os.environ.get('NO_PROXY'), host, 'localhost')))
    # Gradio's own start-up lines tell of a public link in Gradio's terms: these name this package's ways to ask for one
    with modified_env(no_proxy=local, NO_PROXY=local):
        app.launch(server_name=host, server_port=port, share=share, quiet=True, prevent_thread_lock=True, **kwargs)
    if not quiet:
        print(f"* Running on local URL:  {app.local_url}")
        if not app.share: print("* To serve it through a public link too: --share on the command line, "
                                "demo(learn, share=True) in Python")
    if wait and not getattr(sys, 'ps1', sys.flags.interactive): app.block_thread()  # a script: serve until interrupted
    return app


# A folder for a Gradio Space

_SPACE_MARK = '# A Gradio Space written by `fastai-binary-digits demo MODEL --space DIR`'  # app.py's first line

_APP = '''{mark}: draw a digit and the model answers.
# Here: `pip install -r requirements.txt`, then `python app.py` (http://127.0.0.1:7860). As a Space: push this folder.
import os
from fastai_binary_digits import demo, load_model_file

learn = load_model_file({model!r})
# On a Space, Gradio's GRADIO_SERVER_NAME opens the page to the Space's network; on your machine it stays on 127.0.0.1
demo(learn, host=os.environ.get('GRADIO_SERVER_NAME', '127.0.0.1'),
     port=int(os.environ.get('GRADIO_SERVER_PORT', 7860)))
'''

_README = '''---
title: {title}
emoji: ✏️
colorFrom: gray
colorTo: blue
sdk: gradio
sdk_version: {gradio}
app_file: app.py
pinned: false
---

# {title}

A model trained with fastai-binary-digits (chapter 4 of the [fastai book](https://github.com/fastai/fastbook)) to
tell {a} from {b}. Draw a digit and watch its probabilities; the page also shows the 28x28 picture the model
received. `fastai_binary_digits/` is the package's code ({version}), so that the Space runs the code the model was
trained with; `{model}` is the model.

Run it on your machine: `pip install -r requirements.txt && python app.py`, then open http://127.0.0.1:7860.
'''


def _requirements(gradio_version:str|None) -> list:
    "The package's own dependencies, from its installed metadata or (a checkout not installed) its pyproject.toml"
    from importlib.metadata import PackageNotFoundError, requires
    try: reqs = requires('fastai-binary-digits') or []
    except PackageNotFoundError:
        import tomllib  # Python 3.11+; on 3.10, install the package (`pip install -e .`) first
        reqs = tomllib.loads((Path(__file__).parent.parent/'pyproject.toml').read_text())['project']['dependencies']
    return [r for r in reqs if 'extra ==' not in r] + [f'gradio=={gradio_version}' if gradio_version else 'gradio>=6']


def _write_text(fn:Path, text:str):
    with atomic_path(fn) as tmp: tmp.write_text(text)


def write_space(model:str|Path, folder:str|Path) -> Path:
    "Write `folder` as a Gradio Space (app.py, requirements.txt, README.md, the model, this package's code); returns it"
    from . import __version__
    from .learner import load_model_file
    src, dest = Path(model).expanduser(), Path(folder).expanduser()
    learn = load_model_file(src)  # refuses anything but a model of two digits, before a file is written
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"The Space folder {folder} is a file; give a folder")
    ours = dest/'app.py'
    if dest.exists() and any(dest.iterdir()) and not (ours.exists() and ours.read_text().startswith(_SPACE_MARK)):
        raise BinaryDigitsError(f"The Space folder {folder} already holds other files; give a new or empty folder "
                                "(a folder written by this command is updated in place)")
    try: gradio_version = importlib.import_module('gradio').__version__
    except ModuleNotFoundError: gradio_version = None
    code = dest/'fastai_binary_digits'
    code.mkdir(parents=True, exist_ok=True)
    for fn in sorted(Path(__file__).parent.glob('*.py')): _write_text(code/fn.name, fn.read_text())
    with atomic_path(dest/src.name) as tmp: shutil.copyfile(src, tmp)
    a, b = (int(d) for d in learn.dls.vocab)
    _write_text(dest/'requirements.txt', '\n'.join(_requirements(gradio_version)) + '\n')
    _write_text(dest/'README.md', _README.format(title=f'Draw a {a} or a {b}', gradio=gradio_version or '6.0.0', a=a,
                                                 b=b, version=__version__, model=src.name))
    _write_text(ours, _APP.format(mark=_SPACE_MARK, model=src.name))
    return dest
