"""Model files that cannot run code: the safe format's round trip for every built-in architecture, hostile and lying
files refused with clear errors, and fastai's pickle export beside it with its warning shown"""
import json, os, pickle, re, subprocess, sys, textwrap, warnings

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn
from safetensors import safe_open
from safetensors.torch import save_file
from fastai.interpret import ClassificationInterpretation
from fastai.learner import Learner, load_learner
from fastai.losses import BCEWithLogitsLossFlat

from fastai_binary_digits import (ARCHS, BinaryDigitsDataLoaders, BinaryDigitsError, BinaryLearner, __version__,
                                  binary_learner, export_binary_learner, load_binary_learner, load_model_file, log_loss,
                                  mnist_loss, plot_weights)
from fastai_binary_digits.cli import main
from fastai_binary_digits.model_files import FORMAT_VERSION, MAX_FILE, content_sha256

PICKLE_WARNING = r"insecure pickle"  # fastai's warning when `load_learner` unpickles a file


@pytest.fixture(scope='module')
def dls():
    "4 vs 8 from the bundled sample on the CPU (bitwise comparisons need the same device on both sides)"
    return BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=42, device='cpu')


@pytest.fixture(scope='module')
def learners(dls):
    "Each built-in architecture trained for one epoch"
    res = {}
    for arch in ARCHS:
        learn = binary_learner(dls, arch, seed=0)
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 0.1)
        res[arch] = learn
    return res


@pytest.fixture(scope='module')
def files(learners, tmp_path_factory):
    "Each learner exported in both formats: {arch: (safe file, pickle file)}"
    d = tmp_path_factory.mktemp('model_files')
    res = {}
    for arch, learn in learners.items():
        learn.export(d/f'{arch}.safetensors')
        learn.export(d/f'{arch}.pkl')
        res[arch] = d/f'{arch}.safetensors', d/f'{arch}.pkl'
    return res


@pytest.fixture(scope='module')
def images(sample_png):
    "Real testing digits as PNG files: 8 fours and 8 eights"
    return [str(fn) for digit in (4, 8) for fn in sorted((sample_png/'testing'/str(digit)).glob('*.png'))[:8]]


def _preds(learn, images) -> tuple:
    "Probabilities (as bytes, for bitwise comparison) and decoded labels of `images`, and `predict` of the first"
    probs, _, dec = learn.get_preds(dl=learn.dls.test_dl(images), with_decoded=True)
    digit, label, prob = learn.predict(images[0])
    return probs.numpy().tobytes().hex(), dec.view(-1).tolist(), [int(digit), int(label), prob.numpy().tobytes().hex()]


# ---------------------------------------------------------------------------------------------------------------
# Round trip

def test_round_trip_in_a_new_process_is_bitwise(learners, files, images):
    "Each built-in architecture's safe file, loaded in a fresh process, predicts bitwise as the learner that wrote it"
    here = {arch: _preds(learn, images) for arch, learn in learners.items()}
    code = textwrap.dedent("""
        import json, sys
        from fastai_binary_digits import load_binary_learner
        files, images = json.loads(sys.argv[1]), json.loads(sys.argv[2])
        res = {}
        for arch, fn in files.items():
            learn = load_binary_learner(fn)
            probs, _, dec = learn.get_preds(dl=learn.dls.test_dl(images), with_decoded=True)
            digit, label, prob = learn.predict(images[0])
            res[arch] = [probs.numpy().tobytes().hex(), dec.view(-1).tolist(),
                         [int(digit), int(label), prob.numpy().tobytes().hex()]]
        print(json.dumps(res))
    """)
    fns = json.dumps({arch: str(safe) for arch, (safe, _) in files.items()})
    out = subprocess.run([sys.executable, '-c', code, fns, json.dumps(images)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert PICKLE_WARNING not in out.stderr  # nothing was unpickled
    there = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(there) == set(ARCHS)
    for arch in ARCHS:
        assert there[arch] == [here[arch][0], here[arch][1], here[arch][2]], arch
    assert len(set(here[a][0] for a in ARCHS)) == 4  # four different models, not one file four times
    assert 0 < sum(here['cnn'][1]) < len(images)      # both digits predicted: a trained model, not a constant


def test_the_file_holds_the_facts_and_the_weights(learners, files):
    with safe_open(files['cnn'][0], framework='pt') as f:
        meta = f.metadata()
        digest = meta.pop('sha256')
        assert meta == dict(format='fastai_binary_digits', format_version='1', pair='[4, 8]',  # 1: no pair check
                            arch='cnn', loss='mnist_loss', prepare='true', package_version=__version__)
        state = learners['cnn'].model.state_dict()
        assert sorted(f.keys()) == sorted(state)
        for k, v in state.items(): assert torch.equal(f.get_tensor(k), v), k  # batchnorm's running stats too
        assert re.fullmatch('[0-9a-f]{64}', digest) and digest == content_sha256(state, meta)


def test_loaded_learner_is_inference_ready(learners, files, dls, tmp_path):
    "What `load_learner` gives: vocab, predict, get_preds, validate, show_results and interpretation on labelled images"
    learn = load_binary_learner(files['linear'][0])
    assert type(learn) is BinaryLearner and learn.dls.vocab == [4, 8] and all(type(d) is int for d in learn.dls.vocab)
    assert learn.loss_func is mnist_loss and learn.dls.prepare is True and learn.path == files['linear'][0].parent
    assert next(learn.model.parameters()).device.type == 'cpu' and not learn.model.training
    x, y = dls.valid.dataset.x[:40], dls.valid.dataset.y[:40].view(-1).tolist()
    dl = learn.dls.test_dl(list(zip(x, y)), with_labels=True)
    probs, targs, dec = learn.get_preds(dl=dl, with_decoded=True)
    assert torch.equal(targs.view(-1), torch.tensor(y)) and torch.equal(dec, (probs > 0.5).float())
    orig = learners['linear']
    assert torch.equal(probs, orig.get_preds(dl=orig.dls.test_dl(list(zip(x, y)), with_labels=True))[0])
    loss, acc = learn.validate(dl=dl)
    assert acc == pytest.approx(float(((probs.view(-1) > 0.5).float() == torch.tensor(y)).float().mean()))
    plt.close('all')
    learn.show_results(dl=dl, max_n=4)  # fastai's `show_results` on images with labels: target/prediction
    assert [ax.get_title() for ax in plt.gcf().axes if ax.images] == [
        f'{[4, 8][int(t)]}/{[4, 8][int(p)]}' for t, p in zip(y[:4], dec.view(-1)[:4])]
    learn.show_results(dl=learn.dls.test_dl(list(x)), max_n=4)  # unlabelled: the predictions alone
    assert [ax.get_title() for ax in plt.gcf().axes if ax.images] == [str([4, 8][int(p)]) for p in dec.view(-1)[:4]]
    interp = ClassificationInterpretation.from_learner(learn, dl=dl)
    assert interp.confusion_matrix().sum() == 40
    interp.plot_top_losses(3)
    assert len([ax for ax in plt.gcf().axes if ax.images]) == 3
    assert len([ax for ax in plot_weights(learn).axes if ax.images]) == 1
    plt.close('all')


@pytest.mark.parametrize('arch', list(ARCHS))
def test_loaded_weights_are_the_models_own(arch, learners, files, dls, tmp_path):
    "Every tensor real, on the CPU, a leaf with its own memory, trainable, and exported again byte for byte"
    learn = load_binary_learner(files[arch][0])
    own = learn.model.state_dict(keep_vars=True)
    assert not any(t.is_meta for t in own.values()) and all(t.device.type == 'cpu' for t in own.values())
    params = list(learn.model.parameters())
    assert params and all(type(p) is nn.Parameter and p.requires_grad and p.is_leaf for p in params)
    assert len({t.untyped_storage().data_ptr() for t in own.values()}) == len(own)  # no two share memory
    for k, t in learners[arch].model.state_dict().items(): assert torch.equal(own[k], t), k
    learn.path = tmp_path
    learn.export('again.safetensors')  # safetensors refuses tensors that share memory
    again, first = _raw(tmp_path/'again.safetensors'), _raw(files[arch][0])  # the metadata's order varies
    assert again == first
    learn.dls = dls  # trains as the learner that wrote it would
    before = {k: t.clone() for k, t in own.items()}
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 0.1)
    first = next(k for k in before if k.endswith('weight'))  # the first layer's weights
    assert not torch.equal(before[first], learn.model.state_dict()[first])
    for k, t in load_binary_learner(files[arch][0]).model.state_dict().items():  # the file and its next load: unchanged
        assert torch.equal(t, before[k]), k


def test_loss_and_prepare_travel_with_the_file(tmp_path):
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(9, 1), sample=True, seed=0, device='cpu')
    dls.prepare = False  # images taken as they are
    learn = binary_learner(dls, 'simple', loss_func=log_loss, seed=0)
    export_binary_learner(learn, tmp_path/'m.safetensors')  # the same as `learn.export` for any fastai `Learner`
    back = load_model_file(tmp_path/'m.safetensors')
    assert back.loss_func is log_loss and back.dls.prepare is False and back.dls.vocab == [9, 1]
    x = dls.valid.dataset.x[:16]
    assert torch.equal(back.get_preds(dl=back.dls.test_dl(list(x)))[0], learn.get_preds(dl=dls.test_dl(list(x)))[0])


def test_a_plain_fastai_learner_and_a_pickle_convert(dls, files, tmp_path):
    "A fastai `Learner` built by hand with a built-in model, and a learner loaded from fastai's pickle, export safely"
    learn = Learner(dls, nn.Linear(28*28, 1), loss_func=mnist_loss)
    export_binary_learner(learn, tmp_path/'plain.safetensors')
    assert torch.equal(load_binary_learner(tmp_path/'plain.safetensors').model.weight, learn.model.weight)
    with pytest.warns(UserWarning, match=PICKLE_WARNING): pickled = load_learner(files['deep'][1])
    pickled.export(tmp_path/'converted.safetensors')
    back = load_binary_learner(tmp_path/'converted.safetensors')
    assert all(torch.equal(a, b) for a, b in zip(back.model.state_dict().values(), pickled.model.state_dict().values()))


def test_export_is_atomic(learners, tmp_path, monkeypatch):
    fn = tmp_path/'model.safetensors'
    learners['linear'].export(fn)
    good = fn.read_bytes()
    from fastai_binary_digits import model_files
    def _fail(*a, **k): raise OSError('disk full')
    monkeypatch.setattr(model_files, 'save', _fail)
    with pytest.raises(OSError, match='disk full'): learners['simple'].export(fn)
    assert fn.read_bytes() == good and not list(tmp_path.glob('.*.tmp'))


# ---------------------------------------------------------------------------------------------------------------
# What the safe format cannot hold

class TinyNet(nn.Module):
    "A custom model"
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(28*28, 1)
    def forward(self, x): return self.fc(x)


@pytest.mark.parametrize('arch, loss, message', [
    (TinyNet, mnist_loss, r"`learn.model` is a custom TinyNet, not one of the built-in architectures, which the safe "
                          r"format cannot hold.*Export fastai's pickle instead, `learn.export\('model.pkl'\)`"),
    (lambda: nn.Sequential(nn.Linear(784, 40), nn.ReLU(), nn.Linear(40, 1)), mnist_loss,
     r"`learn.model` is a Sequential like 'simple', but with other sizes or settings.*learn.export\('model.pkl'\)"),
    ('linear', BCEWithLogitsLossFlat(), r"`learn.loss_func` is .*BCEWithLogitsLoss.*trained with mnist_loss or "
                                        r"log_loss.*learn.export\('model.pkl'\)"),
], ids=['custom module', 'other sizes', 'other loss'])
def test_what_the_safe_format_cannot_hold_points_to_the_pickle(dls, tmp_path, arch, loss, message):
    learn = binary_learner(dls, arch, loss_func=loss)
    with pytest.raises(ValueError, match=message): learn.export(tmp_path/'m.safetensors')
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary file
    learn.export(tmp_path/'m.pkl')  # fastai's export holds it
    assert (tmp_path/'m.pkl').stat().st_size > 1000


def test_export_bad_arguments(learners, tmp_path):
    learn = learners['linear']
    with pytest.raises(ValueError, match=r"`fname` '.*m.pt' must end in '.safetensors'"):
        export_binary_learner(learn, tmp_path/'m.pt')
    with pytest.raises(TypeError, match=r"pickle_protocol apply to fastai's pickle export"):
        learn.export(tmp_path/'m.safetensors', pickle_protocol=4)
    learn.model.double()
    try:
        with pytest.raises(ValueError, match=r"'weight' of the model is torch.float64.*learn.model.float\(\)"):
            learn.export(tmp_path/'m.safetensors')
    finally: learn.model.float()
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------------------
# Hostile files: a pickle under a safe name is never unpickled

class Hostile:
    "Unpickling it runs code, here writing a marker file: what a malicious model file could do instead"
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


HOSTILE = {  # how the pickle is written: fastai's and torch's zip archive, a bare pickle, the oldest pickle protocol
    'torch.save': lambda obj, fn: torch.save(obj, fn),
    'pickle': lambda obj, fn: fn.write_bytes(pickle.dumps(obj)),
    'pickle protocol 0': lambda obj, fn: fn.write_bytes(pickle.dumps(obj, protocol=0)),
}


@pytest.mark.parametrize('how', HOSTILE)
def test_a_hostile_pickle_named_safetensors_is_never_unpickled(how, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path/'marker'
    HOSTILE[how](Hostile(marker), tmp_path/'model.safetensors')
    msg = r"Cannot load .*model.safetensors as a safetensors model file: (it holds a (zip archive|pickle)|its first 8)"
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # fastai's pickle warning would be an error: `load_learner` is never reached
        for load in (load_binary_learner, load_model_file):
            with pytest.raises(ValueError, match=msg): load(tmp_path/'model.safetensors')
    assert not marker.exists()
    # the control: the same bytes named '.pkl' are unpickled by fastai, with its warning, and run their code
    (tmp_path/'model.safetensors').rename(tmp_path/'hostile.pkl')
    with pytest.warns(UserWarning, match=PICKLE_WARNING), pytest.raises(ValueError, match='Could not load the model'):
        load_model_file(tmp_path/'hostile.pkl')
    assert marker.read_text() == 'pwned'


def test_the_command_line_refuses_a_hostile_pickle(tmp_path, images):
    "In a new process, `predict` and `evaluate` given a pickle named '.safetensors': exit 2, one clear line, no marker"
    marker = tmp_path/'marker'
    torch.save(Hostile(marker), tmp_path/'model.safetensors')
    for args in (['predict', 'model.safetensors', images[0]], ['evaluate', 'model.safetensors', '--sample']):
        res = subprocess.run([sys.executable, '-m', 'fastai_binary_digits', *args], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 2 and res.stdout == '', res.stderr
        assert res.stderr.splitlines() == [
            "error: Cannot load model.safetensors as a safetensors model file: it holds a zip archive, as `torch.save` "
            "and fastai's `learn.export` write (a pickle, which can run code when loaded, so it is never opened from a "
            "'.safetensors' name). Only if it comes from someone you trust, rename it to '.pkl' and load it as "
            "fastai's export"]
        assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# Safe files whose header lies: each a clear error naming what is wrong

def _tensors_and_metadata(fn):
    with safe_open(fn, framework='pt') as f: return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _meta(**kw):
    "An edit that sets (or, for None, removes) metadata entries"
    def edit(t, m):
        for k, v in kw.items():
            if v is None: m.pop(k)
            else: m[k] = v
    return edit


LIES = [  # (what, edit of the tensors `t` and metadata `m`, the error)
    ('wrong shape', lambda t, m: t.update(weight=t['weight'].reshape(784, 1)),
     r"its tensors are not those of the 'linear' architecture: size mismatch for weight: copying a param with shape "
     r"torch.Size\(\[784, 1\]\) from checkpoint, the shape in current model is torch.Size\(\[1, 784\]\)"),
    ('missing tensor', lambda t, m: t.pop('bias'), r"its tensors are not those of the 'linear' architecture: Missing key\(s\) in state_dict: \"bias\""),
    ('extra tensor', lambda t, m: t.update(backdoor=torch.zeros(3)),
     r"its tensors are not those of the 'linear' architecture: Unexpected key\(s\) in state_dict: \"backdoor\""),
    ('extra tensors', lambda t, m: t.update({k: torch.zeros(1) for k in 'edcba'}),  # named in order, on every load
     r"its tensors are not those of the 'linear' architecture: Unexpected key\(s\) in state_dict: \"a\", \"b\", \"c\", "
     r"\"d\", \"e\"\."),
    ('wrong dtype', lambda t, m: t.update(weight=t['weight'].double()),
     r"its tensor 'weight' is torch.float64; the 'linear' architecture needs torch.float32"),
    ('newer format version', _meta(format_version=str(FORMAT_VERSION + 1), package_version='9.0'),
     rf"it is format version {FORMAT_VERSION + 1}, written by a newer fastai_binary_digits \(9.0\); this one \(.*\) "
     rf"reads up to version {FORMAT_VERSION}: upgrade the package"),
    ('bad format version', _meta(format_version='one'), r"its format version is 'one'; expected a whole number from 1"),
    ('zero format version', _meta(format_version='0'), r"its format version is '0'"),
    ('unicode digit format version', _meta(format_version='²'), r"its format version is '²'"),  # `isdigit` passes it, `int` refuses it
    ('no format version', _meta(format_version=None), r"its format version is None"),
    ('unknown arch', _meta(arch='resnet'),
     r"its architecture \(`arch`\) is 'resnet'; this package knows linear, simple, deep, cnn"),
    ('arch the weights are not', _meta(arch='cnn'), r"its tensors are not those of the 'cnn' architecture: Missing key\(s\) in state_dict: \"1.0.weight\""),
    ('unknown loss', _meta(loss='mse'), r"its `loss` is 'mse'; this package knows mnist_loss, log_loss"),
    ('same digits', _meta(pair='[4, 4]'), r"its `pair` is '\[4, 4\]'; expected two distinct digits"),
    ('pair not json', _meta(pair='four and eight'), r"its `pair` is 'four and eight'"),
    ('no pair', _meta(pair=None), r"its `pair` is None"),
    ('bad prepare', _meta(prepare='maybe'), r"its `prepare` is 'maybe'; expected true or false"),
    ('another format', _meta(format='diffusers'), r"its metadata does not say `format: fastai_binary_digits`"),
    ('no metadata', lambda t, m: m.clear(),  # its header is 128 bytes: the file starts with 0x80, as a pickle does
     r"its metadata does not say `format: fastai_binary_digits`"),
]


@pytest.mark.parametrize('what, edit, message', LIES, ids=[w for w, *_ in LIES])
def test_a_safe_file_whose_header_lies(what, edit, message, files, tmp_path):
    "Lies told consistently (the checksum written for them, as a tool that knows the format would): each named"
    t, m = _tensors_and_metadata(files['linear'][0])
    edit(t, m)
    if 'sha256' in m: m['sha256'] = content_sha256(t, m)
    fn = tmp_path/'lying.safetensors'
    save_file(t, fn, metadata=m or None)
    for load in (load_binary_learner, load_model_file):
        with pytest.raises(ValueError, match=r"Cannot load .*lying.safetensors as a safetensors model file: "+message):
            load(fn)


def _raw(fn):
    "The header (as a dict) and the data of the safe file `fn`"
    b = fn.read_bytes()
    n = int.from_bytes(b[:8], 'little')
    return json.loads(b[8:8+n]), b[8+n:]


def _header_bytes(header:dict) -> bytes:
    h = json.dumps(header).encode()
    return len(h).to_bytes(8, 'little') + h


def _edit_raw(fn, edit) -> bytes:
    "The bytes of the safe file `fn` after `edit` of its header (a dict)"
    header, data = _raw(fn)
    edit(header)
    return _header_bytes(header) + data


def _shape_lie(fn):  # four bytes more than the data it points to
    return _edit_raw(fn, lambda h: h['weight'].update(shape=[1, 785]))


BROKEN = [  # (what, the file's bytes from the good file's, the error)
    ('empty', lambda fn: b'', r"it is 0 bytes long, too short for the 8-byte header size"),
    ('cut in the header size', lambda fn: fn.read_bytes()[:5], r"it is 5 bytes long"),
    ('cut in the header', lambda fn: fn.read_bytes()[:100], r"it is truncated: its header alone claims [\d,]+ bytes, "
                                                             r"but the file holds 92 after the header size"),
    ('cut in the tensors', lambda fn: fn.read_bytes()[:-10],
     r"the tensors its header describes do not fill the file: it is truncated, or other bytes follow them"),
    ('shape lies about the data', _shape_lie,
     r"its header gives a tensor a shape and data type that do not match its bytes"),
    ('header size lies', lambda fn: (2**40).to_bytes(8, 'little') + fn.read_bytes()[8:],
     r"its first 8 bytes give a header of 1,099,511,627,776 bytes; a model file's header is a few KB \(at most "
     r"100,000 bytes\): is it another kind of file\?"),
    ('header not json', lambda fn: fn.read_bytes()[:8] + b'!' + fn.read_bytes()[9:],
     r"its header is not valid JSON \(Expecting value: line 1 column 1 \(char 0\)\); the file is damaged"),
    ('header a list', lambda fn: _header_bytes([1, 2]), r"its header is not a JSON object"),
    ('tensor without dtype', lambda fn: _edit_raw(fn, lambda h: h['bias'].pop('dtype')),
     r"its header is damaged \(invalid JSON in header: missing field `dtype`"),
    ('overlapping tensors', lambda fn: _edit_raw(fn, lambda h: h['weight'].update(data_offsets=[0, 3136])),
     r"its header gives a tensor bytes that overlap another tensor or do not follow the tensor before"),
    ('a gap between tensors', lambda fn: _edit_raw(fn, lambda h: h['weight'].update(
        data_offsets=[o + 4 for o in h['weight']['data_offsets']])) + bytes(4),
     r"its header gives a tensor bytes that overlap another tensor or do not follow the tensor before"),
    ('bytes after the tensors', lambda fn: fn.read_bytes() + b'junk',
     r"the tensors its header describes do not fill the file: .* other bytes follow them \(two files joined\?\)"),
    ('a text file', lambda fn: b'hello, this is not a model\n',
     r"its first 8 bytes give a header of [\d,]+ bytes; a model file's header is a few KB"),
]


@pytest.mark.parametrize('what, content, message', BROKEN, ids=[w for w, *_ in BROKEN])
def test_a_broken_safe_file(what, content, message, files, tmp_path):
    fn = tmp_path/'broken.safetensors'
    fn.write_bytes(content(files['linear'][0]))
    with pytest.raises(ValueError, match=r"Cannot load .*broken.safetensors as a safetensors model file: " + message):
        load_model_file(fn)


def test_the_command_line_names_the_lie(files, images, tmp_path, capsys):
    t, m = _tensors_and_metadata(files['linear'][0])
    t['weight'] = t['weight'].reshape(784, 1)
    save_file(t, tmp_path/'lying.safetensors', metadata={**m, 'sha256': content_sha256(t, m)})
    assert main(['predict', str(tmp_path/'lying.safetensors'), images[0]]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: Cannot load {tmp_path/'lying.safetensors'} as a safetensors model file: its "
                                "tensors are not those of the 'linear' architecture: size mismatch for weight: copying a "
                                "param with shape torch.Size([784, 1]) from checkpoint, the shape in current model is "
                                "torch.Size([1, 784])."]


# ---------------------------------------------------------------------------------------------------------------
# Damaged files and hostile headers: refused, in bounded time and memory, never loaded with other weights or facts

def _flip(b:bytes, i:int) -> bytes: return b[:i] + bytes([b[i] ^ 1]) + b[i+1:]


def _duplicate(key:str, value:str):
    "An edit of a header's JSON text that gives the metadata's `key` a second value, before the first"
    def edit(fn):
        header, data = _raw(fn)
        h = json.dumps(header).replace('"__metadata__": {', f'"__metadata__": {{"{key}": "{value}", ', 1).encode()
        return len(h).to_bytes(8, 'little') + h + data
    return edit


def _text_edit(old:str, new:str):
    "An edit of a header's JSON text: the first `old` becomes `new`"
    def edit(fn):
        header, data = _raw(fn)
        h = json.dumps(header).replace(old, new, 1).encode()
        return len(h).to_bytes(8, 'little') + h + data
    return edit


def _swap_same_size(fn):
    "The bytes of a BatchNorm's weight and bias swapped in the header: a valid layout, other weights"
    def edit(h):
        a, b = h['1.1.weight'], h['1.1.bias']
        a['data_offsets'], b['data_offsets'] = b['data_offsets'], a['data_offsets']
    return _edit_raw(fn, edit)


DAMAGED = [  # (what, the cnn file's bytes made damaged or hostile, the error)
    ('a data byte flipped', lambda fn: _flip(fn.read_bytes(), len(fn.read_bytes()) - 1000),
     r"its content does not match its checksum \(sha256\): a byte of it was changed since it was written"),
    ('a digit of the pair flipped', lambda fn: fn.read_bytes().replace(b'"[4, 8]"', b'"[4, 9]"'),
     r"its content does not match its checksum"),
    ('two tensors swapped', _swap_same_size, r"its content does not match its checksum"),
    ('pair twice, swapped', _duplicate('pair', '[8, 4]'),
     r"its header names 'pair' twice \(JSON does not say which one counts\): the file is damaged or was edited"),
    ("a tensor's dtype twice", _text_edit('"1.0.weight": {', '"1.0.weight": {"dtype": "F16", '),
     r"its header names 'dtype' twice"),
    ('Infinity', _text_edit('"data_offsets": [0, ', '"data_offsets": [Infinity, '),
     r"its header holds the number Infinity; a model file's header holds only whole numbers of at most 20 digits"),
    ('NaN', _text_edit('"shape": [', '"shape": [NaN, '), r"its header holds the number NaN"),
    ('a fraction', _text_edit('"shape": [', '"shape": [1.5, '), r"its header holds the number 1.5"),
    ('a huge number', _text_edit('"shape": [', '"shape": [' + '9' * 5000 + ', '),
     r"its header holds the number 9{30};"),
    ('a list for a number', _text_edit('"data_offsets": [0, ', '"data_offsets": [[0], '),
     r"its header is damaged \(invalid JSON in header: invalid type: sequence, expected usize"),
    ('nested 20,000 deep', _text_edit('"__metadata__": {', f'"x": {"[" * 20_000}{"]" * 20_000}, "__metadata__": {{'),
     r"its header nests lists or objects too deeply to read \(a safetensors header nests three deep\)"),
    ('a number in the metadata', _text_edit('"arch": "cnn"', '"arch": 3'),
     r"its `__metadata__` is not a JSON object of strings, as safetensors requires"),
    ('Infinity in the pair', lambda fn: fn.read_bytes().replace(b'"[4, 8]"', b'"[Inf, 8]"'),
     r"its `pair` is '\[Inf, 8\]'; expected two distinct digits"),
    ('a huge metadata string', lambda fn: _edit_raw(fn, lambda h: h['__metadata__'].update(note='x' * 50_000_000)),
     r"its first 8 bytes give a header of 50,00[\d,]+ bytes; a model file's header is a few KB"),
]


@pytest.mark.parametrize('what, content, message', DAMAGED, ids=[w for w, *_ in DAMAGED])
def test_a_damaged_or_hostile_file_is_refused(what, content, message, files, tmp_path):
    fn = tmp_path/'damaged.safetensors'
    fn.write_bytes(content(files['cnn'][0]))
    with pytest.raises(BinaryDigitsError, match=r"^Cannot load .*damaged.safetensors as a safetensors model file: "
                                                + message):
        load_model_file(fn)


def test_a_flipped_byte_on_the_command_line_is_one_line(files, images, tmp_path, capsys):
    fn = tmp_path/'flipped.safetensors'
    fn.write_bytes(_flip(files['linear'][0].read_bytes(), -5))
    assert main(['predict', str(fn), images[0]]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: Cannot load {fn} as a safetensors model file: its content does not match its checksum (sha256): a "
        "byte of it was changed since it was written (a damaged disk or copy?); export it again"]


def test_a_file_written_before_checksums_still_loads(learners, files, images, tmp_path):
    "Files without the `sha256` entry (written before it) load as before: every other check still applies"
    t, m = _tensors_and_metadata(files['cnn'][0])
    del m['sha256']
    save_file(t, tmp_path/'old.safetensors', metadata=m)
    assert _preds(load_model_file(tmp_path/'old.safetensors'), images) == _preds(learners['cnn'], images)
    t['1.0.weight'] = t['1.0.weight'].reshape(-1)  # and a lie in such a file is still named
    save_file(t, tmp_path/'old.safetensors', metadata=m)
    with pytest.raises(BinaryDigitsError, match=r"size mismatch for 1.0.weight"):
        load_model_file(tmp_path/'old.safetensors')


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='needs named pipes (os.mkfifo)')
def test_a_fifo_or_a_device_is_refused_without_being_read(tmp_path):
    "Opening a FIFO for reading waits for a writer, forever: it is refused from its `stat`, as an endless device is"
    os.mkfifo(tmp_path/'fifo.safetensors')
    (tmp_path/'zero.safetensors').symlink_to('/dev/zero')
    for name in ('fifo', 'zero'):
        for load in (load_model_file, load_binary_learner):
            with pytest.raises(BinaryDigitsError, match=rf"Model .*{name}.safetensors is not a file"):
                load(tmp_path/f'{name}.safetensors')


def test_a_file_too_large_to_be_a_model_is_refused_unread(files, tmp_path):
    "A sparse file of 64 MB and a byte: refused from its size, before any of it is read"
    fn = tmp_path/'huge.safetensors'
    fn.write_bytes(files['linear'][0].read_bytes())
    os.truncate(fn, MAX_FILE + 1)
    with pytest.raises(BinaryDigitsError, match=r"it is 67,108,865 bytes long; a model file of this package is at most "
                                                r"67,108,864 \(its largest architecture's is about 1 MB\)"):
        load_model_file(fn)


# ---------------------------------------------------------------------------------------------------------------
# Names: the suffix says the format

@pytest.mark.parametrize('name', ['model.pt', 'model.pth', 'model', 'model.safetensors.bak'])
def test_any_other_suffix_is_refused_naming_the_two_formats(name, files, tmp_path):
    fn = tmp_path/name
    fn.write_bytes(files['linear'][0].read_bytes())
    with pytest.raises(ValueError, match=r"Model file .*(ends in '\.\w+'|has no suffix): a model file ends in "
                                         r"'.safetensors' \(the safe format.*\) or '.pkl' \(fastai's pickle export"):
        load_model_file(fn)


def test_missing_files_folders_and_the_wrong_loader(files, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Model file .*nowhere.safetensors does not exist"):
        load_model_file(tmp_path/'nowhere.safetensors')
    (tmp_path/'folder.safetensors').mkdir()
    with pytest.raises(ValueError, match=r"Model .*folder.safetensors is not a file"):
        load_model_file(tmp_path/'folder.safetensors')
    with pytest.raises(ValueError, match=r"does not end in '.safetensors': `load_binary_learner` reads only the safe"):
        load_binary_learner(files['linear'][1])


def test_a_safe_file_named_pkl_is_refused_not_unpickled(files, tmp_path):
    fn = tmp_path/'model.pkl'
    fn.write_bytes(files['linear'][0].read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        with pytest.raises(ValueError, match=r"model.pkl is a safetensors file, not a pickle: rename it to "
                                             r"model.safetensors and it loads safely"):
            load_model_file(fn)


# ---------------------------------------------------------------------------------------------------------------
# fastai's pickle: still read, from '.pkl' only, with fastai's warning

def test_pkl_still_loads_with_fastais_warning(learners, files, images):
    with pytest.warns(UserWarning, match=PICKLE_WARNING): learn = load_model_file(files['cnn'][1])
    assert isinstance(learn, Learner) and learn.dls.vocab == [4, 8]
    assert _preds(learn, images) == _preds(learners['cnn'], images)


def test_pkl_on_the_command_line_shows_fastais_warning(files, images, tmp_path):
    res = subprocess.run([sys.executable, '-m', 'fastai_binary_digits', 'predict', files['linear'][1], *images[:2]],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "UserWarning: load_learner` uses Python's insecure pickle module" in res.stderr
    assert len(res.stdout.splitlines()) == 2
