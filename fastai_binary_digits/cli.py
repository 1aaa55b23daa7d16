"""The command line `fastai-binary-digits` (or `python -m fastai_binary_digits`): `train`, `predict`, `evaluate`.
Exit codes: 0 on success, 2 on bad usage or bad input, which is reported in one `error:` line, never a traceback."""
from __future__ import annotations
import argparse, json, sys, tempfile, textwrap
from pathlib import Path

__all__ = ['main']

_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, ConnectionError, PermissionError, IsADirectoryError,
                NotADirectoryError, FileExistsError)  # what the library raises for a user's mistake: exit 2 with its message
_REPORT_FILES = dict(loss='loss.png', confusion='confusion_matrix.png', weights='weights.png', worst='top_losses.png')
_N_WORST = 9  # digits in the grid of worst predictions
_ARCHS = ('linear', 'simple', 'deep', 'cnn')  # `models.ARCHS`' names, here so that `--help` needs no torch (a test checks)
_MODEL_HELP = ("the learner written by `train --out`: a '.safetensors' file (safe), or fastai's '.pkl' pickle "
               "(it runs code when loaded: only from people you trust)")


# ---------------------------------------------------------------------------------------------------------------
# Arguments

def _positive(kind, what:str):
    "An argparse `type` that accepts a `kind` (int or float) above zero, with a message naming `what` was expected"
    def conv(s:str):
        try: v = kind(s)
        except ValueError: v = None
        if v is None or not v > 0: raise argparse.ArgumentTypeError(f"must be {what}, got {s!r}")
        return v
    conv.__name__ = kind.__name__
    return conv


def _add_source(p:argparse.ArgumentParser, verb:str):
    "The data-source options that `train` and `evaluate` share"
    g = p.add_argument_group('data', "Where the digits come from (default: fastai's MNIST, `untar_data(URLs.MNIST)`; "
                                     "when that is neither cached nor downloadable, the bundled sample, with a notice)")
    src = g.add_mutually_exclusive_group()
    src.add_argument('--sample', action='store_true', help=f"{verb} the MNIST sample bundled with the package "
                                                           "(1,000 training and 200 testing images per digit; offline)")
    src.add_argument('--path', metavar='DIR', help="a folder holding fastai's mnist_png (training/ and testing/) or "
                                                   "the four MNIST IDX files (plain or .gz)")
    g.add_argument('--bs', type=_positive(int, 'a whole number of at least 1'), default=256, help='batch size')


def _add_report(p:argparse.ArgumentParser, what:str):
    p.add_argument('--report', metavar='DIR', help=f"write PNG pictures into DIR: {what}")


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    "Descriptions and examples as written; each option's default, where it has one worth showing"
    def _get_help_string(self, action):
        if action.default in (None, False) or '(default' in (action.help or ''): return action.help
        return super()._get_help_string(action)


def _text(s:str) -> str: return textwrap.fill(s, 79)


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    fmt = _Help
    parser = argparse.ArgumentParser(
        prog='fastai-binary-digits', formatter_class=fmt,
        description=_text("Chapter 4 of the fastai book as a tool: train, use and evaluate a classifier of any pair "
                          "of MNIST digits. `fastai-binary-digits COMMAND --help` describes each command."),
        epilog="examples:\n"
               "  fastai-binary-digits train --sample --pair 4 8 --epochs 5 --report report/\n"
               "  fastai-binary-digits predict model.safetensors digit.png another.jpg\n"
               "  fastai-binary-digits evaluate model.safetensors --sample")
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)

    p = sub.add_parser('train', formatter_class=fmt, help='train a model on two digits and export it',
                       description=_text("Train a model to tell two MNIST digits apart, showing fastai's progress "
                                         "bars and per-epoch table, then export the learner: to a '.safetensors' "
                                         "file (the default: weights and settings, safe to share and load; "
                                         "`load_binary_learner` reads it) or to fastai's '.pkl' pickle "
                                         "(`load_learner`). `predict` and `evaluate` read both."))
    p.add_argument('--pair', nargs=2, type=int, default=[3, 7], metavar=('A', 'B'),
                   help="the two digits, label 0 for A and 1 for B (default: 3 7, the book's)")
    p.add_argument('--arch', choices=_ARCHS, default='linear',
                   help="the model: the book's linear model, its 784-30-1 net, a deeper net, or a small CNN")
    p.add_argument('--epochs', type=_positive(int, 'a whole number of at least 1'), default=20, help='epochs to train')
    p.add_argument('--lr', type=_positive(float, 'a number above 0'), default=0.1, help='learning rate (SGD)')
    p.add_argument('--seed', type=int, default=None,
                   help='seed the validation split, the initial weights and the shuffling: same seed, same table')
    p.add_argument('--one-cycle', action='store_true', help="train with fastai's `fit_one_cycle` rather than `fit`")
    p.add_argument('--valid', choices=['split', 'testing'], default='split',
                   help="validate on 20%% of the training images ('split') or on the official test set ('testing')")
    _add_source(p, 'train on')
    p.add_argument('--out', metavar='FILE', default='model.safetensors',
                   help="where to write the learner: a '.safetensors' file (safe to share) or fastai's '.pkl' pickle")
    _add_report(p, f"{', '.join(_REPORT_FILES.values())} (on the validation images)")
    p.set_defaults(func=_train)

    p = sub.add_parser('predict', formatter_class=fmt, help='classify image files with an exported model',
                       description=_text("Classify image files with a model exported by `train`: one line per image "
                                         "with the digit and its probability. Drawings, photos of paper and canvases "
                                         "of any size, colour and polarity are first made to look like MNIST's "
                                         "digits (`prepare_digit`: the ink cropped, fitted in 20x20 and centred in "
                                         "28x28); an image holding no digit gives 'no digit found'. Exit status 1 "
                                         "when any image could not be read or held no digit."))
    p.add_argument('model', metavar='MODEL', help=_MODEL_HELP)
    p.add_argument('images', metavar='IMAGE', nargs='+', help='image files (PNG, JPEG, ...)')
    p.add_argument('--json', action='store_true', help='print one JSON object per line: image, digit (null when no '
                                                       'digit is found), probability, probabilities of both digits; '
                                                       'or image and error')
    p.add_argument('--save-prepared', metavar='DIR', help='write the 28x28 image the model saw for each image into '
                                                          'DIR, as DIR/<image name>.png')
    p.add_argument('--no-prepare', action='store_true', help="take the images as MNIST's already (light digit on "
                                                             "dark, centred): only resize them to 28x28")
    p.set_defaults(func=_predict)

    p = sub.add_parser('evaluate', formatter_class=fmt, help="measure a model on the official testing images",
                       description=_text("Accuracy, loss and confusion matrix of a model exported by `train` on the "
                                         "official MNIST testing images of its two digits."))
    p.add_argument('model', metavar='MODEL', help=_MODEL_HELP)
    _add_source(p, 'evaluate on')
    p.add_argument('--json', action='store_true', help='print the results as one JSON object')
    _add_report(p, ', '.join(v for k, v in _REPORT_FILES.items() if k != 'loss'))
    p.set_defaults(func=_evaluate)
    _add_demo(sub, fmt)
    return parser


def _add_demo(sub, fmt):
    "The `demo` command: the page where a person draws a digit, or a folder for a Gradio Space"
    p = sub.add_parser('demo', formatter_class=fmt, help='a page where you draw a digit and the model answers',
                       description=_text("Serve a page (Gradio) where you draw a digit with the mouse or a finger, or "
                                         "upload an image, and the model answers as you draw, showing the 28x28 "
                                         "picture it received. The page stays on this machine (127.0.0.1) unless "
                                         "you pass --host or --share. Needs the `demo` extra: "
                                         "pip install -e \".[demo]\" in a clone of the repository, or pip install \"gradio>=6,<7\"."),
                       epilog="examples:\n"
                              "  fastai-binary-digits demo model.safetensors --port 7860\n"
                              "  fastai-binary-digits demo model.safetensors --space my_space/   # then: cd my_space "
                              "&& python app.py")
    p.add_argument('model', metavar='MODEL', help=_MODEL_HELP)
    p.add_argument('--port', type=_positive(int, 'a port number from 1 to 65535'), default=None,
                   help='the port to serve on (default: the first free one from 7860)')
    p.add_argument('--host', default='127.0.0.1',
                   help="the address to serve on: 127.0.0.1 keeps the page on this machine; an address of this "
                        "machine on a network (or all of them) opens it to that network")
    p.add_argument('--share', action='store_true',
                   help="also serve the page through a public link from Gradio's share servers (never on by default)")
    p.add_argument('--space', metavar='DIR', help="rather than serving, write DIR ready to deploy as a Hugging Face "
                                                  "Gradio Space: app.py (runs with `python app.py`), requirements.txt, "
                                                  "README.md, the model and this package's code")
    p.set_defaults(func=_demo)


# ---------------------------------------------------------------------------------------------------------------
# Shared steps

def _source(args) -> tuple:
    """`from_mnist`'s source arguments for what `args` name (`sample=True` or `path=`), and a description of it.
    Without a source, fastai's MNIST, or the bundled sample (one-line notice) when it is neither cached nor downloadable."""
    from .mnist import find_source
    if args.sample: return dict(sample=True), 'the bundled sample'
    if args.path is not None: return dict(path=args.path), args.path
    try: return dict(path=find_source()[1]), "fastai's MNIST"
    except ConnectionError as e:
        cause = f' ({type(e.__cause__).__name__})' if e.__cause__ is not None else ''
        print(f"notice: fastai's MNIST is neither cached nor downloadable{cause}; using the bundled sample instead "
              f"(--path DIR for a local copy)", file=sys.stderr, flush=True)
        return dict(sample=True), 'the bundled sample'


def _load_dls(args, pair, valid:str):
    "`BinaryDigitsDataLoaders` of `pair` from the source `args` name, and a description of that source"
    from .data import BinaryDigitsDataLoaders
    src, source = _source(args)
    return BinaryDigitsDataLoaders.from_mnist(pair=pair, valid=valid, seed=getattr(args, 'seed', None), bs=args.bs,
                                              **src), source


def _testing_dl(args, pair, vocab):
    """A loader of the official testing images of `pair` (label 0 for `pair[0]`, as `from_mnist`) from the source
    `args` name, and a description of that source: the training images are never read"""
    import torch
    from fastai.torch_core import default_device
    from .data import BinaryDigitsDL, DigitTensors
    from .mnist import load_digits
    src, source = _source(args)
    digits = load_digits(pair, 'testing', **src)
    for d in pair:
        if not len(digits[d][0]): raise ValueError(f"{source} holds no testing images of the digit {d}")
    device = default_device()
    x = torch.cat([digits[d][0] for d in pair]).flatten(1).to(device).float().div_(255)  # as `from_mnist`: 0..1
    y = torch.cat([torch.full((len(digits[d][0]), 1), float(i)) for i, d in enumerate(pair)]).to(device)
    ds = DigitTensors(x, y, vocab, torch.cat([digits[d][1] for d in pair]))
    return BinaryDigitsDL(ds, bs=args.bs, shuffle=False, device=device), source


def _load_model(fn:str):
    "The learner in `fn` (the safe '.safetensors' or fastai's '.pkl', which shows fastai's warning), on the CPU"
    from .model_files import load_model_file
    path = Path(fn).expanduser()
    if not path.exists(): raise FileNotFoundError(f"Model file {fn} does not exist; make one with "
                                                  f"`fastai-binary-digits train --out {fn}`")
    return load_model_file(path)


def _creatable(path:Path, flag:str, value:str):
    "Check that `path` (absent) can be made: its nearest existing ancestor is a folder where a file can be created"
    anc = next(p for p in path.parents if p.exists())  # `path` is absolute: its root exists
    if not anc.is_dir(): raise NotADirectoryError(f"{flag} {value}: {anc} is a file, not a folder; choose another path")
    _writable(anc, flag, value)


def _writable(folder:Path, flag:str, value:str):
    "Check that a file can be created in `folder` by trying (the only test that holds for root, read-only mounts, ACLs)"
    try: tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise PermissionError(f"{flag} {value}: cannot create files in {folder} ({e.strerror}); choose a folder you "
                              "can write to") from None


def _out_file(value:str, flag:str) -> Path:
    "The file `value` names for `flag` (`~` expanded), checked to be writable before any work is done"
    path = Path(value).expanduser().absolute()
    if path.is_dir(): raise IsADirectoryError(f"{flag} {value} is a folder; give a file name such as model.safetensors")
    if path.exists(): _writable(path.parent, flag, value)  # it will be replaced, atomically
    else: _creatable(path, flag, value)
    return path


def _out_folder(value:str|None, flag:str) -> Path|None:
    "The folder `value` names for `flag` (`~` expanded), checked to be a folder that can be written, or made, in"
    if value is None: return None
    path = Path(value).expanduser().absolute()
    if path.exists():
        if not path.is_dir(): raise NotADirectoryError(f"{flag} {value} is a file; give a folder (it is made if absent)")
        _writable(path, flag, value)
    else: _creatable(path, flag, value)
    return path


def _save_fig(fig, fn:Path):
    "Save `fig` as a PNG at `fn`, atomically (an existing picture is never half-written), and close it"
    import matplotlib.pyplot as plt
    from .files import atomic_path
    try:
        with atomic_path(fn) as tmp: fig.savefig(tmp, format='png', dpi=100, bbox_inches='tight')
    finally: plt.close(fig)


def _loss_name(learn) -> str: return getattr(learn.loss_func, '__name__', type(learn.loss_func).__name__)


def _write_report(learn, dl, folder:Path, what:str, with_loss:bool) -> list:
    "The report's PNGs for `learn` on the labelled loader `dl` (`what` images), in `folder`; returns their paths"
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from fastai.interpret import ClassificationInterpretation
    from .plots import plot_weights
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    def save(key, fig):
        fn = out/_REPORT_FILES[key]
        _save_fig(fig, fn)
        written.append(fn)
    if with_loss:
        fig, ax = plt.subplots(figsize=(6, 4))
        rec = learn.recorder
        rec.plot_loss(skip_start=min(5, len(rec.losses)//4), ax=ax)
        ax.set_title(f'{_loss_name(learn)} per step: training, and validation after each epoch')
        save('loss', fig)
    a, b = learn.dls.vocab
    with learn.no_bar():
        interp = ClassificationInterpretation.from_learner(learn, dl=dl)
        interp.plot_confusion_matrix(title=f'{a} vs {b}: {len(dl.dataset):,} {what} images', figsize=(4, 4))
        save('confusion', plt.gcf())
        save('weights', plot_weights(learn))
        interp.plot_top_losses(min(_N_WORST, len(dl.dataset)))
        save('worst', plt.gcf())
    return written


# ---------------------------------------------------------------------------------------------------------------
# Commands

def _fit(learn, args):
    "Train `learn` as `args` say: the one place where `train` fits (distributed training wraps this)"
    if args.one_cycle: learn.fit_one_cycle(args.epochs, args.lr)
    else: learn.fit(args.epochs, args.lr)


def _quiet_bars_unless_terminal():
    "In a log or a pipe, only fastai's per-epoch table: the bars redraw themselves with carriage returns, for terminals"
    if not sys.stdout.isatty():
        from fastprogress import fastprogress
        fastprogress.NO_BAR = True  # (its own check, `getattr(stdout, 'isatty', False)`, is always true)
        fastprogress.ConsoleProgressBar.fill = ''  # each bar prints it once, to test the terminal's encoding


def _train(args) -> int:
    out, report = _out_file(args.out, '--out'), _out_folder(args.report, '--report')  # before any data or training
    from . import compat  # before fastai: it hides fastai's one import-time warning
    from fastai.torch_core import rank_distrib
    from .learner import binary_learner
    from .data import check_pair
    from .distributed import distrib_ctx_if_launched
    from .model_files import check_model_suffix
    pair = check_pair(tuple(args.pair))
    check_model_suffix(args.out, '--out')
    _quiet_bars_unless_terminal()
    dls, source = _load_dls(args, pair, args.valid)
    learn = binary_learner(dls, args.arch, lr=args.lr, seed=args.seed)
    what = 'official testing' if args.valid == 'testing' else 'held-out training'
    if not rank_distrib():
        print(f"Training {args.arch} on {pair[0]} vs {pair[1]} from {source}: {len(dls.train.dataset):,} training "
              f"images, {len(dls.valid.dataset):,} {what} images for validation", flush=True)
    with distrib_ctx_if_launched(learn): _fit(learn, args)  # under `torchrun`: fastai's `distrib_ctx`, else as is
    if rank_distrib(): return 0  # the other processes of a distributed run: rank 0 alone exports, prints and reports
    out.parent.mkdir(parents=True, exist_ok=True)
    learn.export(out)
    print(f"Exported the learner to {args.out}")
    if report:
        for fn in _write_report(learn, dls.valid, report, 'validation', with_loss=True): print(f"Wrote {fn}")
    return 0


def _predict(args) -> int:
    """One line per image: its digit, 'no digit found', or why it could not be read (stderr; the others are still
    predicted). Exit status 1 when any image got no digit."""
    out = _out_folder(args.save_prepared, '--save-prepared')  # before the model is loaded
    from .files import atomic_path
    from .prepare import load_image
    from PIL import Image
    learn = _load_model(args.model)
    images, errors = [], {}
    for fn in args.images:
        try: images.append(load_image(fn))
        except _USER_ERRORS as e: errors[fn] = str(e)
    readable = [fn for fn in args.images if fn not in errors]
    found, probs, seen = [], [], []
    if readable:
        dl = learn.dls.test_dl(images, prepare=False if args.no_prepare else None)
        with learn.no_bar(): probs, _ = learn.get_preds(dl=dl)  # the loss's activation: the probability of vocab[1]
        found, probs = dl.found.tolist(), probs.view(-1).tolist()
        seen = (dl.dataset.x.cpu()*255).round().byte().view(-1, 28, 28).numpy()
    res = dict(zip(readable, zip(found, probs, seen)))
    a, b = learn.dls.vocab
    names = set()
    failed = False
    for fn in args.images:
        if fn in errors:
            failed = True
            if args.json: print(json.dumps(dict(image=fn, error=errors[fn])), flush=True)
            else: print(f"{fn}: error: {errors[fn]}", file=sys.stderr, flush=True)
            continue
        ok, p, x = res[fn]
        if out is not None and ok:
            name = Path(fn).stem
            while name in names: name += '_'  # two images of the same name (in two folders)
            names.add(name)
            out.mkdir(parents=True, exist_ok=True)
            with atomic_path(out/f'{name}.png') as tmp: Image.fromarray(x).save(tmp, format='PNG')
        if not ok:
            failed = True
            if args.json: print(json.dumps(dict(image=fn, digit=None, probability=None, probabilities=None)))
            else: print(f"{fn}: no digit found")
            continue
        digit, prob = (b, p) if p > 0.5 else (a, 1-p)
        if args.json:
            print(json.dumps(dict(image=fn, digit=digit, probability=round(prob, 6),
                                  probabilities={str(a): round(1-p, 6), str(b): round(p, 6)})))
        else: print(f"{fn}: {digit} ({prob:.3f})")
    return 1 if failed else 0


def _evaluate(args) -> int:
    report = _out_folder(args.report, '--report')  # before any model or data is loaded
    import numpy as np
    from . import compat  # before fastai: it hides fastai's one import-time warning
    from fastai.interpret import ClassificationInterpretation
    _quiet_bars_unless_terminal()
    learn = _load_model(args.model)
    pair = tuple(learn.dls.vocab)
    dl, source = _testing_dl(args, pair, learn.dls.vocab)  # the testing images only
    learn.dls.to(dl.device)
    learn.model.to(dl.device)
    with learn.no_bar():
        loss = float(learn.validate(dl=dl)[0])
        cm = ClassificationInterpretation.from_learner(learn, dl=dl).confusion_matrix()
    acc = float(np.trace(cm)/cm.sum())
    loss_name = _loss_name(learn)
    if args.json:
        print(json.dumps(dict(model=args.model, pair=list(pair), source=source, images=int(cm.sum()), accuracy=acc,
                              loss=loss, loss_func=loss_name, confusion_matrix=cm.tolist())))
    else:
        print(f"{args.model}: {pair[0]} vs {pair[1]} on the official testing images of {source} "
              f"({int(cm.sum()):,} images)")
        print(f"accuracy  {acc:.4f}")
        print(f"loss      {loss:.4f} ({loss_name})")
        print("confusion matrix (rows: actual, columns: predicted)")
        w = max(6, len(str(cm.max())) + 2)
        print(' '*4 + ''.join(f'{d:>{w}}' for d in pair))
        for d, row in zip(pair, cm): print(f'{d:>4}' + ''.join(f'{n:>{w}}' for n in row))
    if report:
        for fn in _write_report(learn, dl, report, 'testing', with_loss=False):
            print(f"Wrote {fn}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _demo(args) -> int:
    _out_folder(args.space, '--space')  # before the model loads
    from .demo import check_port, demo, import_gradio, write_space
    if args.space is not None:
        print(f"Wrote the Space {write_space(args.model, args.space)}: run it with `cd {args.space} && python app.py`")
        return 0
    try: import_gradio()
    except ModuleNotFoundError as e:  # the optional extra: one line that says how to install it
        if e.name != 'gradio': raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.port is not None: check_port(args.host, args.port)  # before the model loads: fail fast
    demo(_load_model(args.model), port=args.port, share=args.share, host=args.host)
    return 0


# ---------------------------------------------------------------------------------------------------------------

def main(argv:list[str]|None=None) -> int:
    "Run the command line on `argv` (default: `sys.argv[1:]`); returns the exit code"
    args = _parser().parse_args(argv)  # bad usage: argparse prints the usage and exits with 2
    try: return args.func(args)
    except _USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:  # an optional extra the command needs (`distributed`); any other is a bug
        if e.name != 'accelerate': raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
