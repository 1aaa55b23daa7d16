"""`fastai-binary-digits` (or `python -m fastai_binary_digits`): `train`, `predict`, `evaluate`, `demo`. Exit status 1
when `predict` gave some image no digit, 2 on bad usage or input (one `error:` line, found before torch is imported)."""
import argparse, errno, json, os, shutil, sys, tempfile, textwrap, warnings
from contextlib import contextmanager, suppress
from pathlib import Path

from .checks import ARCH_NAMES, BinaryDigitsError, check_model_suffix, check_port, existing_model_file

__all__ = ['main']

REPORT_FILES = dict(loss='loss.png', confusion='confusion_matrix.png', weights='weights.png', worst='top_losses.png')
REPORT_ROOM = 400_000  # bytes the report's pictures take at most (they take 100 to 150 KB)
N_WORST = 9  # digits in the grid of worst predictions
CHUNK = 64   # images `predict` reads, prepares and answers at a time: its memory does not grow with their number
MODEL_HELP = ("the learner written by `train --out`: a '.safetensors' file (safe), or fastai's '.pkl' pickle "
              "(it runs code when loaded: only from people you trust)")
WHOLE = 'a whole number of at least 1'


def _positive(kind, what:str, most=float('inf')):
    "An argparse `type` that accepts a `kind` (int or float) above zero and at `most`, naming `what` was expected"
    def conv(s:str):
        with suppress(ValueError):
            if 0 < (v := kind(s)) <= most: return v
        raise argparse.ArgumentTypeError(f"must be {what}, got {s!r}")
    return conv


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    "Descriptions and examples as written; each option's default, where it has one worth showing"
    def _get_help_string(self, action):
        if action.default in (None, False) or '(default' in (action.help or ''): return action.help
        return super()._get_help_string(action)


def _command(sub, name:str, help:str, description:str, func, model=True, **kwargs) -> argparse.ArgumentParser:
    "The parser of `name`, which runs `func` (`kwargs` go to `add_parser`); with `model`, its first argument is MODEL"
    p = sub.add_parser(name, help=help, description=textwrap.fill(description, 79), formatter_class=_Help, **kwargs)
    p.set_defaults(func=func)
    if model: p.add_argument('model', metavar='MODEL', help=MODEL_HELP)
    return p


def _add_source(p, verb:str):
    "The data-source options that `train` and `evaluate` share"
    g = p.add_argument_group('data', textwrap.fill("Where the digits come from (default: fastai's MNIST, "
                             "`untar_data(URLs.MNIST)`; if neither cached nor downloadable, the bundled sample, with a "
                             "notice)", 79))
    src = g.add_mutually_exclusive_group()
    src.add_argument('--sample', action='store_true',
                     help=f"{verb} the bundled MNIST sample (1,000 training and 200 testing images a digit; offline)")
    src.add_argument('--path', metavar='DIR', help="a folder of fastai's mnist_png (training/, testing/) or the four "
                                                   "MNIST IDX files (plain or .gz)")
    g.add_argument('--bs', type=_positive(int, WHOLE), default=256, help='batch size')


def _add_train(sub):
    p = _command(sub, 'train', 'train a model on two digits and export it', "Train a model to tell two MNIST digits "
                 "apart (fastai's progress bars and table of epochs), then export the learner: a '.safetensors' file "
                 "(weights and settings, safe to share; `load_binary_learner`) or fastai's '.pkl' pickle "
                 "(`load_learner`). `predict` and `evaluate` read both.", _train, model=False)
    p.add_argument('--pair', nargs=2, type=int, default=[3, 7], metavar=('A', 'B'),
                   help="the two digits, label 0 for A and 1 for B (default: 3 7, the book's)")
    p.add_argument('--arch', choices=ARCH_NAMES, default='linear',
                   help="the model: the book's linear model, its 784-30-1 net, a deeper net, or a small CNN")
    p.add_argument('--epochs', type=_positive(int, WHOLE), default=20, help='epochs to train')
    p.add_argument('--lr', type=_positive(float, 'a number above 0'), default=0.1, help='learning rate (SGD)')
    p.add_argument('--seed', type=int, help='seed the split, the initial weights, the shuffling: same seed, same table')
    p.add_argument('--one-cycle', action='store_true', help="train with fastai's `fit_one_cycle` rather than `fit`")
    p.add_argument('--valid', choices=['split', 'testing'], default='split',
                   help="validate on 20%% of the training images ('split') or on the official test set ('testing')")
    _add_source(p, 'train on')
    p.add_argument('--out', metavar='FILE', default='model.safetensors',
                   help="where to write the learner: a '.safetensors' file (safe to share) or fastai's '.pkl' pickle")
    p.add_argument('--report', metavar='DIR',
                   help=f"write {', '.join(REPORT_FILES.values())} into DIR, on the validation images")
    p.add_argument('--no-check', action='store_true', help="skip the pair check (the pair's digits against MNIST's "
                   "other eight, trained after the model), by which `predict` says 'neither A nor B' for another digit")


def _add_predict(sub):
    p = _command(sub, 'predict', 'classify image files with an exported model', "Classify image files with a model "
                 "exported by `train`: one line per image, its digit and probability. Images of any size, colour and "
                 "polarity are first made to look like MNIST's digits (`prepare_digit`: the ink cropped, fitted in "
                 "20x20, centred in 28x28). Other answers: 'no digit found', 'N digits found' (side by side), and, "
                 "with the model's pair check, 'neither A nor B' for another digit. Exit status 1 when any image got "
                 "no digit or could not be read.", _predict)
    p.add_argument('images', metavar='IMAGE', nargs='+', help='image files (PNG, JPEG, ...)')
    p.add_argument('--json', action='store_true', help="print one JSON object per line: image, digit (null unless one "
                   "digit of the pair is found), in_pair, probability, probabilities of both digits, the pair check's "
                   "other_probability, digits (how many were found); or image and error")
    p.add_argument('--save-prepared', metavar='DIR',
                   help='write the 28x28 image the model saw for each image into DIR, as DIR/<image name>.png')
    p.add_argument('--no-prepare', action='store_true',
                   help="take the images as MNIST's already (light digit on dark, centred): only resize them to 28x28")


def _add_evaluate(sub):
    p = _command(sub, 'evaluate', "measure a model on the official testing images", "Accuracy, loss and confusion "
                 "matrix of a model exported by `train` on the official MNIST testing images of its two digits.",
                 _evaluate)
    _add_source(p, 'evaluate on')
    p.add_argument('--json', action='store_true', help='print the results as one JSON object')
    p.add_argument('--report', metavar='DIR', help=f"write {', '.join(list(REPORT_FILES.values())[1:])} into DIR")


def _add_demo(sub):
    p = _command(sub, 'demo', 'a page where you draw a digit and the model answers', "Serve a page (Gradio) where you "
                 "draw or upload a digit and the model answers as you draw, showing the 28x28 picture it received. It "
                 "stays on this machine (127.0.0.1) unless you pass --host or --share. Needs Gradio: pip install -e "
                 "\".[demo]\" in a clone of the repository, or pip install \"gradio>=6,<7\".", _demo,
                 epilog="examples:\n  fastai-binary-digits demo model.safetensors --port 7860\n"
                        "  fastai-binary-digits demo model.safetensors --space my_space/   # then: cd my_space && "
                        "python app.py")
    p.add_argument('--port', type=_positive(int, 'a port number from 1 to 65535', 65535),
                   help='the port to serve on (default: the first free one from 7860)')
    p.add_argument('--host', default='127.0.0.1', help="the address to serve on: 127.0.0.1 keeps the page on this "
                   "machine; an address of this machine on a network (or all of them) opens it to that network")
    p.add_argument('--share', action='store_true',
                   help="also serve the page through a public link from Gradio's share servers (never on by default)")
    p.add_argument('--space', metavar='DIR', help="rather than serving, write DIR as a Hugging Face Gradio Space: "
                   "app.py (`python app.py` runs it), requirements.txt, README.md, the model and this package's code")


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(
        prog='fastai-binary-digits', formatter_class=_Help,
        description=textwrap.fill("Chapter 4 of the fastai book as a tool: train, use and evaluate a classifier of two "
                                  "MNIST digits. `fastai-binary-digits COMMAND --help` tells more.", 79),
        epilog="examples:\n  fastai-binary-digits train --sample --pair 4 8 --epochs 5 --report report/\n"
               "  fastai-binary-digits predict model.safetensors digit.png another.jpg\n"
               "  fastai-binary-digits evaluate model.safetensors --sample")
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for add in (_add_train, _add_predict, _add_evaluate, _add_demo): add(sub)
    return parser


def _model_file(value:str) -> str:
    "`value` if it names a model file that exists (a missing one's wrong suffix named first: `train --out` refuses it)"
    try: existing_model_file(value)
    except FileNotFoundError as e:
        check_model_suffix(value)
        raise FileNotFoundError(f"{e}; make one with `fastai-binary-digits train --out {value}`") from None
    check_model_suffix(value)
    return value


def _out(value:str|None, flag:str, folder:bool=True) -> Path|None:
    "The folder (or file) `value` names for `flag`, `~` expanded, checked before any work to be writable or makeable"
    if value is None: return None
    path = Path(value).expanduser().absolute()
    if folder and path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{flag} {value} is a file; give a folder (it is made if absent)")
    if not folder and path.is_dir():
        raise IsADirectoryError(f"{flag} {value} is a folder; give a file name such as model.safetensors")
    anc = _existing(path if folder else path.parent)  # where a file will be made (`path` is absolute: its root exists)
    if not anc.is_dir(): raise NotADirectoryError(f"{flag} {value}: {anc} is a file, not a folder; choose another path")
    try: tempfile.TemporaryFile(dir=anc).close()  # trying is the only test that holds for root, read-only mounts, ACLs
    except OSError as e: raise PermissionError(
        f"{flag} {value}: cannot create files in {anc} ({e.strerror}); choose a folder you can write to") from None
    return path


def _size(n:int) -> str:
    return f"{n/1e9:,.1f} GB" if n >= 1e9 else f"{n/1e6:,.1f} MB" if n >= 1e6 else f"{n/1e3:,.0f} KB"


def _existing(path:Path) -> Path: return next(p for p in (path, *path.parents) if p.exists())


def _disk(path:Path) -> tuple:
    "The disk that holds, or will hold, `path`, named by the folder it is mounted at, and its free bytes"
    mount = _existing(path).resolve()
    while not os.path.ismount(mount): mount = mount.parent
    return f"the disk mounted at {mount}", shutil.disk_usage(mount).free


def _check_room(needs:list):
    "A clear error, before any work, when a disk lacks room: `needs` holds (path, bytes, flag, value) for each output"
    dev = lambda path: _existing(path).stat().st_dev
    for path, _, flag, value in needs:
        (disk, free), need = _disk(path), sum(n for p, n, *_ in needs if dev(p) == dev(path))
        if free < need: raise BinaryDigitsError(
            f"{flag} {value}: {disk} has {_size(free)} free, and what this command writes there needs about "
            f"{_size(need)}: free some space there or choose another place (nothing was done)")


def _write_failure(e:Exception, path:Path) -> str:
    "Why writing `path` failed, in words: a full disk is named, with the room left on it"
    if isinstance(e, OSError) and e.errno not in (errno.ENOSPC, errno.EDQUOT): return e.strerror or str(e)
    disk, free = _disk(path)
    return f"{disk} is full ({_size(free)} free)"


def _source(args) -> tuple:
    "`from_mnist`'s source arguments for `args`, and its name: fastai's MNIST, else the bundled sample, with a notice"
    from .mnist import find_source
    if args.sample: return dict(sample=True), 'the bundled sample'
    if args.path is not None: return dict(path=args.path), args.path
    try: return dict(path=find_source()[1]), "fastai's MNIST"
    except ConnectionError as e:
        cause = f' ({type(e.__cause__).__name__})' if e.__cause__ is not None else ''
        print(f"notice: fastai's MNIST is neither cached nor downloadable{cause}; using the bundled sample instead "
              "(--path DIR for a local copy)", file=sys.stderr, flush=True)
        return dict(sample=True), 'the bundled sample'


def _load_model(fn:str):
    "The learner in `fn` (the safe '.safetensors' or fastai's '.pkl', which shows fastai's warning), on the CPU"
    from .learner import load_model_file
    return load_model_file(Path(fn).expanduser())


def _loss_name(learn) -> str: return getattr(learn.loss_func, '__name__', type(learn.loss_func).__name__)


def _report(learn, dl, folder:Path, what:str, with_loss:bool, done:str='', file=None):
    "Write the report's PNGs for `learn` on the labelled `dl` (`what` images) into `folder`; a failure says `done`"
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from fastai.interpret import ClassificationInterpretation
    from .files import atomic_path
    from .plots import plot_weights
    figs = {}
    if with_loss:
        figs['loss'], ax = plt.subplots(figsize=(6, 4))
        learn.recorder.plot_loss(skip_start=min(5, len(learn.recorder.losses)//4), ax=ax)
        ax.set_title(f'{_loss_name(learn)} per step: training, and validation after each epoch')
    a, b = learn.dls.vocab
    with learn.no_bar():
        interp = ClassificationInterpretation.from_learner(learn, dl=dl)
        interp.plot_confusion_matrix(title=f'{a} vs {b}: {len(dl.dataset):,} {what} images', figsize=(4, 4))
        figs['confusion'] = plt.gcf()
        figs['weights'] = plot_weights(learn)
        interp.plot_top_losses(min(N_WORST, len(dl.dataset)))
        figs['worst'] = plt.gcf()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for key, fig in figs.items():  # each written atomically: an existing picture is never half-written
            with atomic_path(folder/REPORT_FILES[key]) as tmp:
                fig.savefig(tmp, format='png', dpi=100, bbox_inches='tight')
    except OSError as e:
        raise OSError(f"Could not write the report into {folder}: {_write_failure(e, folder)}{done}") from e
    finally:
        for fig in figs.values(): plt.close(fig)
    for key in figs: print(f"Wrote {folder/REPORT_FILES[key]}", file=file)


@contextmanager
def _bars_for_terminals():
    "In a log or a pipe, only fastai's per-epoch table: the bars redraw themselves with carriage returns, for terminals"
    from fastprogress import fastprogress
    before = fastprogress.NO_BAR, fastprogress.ConsoleProgressBar.fill
    if not sys.stdout.isatty():
        fastprogress.NO_BAR = True  # (its own check, `getattr(stdout, 'isatty', False)`, is always true)
        fastprogress.ConsoleProgressBar.fill = ''  # each bar prints it once, to test the terminal's encoding
    try: yield
    finally: fastprogress.NO_BAR, fastprogress.ConsoleProgressBar.fill = before


def _train(args) -> int:
    a, b = args.pair
    if a == b or not (0 <= a <= 9 and 0 <= b <= 9):
        raise BinaryDigitsError(f"--pair {a} {b}: give two different digits from 0 to 9, such as --pair 3 7")
    out, report = _out(args.out, '--out', folder=False), _out(args.report, '--report')  # before any data or training
    check_model_suffix(args.out, '--out')
    with _bars_for_terminals(): return _fit_and_export(args, (a, b), out, report)


def _fit_and_export(args, pair:tuple, out:Path, report:Path|None) -> int:
    from fastai.torch_core import rank_distrib
    from .data import BinaryDigitsDataLoaders
    from .distributed import alone, distrib_ctx_if_launched
    from .learner import binary_learner
    from .model_files import file_size
    from .pair_check import pair_check_dls
    size = file_size(args.arch, out.suffix, not args.no_check)  # checked for room before any data or training
    _check_room([(out, size, '--out', args.out)] + ([(report, REPORT_ROOM, '--report', args.report)] if report else []))
    src, source = _source(args)
    dls = BinaryDigitsDataLoaders.from_mnist(pair=pair, valid=args.valid, seed=args.seed, bs=args.bs, **src)
    learn = binary_learner(dls, args.arch, lr=args.lr, seed=args.seed)
    # the check's other digits are loaded first: a source without them fails at once, not after the training
    check_dls = None if args.no_check or rank_distrib() else pair_check_dls(dls)
    what = 'official testing' if args.valid == 'testing' else 'held-out training'
    if not rank_distrib():
        print(f"Training {args.arch} on {pair[0]} vs {pair[1]} from {source}: {len(dls.train.dataset):,} training "
              f"images, {len(dls.valid.dataset):,} {what} images for validation", flush=True)
    with distrib_ctx_if_launched(learn):  # under `torchrun`: fastai's `distrib_ctx`; alone, as it is
        if args.one_cycle: learn.fit_one_cycle(args.epochs, args.lr)
        else: learn.fit(args.epochs, args.lr)
    if rank_distrib(): return 0  # the other processes of a distributed run: rank 0 alone exports and reports
    with alone():
        if check_dls is not None: _fit_pair_check(learn, check_dls, args.seed)
        _export(learn, out, size)
        print(f"Exported the learner to {args.out}")
        if report: _report(learn, dls.valid, report, 'validation', True, f' (the model is in {args.out})')
    return 0


def _fit_pair_check(learn, dls, seed:int|None):
    "Train the pair check quietly (its own table would read as more epochs of the model's) and say what it does"
    a, b = learn.dls.vocab
    print(f"Training the pair check: {a} or {b} against the other digits, so that `predict` can say 'neither'",
          flush=True)
    learn.fit_pair_check(dls=dls, seed=seed, quiet=True)
    st = learn.pair_check.stats
    print(f"Pair check: on its {len(dls.valid.dataset):,} validation images, {st['passed']:.1%} of the {a}s "
          f"and {b}s pass and {st['flagged']:.1%} of the other digits are flagged (--no-check to skip it)")


def _export(learn, out:Path, size:int):
    "`learn.export(out)` (`size` bytes at most); should that fail (a full disk), the model is kept where there is room"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        learn.export(out)
    except (OSError, RuntimeError) as e:  # (torch's pickle writer raises a RuntimeError, 'file write failed')
        if not isinstance(e, OSError) and shutil.disk_usage(_existing(out)).free >= size: raise
        raise OSError(f"Could not write {out}: {_write_failure(e, out)}. {_rescue(learn, out)}") from e


def _rescue(learn, out:Path) -> str:
    "Export `learn` where there is room, the temporary folder or the home folder; where it went, or that it is lost"
    for folder in dict.fromkeys((Path(tempfile.gettempdir()), Path.home())):
        with suppress(OSError):  # no file can be made there: the next folder
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'{out.stem}-', suffix=out.suffix)
            os.close(fd)
            try: learn.export(Path(tmp))
            except (OSError, RuntimeError): os.unlink(tmp)  # no room there either: the next folder
            else: return f"The trained model was written to {tmp} instead: move it where you want it, such as {out}"
    return "The trained model could not be written anywhere else either: free some space and train again"


def _save_seen(x28, fn:str, out:Path, names:set):
    "Write the 28x28 the model saw for image `fn` into `out`, under a name no other image of this call has"
    from PIL import Image
    from .files import atomic_path
    name = Path(fn).stem
    while name in names: name += '_'  # two images of the same name (in two folders)
    names.add(name)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out/f'{name}.png') as tmp: Image.fromarray(x28).save(tmp, format='PNG')
    except OSError as e: raise OSError(f"Could not write {out/name}.png: {_write_failure(e, out)}") from e


def _answer(fn:str, n:int, in_pair:bool, p:float, q:float, vocab, check, as_json:bool) -> bool:
    "Print `fn`'s answer (`n` digits found; `p`: vocab[1]'s probability; `q`: another digit's); whether it got one"
    a, b = vocab
    digit, prob = (b, p) if p > 0.5 else (a, 1-p)
    answered = n == 1 and in_pair
    if as_json:
        checked, r = n == 1 and check is not None, lambda v: round(v, 6)
        print(json.dumps(dict(image=fn, digit=digit if answered else None, in_pair=in_pair if checked else None,
                              probability=r(prob) if answered else None,
                              probabilities={str(a): r(1-p), str(b): r(p)} if n == 1 else None,
                              other_probability=r(q) if checked else None, digits=n)))
    elif answered: print(f"{fn}: {digit} ({prob:.3f})")
    elif n == 0: print(f"{fn}: no digit found")
    elif n > 1: print(f"{fn}: {n} digits found side by side: give one digit per image")
    elif q > check.threshold: print(f"{fn}: neither {a} nor {b} (it looks like another digit: {q:.3f})")
    else: print(f"{fn}: neither {a} nor {b} (its shape is unlike the {a}s and {b}s the check learned from)")
    return answered


def _predict(args) -> int:
    "One line per image (an unreadable one's on stderr, the others still answered); exit status 1 when any got no digit"
    import numpy as np
    from .prepare import digit_image
    out = _out(args.save_prepared, '--save-prepared')  # before the model is loaded
    learn = _load_model(_model_file(args.model))
    prepare = not args.no_prepare and getattr(learn.dls, 'prepare', True)
    check = getattr(learn.dls, 'pair_check', None)
    if check is None: print(f"note: {args.model} holds no pair check, so it answers {learn.dls.vocab[0]} or "
                            f"{learn.dls.vocab[1]} for any digit; train it again without --no-check to add one",
                            file=sys.stderr, flush=True)
    failed, names = False, set()
    for i in range(0, len(args.images), CHUNK):
        seen, errors = {}, {}  # (the 28x28 the model sees, or None, and how many digits) or why it could not be read
        for fn in args.images[i:i+CHUNK]:
            try: seen[fn] = digit_image(fn, prepare)
            except (BinaryDigitsError, OSError) as e: errors[fn] = str(e)
        if seen:  # what the model sees, as `test_dl` would make it; a blank where no digit was found
            x28s = [np.zeros((28, 28), np.uint8) if a is None else a for a, _ in seen.values()]
            dl = learn.dls.test_dl(x28s, prepare=False)
            with learn.no_bar(): probs = learn.get_preds(dl=dl)[0].view(-1).tolist()  # the probability of vocab[1]
            flags = [n for _, n in seen.values()], dl.in_pair.tolist(), probs, dl.other_probs.tolist(), x28s
            answers = dict(zip(seen, zip(*flags)))  # (`in_pair` and `other_probs`: the pair check's, on every image)
        for fn in args.images[i:i+CHUNK]:
            if fn in errors:
                failed = True
                if args.json: print(json.dumps(dict(image=fn, error=errors[fn])), flush=True)
                else: print(f"{fn}: error: {errors[fn]}", file=sys.stderr, flush=True)
                continue
            n, in_pair, p, q, x28 = answers[fn]
            if out is not None and n: _save_seen(x28, fn, out, names)
            failed |= not _answer(fn, n, in_pair, p, q, learn.dls.vocab, check, args.json)
    return 1 if failed else 0


def _print_evaluation(args, pair, source:str, acc:float, loss:float, loss_name:str, cm):
    if args.json:
        return print(json.dumps(dict(model=args.model, pair=list(pair), source=source, images=int(cm.sum()),
                                     accuracy=acc, loss=loss, loss_func=loss_name, confusion_matrix=cm.tolist())))
    print(f"{args.model}: {pair[0]} vs {pair[1]} on the official testing images of {source} ({int(cm.sum()):,} images)")
    print(f"accuracy  {acc:.4f}\nloss      {loss:.4f} ({loss_name})")
    print("confusion matrix (rows: actual, columns: predicted)")
    w = max(6, len(str(cm.max())) + 2)
    for d, row in [('', pair), *zip(pair, cm)]: print(f'{d:>4}' + ''.join(f'{n:>{w}}' for n in row))


def _evaluate(args) -> int:
    report = _out(args.report, '--report')  # before any model or data is loaded
    if report: _check_room([(report, REPORT_ROOM, '--report', args.report)])
    learn = _load_model(_model_file(args.model))
    from fastai.interpret import ClassificationInterpretation
    from .data import testing_dl
    pair = tuple(learn.dls.vocab)
    with _bars_for_terminals():
        src, source = _source(args)
        dl = testing_dl(pair, bs=args.bs, **src)  # the testing images only
        learn.dls.to(dl.device)
        learn.model.to(dl.device)
        with learn.no_bar():
            loss = float(learn.validate(dl=dl)[0])
            cm = ClassificationInterpretation.from_learner(learn, dl=dl).confusion_matrix()
        _print_evaluation(args, pair, source, float(cm.trace()/cm.sum()), loss, _loss_name(learn), cm)
        if report: _report(learn, dl, report, 'testing', with_loss=False, file=sys.stderr if args.json else None)
    return 0


def _demo(args) -> int:
    _model_file(args.model)
    _out(args.space, '--space')
    if args.space is None: check_port(args.host, args.port)  # before the model loads
    from .demo import demo, import_gradio, write_space
    if args.space is not None:
        print(f"Wrote the Space {write_space(args.model, args.space)}: run it with `cd {args.space} && python app.py`")
        return 0
    import_gradio()
    demo(_load_model(args.model), port=args.port, share=args.share, host=args.host)
    return 0


def main(argv:list[str]|None=None) -> int:
    "Run the command line on `argv` (default: `sys.argv[1:]`); returns the exit status"
    args = _parser().parse_args(argv)  # bad usage: argparse prints the usage and exits with 2
    try:
        with warnings.catch_warnings():
            # fastai's layers call the deprecated `torch.jit.script` when imported: nothing a user can act on
            warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
            # PIL's warning about a picture of over 89 megapixels: the package refuses it anyway, in its own words
            warnings.filterwarnings('ignore', message=r'Image size \(\d+ pixels\) exceeds limit')
            return args.func(args)
    except (BinaryDigitsError, OSError, ModuleNotFoundError) as e:  # a user's mistake or input: one line, what to do
        if isinstance(e, ModuleNotFoundError) and e.name not in ('accelerate', 'gradio'): raise  # not an extra: a bug
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
