"""The README's promises, as a learner meets them in a fresh clone, offline: CI runs its test command, its quick start
is two commands, every Python block and every `fastai-binary-digits` command line in it runs as written (in a folder
holding what the README says is there: the model the quick start trains, pictures of digits), and the lines that need
the network (pip, venv) say what they should. Blocks that need a server or several processes are run by the tests
named in `ELSEWHERE`."""
import json, os, re, shlex, shutil, signal, subprocess, sys, threading, urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT/'README.md').read_text()
COMMAND = 'fastai-binary-digits'
OFFLINE = {**{v: 'http://127.0.0.1:9' for v in ('https_proxy', 'http_proxy', 'HTTPS_PROXY', 'HTTP_PROXY')},  # closed
           'no_proxy': '127.0.0.1,localhost', 'NO_PROXY': '127.0.0.1,localhost'}  # (the page's own server is local)
ELSEWHERE = {  # what in a block marks it as run by another test, and that test
    'gradio_client': 'tests/test_demo.py::test_readme_api_examples_work',  # against a served 4-vs-8 model
    'curl ': 'tests/test_demo.py::test_readme_api_examples_work',
    'torchrun ': 'tests/test_distributed.py::test_cli_trains_on_two_processes',  # two processes of `train`
}


def _section(title:str) -> str:
    "The text of the README's section whose heading starts with `title`, up to the next heading of its level or above"
    out, level, fenced = [], None, False
    for line in README.splitlines():
        fenced ^= line.startswith('```')
        head = None if fenced else re.match(r'(#+) (.*)', line)
        if level and head and len(head.group(1)) <= level: break
        if level: out.append(line)
        elif head and head.group(2).startswith(title): level = len(head.group(1))
    assert level, f'the README has no section {title!r}'
    return '\n'.join(out) + '\n'


def _blocks(lang:str, text:str=README) -> list: return re.findall(rf'```{lang}\n(.*?)```', text, re.S)


def _lines(block:str) -> list: return [l for l in block.splitlines() if l.strip() and not l.startswith('#')]


def _elsewhere(block:str) -> str|None: return next((t for k, t in ELSEWHERE.items() if k in block), None)


def _quick_start() -> list:
    "The commands of Start here that install the package: the quick start"
    return [l for b in _blocks('bash', _section('Start here')) for l in _lines(b) if 'pip install -e' in l]


def _args(line:str) -> list:
    "The arguments of the `fastai-binary-digits` command in a command line (its comment left out)"
    return shlex.split(line.split(f'{COMMAND} ', 1)[1], comments=True)


# ---------------------------------------------------------------------------------------------------------------
# The lines that need the network (venv and pip reach the package index): checked as written, not run

def test_ci_runs_the_readme_test_command():
    test_cmd = next(l for b in _blocks('bash') for l in _lines(b) if 'pytest' in l)
    assert test_cmd == _quick_start()[1] and test_cmd in (ROOT/'.ci'/'run').read_text()


def test_quick_start_is_two_commands_each_in_its_own_block():
    blocks = [b for b in _blocks('bash', _section('Start here')) if 'pip install -e' in b]
    first, second = _quick_start()
    assert len(blocks) == 2 and all(len(_lines(b)) == 1 for b in blocks)
    for cmd in (first, second):  # a fresh virtual environment, used through its own `bin`
        steps = cmd.split(' && ')
        assert steps[0] == 'python3 -m venv .venv' and all(s.startswith('.venv/bin/') for s in steps[1:]), cmd
    assert 'train --sample' in first and first.split(' && ')[1] == '.venv/bin/pip install -e .'
    assert second.endswith('.venv/bin/python -m pytest')
    assert re.search(r'^# 2\..*\(\S.* on two CPU cores, install included\)$', blocks[1], re.M)  # how long it takes


def test_the_cpu_build_comes_first_torch_and_torchvision_together():
    "Before the quick start, one pip call installs torch and torchvision from PyTorch's CPU index into the same venv"
    start = _section('Start here')
    cpu = [l for b in _blocks('bash', start) for l in _lines(b) if 'download.pytorch.org/whl/cpu' in l]
    assert len(cpu) == 1, 'no command (or several) installs the CPU build of PyTorch'
    assert start.index(cpu[0]) < start.index(_quick_start()[0])
    venv, pip = cpu[0].split(' && ')
    assert venv == 'python3 -m venv .venv'
    assert shlex.split(pip) == ['.venv/bin/pip', 'install', 'torch', 'torchvision', '--index-url',
                                'https://download.pytorch.org/whl/cpu']
    assert start.index('NVIDIA') < start.index(cpu[0])  # who needs it is said before the command


def _pip_installs(text:str) -> list:
    "The requirements of every `pip install ...` in `text` (in code blocks or inline code), options left out"
    reqs = []
    for cmd in re.findall(r'pip install((?: +(?:"[^"\n]*"|[^\s`&;"\'),]+))+)', text):  # quoted words, or up to a quote
        words, skip = shlex.split(cmd), False
        for w in words:
            if skip: skip = False
            elif w in ('--index-url', '--extra-index-url', '-i', '--python', '-w'): skip = True
            elif not w.startswith('-'): reqs.append(w)
    return reqs


def test_nothing_installs_the_package_by_name_from_the_index():
    "It is not on PyPI: the README, the notebooks and the package's own messages install from the repository or a wheel"
    sources = {'README.md': README, **{p.name: p.read_text() for p in (ROOT/'nbs').glob('*.ipynb')},
               **{f'{p.parent.name}/{p.name}': p.read_text() for p in (ROOT/'fastai_binary_digits').glob('*.py')}}
    seen = 0
    for where, text in sources.items():
        for req in _pip_installs(text.replace('\\n', '\n').replace('\\"', '"')):
            seen += 1
            local = req.startswith('.') or req.endswith('.whl') or '/' in req
            name = re.split(r'[\[<>=!~ ]', req, maxsplit=1)[0].lower().replace('_', '-')
            assert local or name != 'fastai-binary-digits', f'{where}: pip install {req}'
    assert seen >= 6
    assert 'pip wheel --no-deps -w dist .' in README  # builds the wheel with nothing but pip
    assert 'python -m build' not in README or 'pip install build' in README  # `build` is a package of its own


def test_the_first_quick_start_command_leaves_no_untracked_file():
    "What the first command writes in the clone (its venv, pip's metadata, `train`'s default --out) is ignored by git"
    from fastai_binary_digits.cli import _parser
    if shutil.which('git') is None or subprocess.run(['git', 'rev-parse'], cwd=ROOT, capture_output=True).returncode:
        pytest.skip('not a git checkout')
    first = _quick_start()[0]
    args = _parser().parse_args(_args(first))
    assert args.command == 'train' and args.report is None
    for fn in [args.out, '.venv/', 'fastai_binary_digits.egg-info/', 'model.pkl', 'model.safetensors']:
        res = subprocess.run(['git', 'check-ignore', '-q', '--no-index', fn], cwd=ROOT)
        assert res.returncode == 0, f'{fn} (written by {first!r}) is not ignored by .gitignore'


def test_readme_says_what_the_package_needs():
    import tomllib
    project = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']
    installs = _section('What it installs')
    for dep in project['dependencies']: assert f'`{dep}`' in installs, dep
    for extra in project['optional-dependencies']: assert f'`{extra}`' in installs, extra
    assert f"Python {project['requires-python'].removeprefix('>=')} or newer" in installs
    for extras in re.findall(r'pip install -e "\.\[([\w,]+)\]"', README):  # the extras the README installs exist
        assert set(extras.split(',')) <= set(project['optional-dependencies']), extras


def _anchors(text:str) -> set:
    "The anchors GitHub gives the headings of `text`"
    heads = re.findall(r'^#+ (.+)$', re.sub(r'```.*?```', '', text, flags=re.S), re.M)
    return {re.sub(r'[^\w\- ]', '', h.lower()).replace(' ', '-') for h in heads}


def test_links_and_pictures_are_in_the_repository():
    "The README's links and pictures, and benchmarks/README.md's links, lead to files and headings that exist"
    links = re.findall(r'\]\(((?!https?://)[^)]+)\)', README)
    assert 'nbs/images/demo.png' in links and 'benchmarks/README.md' in links
    for doc in (ROOT/'README.md', ROOT/'benchmarks'/'README.md'):
        for link in re.findall(r'\]\(((?!https?://)[^)]+)\)', doc.read_text()):
            path, _, anchor = link.partition('#')
            target = (doc.parent/path).resolve() if path else doc
            assert target.exists(), (doc, link)
            if anchor: assert anchor in _anchors(target.read_text()), (doc, link)
    for name in ('demo.png', 'weights.png'):
        with Image.open(ROOT/'nbs'/'images'/name) as im: assert im.format == 'PNG' and min(im.size) >= 300


def test_no_issue_numbers_and_no_placeholder():
    "Nothing is left open: no issue numbers (history belongs in git), no placeholder for a figure"
    assert not re.search(r'\b[Ii]ssues? #?\d+|(?<![\w/&])#\d+\b', README), re.search(r'\b[Ii]ssues? #?\d+|#\d+', README)
    assert not re.findall(r'@@\w+@@|\bTODO\b|\bTBD\b|\bXXX\b', README)


def _command_block() -> list: return _lines(_blocks('bash', _section('The command line'))[0])


def _page_block() -> list: return [l for l in _lines(_blocks('bash', _section('Draw a digit'))[0]) if COMMAND in l]


def test_every_block_and_command_is_run_here_or_by_a_named_test():
    "A new block must come with what it has to show (`PYTHON_SHOWS`), a test that runs it (`ELSEWHERE`), or be pip's"
    for block in _blocks('python'): assert _elsewhere(block) or _python_key(block), block
    commands = []
    for block in _blocks('bash'):
        runs = [l for l in _lines(block) if l.startswith(COMMAND) or f'bin/{COMMAND} ' in l]
        assert runs or all('pip install' in l for l in _lines(block)) or _elsewhere(block), block
        commands += runs
    assert sorted(commands) == sorted(_command_block() + _page_block() + _quick_start()[:1])  # the lines run below
    inline = re.findall(rf'`(?:\.venv/bin/)?{COMMAND} ([^`]+)`', README)
    assert all(a.endswith('--help') for a in inline if not a.startswith('predict model.safetensors my_digit.png'))
    assert {'gradio_client', 'curl '} <= {k for k in ELSEWHERE if k in _section('Draw a digit')}  # what test_demo reads


def test_the_torchrun_line_is_the_train_command_the_distributed_test_runs():
    from fastai_binary_digits.cli import _parser
    line = next(l for b in _blocks('bash') for l in _lines(b) if l.startswith('torchrun '))
    args = _parser().parse_args(shlex.split(line.split('-m fastai_binary_digits ', 1)[1]))
    assert args.command == 'train' and args.sample and args.seed is not None  # distributed training needs a seed
    assert 'torchrun --nproc_per_node 2 -m fastai_binary_digits train --sample --pair 4 8' in line


# ---------------------------------------------------------------------------------------------------------------
# What runs: in a folder holding what the README says is there

def _typical(images) -> np.ndarray:
    "The one of `images` (uint8 (n, 28, 28)) nearest their mean: a digit any model of its pair reads as such"
    a = images.numpy().astype(np.float32)
    return images.numpy()[((a - a.mean(0))**2).sum((1, 2)).argmin()]


def _pictures(folder:Path):
    "The pictures the README names, made from the bundled sample's testing digits as people's pictures of them"
    from fastai_binary_digits.mnist import load_digits
    from renderings import ink_on_white, photo
    digits, rng = load_digits([3, 4], 'testing', sample=True), np.random.default_rng(0)
    three = _typical(digits[3][0])
    ink_on_white(three, rng).save(folder/'my_digit.png')
    photo(three, rng).save(folder/'photo.jpg')
    ink_on_white(_typical(digits[4][0]), rng).save(folder/'four.png')
    Image.new('L', (200, 200), 255).save(folder/'blank.png')


def _run(args:list, cwd:Path, timeout:int=300) -> subprocess.CompletedProcess:
    "`args` in a new process, offline, with an empty FASTAI_HOME"
    env = {**os.environ, **OFFLINE, 'FASTAI_HOME': str(cwd/'fastai_home')}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def clone(tmp_path_factory):
    """A folder as a learner's clone is after the quick start's first command (its `train`, run as written, offline)
    with pictures of their own digits in it: a 3 (`my_digit.png`, and as a photo), a 4, a blank page"""
    folder = tmp_path_factory.mktemp('clone')
    _pictures(folder)
    res = _run([sys.executable, '-m', 'fastai_binary_digits', *_args(_quick_start()[0])], folder)
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'batch_accuracy' in res.stdout and 'Pair check:' in res.stdout and 'Traceback' not in res.stderr
    assert (folder/'model.safetensors').is_file()
    return folder


def _python_key(block:str) -> str|None: return next((k for k in PYTHON_SHOWS if k in block), None)


PYTHON_SHOWS = {  # a line of each Python block: the code run after it in its process, and the files it must leave
    'plot_weights(learn)': ("assert len(learn.recorder.values) == 20 and learn.recorder.values[-1][2] > 0.95\n"
                            "assert list(dls.vocab) == [4, 8]", ['weights.png']),
    'prepare_digit(': ("assert a.shape == (28, 28) and a.dtype.name == 'uint8' and a.max() == 255", ['prepared.png']),
    'NotInPairError': ("assert learn.predict('my_digit.png')[0] == 3\n"
                       "assert dl.found.tolist() == [True, True, False] and dl.in_pair.tolist() == [True, False, False]",
                       []),
    "learn.export('model.pkl')": ("assert list(learn.dls.vocab) == [3, 7] and learn.predict('my_digit.png')[0] == 3",
                                  ['model.pkl']),
    'train_model(': ("assert len(history) == 20 and history[-1][1] > 0.9", []),
}


@pytest.mark.parametrize('i', range(len(_blocks('python'))),
                         ids=[re.sub(r'\W+', '_', _python_key(b) or 'elsewhere').strip('_') for b in _blocks('python')])
def test_python_block_runs_offline(clone, i):
    "Each Python block as written, in a process of its own, then what it must have done"
    block = _blocks('python')[i]
    if _elsewhere(block): pytest.skip(f'run by {_elsewhere(block)}')
    check, files = PYTHON_SHOWS[_python_key(block)]
    res = _run([sys.executable, '-c', block + '\n' + check], clone)
    assert res.returncode == 0, f'{block}\n{res.stderr[-3000:]}'
    for fn in files: assert (clone/fn).is_file() and (clone/fn).stat().st_size > 1000, fn
    if 'NotInPairError' in block:
        assert re.search(r'^my_digit\.png \(3, ', res.stdout, re.M) and 'four.png Neither 3 nor 7' in res.stdout
    if 'model.pkl' in block: assert 'insecure pickle' in res.stderr  # fastai's warning, never hidden


def _cli(line:str, cwd:Path, capsys) -> tuple:
    "Run a `fastai-binary-digits` line, as its console script does (`cli.main`), in `cwd`: (exit status, stdout)"
    from fastai_binary_digits.cli import main
    old = Path.cwd()
    os.chdir(cwd)
    try: status = main(_args(line))
    finally: os.chdir(old)
    out, err = capsys.readouterr()
    assert 'Traceback' not in err, err
    return status, out


def _status(line:str) -> int:
    "The exit status the line's comment documents, 0 when it says none"
    m = re.search(r'#.*exit status (\d)', line)
    return int(m.group(1)) if m else 0


def test_command_lines_run_as_written(clone, capsys, monkeypatch):
    """Every `fastai-binary-digits` line of the command line's block, in order, with the exit status it documents; and
    the quick start's `predict` of a picture of one's own"""
    for k, v in OFFLINE.items(): monkeypatch.setenv(k, v)
    lines = _command_block()
    assert [_args(l)[0] for l in lines] == ['train', 'evaluate', 'predict', 'predict']
    for line in lines:
        status, out = _cli(line, clone, capsys)
        assert status == _status(line), (line, out)
        if _args(line)[0] == 'train':
            assert (clone/'four_or_eight.safetensors').is_file() and len(list((clone/'report').glob('*.png'))) == 4
        elif _args(line)[0] == 'evaluate': assert re.search(r'^accuracy +0\.9\d', out, re.M), out
        elif '--json' in line: assert json.loads(out.splitlines()[-1])['digit'] == 3
        else:
            mine, four, blank = out.splitlines()[-3:]
            assert re.match(r'my_digit\.png: 3 \(0\.\d{3}\)$', mine) and four.startswith('four.png: neither 3 nor 7')
            assert blank == 'blank.png: no digit found'
    inline = re.findall(rf'`\.venv/bin/{COMMAND} ([^`]+)`', _section('Start here'))
    assert len(inline) == 1
    status, out = _cli(f'{COMMAND} {inline[0]}', clone, capsys)
    assert status == 0 and re.match(r'my_digit\.png: 3 \(0\.\d{3}\)$', out.strip()), out


def test_help_lines_answer(clone, capsys):
    lines = re.findall(rf'`({COMMAND} [^`]*--help)`', README)
    assert lines
    for line in lines:
        with pytest.raises(SystemExit) as e: _cli(line, clone, capsys)
        assert e.value.code == 0 and f'usage: {COMMAND} {_args(line)[0]}' in capsys.readouterr().out


def test_the_page_lines_run_as_written(clone, capsys, monkeypatch):
    "The page's block: the Space is written; the page is served (its URL answers) until Ctrl-C, which ends it with 0"
    for k, v in OFFLINE.items(): monkeypatch.setenv(k, v)
    lines = _page_block()
    space, serve = [l for l in lines if '--space' in l], [l for l in lines if '--space' not in l]
    assert len(space) == 1 and len(serve) == 1
    assert _cli(space[0], clone, capsys)[0] == 0 and (clone/'my_space'/'app.py').is_file()
    env = {**os.environ, **OFFLINE, 'FASTAI_HOME': str(clone/'fastai_home')}
    proc = subprocess.Popen([sys.executable, '-m', 'fastai_binary_digits', *_args(serve[0])], cwd=clone, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C, as in a terminal
    guard = threading.Timer(180, proc.kill)  # a server that never says where it is ends the read below
    guard.start()
    try:
        first = proc.stdout.readline()
        url = re.search(r'Running on local URL: +(\S+)', first)
        assert url and url.group(1).startswith('http://127.0.0.1:'), first + proc.stdout.read()
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url.group(1), timeout=60) as page:
            assert page.status == 200 and 'gradio' in page.read().decode().lower()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        guard.cancel()
        if proc.poll() is None: proc.kill()
        proc.stdout.close()
