"""The demo for real: models trained on the bundled sample, served by the command line and by a Space's `app.py` in
their own processes, drawn on with real mouse events in headless Chromium, queried through Gradio's API, and watched
for any connection that leaves 127.0.0.1"""
import ipaddress, json, math, os, re, shutil, socket, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastai_binary_digits import BinaryDigitsDataLoaders, binary_learner, load_model_file
from fastai_binary_digits.cli import main
from fastai_binary_digits.checks import check_port
from fastai_binary_digits.checks import BinaryDigitsError
from fastai_binary_digits.demo import INSTALL, MAX_POINTS, NO_DIGIT, DigitReader, demo, strokes_image, write_space
from fastai_binary_digits.mnist import load_digits

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path('/usr/bin/chromium')  # Debian's package (.ci/run installs it); nothing is ever downloaded
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run']
# Every connection a server process opens, and every name it looks up, written to a file: `sys.addaudithook`
AUDIT = '''import os, sys
_log = open(os.environ['DEMO_CONNECT_LOG'], 'a', buffering=1)
def _hook(event, args):
    if event == 'socket.connect': _log.write(f'connect {args[1]!r}\\n')
    elif event == 'socket.getaddrinfo': _log.write(f'lookup {args[0]!r}\\n')
sys.addaudithook(_hook)
'''


def _needs(module:str):
    try: __import__(module)
    except ModuleNotFoundError: pytest.skip(f"{module} is not installed: pip install -e \".[test,demo]\"")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------
# Models, images and servers

@pytest.fixture(scope='module')
def models(tmp_path_factory):
    "0 vs 1 (linear) and 4 vs 8 (cnn) trained on the bundled sample, exported in the safe format"
    d = tmp_path_factory.mktemp('demo_models')
    out = {}
    for pair, arch, fit in (((0, 1), 'linear', lambda l: l.fit(5, 0.1)), ((4, 8), 'cnn', lambda l: l.fit_one_cycle(5, 0.3))):
        dls = BinaryDigitsDataLoaders.from_mnist(pair=pair, sample=True, seed=0, device='cpu')
        learn = binary_learner(dls, arch, seed=0)
        with learn.no_bar(), learn.no_logging(): fit(learn)
        assert learn.validate()[1] > 0.95
        learn.export(d/f'{arch}_{pair[0]}{pair[1]}.safetensors')
        out[pair] = d/f'{arch}_{pair[0]}{pair[1]}.safetensors'
    return out


@pytest.fixture(scope='module')
def pngs(tmp_path_factory):
    "The first MNIST testing image of 0, 1, 4 and 8 as PNG files, a blank picture and a file pretending to be a PNG"
    d = tmp_path_factory.mktemp('demo_pngs')
    res = {}
    for digit, (images, indices) in load_digits((0, 1, 4, 8), 'testing', sample=True).items():
        res[digit] = d/f'testing_{digit}_{indices[0]}.png'
        Image.fromarray(images[0].numpy()).save(res[digit])
    res['fake'] = d/'notes.png'
    res['fake'].write_text('these are notes, not a picture')
    res['blank'] = d/'blank.png'
    Image.new('L', (200, 200), 230).save(res['blank'])
    return res


class Server:
    "A demo served by a command in its own process, its every connection and name lookup logged"
    def __init__(self, cmd, cwd, tmp:Path, port:int, env=None):
        hooks = tmp/'hooks'
        hooks.mkdir()
        (hooks/'sitecustomize.py').write_text(AUDIT)
        self.log, self.out = tmp/'connections.log', tmp/'server.out'
        self.url = f'http://127.0.0.1:{port}/'
        env = {**os.environ, **(env or {}), 'DEMO_CONNECT_LOG': str(self.log),
               'PYTHONPATH': os.pathsep.join([str(hooks), str(ROOT), os.environ.get('PYTHONPATH', '')])}
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.out.open('w'), stderr=subprocess.STDOUT)

    def wait(self, timeout=180):
        t = time.time()
        while time.time() - t < timeout:
            if self.proc.poll() is not None: raise AssertionError(f"the server stopped:\n{self.out.read_text()[-3000:]}")
            if 'Running on local URL' in self.out.read_text(): return self
            time.sleep(0.5)
        raise AssertionError(f"the server did not start in {timeout} s:\n{self.out.read_text()[-3000:]}")

    def connections(self) -> list: return self.log.read_text().splitlines() if self.log.exists() else []

    def stop(self):
        self.proc.terminate()
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()


def _demo_deps():
    for m in ('gradio', 'gradio_client', 'playwright'): _needs(m)


@pytest.fixture(scope='module')
def servers(models, tmp_path_factory):
    """0 vs 1 served by `fastai-binary-digits demo MODEL --port N` behind an unreachable proxy; 4 vs 8 by the `app.py`
    of a Space folder that `demo MODEL --space DIR` wrote, run as a Space runs it: `python app.py` in that folder. Both
    start at once."""
    _demo_deps()
    d01, d48 = tmp_path_factory.mktemp('server01'), tmp_path_factory.mktemp('server48')
    space = d48/'space'
    assert main(['demo', str(models[4, 8]), '--space', str(space)]) == 0
    p01, p48 = _free_port(), _free_port()
    behind_a_proxy = {k: 'http://127.0.0.1:9' for k in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY')}
    s01 = Server([sys.executable, '-m', 'fastai_binary_digits', 'demo', str(models[0, 1]), '--port', str(p01)],
                 d01, d01, p01, env={**behind_a_proxy, 'no_proxy': '', 'NO_PROXY': ''})  # a proxy it never needs
    # the Space's own copy of the package, not this checkout's, so the folder is proved to stand alone
    s48 = Server([sys.executable, 'app.py'], space, d48, p48, env={'GRADIO_SERVER_PORT': str(p48)})
    try:
        yield {(0, 1): s01.wait(), (4, 8): s48.wait(), 'space': space}
    finally:
        s01.stop(); s48.stop()


@pytest.fixture(scope='module')
def browser():
    _needs('playwright')
    if not CHROMIUM.exists(): pytest.skip(f"Chromium is not at {CHROMIUM}: apt-get install chromium")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    "The demo page in a browser tab, every URL it asks for recorded; strokes drawn with the mouse or a finger"
    def __init__(self, browser, url:str, touch:bool=False):
        self.page = browser.new_page(viewport={'width': 1100, 'height': 900}, has_touch=touch)
        self.touch = self.page.context.new_cdp_session(self.page) if touch else None
        self.requests = []
        self.page.on('request', lambda r: self.requests.append(r.url))
        self.page.goto(url)
        self.page.wait_for_selector('#pad canvas', timeout=60_000)

    def draw(self, *strokes):
        "Draw each stroke (points in 0..1 of the canvas) with real input events: pointer down, moves, up"
        box = self.page.locator('#pad canvas').bounding_box()
        at = lambda x, y: (box['x'] + x*box['width'], box['y'] + y*box['height'])
        for points in strokes:
            if self.touch is None:
                m = self.page.mouse
                m.move(*at(*points[0]))
                m.down()
                for x, y in points[1:]: m.move(*at(x, y), steps=2)
                m.up()
            else:  # a finger, as a phone's browser sends it
                touch = lambda kind, pts: self.touch.send('Input.dispatchTouchEvent',
                                                          {'type': kind, 'touchPoints': pts})
                for i, (x, y) in enumerate(points):
                    px, py = at(x, y)
                    touch('touchStart' if i == 0 else 'touchMove', [{'x': px, 'y': py}])
                touch('touchEnd', [])

    def answer(self, expected:str, timeout=20_000) -> dict:
        "Wait until the page's answer is `expected`; return the probabilities its bars show"
        from playwright.sync_api import expect
        expect(self.page.locator('#probs [data-testid="label-output-value"]')).to_have_text(expected, timeout=timeout)
        probs = {}
        for r in self.page.locator('#probs .confidence-set').all_inner_texts():
            label, pct = r.split()[0], re.search(r'([0-9.]+)%', r).group(1)
            probs[label] = float(pct)/100
        return probs

    def nothing_shown(self, timeout=20_000):
        "Wait until the page shows no answer and no picture"
        from playwright.sync_api import expect
        expect(self.page.locator('#probs [data-testid="label-output-value"]')).to_have_count(0, timeout=timeout)
        expect(self.page.locator('#seen img')).to_have_count(0, timeout=timeout)

    def seen(self) -> bool:
        "Whether the page shows the 28x28 picture the model received"
        return self.page.locator('#seen img').count() > 0

    def upload(self, fn):
        self.page.set_input_files('#upload input[type=file]', str(fn))

    def close(self): self.page.close()


def _line(a, b, n=4): return [(a[0] + (b[0]-a[0])*i/n, a[1] + (b[1]-a[1])*i/n) for i in range(n+1)]
VERTICAL = [_line((0.5, 0.12), (0.5, 0.88))]
LOOP = [[(0.5 + 0.27*math.sin(t), 0.5 - 0.37*math.cos(t)) for t in np.linspace(0, 2*math.pi, 25)]]
FOUR = [_line((0.38, 0.1), (0.22, 0.58)) + _line((0.22, 0.58), (0.78, 0.58))[1:], _line((0.62, 0.15), (0.62, 0.9))]
EIGHT = [[(0.5 + 0.4*math.sin(t)*math.cos(t), 0.5 - 0.38*math.sin(t)) for t in np.linspace(0, 2*math.pi, 33)]]
SEVEN = [_line((0.25, 0.15), (0.75, 0.15)) + _line((0.75, 0.15), (0.4, 0.9))[1:]]


def _loopback(line:str) -> bool:
    "Whether a logged connection or name lookup stays on this machine"
    kind, what = line.split(' ', 1)
    what = eval(what, {})  # the repr of an address tuple, a host name or a Unix socket path
    host = what[0] if isinstance(what, tuple) else what
    if isinstance(host, bytes): host = host.decode()
    if kind == 'connect' and isinstance(what, (str, bytes)): return True  # a Unix socket
    if host in ('localhost', None): return True
    try: return ipaddress.ip_address(host).is_loopback
    except ValueError: return False


def _only_local(page:Page, url:str):
    outside = [u for u in page.requests if not u.startswith(url) and not u.startswith(('data:', 'blob:'))]
    assert page.requests and not outside, outside


# ---------------------------------------------------------------------------------------------------------------
# In the browser

def test_draw_0_and_1_clear_and_upload(servers, browser, pngs):
    s = servers[0, 1]
    page = Page(browser, s.url)
    try:
        page.nothing_shown()  # nothing is claimed before anything is drawn
        page.draw(*VERTICAL)
        p = page.answer('1')
        assert p['1'] > 0.5 > p['0'] and page.seen()
        page.page.click('#clear')
        page.nothing_shown()
        page.draw(*LOOP)  # the canvas still draws after Clear: no tool to choose
        p = page.answer('0')
        assert p['0'] > 0.5 and page.seen()
        page.page.click('#clear')
        page.upload(pngs[1])  # a real MNIST testing image
        page.answer('1')
        page.page.click('#upload button[aria-label="Clear"]')  # the upload's own clear: nothing claimed, still drawable
        page.nothing_shown()
        page.draw(*VERTICAL)
        page.answer('1')
        page.upload(pngs['blank'])
        page.answer(NO_DIGIT)
        assert not page.seen()
    finally: page.close()
    _only_local(page, s.url)
    out = s.out.read_text()  # the start-up lines name the command line's flag, not Gradio's `launch(share=True)`
    assert '--share' in out and 'share=True`' not in out and 'launch()' not in out, out


def test_draw_4_and_8_on_the_space_with_a_finger(servers, browser, pngs):
    s = servers[4, 8]
    page = Page(browser, s.url, touch=True)
    try:
        page.nothing_shown()
        page.draw(*FOUR)
        p = page.answer('4')
        assert p['4'] > 0.5
        page.page.tap('#clear')
        page.nothing_shown()
        page.draw(*EIGHT)
        p = page.answer('8')
        assert p['8'] > 0.5
        if os.environ.get('DEMO_SCREENSHOT'): page.page.screenshot(path=os.environ['DEMO_SCREENSHOT'], full_page=True)
        page.upload(pngs[4])
        page.answer('4')
    finally: page.close()
    _only_local(page, s.url)


def test_an_upload_that_is_not_an_image_is_one_short_message_and_the_page_keeps_working(servers, browser, pngs):
    s = servers[0, 1]
    page = Page(browser, s.url)
    try:
        page.upload(pngs['fake'])
        toast = page.page.locator('.toast-body')
        toast.first.wait_for(timeout=20_000)
        text = toast.first.inner_text().splitlines()[-1]  # below the toast's title, Error, and its close button
        assert text.startswith('Could not read the image notes.png'), text
        assert 'gradio' not in text and os.sep not in text, text  # never the upload's temporary path
        assert toast.count() == 1
        page.draw(*VERTICAL)  # the server keeps serving, the canvas keeps drawing
        page.answer('1')
    finally: page.close()
    lines = [l for l in s.out.read_text().splitlines() if 'notes.png' in l]
    assert len(lines) == 1 and 'Traceback' not in s.out.read_text(), s.out.read_text()[-3000:]
    assert 'Could not read the image notes.png' in lines[0] and 'gradio' not in lines[0], lines


class BarCheck:
    """A stand-in for a learner's `pair_check`, honouring its contract: rows of 784 floats in 0..1 in, (in the pair?,
    probability of another digit) out. It calls anything with a long straight bar (a 4, a 7) another digit"""
    def __init__(self): self.calls = []

    def in_pair(self, x):
        self.calls.append((tuple(x.shape), x.dtype, float(x.min()), float(x.max())))
        bar = (x.view(-1, 28, 28) > 0.5).sum(2).max(1).values.float()  # the longest row of ink, pixels
        other = ((bar - 12)/2).sigmoid()
        return other < 0.5, other


def test_a_digit_outside_the_pair_is_neither_of_the_two(models, browser, pngs):
    "With a `pair_check`, a drawn 4 or 7 on a 0-vs-1 page says 'neither', a drawn 0 or 1 still gets its bar"
    _demo_deps()
    learn = load_model_file(models[0, 1])
    learn.pair_check = check = BarCheck()
    app = demo(learn, port=_free_port(), prevent_thread_lock=True, quiet=True, delete_cache=(1, 2))
    try:
        page = Page(browser, app.local_url)
        try:
            page.draw(*FOUR)
            page.answer('Neither 0 nor 1: this model only knows 0 and 1')
            assert page.seen()  # what the model received is still shown
            page.page.click('#clear')
            page.draw(*VERTICAL)
            assert page.answer('1')['1'] > 0.5
            page.page.click('#clear')
            page.draw(*SEVEN)
            page.answer('Neither 0 nor 1: this model only knows 0 and 1')
            page.upload(pngs[1])  # the check also sees uploads
            assert page.answer('1')['1'] > 0.5
        finally: page.close()
        assert check.calls and all(c[:2] == ((1, 784), torch.float32) and 0 <= c[2] <= c[3] <= 1 for c in check.calls)
        shown = {Path(u.split('file=', 1)[1]) for u in page.requests if 'file=' in u and u.endswith('.png')}
        assert len(shown) >= 3, page.requests
        t = time.time()  # the page's pictures are deleted by Gradio's `delete_cache`, as its uploads are
        while any(f.exists() for f in shown) and time.time() - t < 20: time.sleep(0.5)
        assert not any(f.exists() for f in shown)
    finally: app.close()


def test_servers_never_connect_outside_this_machine(servers, browser):
    "Runs after the pages above were used: every connection and name lookup of both servers stayed on 127.0.0.1"
    for key in ((0, 1), (4, 8)):
        log = servers[key].connections()
        assert log, "the audit hook logged nothing: it did not run in the server"
        outside = [l for l in log if not _loopback(l)]
        assert not outside, outside


# ---------------------------------------------------------------------------------------------------------------
# The API, the Space, the command line

def test_api_with_gradio_client(servers, pngs):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    for pair in ((0, 1), (4, 8)):
        client = Client(servers[pair].url, verbose=False)
        for digit in pair:
            label, seen = client.predict(handle_file(str(pngs[digit])), api_name='/predict')
            assert label['label'] == str(digit), label
            assert {c['label'] for c in label['confidences']} == set(map(str, pair))
            with Image.open(seen) as im: assert im.size == (28*6, 28*6)
    with pytest.raises(AppError, match='Could not read the image notes.png'):
        client.predict(handle_file(str(pngs['fake'])), api_name='/predict')
    label, _ = client.predict(handle_file(str(pngs[8])), api_name='/predict')  # and it keeps answering
    assert label['label'] == '8'


def _queue_call(url:str, target:str, event:str, data:list) -> dict:
    "One request through Gradio's queue as the page sends it (join, then the session's event stream): its last message"
    import httpx
    config = httpx.get(f'{url}config').json()
    ids = {c['props'].get('elem_id'): c['id'] for c in config['components']}
    fn = next(d['id'] for d in config['dependencies'] if d['targets'] and d['targets'][0] == [ids[target], event])
    session = os.urandom(6).hex()
    body = json.dumps(dict(data=data, event_data={}, fn_index=fn, trigger_id=ids[target], session_hash=session))
    r = httpx.post(f'{url}gradio_api/queue/join', content=body, headers={'Content-Type': 'application/json'})
    r.raise_for_status()
    with httpx.stream('GET', f'{url}gradio_api/queue/data', params={'session_hash': session}, timeout=60) as s:
        for line in s.iter_lines():
            msg = json.loads(line[5:]) if line.startswith('data:') else {}
            if msg.get('msg') == 'process_completed': return msg


def test_every_request_is_queued_bounded_and_checked(servers):
    "Every endpoint behind Gradio's queue; uploads limited in size; a malformed drawing refused in words; answers go on"
    import httpx
    url = servers[0, 1].url
    config = httpx.get(f'{url}config').json()
    assert config['max_file_size'] == 20*2**20
    assert all(d['queue'] for d in config['dependencies'])
    r = httpx.post(f'{url}gradio_api/upload', files={'files': ('big.png', b'\0'*(20*2**20 + 1), 'image/png')})
    assert r.status_code >= 400, r.text
    bad = {"'strokes'": 'clear the canvas', '[[140, 40, 140]]': 'clear the canvas', '[[140, NaN]]': 'finite numbers',
           f'[[1, 1]]*{MAX_POINTS + 1}': f'at most {MAX_POINTS} points'}
    for drawing, words in bad.items():
        msg = _queue_call(url, 'pad', 'draw', [eval(drawing, {'NaN': float('nan')})])
        assert not msg['success'] and words in msg['output']['error'], msg
    msg = _queue_call(url, 'pad', 'draw', [[[140, 40, 140, 140, 140, 240]]])
    assert msg['success'] and msg['output']['data'][0]['label'] == '1', msg
    out = servers[0, 1].out.read_text()  # one line each in the server's terminal, no traceback
    assert out.count('The page refused a drawing') == len(bad) and 'Traceback' not in out, out[-3000:]
    secret = {'path': str(ROOT/'pyproject.toml'), 'meta': {'_type': 'gradio.FileData'}}  # not an upload: Gradio
    assert not _queue_call(url, 'upload', 'upload', [secret])['success']  # refuses it, so the page never reads it


def _readme_section() -> str:
    return (ROOT/'README.md').read_text().split('## Draw a digit', 1)[1].split('\n## ', 1)[0]


def test_readme_api_examples_work(servers, pngs, tmp_path):
    "The README's two API examples, as written, against the 4 vs 8 server (its URL and a real 8 put in)"
    section = _readme_section()
    py = re.findall(r'```python\n(.*?)```', section, re.S)
    sh = [b for b in re.findall(r'```bash\n(.*?)```', section, re.S) if 'curl' in b]
    assert py and sh
    url = servers[4, 8].url.rstrip('/')
    shutil.copy(pngs[8], tmp_path/'digit.png')
    code = py[-1].replace('http://127.0.0.1:7860', url)
    out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'label': '8'" in out.stdout, out.stdout
    if shutil.which('curl') is None: pytest.skip('curl is not installed: the plain-HTTP example was not run')
    out = subprocess.run(['bash', '-c', 'set -euo pipefail\n' + sh[0].replace('http://127.0.0.1:7860', url)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout.split('data:', 1)[1].strip().splitlines()[0])
    assert data[0]['label'] == '8'


def test_space_folder_stands_alone(servers):
    space = servers['space']
    assert {p.name for p in space.iterdir()} >= {'app.py', 'requirements.txt', 'README.md', 'cnn_48.safetensors',
                                                  'fastai_binary_digits'}
    reqs = (space/'requirements.txt').read_text().split()
    import gradio
    assert f'gradio=={gradio.__version__}' in reqs and any(r.startswith('fastai') for r in reqs)
    assert f'sdk_version: {gradio.__version__}' in (space/'README.md').read_text()
    # the Space ran its own copy of the package (the audit hook's folder comes first on PYTHONPATH, then this checkout)
    assert (space/'fastai_binary_digits'/'demo.py').read_text() == (ROOT/'fastai_binary_digits'/'demo.py').read_text()
    if not sys.dont_write_bytecode: assert (space/'fastai_binary_digits'/'__pycache__').exists()


def test_space_folder_is_refused_when_it_holds_other_files(models, tmp_path):
    (tmp_path/'mine.txt').write_text('keep me')
    with pytest.raises(ValueError, match='already holds other files'): write_space(models[0, 1], tmp_path)
    assert (tmp_path/'mine.txt').read_text() == 'keep me' and not (tmp_path/'app.py').exists()
    write_space(models[0, 1], tmp_path/'space')
    write_space(models[0, 1], tmp_path/'space')  # a Space written by the command is updated in place
    with pytest.raises(FileNotFoundError, match='does not exist'): write_space(tmp_path/'none.safetensors', tmp_path/'s2')
    assert not (tmp_path/'s2').exists()


def _cli_error(capsys, *args) -> str:
    assert main(list(map(str, args))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: '), err
    return err[0]


def test_cli_bad_model_files(capsys, tmp_path):
    assert 'does not exist' in _cli_error(capsys, 'demo', tmp_path/'missing.safetensors')
    bad = tmp_path/'broken.safetensors'
    bad.write_bytes(b'\x00not a model')
    assert 'broken.safetensors' in _cli_error(capsys, 'demo', bad)
    (tmp_path/'model.txt').write_text('?')
    assert '.safetensors' in _cli_error(capsys, 'demo', tmp_path/'model.txt')


def test_cli_port_in_use(capsys, models):
    _needs('gradio')
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); s.listen()
        port = s.getsockname()[1]
        err = _cli_error(capsys, 'demo', models[0, 1], '--port', port)
    assert f'Port {port} on 127.0.0.1 is not free' in err and '--port' in err
    with pytest.raises(ValueError, match='from 1 to 65535'): check_port('127.0.0.1', 70000)


def test_without_gradio_the_package_works_and_demo_says_how_to_install(capsys, monkeypatch, models, pngs):
    monkeypatch.setitem(sys.modules, 'gradio', None)  # as if Gradio were not installed
    err = _cli_error(capsys, 'demo', models[0, 1])
    assert err == f'error: The demo needs Gradio, an optional extra: {INSTALL}'
    learn = load_model_file(models[0, 1])
    with pytest.raises(ModuleNotFoundError, match=re.escape(INSTALL)): demo(learn)
    probs, x28, in_pair = DigitReader(learn)(pngs[0])  # the rest of the package needs no Gradio
    assert probs['0'] > 0.5 and x28.shape == (28, 28) and in_pair
    code = "import sys; sys.modules['gradio'] = None\nimport fastai_binary_digits\nassert 'demo' in fastai_binary_digits.__all__"
    assert subprocess.run([sys.executable, '-c', code], capture_output=True).returncode == 0


# ---------------------------------------------------------------------------------------------------------------
# What the page computes

def test_reader_gives_fastais_probabilities(models, pngs):
    "The page's fast path (model and activation on the prepared 28x28) equals fastai's `get_preds` on that image"
    for pair in ((0, 1), (4, 8)):
        learn = load_model_file(models[pair])
        read = DigitReader(learn)
        for digit in pair:
            probs, x28, in_pair = read(pngs[digit])
            assert in_pair  # a learner without a `pair_check`: every digit is taken as one of the pair
            dl = learn.dls.test_dl([x28])  # already prepared: `prepare_digit` gives it back as is
            with learn.no_bar(): p = float(learn.get_preds(dl=dl)[0].view(-1)[0])
            assert probs[str(pair[1])] == pytest.approx(p, abs=1e-6) and probs[str(pair[0])] == pytest.approx(1-p)
            assert max(probs, key=probs.get) == str(digit)
        assert read(np.full((200, 300, 4), 0, np.uint8)) == (None, None, True)  # an empty, transparent canvas
    with pytest.raises(TypeError, match='two-digit'): DigitReader(object())


def test_demo_opens_inline_in_jupyter(models, monkeypatch):
    "In a notebook, `demo(learn)` shows the page below the cell (an iframe of the local server) and returns at once"
    for m in ('gradio', 'nbclient', 'nbformat', 'ipykernel'): _needs(m)
    import nbformat
    from nbclient import NotebookClient
    port = _free_port()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        f"from fastai_binary_digits import *\nlearn = load_model_file({str(models[4, 8])!r})\n"
        f"app = demo(learn, port={port})"), nbformat.v4.new_code_cell("print(app.local_url); app.close()")])
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))  # this checkout
    NotebookClient(nb, timeout=180, kernel_name='python3').execute()
    html = ''.join(o.get('data', {}).get('text/html', '') for o in nb.cells[0].outputs)
    assert '<iframe' in html and f'127.0.0.1:{port}' in html, nb.cells[0].outputs
    assert f'http://127.0.0.1:{port}/' in nb.cells[1].outputs[0]['text']


def test_strokes_are_drawn_again_as_the_canvas_showed_them():
    "The page's points become the canvas's picture (white ink, the brush's width, round ends); anything else is refused"
    a = np.asarray(strokes_image([[140, 40, 140, 240], [60, 60]]))
    assert a.shape == (280, 280) and set(np.unique(a)) <= set(range(256))
    rows, cols = np.flatnonzero(a[:, 140] > 127), np.flatnonzero(a[140] > 127)
    assert (rows[0], rows[-1]) == (28, 252) and cols[-1] - cols[0] + 1 == 24  # the brush's width, its round ends
    assert a[60, 60] == 255 and a[60, 75] == 0  # a single tap: a dot of the brush's size
    for bad, match in (('3', 'list of strokes'), ([[1, 2, 3]], 'list of strokes'), ([[]], 'list of strokes'),
                       ([[1, float('inf')]], 'finite numbers'), ([[True, 1]], 'finite numbers'), ([['1', 1]], 'finite'),
                       ([[0, 0]*(MAX_POINTS + 1)], f'at most {MAX_POINTS} points')):
        with pytest.raises(BinaryDigitsError, match=match): strokes_image(bad)


def test_the_page_deletes_its_old_temporary_files_itself(models, tmp_path):
    "What Gradio's `delete_cache` would do, done by the page's requests too (Gradio's own deleting stops under load)"
    from types import SimpleNamespace
    from fastai_binary_digits.demo import _Answers
    files = [tmp_path/f'{i}.png' for i in range(4)]
    for f in files: f.write_bytes(b'x')
    uploads, pictures = {str(files[0]), str(files[1])}, {str(files[2]), str(files[3]), str(tmp_path/'gone.png')}
    example = SimpleNamespace(keep_in_cache={str(files[3])})  # a file a component keeps (Gradio's examples)
    answers = _Answers(None, load_model_file(models[0, 1]), delete_cache=(0, 0))
    answers.app = SimpleNamespace(temp_file_sets=[uploads, pictures], blocks={1: example})
    time.sleep(0.01)
    answers.tidy()
    assert [f.exists() for f in files] == [False, False, False, True]
    assert not uploads and pictures == {str(files[3])}  # Gradio's sets forget what is gone: they do not grow
