"The command line for real: `python -m fastai_binary_digits` trains, exports, predicts and evaluates on real digits"
import errno, json, os, re, shutil, signal, subprocess, sys, tempfile
from pathlib import Path

import pytest
from PIL import Image

from fastai_binary_digits.cli import main

PAIR = (4, 8)
REPORT_TRAIN = {'loss.png', 'confusion_matrix.png', 'weights.png', 'top_losses.png'}
REPORT_EVALUATE = REPORT_TRAIN - {'loss.png'}
OFFLINE = {v: 'http://127.0.0.1:9' for v in ('https_proxy', 'http_proxy', 'HTTPS_PROXY', 'HTTP_PROXY')}  # a closed port


def cli(*args, cwd, env=None, check=True) -> subprocess.CompletedProcess:
    "Run `python -m fastai_binary_digits *args` in a new process"
    full_env = {**os.environ, **(env or {})}
    for v in ('no_proxy', 'NO_PROXY'):
        if env and v not in env: full_env.pop(v, None)
    res = subprocess.run([sys.executable, '-m', 'fastai_binary_digits', *map(str, args)], cwd=cwd, env=full_env,
                         capture_output=True, text=True, timeout=300)
    assert 'Traceback' not in res.stderr, res.stderr
    if check: assert res.returncode == 0, f'exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}'
    return res


def lines(text:str) -> list:
    "Non-empty lines, without what fastprogress draws before a carriage return"
    return [l for l in (l.rsplit('\r', 1)[-1].strip() for l in text.split('\n')) if l]


def assert_real_png(fn:Path, min_side:int=150):
    "`fn` is a PNG picture with something drawn in it"
    with Image.open(fn) as im:
        assert im.format == 'PNG'
        im.verify()
    with Image.open(fn) as im:
        assert min(im.size) >= min_side, im.size
        lo, hi = im.convert('L').getextrema()
        assert hi - lo > 100  # not a blank page


# ---------------------------------------------------------------------------------------------------------------
# Train once, then use the model

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "4 vs 8 trained on the bundled sample for 3 epochs, exported, with its report"
    d = tmp_path_factory.mktemp('cli_train')
    res = cli('train', '--sample', '--pair', *PAIR, '--epochs', 3, '--seed', 0, '--out', 'models/model.safetensors',
              '--report', 'report', cwd=d)
    return d, res


@pytest.fixture(scope='module')
def images(sample_png, tmp_path_factory):
    "Real testing digits: 4 of each digit as PNG files, and one of each as a 56x56 RGB picture"
    d = tmp_path_factory.mktemp('cli_images')
    res = []
    for digit in PAIR:
        fns = sorted((sample_png/'testing'/str(digit)).glob('*.png'))[:4]
        res += [(fn, digit) for fn in fns]
        big = d/f'rgb56_{digit}_{fns[0].stem}.png'
        with Image.open(fns[0]) as im: im.convert('RGB').resize((56, 56), Image.BILINEAR).save(big)
        res.append((big, digit))
    return res


def test_train_shows_the_table_and_exports(trained):
    d, res = trained
    out = lines(res.stdout)
    assert out[0].startswith('Training linear on 4 vs 8 from the bundled sample: 1,600 training images')
    head = out.index(next(l for l in out if l.startswith('epoch')))
    assert out[head].split() == ['epoch', 'train_loss', 'valid_loss', 'batch_accuracy', 'time']
    rows = [l.split() for l in out[head+1:head+4]]
    assert [r[0] for r in rows] == ['0', '1', '2']
    assert float(rows[-1][3]) > 0.9  # validation accuracy after 3 epochs
    assert (d/'models'/'model.safetensors').stat().st_size > 1000
    # the pair check, trained by default after the model: 400 of the pair and 8 x 200 other digits held out
    assert out[head+4] == ("Training the pair check: 4 or 8 against the other digits, so that `predict` can say "
                           "'neither'")
    assert re.fullmatch(r"Pair check: on its 2,000 validation images, 99\.\d% of the 4s and 8s pass and \d+\.\d% of "
                        r"the other digits are flagged \(--no-check to skip it\)", out[head+5]), out[head+5]
    assert 'Exported the learner to models/model.safetensors' in out
    assert 'notice' not in res.stderr


def test_train_report_is_real_pictures(trained):
    d, _ = trained
    assert {p.name for p in (d/'report').iterdir()} == REPORT_TRAIN  # no temporary files left behind
    for fn in REPORT_TRAIN: assert_real_png(d/'report'/fn)


def test_cnn_one_cycle_on_the_official_testing_images(tmp_path):
    res = cli('train', '--sample', '--pair', 1, 7, '--arch', 'cnn', '--one-cycle', '--valid', 'testing', '--epochs', 2,
              '--seed', 0, '--out', 'cnn.pkl', '--no-check', cwd=tmp_path)
    out = lines(res.stdout)
    assert out[0] == ('Training cnn on 1 vs 7 from the bundled sample: 2,000 training images, 400 official testing '
                      'images for validation')
    rows = [l.split() for l in out if re.match(r'\d+\s', l)]
    assert [r[0] for r in rows] == ['0', '1'] and float(rows[-1][3]) > 0.8  # 2 epochs; batchnorm's statistics settle
    assert (tmp_path/'cnn.pkl').exists() and 'pair check' not in res.stdout


def test_predict_real_images_of_any_size_and_colour(trained, images):
    d, _ = trained
    res = cli('predict', d/'models'/'model.safetensors', *[fn for fn, _ in images], cwd=d)
    assert res.stderr == ''  # a safe file: no warning
    out = lines(res.stdout)
    assert len(out) == len(images)
    got = []
    for line, (fn, digit) in zip(out, images):
        m = re.fullmatch(r'(.+): (\d) \((0\.\d{3}|1\.000)\)', line)
        assert m and m[1] == str(fn), line
        assert int(m[2]) in PAIR and 0.5 <= float(m[3]) <= 1
        got.append(int(m[2]))
    assert sum(g == digit for g, (_, digit) in zip(got, images)) >= len(images) - 2  # a 3-epoch linear model: ~95%
    # the 56x56 RGB copies get the same answer as their 28x28 greyscale originals
    assert got[4] == got[0] and got[9] == got[5]


def test_predict_json(trained, images):
    d, _ = trained
    fns = [fn for fn, _ in images]
    text = cli('predict', '--json', d/'models'/'model.safetensors', *fns, cwd=d).stdout
    rows = [json.loads(l) for l in text.splitlines()]
    assert [r['image'] for r in rows] == [str(fn) for fn in fns]
    for r in rows:
        p = r['probabilities']
        assert set(p) == {'4', '8'} and abs(p['4'] + p['8'] - 1) < 1e-5
        assert r['digit'] == int(max(p, key=p.get)) and r['probability'] == max(p.values())
        assert r['in_pair'] is True and 0 <= r['other_probability'] <= 1  # the model holds a pair check


def test_predict_says_no_digit_found_and_goes_on_past_unreadable_images(trained, images, tmp_path):
    "A blank page: 'no digit found'; a broken and a missing file: an error line each; the others still predicted"
    import numpy as np
    from fastai_binary_digits import prepare_digit
    d, _ = trained
    good = [fn for fn, _ in images][:2]
    Image.new('RGB', (120, 90), (250, 250, 245)).save(tmp_path/'blank.png')
    (tmp_path/'broken.png').write_bytes(b'not a picture')
    fns = [good[0], tmp_path/'blank.png', tmp_path/'broken.png', tmp_path/'missing.png', good[1]]
    res = cli('predict', d/'models'/'model.safetensors', *fns, '--save-prepared', tmp_path/'seen', cwd=d, check=False)
    assert res.returncode == 1
    out = lines(res.stdout)
    assert len(out) == 3 and out[1] == f'{tmp_path/"blank.png"}: no digit found'
    assert all(re.fullmatch(rf'{re.escape(str(fn))}: [48] \(\d\.\d{{3}}\)', l) for fn, l in zip(good, out[::2])), out
    assert lines(res.stderr) == [f'{fns[2]}: error: Could not read the image {fns[2]}: it is not a picture in a format '
                                 'read here (PNG, JPEG, GIF, BMP, TIFF, WEBP)',
                                 f'{fns[3]}: error: Image file {fns[3]} does not exist']
    # what the model saw, for each image that held a digit
    assert sorted(p.name for p in (tmp_path/'seen').iterdir()) == sorted(f'{Path(fn).stem}.png' for fn in good)
    for fn in good:
        with Image.open(tmp_path/'seen'/f'{Path(fn).stem}.png') as im:
            assert im.size == (28, 28) and np.array_equal(np.asarray(im), prepare_digit(fn))
    rows = [json.loads(l) for l in cli('predict', '--json', d/'models'/'model.safetensors', *fns, cwd=d, check=False).stdout
            .splitlines()]
    assert [r['image'] for r in rows] == [str(fn) for fn in fns]
    assert rows[1] == dict(image=str(fns[1]), digit=None, in_pair=None, probability=None, probabilities=None,
                           other_probability=None, digits=0)
    assert 'Could not read the image' in rows[2]['error'] and 'does not exist' in rows[3]['error']
    assert rows[0]['digit'] in PAIR and rows[4]['digit'] in PAIR
    # switched off, the blank page is only resized, and goes to the model (whose pair check may call it neither digit)
    res = cli('predict', d/'models'/'model.safetensors', tmp_path/'blank.png', '--no-prepare', cwd=d, check=False)
    assert re.fullmatch(r'.*blank.png: ([48] \(\d\.\d{3}\)|neither 4 nor 8 \(.*\))', lines(res.stdout)[0])


def test_predict_says_when_an_image_holds_several_digits(trained, images, tmp_path, capsys):
    "'4 8' on one line: 'N digits found' (in JSON, `digits`), exit status 1; the others answered"
    import numpy as np
    d, _ = trained
    good = images[0][0]
    one = 255 - np.asarray(Image.open(good).convert('L'))  # dark ink on white
    Image.fromarray(np.hstack([one, np.full((28, 12), 255, np.uint8), one])).resize((544, 224)).save(tmp_path/'two.png')
    model = str(d/'models'/'model.safetensors')
    assert main(['predict', model, str(tmp_path/'two.png'), str(good)]) == 1
    out = lines(capsys.readouterr().out)
    assert out[0] == f'{tmp_path/"two.png"}: 2 digits found side by side: give one digit per image'
    assert re.fullmatch(rf'{re.escape(str(good))}: [48] \(\d\.\d{{3}}\)', out[1]), out
    assert main(['predict', '--json', model, str(tmp_path/'two.png'), str(good)]) == 1
    rows = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert rows[0] == dict(image=str(tmp_path/'two.png'), digit=None, in_pair=None, probability=None, probabilities=None,
                           other_probability=None, digits=2)
    assert rows[1]['digits'] == 1 and rows[1]['digit'] in PAIR


def test_predict_save_prepared_must_be_a_folder(trained, tmp_path, capsys):
    d, _ = trained
    (tmp_path/'file').write_text('x')
    code = main(['predict', str(d/'models'/'model.safetensors'), str(tmp_path/'x.png'), '--save-prepared', str(tmp_path/'file')])
    assert code == 2 and re.search(r'^error: --save-prepared .*file is a file; give a folder', capsys.readouterr().err)


def _evaluation(text:str) -> dict:
    "accuracy, loss and confusion matrix read back from `evaluate`'s text"
    out = lines(text)
    acc = float(next(l for l in out if l.startswith('accuracy')).split()[1])
    loss = float(next(l for l in out if l.startswith('loss')).split()[1])
    i = out.index('confusion matrix (rows: actual, columns: predicted)')
    assert out[i+1].split() == ['4', '8']
    cm = [[int(n) for n in l.split()[1:]] for l in out[i+2:i+4]]
    assert [l.split()[0] for l in out[i+2:i+4]] == ['4', '8']
    return dict(accuracy=acc, loss=loss, confusion_matrix=cm)


@pytest.fixture(scope='module')
def evaluated(trained):
    "`evaluate` of the trained model on the sample's testing images, with a report"
    d, _ = trained
    return d, cli('evaluate', 'models/model.safetensors', '--sample', '--report', 'eval_report', cwd=d)


def test_evaluate_on_the_testing_images_with_report(evaluated):
    d, res = evaluated
    assert 'models/model.safetensors: 4 vs 8 on the official testing images of the bundled sample (400 images)' in res.stdout
    ev = _evaluation(res.stdout)
    cm = ev['confusion_matrix']
    assert [sum(r) for r in cm] == [200, 200]  # the sample holds 200 testing images per digit
    assert ev['accuracy'] == pytest.approx((cm[0][0] + cm[1][1])/400, abs=1e-4) and ev['accuracy'] > 0.9
    assert 0 < ev['loss'] < 0.5
    assert {p.name for p in (d/'eval_report').iterdir()} == REPORT_EVALUATE
    for fn in REPORT_EVALUATE: assert_real_png(d/'eval_report'/fn)


def test_evaluate_json_from_fastai_home_matches_the_text(evaluated, sample_png, tmp_path):
    "--json says what the text says; the default source is fastai's MNIST as `untar_data` leaves it in FASTAI_HOME"
    d, res = evaluated
    ev = _evaluation(res.stdout)
    home = tmp_path/'fastai_home'
    shutil.copytree(sample_png, home/'data'/'mnist_png', ignore=shutil.ignore_patterns('.fastai_binary_digits'))
    res = cli('evaluate', d/'models'/'model.safetensors', '--json', cwd=tmp_path, env={'FASTAI_HOME': str(home), **OFFLINE})
    assert 'notice' not in res.stderr  # found in FASTAI_HOME: no fallback
    r = json.loads(res.stdout)
    assert r['source'] == "fastai's MNIST" and r['pair'] == [4, 8] and r['images'] == 400
    assert r['confusion_matrix'] == ev['confusion_matrix'] and r['loss_func'] == 'mnist_loss'
    assert r['accuracy'] == pytest.approx(ev['accuracy'], abs=1e-4) and r['loss'] == pytest.approx(ev['loss'], abs=1e-4)


def test_offline_fallback_to_the_bundled_sample_same_seed_same_table(trained, tmp_path):
    """A fresh machine without network: fastai's MNIST is neither cached nor downloadable, so train says so in one line
    and trains on the bundled sample, which, with the same seed, gives the same table as `--sample`"""
    env = {'FASTAI_HOME': str(tmp_path/'empty_fastai_home'), **OFFLINE}
    res = cli('train', '--pair', *PAIR, '--epochs', 3, '--seed', 0, '--no-check', cwd=tmp_path, env=env)  # (no --out)
    notices = [l for l in lines(res.stderr) if 'notice' in l]
    assert len(notices) == 1 and re.search(r"fastai's MNIST is neither cached nor downloadable.*bundled sample",
                                           notices[0]), res.stderr
    assert 'Training linear on 4 vs 8 from the bundled sample' in res.stdout
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ['model.safetensors']
    table = lambda res: [l.split()[:4] for l in lines(res.stdout) if re.match(r'\d+\s', l)]  # without the times
    assert len(table(res)) == 3 and table(res) == table(trained[1])


def test_console_script_is_python_m(tmp_path, capsys):
    script = Path(sys.executable).parent/'fastai-binary-digits'
    if not script.exists(): pytest.skip(f'the console script is not installed beside {sys.executable}')
    res = subprocess.run([script, '--help'], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    with pytest.raises(SystemExit): main(['--help'])  # what `python -m fastai_binary_digits --help` prints
    assert res.returncode == 0 and res.stdout == capsys.readouterr().out
    assert all(c in res.stdout for c in ('train', 'predict', 'evaluate'))


# ---------------------------------------------------------------------------------------------------------------
# --help, and bad usage: exit code 2 and one clear message, never a traceback

@pytest.mark.parametrize('cmd, words', [
    ('train', ['--pair', '--arch', 'linear,simple,deep,cnn', '--epochs', '--lr', '--bs', '--seed', '--one-cycle',
               '--valid', '--sample', '--path', '--out', '--report', '(default: 20)', '(default: model.safetensors)',
               '--no-check', 'pair check']),
    ('predict', ['MODEL', 'IMAGE', '--json', 'probability', "'.safetensors' file (safe)", 'only from people you trust',
                 "'neither A nor B'", 'in_pair']),
    ('evaluate', ['MODEL', '--sample', '--path', '--report', '--json', 'official', "'.pkl' pickle"]),
])
def test_help(cmd, words, capsys):
    with pytest.raises(SystemExit) as e: main([cmd, '--help'])
    assert e.value.code == 0
    text = ' '.join(capsys.readouterr().out.split())
    for w in words: assert w in text, w


@pytest.fixture(scope='module')
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp('cli_bad')
    (d/'garbage.pkl').write_bytes(b'not a pickle at all')
    (d/'not_an_image.png').write_text('hello')
    import torch
    torch.save({'weights': torch.zeros(3)}, d/'dict.pkl')  # a real pickle, but not a learner
    torch.save({'weights': torch.zeros(3)}, d/'dict.safetensors')  # a pickle under the safe name: never unpickled
    (d/'model.pt').write_bytes(b'any content')
    return d


BAD = [  # (arguments, the message on stderr); {d}: a folder of bad files, {model}: a real model
    ([], r'required: COMMAND'),
    (['fly'], r"invalid choice: 'fly'"),
    (['train', '--pair', '3', '3', '--sample'], r"--pair 3 3: give two different digits from 0 to 9, such as --pair 3 7"),
    (['train', '--pair', '4', '12', '--sample'], r"--pair 4 12: give two different digits from 0 to 9"),
    (['train', '--pair', 'x', '1'], r"argument --pair: invalid int value: 'x'"),
    (['train', '--pair', '4'], r"argument --pair: expected 2 arguments"),
    (['train', '--arch', 'resnet'], r"argument --arch: invalid choice: 'resnet'"),
    (['train', '--epochs', '0'], r"argument --epochs: must be a whole number of at least 1, got '0'"),
    (['train', '--lr', '-1'], r"argument --lr: must be a number above 0, got '-1'"),
    (['train', '--bs', 'big'], r"argument --bs: must be a whole number of at least 1, got 'big'"),
    (['train', '--valid', 'test'], r"argument --valid: invalid choice: 'test'"),
    (['train', '--sample', '--path', '{d}'], r"argument --path: not allowed with argument --sample"),
    (['train', '--path', '{d}/nowhere'], r"`path` .*nowhere does not exist"),
    (['train', '--path', '{d}'], r"holds no MNIST data. Expected fastai's mnist_png layout"),
    (['train', '--sample', '--out', '{d}'], r"--out .* is a folder"),
    (['train', '--sample', '--out', 'model.pt'], r"--out model.pt ends in '.pt': a model file ends in '.safetensors'.*"
                                                 r"or '.pkl'"),
    (['predict', '{d}/missing.pkl', 'x.png'], r"Model file .*missing.pkl does not exist"),
    (['predict', '{d}', 'x.png'], r"is not a file"),
    (['predict', '{d}/garbage.pkl', 'x.png'], r"Could not load the model .*garbage.pkl"),
    (['predict', '{d}/dict.pkl', 'x.png'], r"Could not load the model .*dict.pkl"),
    (['predict', '{d}/dict.safetensors', 'x.png'], r"Cannot load .*dict.safetensors as a safetensors model file: it "
                                                   r"holds a zip archive"),
    (['predict', '{d}/model.pt', 'x.png'], r"Model file .*model.pt ends in '.pt': a model file ends in '.safetensors'"),
    (['predict', '{model}'], r"required: IMAGE"),
    (['evaluate', '{d}/missing.pkl', '--sample'], r"Model file .*missing.pkl does not exist"),
    (['evaluate', '{d}/garbage.pkl', '--sample'], r"Could not load the model"),
    (['evaluate', '{d}/dict.safetensors', '--sample'], r"Cannot load .*dict.safetensors as a safetensors model file"),
    (['evaluate', '{model}', '--path', '{d}/nowhere'], r"`path` .*nowhere does not exist"),
]


@pytest.mark.parametrize('args, message', BAD, ids=[' '.join(a) or 'nothing' for a, _ in BAD])
@pytest.mark.filterwarnings("ignore:load_learner` uses Python's insecure pickle")  # shown to users: test_model_files
def test_bad_usage_exits_2_with_a_clear_message(args, message, trained, bad_files, capsys, monkeypatch):
    from fastprogress import fastprogress
    monkeypatch.setattr(fastprogress, 'NO_BAR', fastprogress.NO_BAR)  # restored after `main` quiets the bars
    monkeypatch.setattr(fastprogress.ConsoleProgressBar, 'fill', fastprogress.ConsoleProgressBar.fill)
    d, _ = trained
    args = [a.format(d=bad_files, model=d/'models'/'model.safetensors') for a in args]
    try: code = main(args)
    except SystemExit as e: code = e.code  # argparse's usage errors
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(message, err), err
    assert 'Traceback' not in err
    if 'usage:' not in err: assert len(lines(err)) == 1 and err.startswith('error: ')  # one line from the library


@pytest.mark.parametrize('args, message', [
    (['predict', 'missing.pkl', 'x.png'], r"^error: Model file missing.pkl does not exist"),
])
def test_bad_usage_exit_status_of_the_process(args, message, tmp_path):
    res = cli(*args, cwd=tmp_path, check=False)
    assert res.returncode == 2 and res.stdout == ''
    assert re.search(message, res.stderr, re.M), res.stderr


# ---------------------------------------------------------------------------------------------------------------
# The full MNIST set, when CI passes it in

def test_train_and_evaluate_on_the_full_set(idx_dir, tmp_path):
    res = cli('train', '--path', idx_dir, '--pair', *PAIR, '--epochs', 1, '--valid', 'testing', '--seed', 0,
              '--out', 'full.pkl', '--no-check', cwd=tmp_path)
    assert '11,693 training images, 1,956 official testing images for validation' in res.stdout
    r = json.loads(cli('evaluate', 'full.pkl', '--path', idx_dir, '--json', cwd=tmp_path).stdout)
    assert r['images'] == 1956 and [sum(row) for row in r['confusion_matrix']] == [982, 974]
    assert r['accuracy'] > 0.95


def test_torchrun_without_accelerate_exits_2_with_the_install_line(tmp_path, capsys, monkeypatch):
    "Launched as one of several processes (`WORLD_SIZE` > 1) where the `distributed` extra is missing"
    from fastai_binary_digits import distributed
    from fastprogress import fastprogress
    monkeypatch.setattr(fastprogress, 'NO_BAR', fastprogress.NO_BAR)
    monkeypatch.setattr(fastprogress.ConsoleProgressBar, 'fill', fastprogress.ConsoleProgressBar.fill)
    monkeypatch.setattr(distributed, 'find_spec', lambda name: None)  # as if `accelerate` were not installed
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '0')
    code = main(['train', '--sample', '--pair', '4', '8', '--epochs', '1', '--out', str(tmp_path/'model.pkl')])
    err = capsys.readouterr().err
    assert code == 2 and 'Traceback' not in err, err
    assert lines(err) == ["error: Distributed training needs Hugging Face Accelerate, which fastai's `distrib_ctx` "
                          "uses: pip install accelerate"]
    assert not (tmp_path/'model.pkl').exists()


# ---------------------------------------------------------------------------------------------------------------
# Bad paths, every subcommand: exit 2, one `error:` line, and an output path checked before any data, model or training

READ_ONLY = '/proc'  # the kernel refuses to create files there, even for root (the tests run as root: chmod would not do)

BAD_PATHS = [  # (kind, arguments, message, `out`: an output path, so nothing at all may be loaded before the error)
    ('missing', ['train', '--path', '{d}/nowhere'], r"`path` .*nowhere does not exist", False),
    ('file for folder', ['train', '--sample', '--report', '{d}/afile'], r"--report .*afile is a file; give a folder", True),
    ('file for folder', ['train', '--sample', '--out', '{d}/afile/model.pkl'], r"afile is a file, not a folder", True),
    ('file for folder', ['train', '--sample', '--report', '{d}/afile/report'], r"afile is a file, not a folder", True),
    ('file for folder', ['train', '--path', '{d}/afile'], r"afile holds no MNIST data", False),
    ('folder for file', ['train', '--sample', '--out', '{d}/adir'], r"--out .*adir is a folder; give a file name", True),
    ('not writable', ['train', '--sample', '--out', f'{READ_ONLY}/fbd-model.pkl'],
     rf"--out {READ_ONLY}/fbd-model.pkl: cannot create files in {READ_ONLY} ", True),
    ('not writable', ['train', '--sample', '--report', f'{READ_ONLY}/fbd-report'],
     rf"--report {READ_ONLY}/fbd-report: cannot create files in {READ_ONLY} ", True),
    ('missing', ['evaluate', '{d}/missing.pkl', '--sample'], r"Model file .*missing.pkl does not exist", False),
    ('missing', ['evaluate', '{model}', '--path', '{d}/nowhere'], r"`path` .*nowhere does not exist", False),
    ('file for folder', ['evaluate', '{model}', '--sample', '--report', '{d}/afile'], r"--report .*afile is a file", True),
    ('file for folder', ['evaluate', '{model}', '--sample', '--report', '{d}/afile/report'], r"afile is a file, not a", True),
    ('file for folder', ['evaluate', '{model}', '--path', '{d}/afile'], r"afile holds no MNIST data", False),
    ('file for folder', ['evaluate', '{d}/afile/model.pkl', '--sample'], r"Model file .*afile/model.pkl does not exist",
     False),
    ('folder for file', ['evaluate', '{d}/adir', '--sample'], r"Model .*adir is not a file", False),
    ('not writable', ['evaluate', '{model}', '--sample', '--report', f'{READ_ONLY}/fbd-report'],
     rf"--report {READ_ONLY}/fbd-report: cannot create files in {READ_ONLY} ", True),
    # `predict`'s images are its input, one line each: a bad one is reported on its own line (exit 1, tested below)
    ('missing', ['predict', '{d}/missing.pkl', '{d}/x.png'], r"Model file .*missing.pkl does not exist", False),
    ('file for folder', ['predict', '{d}/afile/model.pkl', '{d}/x.png'], r"Model file .*afile/model.pkl does not", False),
    ('folder for file', ['predict', '{d}/adir', '{d}/x.png'], r"Model .*adir is not a file", False),
    ('file for folder', ['predict', '{model}', '{d}/x.png', '--save-prepared', '{d}/afile'],
     r"--save-prepared .*afile is a file; give a folder", True),
    ('file for folder', ['predict', '{model}', '{d}/x.png', '--save-prepared', '{d}/afile/seen'],
     r"afile is a file, not a folder", True),
    ('not writable', ['predict', '{model}', '{d}/x.png', '--save-prepared', f'{READ_ONLY}/fbd-seen'],
     rf"--save-prepared {READ_ONLY}/fbd-seen: cannot create files in {READ_ONLY} ", True),
]

BAD_IMAGES = [  # (kind, image, message): `predict` reports each on its own line and goes on with the others
    ('missing', '{d}/missing.png', r"missing.png: error: Image file .*missing.png does not exist"),
    ('file for folder', '{d}/afile/x.png', r"afile/x.png: error: Image file .*afile/x.png does not exist"),
    ('folder for file', '{d}/adir', r"adir: error: .*adir is a folder, not an image file"),
]


@pytest.fixture(scope='module')
def bad_paths(tmp_path_factory):
    "A folder holding a file (`afile`) and a folder (`adir`)"
    d = tmp_path_factory.mktemp('cli_bad_paths')
    (d/'afile').write_text('a file where a folder is wanted')
    (d/'adir').mkdir()
    return d


@pytest.mark.skipif(not Path(READ_ONLY).is_dir(), reason=f'needs Linux {READ_ONLY}')
@pytest.mark.parametrize('kind, args, message, out', BAD_PATHS, ids=[f'{k}: {" ".join(a)}' for k, a, _, _ in BAD_PATHS])
def test_bad_paths_exit_2_before_any_work(kind, args, message, out, trained, bad_paths, capsys, monkeypatch):
    "A path mistake costs nothing: an output path is checked before the model and the data are loaded, and no path "
    "mistake lets training start (`--epochs 1000`: were training to start, the spy below would see it)"
    from fastprogress import fastprogress
    import fastai_binary_digits.cli as cli_mod
    monkeypatch.setattr(fastprogress, 'NO_BAR', fastprogress.NO_BAR)
    monkeypatch.setattr(fastprogress.ConsoleProgressBar, 'fill', fastprogress.ConsoleProgressBar.fill)
    calls = []
    def spy(name, f=None):
        def g(*a, **k):
            calls.append(name)
            return f(*a, **k) if f is not None else None
        return g
    from fastai.learner import Learner
    from fastai_binary_digits import BinaryDigitsDataLoaders
    monkeypatch.setattr(Learner, 'fit', spy('fit'))  # records, never trains
    monkeypatch.setattr(BinaryDigitsDataLoaders, 'from_mnist', classmethod(spy('from_mnist', BinaryDigitsDataLoaders.from_mnist.__func__)))
    monkeypatch.setattr(cli_mod, '_load_model', spy('_load_model', cli_mod._load_model))
    d, _ = trained
    args = [a.format(d=bad_paths, model=d/'models'/'model.safetensors') for a in args]
    if args[0] == 'train': args += ['--epochs', '1000']
    try: code = main(args)
    except SystemExit as e: code = e.code
    res = capsys.readouterr()
    assert code == 2, (res.out, res.err)
    assert 'Traceback' not in res.err and len(lines(res.err)) == 1 and res.err.startswith('error: '), res.err
    assert re.search(message, res.err), res.err
    assert 'Training' not in res.out and 'fit' not in calls
    if out: assert calls == [], f'loaded {calls} before checking the output path'
    assert not list(bad_paths.glob('adir/*')) and not (Path(READ_ONLY)/'fbd-report').exists()


@pytest.mark.parametrize('kind, image, message', BAD_IMAGES, ids=[k for k, _, _ in BAD_IMAGES])
def test_bad_image_paths_are_reported_one_line_each(kind, image, message, trained, bad_paths, images):
    "A bad image path: its own `error:` line on stderr, no traceback, the good image still predicted, exit status 1"
    d, _ = trained
    good = images[0][0]
    res = cli('predict', d/'models'/'model.safetensors', image.format(d=bad_paths), good, cwd=d, check=False)
    assert res.returncode == 1 and 'Traceback' not in res.stderr, res
    assert len(lines(res.stderr)) == 1 and re.search(message, res.stderr), res.stderr
    assert lines(res.stdout) and lines(res.stdout)[0].startswith(f'{good}: '), res.stdout


@pytest.mark.parametrize('args', [
    ['train', '--sample', '--epochs', '1000', '--report', 'afile'],
    ['evaluate', 'missing.pkl', '--sample', '--report', 'report'],
    ['predict', 'adir', 'x.png'],
], ids=['train', 'evaluate', 'predict'])
def test_bad_paths_in_a_process(args, tmp_path):
    "As a user sees it: exit status 2, one line on stderr, nothing on stdout"
    (tmp_path/'afile').write_text('a file'); (tmp_path/'adir').mkdir()
    res = cli(*args, cwd=tmp_path, check=False)
    assert res.returncode == 2 and res.stdout == '' and len(lines(res.stderr)) == 1, res
    assert res.stderr.startswith('error: ') and not (tmp_path/'report').exists()


def test_home_folder_is_expanded_in_every_path(trained, sample_png, tmp_path, capsys, monkeypatch):
    "`--out '~/...'` (quoted, or after `=`, the shell leaves `~` as it is) and every other path: under $HOME"
    from fastprogress import fastprogress
    monkeypatch.setattr(fastprogress, 'NO_BAR', fastprogress.NO_BAR)
    monkeypatch.setattr(fastprogress.ConsoleProgressBar, 'fill', fastprogress.ConsoleProgressBar.fill)
    home, cwd = tmp_path/'home', tmp_path/'cwd'
    cwd.mkdir()
    monkeypatch.setenv('HOME', str(home))
    monkeypatch.chdir(cwd)
    shutil.copytree(sample_png, home/'png', ignore=shutil.ignore_patterns('.fastai_binary_digits'))
    assert main(['train', '--sample', '--pair', '4', '8', '--epochs', '1', '--out=~/m/model.pkl', '--report=~/rep',
                 '--no-check']) == 0
    assert (home/'m'/'model.pkl').exists() and {p.name for p in (home/'rep').iterdir()} == REPORT_TRAIN
    image = next((home/'png'/'testing'/'8').glob('*.png'))
    assert main(['predict', '~/m/model.pkl', f'~/png/testing/8/{image.name}']) == 0
    assert main(['evaluate', '~/m/model.pkl', '--path', '~/png', '--report', '~/erep']) == 0
    out = capsys.readouterr().out
    assert f'~/png/testing/8/{image.name}: ' in out and '(400 images)' in out
    assert {p.name for p in (home/'erep').iterdir()} == REPORT_EVALUATE
    assert not list(cwd.iterdir())  # no folder named `~`


def test_evaluate_reads_only_the_testing_images(evaluated, sample_png, tmp_path, capsys, monkeypatch):
    "A corrupt training PNG cannot break `evaluate`, which needs only the testing images (and decodes only those)"
    from fastprogress import fastprogress
    import fastai_binary_digits.mnist as mnist
    monkeypatch.setattr(fastprogress, 'NO_BAR', fastprogress.NO_BAR)
    monkeypatch.setattr(fastprogress.ConsoleProgressBar, 'fill', fastprogress.ConsoleProgressBar.fill)
    d, res = evaluated
    root = shutil.copytree(sample_png, tmp_path/'mnist_png', ignore=shutil.ignore_patterns('.fastai_binary_digits'))
    next((root/'training'/'4').glob('*.png')).write_bytes(b'not a png')
    decoded = []
    def decode(folder, names):
        decoded.append(Path(folder).parent.name)
        return real(folder, names)
    real = mnist._decode_folder
    monkeypatch.setattr(mnist, '_decode_folder', decode)
    assert main(['evaluate', str(d/'models'/'model.safetensors'), '--path', str(root), '--json']) == 0
    r = json.loads(capsys.readouterr().out)
    ev = _evaluation(res.stdout)
    assert decoded == ['testing', 'testing'] and r['images'] == 400
    assert r['confusion_matrix'] == ev['confusion_matrix'] and r['accuracy'] == pytest.approx(ev['accuracy'], abs=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# --help answers at once: nothing heavy is imported before argparse is done

HELP_ARGV = [['--help'], ['--version'], ['train', '--help'], ['predict', '--help'], ['evaluate', '--help'], [],
             ['fly'], ['train', '--epochs', '0'], ['predict']]


def test_help_and_usage_errors_import_neither_torch_nor_fastai():
    code = ("import sys\nfrom fastai_binary_digits.cli import main\n"
            f"for argv in {HELP_ARGV!r}:\n"
            "    try: main(argv)\n"
            "    except SystemExit as e: print('EXIT', e.code, file=sys.stderr)\n"
            "print('HEAVY', sorted(m for m in ('torch', 'fastai', 'numpy', 'matplotlib') if m in sys.modules), "
            "file=sys.stderr)\n")
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    exits = re.findall(r'^EXIT (\d+)$', res.stderr, re.M)
    assert exits == ['0', '0', '0', '0', '0', '2', '2', '2', '2'], res.stderr
    assert 'HEAVY []' in res.stderr, res.stderr
    # and the real entry point, `python -m fastai_binary_digits --help`, module by module
    res = subprocess.run([sys.executable, '-X', 'importtime', '-m', 'fastai_binary_digits', '--help'],
                         capture_output=True, text=True, timeout=120)
    imported = {l.rsplit('|', 1)[-1].strip() for l in res.stderr.splitlines() if l.startswith('import time:')}
    assert res.returncode == 0 and 'fastai_binary_digits.cli' in imported
    assert not imported & {'torch', 'fastai', 'numpy'}, sorted(imported & {'torch', 'fastai', 'numpy'})


USAGE_ERRORS = [  # (arguments, the `error:` line, in the command line's words); {port}: a port taken, m.safetensors: a file
    (['train', '--pair', '3', '3'], "error: --pair 3 3: give two different digits from 0 to 9, such as --pair 3 7"),
    (['train', '--pair', '4', '10'], "error: --pair 4 10: give two different digits from 0 to 9, such as --pair 3 7"),
    (['train', '--out', 'model.pth'], "error: --out model.pth ends in '.pth': a model file ends in '.safetensors'"),
    (['demo', 'nosuch.safetensors'], "error: Model file nosuch.safetensors does not exist; make one with "
                                     "`fastai-binary-digits train --out nosuch.safetensors`"),
    (['demo', 'nosuch.pth'], "error: Model file nosuch.pth ends in '.pth': a model file ends in '.safetensors'"),
    (['demo', 'm.safetensors', '--port', '{port}'], "error: Port {port} on 127.0.0.1 is not free"),
    (['demo', 'm.safetensors', '--port', '70000'], "error: argument --port: must be a port number from 1 to 65535, "
                                                   "got '70000'"),
    (['demo', 'm.safetensors', '--host', 'no.such.host.invalid'], "error: Cannot serve on no.such.host.invalid"),
]


def test_usage_errors_answer_before_torch_and_fastai(tmp_path):
    "The pair, the output's suffix, the model's path, the port and the host: exit 2, one `error:` line, nothing heavy"
    import socket
    (tmp_path/'m.safetensors').write_bytes(b'')  # never read: the port is checked before the model loads
    code = ("import contextlib, io, json, sys\nfrom fastai_binary_digits.cli import main\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    err = io.StringIO()\n"
            "    with contextlib.redirect_stderr(err):\n"
            "        try: status = main(argv)\n"
            "        except SystemExit as e: status = e.code\n"
            "    print(json.dumps([status, err.getvalue()]))\n"
            "print(json.dumps(sorted(m for m in ('torch', 'fastai', 'numpy', 'gradio') if m in sys.modules)))\n")
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); s.listen()
        port = str(s.getsockname()[1])
        argvs = [[a.format(port=port) for a in args] for args, _ in USAGE_ERRORS]
        res = subprocess.run([sys.executable, '-c', code, json.dumps(argvs)], capture_output=True, text=True,
                             cwd=tmp_path, timeout=120)
    *answers, heavy = [json.loads(l) for l in res.stdout.splitlines()]
    for (args, message), (status, err) in zip(USAGE_ERRORS, answers):
        assert status == 2 and 'Traceback' not in err, (args, err)
        assert message.format(port=port) in err.strip().splitlines()[-1], (args, err)
        assert len(lines(err)) == 1 or args[-1] == '70000'  # argparse's own errors come after its usage lines
    assert heavy == [], heavy


def test_arch_choices_are_the_models():
    import fastai_binary_digits.cli as cli_mod
    from fastai_binary_digits.models import ARCHS
    assert list(cli_mod.ARCH_NAMES) == list(ARCHS)


# ---------------------------------------------------------------------------------------------------------------
# Hostile images: one line each, the others answered

@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='needs named pipes (os.mkfifo)')
def test_predict_refuses_fifos_strips_and_bombs_one_line_each(trained, images, tmp_path, capsys):
    "A FIFO (reading it would wait forever), a 1x600 JPEG, a 160-megapixel strip: an error line each, the rest answered"
    from test_images import png_header
    d, _ = trained
    os.mkfifo(tmp_path/'fifo.png')
    Image.new('L', (1, 600), 128).save(tmp_path/'thin.jpg')
    (tmp_path/'strip.png').write_bytes(png_header(4, 40_000_000))
    good = [str(fn) for fn, _ in images[:2]]
    bad = [str(tmp_path/n) for n in ('fifo.png', 'thin.jpg', 'strip.png')]
    def stop(*_): raise TimeoutError('predict blocked')
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(120)  # a guard against a hang, not a timing
    try: code = main(['predict', str(d/'models'/'model.safetensors'), good[0], *bad, good[1]])
    finally: signal.alarm(0); signal.signal(signal.SIGALRM, old)
    res = capsys.readouterr()
    assert code == 1
    assert [l.split(':')[0] for l in lines(res.out)] == good and all(re.search(r': [48] \(', l) for l in lines(res.out))
    assert lines(res.err) == [
        f"{bad[0]}: error: {bad[0]} is a FIFO (named pipe), not an image file: give a regular file (reading this one "
        "might never end)",
        f"{bad[1]}: error: The image {bad[1]} is 1x600 pixels, a strip: a picture of a digit is at most 50 times "
        "longer than wide (1:50); crop it around the digit",
        f"{bad[2]}: error: The image {bad[2]} is 4x40,000,000 pixels (160 megapixels): images of up to 50 megapixels "
        "are read; shrink it, or crop it around the digit"]


# ---------------------------------------------------------------------------------------------------------------
# A full disk: refused before training when the room is known to be short; a write that fails anyway is one line,
# and the trained model is kept elsewhere

@pytest.fixture
def small_disk(tmp_path):
    "A real 1 MB file system (tmpfs), mounted for this test: needs root and mount(8)"
    d = tmp_path/'disk'
    d.mkdir()
    if shutil.which('mount') is None: pytest.skip('no mount(8) here to make a 1 MB file system')
    res = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(d)], capture_output=True, text=True)
    if res.returncode: pytest.skip(f'cannot mount a 1 MB file system here (needs root): {res.stderr.strip()}')
    yield d
    subprocess.run(['umount', str(d)], check=True)


def fill(disk:Path, leave:int=0):
    "Take the room on `disk`, but `leave` bytes"
    with open(disk/f'filler{len(list(disk.iterdir()))}', 'wb') as f:
        try: f.write(bytes(max(shutil.disk_usage(disk).free - leave, 0)))
        except OSError as e: assert e.errno == errno.ENOSPC


@pytest.fixture
def no_training(monkeypatch):
    "`Learner.fit` recorded and skipped (the tests here are about what comes before and after it); the learner kept"
    from fastai.learner import Learner
    import fastai_binary_digits.learner as learner_mod
    seen = {'fit': 0}
    def fit(self, *a, **k): seen['fit'] += 1
    monkeypatch.setattr(Learner, 'fit', fit)
    make = learner_mod.binary_learner
    def keep(*a, **k):
        seen['learn'] = make(*a, **k)
        return seen['learn']
    monkeypatch.setattr(learner_mod, 'binary_learner', keep)
    return seen


def test_train_refuses_at_once_a_disk_without_room(small_disk, no_training, capsys):
    fill(small_disk, leave=100_000)
    assert main(['train', '--sample', '--arch', 'deep', '--out', str(small_disk/'model.safetensors')]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(rf"error: --out {small_disk/'model.safetensors'}: the disk mounted at {small_disk} has \d+ KB "
                        r"free, and what this command writes there needs about 1.1 MB: free some space there or "
                        r"choose another place \(nothing was done\)\n", err), err
    assert no_training['fit'] == 0 and 'learn' not in no_training
    # the model and the report together
    assert main(['train', '--sample', '--out', str(small_disk/'m.safetensors'), '--report', str(small_disk/'r')]) == 2
    assert 'needs about 489 KB' in capsys.readouterr().err and no_training['fit'] == 0  # with the pair check's 70 KB
    assert main(['train', '--sample', '--out', str(small_disk/'m.safetensors'), '--report', str(small_disk/'r'),
                 '--no-check']) == 2
    assert 'needs about 419 KB' in capsys.readouterr().err and no_training['fit'] == 0


def test_evaluate_refuses_at_once_a_report_without_room(trained, small_disk, capsys, monkeypatch):
    import fastai_binary_digits.cli as cli_mod
    monkeypatch.setattr(cli_mod, '_load_model', lambda fn: pytest.fail('loaded the model before checking the room'))
    fill(small_disk, leave=50_000)
    d, _ = trained
    assert main(['evaluate', str(d/'models'/'model.safetensors'), '--sample', '--report', str(small_disk/'r')]) == 2
    assert re.fullmatch(rf"error: --report {small_disk/'r'}: the disk mounted at {small_disk} has \d+ KB free, and what "
                        r"this command writes there needs about 400 KB: .*\(nothing was done\)\n", capsys.readouterr().err)


def _check_rescued(err:str, out:Path, disk:Path|None, learn, rescue_dir:Path):
    "One line naming the full disk and where the trained model went; that file holds the learner's weights"
    import torch
    from fastai_binary_digits import load_model_file
    disk = r'\S+' if disk is None else re.escape(str(disk))
    out_, kept = re.escape(str(out)), re.escape(str(rescue_dir/'model-'))
    m = re.fullmatch(rf"error: Could not write {out_}: the disk mounted at {disk} is full \([\d,.]+ [KMG]B free\)\. "
                     rf"The trained model was written to ({kept}\w+{out.suffix}) instead: move it where you want it, "
                     rf"such as {out_}\n", err)
    assert m, err
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # fastai's pickle warning
        kept = load_model_file(m[1])
    for k, v in learn.model.state_dict().items(): assert torch.equal(kept.model.state_dict()[k], v.cpu()), k


@pytest.mark.parametrize('suffix', ['.safetensors', '.pkl'])
def test_a_full_disk_after_training_keeps_the_model(suffix, small_disk, no_training, tmp_path, capsys, monkeypatch):
    "The room was there when training began and is gone when it ends (a real ENOSPC): the model goes elsewhere"
    rescue = tmp_path/'rescue'
    rescue.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(rescue))
    out = small_disk/f'model{suffix}'
    out.write_bytes(b'an earlier model')
    from fastai.learner import Learner
    monkeypatch.setattr(Learner, 'fit', lambda self, *a, **k: fill(small_disk))  # training ends on a full disk
    assert main(['train', '--sample', '--out', str(out), '--no-check']) == 2  # (`no_training` keeps the last learner)
    _check_rescued(capsys.readouterr().err, out, small_disk, no_training['learn'], rescue)
    assert out.read_bytes() == b'an earlier model' and not list(small_disk.glob('.*.tmp'))


def test_a_full_disk_for_the_report_is_one_line(small_disk, capsys, monkeypatch):
    "The report's pictures need a trained learner (its losses): one epoch"
    import fastai_binary_digits.cli as cli_mod
    export = cli_mod._export
    def export_then_fill(*a):
        export(*a)
        fill(small_disk)
    monkeypatch.setattr(cli_mod, '_export', export_then_fill)
    out = small_disk/'model.safetensors'
    assert main(['train', '--sample', '--epochs', '1', '--out', str(out), '--report', str(small_disk/'report'),
                 '--no-check']) == 2
    res = capsys.readouterr()
    assert lines(res.out)[-1] == f'Exported the learner to {out}'
    assert re.fullmatch(rf"error: Could not write the report into {small_disk}/report: the disk mounted at "
                        rf"{small_disk} is full \(0 KB free\) \(the model is in {out}\)\n", res.err), res.err
    assert out.stat().st_size > 3000


def test_a_failed_write_is_one_line_and_the_model_is_kept_simulated(no_training, tmp_path, capsys, monkeypatch):
    "Where no small file system can be mounted: the export fails with ENOSPC, as a full disk makes it"
    from fastai_binary_digits.learner import BinaryLearner
    rescue, disk = tmp_path/'rescue', tmp_path/'full'
    rescue.mkdir(); disk.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(rescue))
    export = BinaryLearner.export
    def full(self, fname, **k):
        if Path(fname).parent == disk: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return export(self, fname, **k)
    monkeypatch.setattr(BinaryLearner, 'export', full)
    assert main(['train', '--sample', '--out', str(disk/'model.safetensors'), '--no-check']) == 2
    _check_rescued(capsys.readouterr().err, disk/'model.safetensors', None, no_training['learn'], rescue)
