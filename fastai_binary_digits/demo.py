"""Draw a digit: a Gradio page where a person draws (or uploads) a digit and a trained learner answers as they draw,
showing the 28x28 picture the model received. Local and offline unless asked otherwise; Gradio is an optional extra."""
from __future__ import annotations
import os, shutil
from pathlib import Path

import numpy as np
import torch
from fastai.torch_core import getcallable

from .checks import BinaryDigitsError, check_port
from .files import atomic_path
from .images import as_pil_image
from .prepare import prepare_digit

__all__ = ['demo', 'demo_app', 'write_space']

INSTALL = 'pip install "gradio>=6,<7" (in a clone of the repository: pip install -e ".[demo]")'  # adds Gradio
NO_DIGIT = 'no digit found'                            # what the page says for an empty canvas or a blank image
_ZOOM = 6                                              # the 28x28 picture is shown 6 times larger, pixels kept sharp


def import_gradio():
    "Gradio, with its analytics off unless the user turned them on; or a one-line error saying how to install it"
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # no analytics and no version check from the demo
    os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')
    try: import gradio
    except ModuleNotFoundError as e:
        if e.name != 'gradio': raise
        raise ModuleNotFoundError(f"The demo needs Gradio, an optional extra: {INSTALL}", name='gradio') from None
    return gradio


class DigitReader:
    """What the page runs on every stroke: `prepare_digit`, then the learner's model and its loss's activation, as
    fastai's `get_preds` computes them (the model in eval mode, no gradients), without building a `test_dl` each time"""
    def __init__(self, learn):
        vocab = getattr(getattr(learn, 'dls', None), 'vocab', None)
        if vocab is None or len(vocab) != 2:
            raise TypeError(f"`learn` must be a learner of two digits (`binary_learner` or a loaded model), got a "
                            f"{type(learn).__name__} without a two-digit `dls.vocab`")
        self.learn, self.vocab = learn, tuple(int(d) for d in vocab)
        self.activation = getcallable(learn.loss_func, 'activation')  # fastai's own: the identity when there is none

    def __call__(self, image) -> tuple[dict|None, np.ndarray|None]:
        "The probability of each digit of the pair for `image` (keys: the digits as text), and the 28x28 it saw"
        x28 = prepare_digit(image)
        if x28 is None: return None, None
        model = self.learn.model
        device = next(model.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(x28)).to(device).float().div_(255).view(1, 28*28)  # as `test_dl`
        model.eval()
        with torch.inference_mode(): p = float(self.activation(model(x)).view(-1)[0])
        a, b = self.vocab
        return {str(a): 1-p, str(b): p}, x28


def zoom(x28:np.ndarray, k:int=_ZOOM) -> np.ndarray:
    "`x28` made `k` times larger with each pixel a `k`x`k` square, so the browser shows it sharp"
    return np.kron(x28, np.ones((k, k), dtype=x28.dtype))


def _read_upload(read:DigitReader, fn:str|None):
    "The answer for an uploaded file, or a message for the page (`gradio.Error`) when it is not an image"
    if fn is None: return None, None
    try: image = as_pil_image(fn)
    except (BinaryDigitsError, OSError) as e:
        raise import_gradio().Error(f"{Path(fn).name} is not an image that can be read: upload a PNG or JPEG picture "
                                    f"of one digit ({e})") from None
    return read(image)


def _answer(probs:dict|None, x28:np.ndarray|None):
    "What the page shows: the probabilities (or 'no digit found') and the 28x28 picture, made larger"
    return (NO_DIGIT, None) if probs is None else (probs, zoom(x28))


# The canvas opens, and clears, with no tool chosen: the page chooses the brush, so that the first stroke draws
_PICK_BRUSH = '''const pick = (n) => { const b = document.querySelector('#pad button[aria-label="Brush"]');
    if (b && b.classList.contains('highlight')) return; if (b) b.click(); if (n > 0) setTimeout(() => pick(n - 1), 100); };'''
_CHOOSE_BRUSH = f"() => {{ {_PICK_BRUSH} pick(30); }}"
_CLEAR_PAD = (f"() => {{ {_PICK_BRUSH} document.querySelector('#pad button[aria-label=\\'Clear canvas\\']')?.click(); "
              "setTimeout(() => pick(10), 100); }")


def demo_app(learn, title:str|None=None) -> 'gradio.Blocks':
    "The Gradio `Blocks` page for `learn`: a canvas to draw on, an upload, the pair's probabilities and the 28x28 input"
    gr = import_gradio()
    read = DigitReader(learn)
    a, b = read.vocab
    title = title or f'Draw a {a} or a {b}'
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"# {title}\nA model trained to tell **{a}** from **{b}** (MNIST, chapter 4 of the fastai book). "
                    "Draw with the mouse or a finger: it answers after every stroke. On the right, the 28x28 picture "
                    "the model received: your drawing cropped, scaled into a 20x20 box and centred as MNIST's digits "
                    "are.")
        with gr.Row():
            with gr.Column():
                pad = gr.Sketchpad(label='Draw a digit', elem_id='pad', type='numpy', image_mode='L',
                                   canvas_size=(280, 280), brush=gr.Brush(default_size=12, colors=['#000000'],
                                                                          color_mode='fixed'),
                                   layers=False, transforms=(), buttons=[])
                clear = gr.Button('Clear', elem_id='clear')
                upload = gr.File(label='Or upload an image file', elem_id='upload', file_types=['image'],
                                 type='filepath', height=120)
            with gr.Column():
                probs = gr.Label(label=f'{a} or {b}?', elem_id='probs', num_top_classes=2, value=NO_DIGIT)
                seen = gr.Image(label='What the model sees (28x28)', elem_id='seen', interactive=False, format='png',
                                height=28*_ZOOM+40, buttons=[])

        def on_draw(value):
            image = None if value is None else value['composite']  # None once the canvas is cleared
            return (NO_DIGIT, None) if image is None else _answer(*read(image))

        outputs = [probs, seen]
        # answer as the person draws: every change of the canvas, the last one winning when strokes come quickly
        pad.change(on_draw, pad, outputs, api_visibility='private', show_progress='hidden', trigger_mode='always_last',
                   queue=False)
        # the canvas's own 'Clear canvas' (and the brush again), then the page's answer to an empty canvas
        clear.click(lambda: (NO_DIGIT, None), None, outputs, js=_CLEAR_PAD, api_visibility='private', queue=False)
        app.load(None, js=_CHOOSE_BRUSH)
        def predict(image): return _answer(*_read_upload(read, image))
        # the API's one endpoint, `/predict`: an image file in, the probabilities and the 28x28 picture out
        upload.upload(predict, upload, outputs, api_name='predict', show_progress='hidden')
    return app


def demo(learn, port:int|None=None, share:bool=False, host:str='127.0.0.1', **kwargs) -> 'gradio.Blocks':
    """Serve the page for `learn` at http://`host`:`port` (default: the first free port from 7860) and return the
    Gradio app: inline in Jupyter; from a script it serves until interrupted. `kwargs` go to Gradio's `launch`"""
    gr = import_gradio()
    app = demo_app(learn)
    if port is not None: check_port(host, port)
    kwargs = {'theme': gr.themes.Default(), 'ssr_mode': False, 'mcp_server': False, 'pwa': False, **kwargs}
    app.launch(server_name=host, server_port=port, share=share, **kwargs)
    return app


# ---------------------------------------------------------------------------------------------------------------
# A folder for a Gradio Space

_SPACE_MARK = '# A Gradio Space written by `fastai-binary-digits demo MODEL --space DIR`'  # app.py's first line

_APP = '''{mark}: draw a digit and the model answers.
# Here: `pip install -r requirements.txt`, then `python app.py` (http://127.0.0.1:7860). As a Space: push this folder.
import os
from fastai_binary_digits import demo, load_model_file

learn = load_model_file({model!r})
# On a Space, Gradio's GRADIO_SERVER_NAME opens the page to the Space's network; on your own machine it stays on 127.0.0.1
demo(learn, host=os.environ.get('GRADIO_SERVER_NAME', '127.0.0.1'), port=int(os.environ.get('GRADIO_SERVER_PORT', 7860)))
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
    "The package's own dependencies, from its installed metadata or, in a checkout that is not installed, its pyproject.toml"
    from importlib.metadata import PackageNotFoundError, requires
    try: reqs = requires('fastai-binary-digits') or []
    except PackageNotFoundError:
        import tomllib  # Python 3.11+; on 3.10, install the package (`pip install -e .`) first
        reqs = tomllib.loads((Path(__file__).parent.parent/'pyproject.toml').read_text())['project']['dependencies']
    return [r for r in reqs if 'extra ==' not in r] + [f'gradio=={gradio_version}' if gradio_version else 'gradio>=6']


def _write_text(fn:Path, text:str):
    with atomic_path(fn) as tmp: tmp.write_text(text)


def write_space(model:str|Path, folder:str|Path) -> Path:
    """Write `folder`, ready to deploy as a Gradio Space or to run with `python app.py`: app.py, requirements.txt, the
    Space's README.md, the model file and this package's code. Returns the folder"""
    from . import __version__
    from .learner import load_model_file
    src, dest = Path(model).expanduser(), Path(folder).expanduser()
    learn = load_model_file(src)  # refuses anything but a model of two digits, before a file is written
    if dest.exists() and not dest.is_dir(): raise NotADirectoryError(f"The Space folder {folder} is a file; give a folder")
    ours = dest/'app.py'
    if dest.exists() and any(dest.iterdir()) and not (ours.exists() and ours.read_text().startswith(_SPACE_MARK)):
        raise BinaryDigitsError(f"The Space folder {folder} already holds other files; give a new or empty folder "
                         "(a folder written by this command is updated in place)")
    try: import gradio; gradio_version = gradio.__version__
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
