"""`prepare_digit` for real: MNIST's testing digits drawn as people draw and photograph them get the answers the
originals get; pictures without a digit get none; everywhere an image enters a trained model"""
import json, subprocess, sys

import numpy as np
import pytest
import torch
from PIL import Image

from fastai_binary_digits import (BinaryDigitsDataLoaders, ManyDigitsError, NoDigitError, binary_learner, prepare_digit,
                                  show_prepared)
from fastai_binary_digits.prepare import MNIST_STROKE, digit_images, is_prepared, stroke_width
from conftest import full_set_path
from renderings import RENDERINGS, no_digit_images, render

FULL_PAIRS = [(4, 8), (3, 7), (2, 5)]   # 4 vs 8, the book's 3 vs 7, and a pair the linear model finds harder
FULL_IMAGES = 250                        # testing images of each pair drawn in each rendering (seeded): 750 a rendering
SAMPLE_IMAGES = 300                      # of the sample's 400 testing images of 4 vs 8
BOUND = dict(cnn=1.0, linear=2.0)        # points of accuracy a rendering may lose against the original images


def train(dls, arch:str, one_cycle:tuple=(5, 0.1)):
    "`arch` trained on `dls`, seeded: the cnn with `fit_one_cycle(*one_cycle)`, the linear model with `fit(10, 1.0)`"
    learn = binary_learner(dls, arch, seed=0)
    with learn.no_bar(), learn.no_logging():
        if arch == 'cnn': learn.fit_one_cycle(*one_cycle)
        else: learn.fit(10, 1.0)
    return learn


def originals(dls):
    "The validation (official testing) images as 28x28 uint8 arrays, and their 0/1 labels"
    ds = dls.valid.dataset
    return (ds.x.cpu()*255).round().byte().view(-1, 28, 28).numpy(), ds.y.cpu().view(-1)


def hits(learns:dict, items, labels, **kwargs) -> dict:
    "`{arch: right}`: whether each learner answers each of `items` right through one `test_dl` (no digit found: wrong)"
    dl = next(iter(learns.values())).dls.test_dl(items, **kwargs)
    out = {}
    for arch, learn in learns.items():
        with learn.no_bar(): probs, _ = learn.get_preds(dl=dl)
        out[arch] = ((probs.view(-1) > 0.5).float() == labels) & dl.found
    return out


def accuracy(learn, items, labels, **kwargs) -> float:
    "Accuracy of `learn` on `items` through `test_dl`; an image where no digit was found counts as wrong"
    return hits({'': learn}, items, labels, **kwargs)[''].float().mean().item()


def rendering_hits(learns:dict, dls, n:int|None=None, seed:int=0) -> dict:
    """`{rendering: {arch: right}}` on the testing images of `dls` (a seeded choice of `n` of them, or all), the
    originals' row first; each rendering drawn and prepared once for all the learners"""
    imgs, ys = originals(dls)
    if n is not None and n < len(imgs):
        idxs = np.sort(np.random.default_rng(seed).choice(len(imgs), n, replace=False))
        imgs, ys = imgs[idxs], ys[idxs]
    table = {'original': hits(learns, list(imgs), ys, prepare=False)}
    for i, kind in enumerate(RENDERINGS): table[kind] = hits(learns, render(imgs, kind, seed + i), ys)
    return table


def rendering_table(tables:list) -> dict:
    "`{rendering: {arch: accuracy}}` over the images of every table of `rendering_hits` in `tables` together"
    return {kind: {arch: torch.cat([t[kind][arch] for t in tables]).float().mean().item() for arch in tables[0][kind]}
            for kind in tables[0]}


def assert_within_bounds(table:dict, what):
    print(f'\n{what}: ' + json.dumps(table))
    for kind, accs in table.items():
        for arch, acc in accs.items():
            assert acc >= table['original'][arch] - BOUND[arch]/100, (what, kind, arch, acc, table['original'][arch])


# ---------------------------------------------------------------------------------------------------------------
# The procedure itself

@pytest.fixture(scope='module')
def sample48():
    "4 vs 8 of the bundled sample, validated on its testing images, with a linear model and a cnn trained on it"
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, valid='testing', seed=0)
    return dls, {arch: train(dls, arch) for arch in ('linear', 'cnn')}


def test_mnist_own_images_pass_unchanged(sample48):
    dls, _ = sample48
    imgs, _ = originals(dls)
    assert all(is_prepared(a) for a in imgs)
    for a in imgs[:50]:
        for item in (a, Image.fromarray(a), torch.from_numpy(a), a.astype(np.float32)/255):
            assert np.array_equal(prepare_digit(item), a)


@pytest.mark.parametrize('kind', list(RENDERINGS))
def test_every_rendering_is_made_mnist_like(sample48, kind):
    "28x28 uint8, light digit on black, 20 pixels at its longer side, centre of mass at (14, 14), as MNIST's"
    from scipy import ndimage
    dls, _ = sample48
    imgs, _ = originals(dls)
    drawn = render(imgs[::40], kind, seed=1)
    prepared, digits = digit_images(drawn, counts=True)
    assert (digits == 1).all(), digits  # one digit found in each, not none, not several
    for orig, a in zip(imgs[::40], prepared):
        assert a.shape == (28, 28) and a.dtype == np.uint8
        rows, cols = np.flatnonzero((a > 10).any(1)), np.flatnonzero((a > 10).any(0))
        assert max(rows[-1]-rows[0], cols[-1]-cols[0]) + 1 in (19, 20, 21)
        cy, cx = ndimage.center_of_mass(a)
        assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
        assert a.max() >= 200 and (a == 0).mean() > 0.5  # full-strength ink, black background
        # the same digit: close to the original, pixel by pixel
        assert np.abs(a.astype(float) - orig).mean() < 40, kind


def _on_paper(a:np.ndarray, paper:float=210, size:int=300) -> np.ndarray:
    "The 28x28 `a` drawn in dark ink (grey 30) 70% as tall as a `size`-pixel square of paper of grey `paper`, as floats"
    ink = np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC), np.float32)/255
    return paper - (paper - 30)*ink


@pytest.mark.parametrize('depth', [90, 120])
def test_a_shadow_over_a_side_or_a_corner_is_not_ink(sample48, depth):
    """Paper at grey 210, dark ink, and a shadow levelling off `depth` grey levels darker, as a phone photo has them:
    a straight one over each corner and each side, a round one from beyond each side: no patch of shadow becomes ink,
    the model answers as without it"""
    dls, learns = sample48
    imgs, _ = originals(dls)
    yy, xx = np.mgrid[0:300, 0:300]/299
    shades = [np.clip((0.45 - (xx + yy)/2)/0.25, 0, 1), np.clip((0.35 - xx)/0.25, 0, 1),
              np.clip((0.75 - np.hypot(yy + 0.3, xx - 0.5))/0.3, 0, 1)]
    clear = [_on_paper(a) for a in imgs[::50]]
    shaded = [np.clip(c*(1 - depth/210*np.rot90(s, turn)), 0, 255).astype(np.uint8)
              for c in clear for s in shades for turn in range(4)]
    x_clear, x_shaded = digit_images(clear)[0], digit_images(shaded)[0]
    for a, b in zip(np.repeat(x_clear, 12, axis=0), x_shaded):
        assert np.abs(a.astype(float) - b).mean() < 30  # a shadow taken for ink: 50 or more (a white triangle)
    with learns['cnn'].no_bar():
        answers = [learns['cnn'].get_preds(dl=dls.test_dl(list(x), prepare=False))[0].view(-1) > 0.5
                   for x in (x_clear, x_shaded)]
    assert torch.equal(answers[0].repeat_interleave(12), answers[1])


def test_several_digits_side_by_side_are_said_to_be_several(sample48, tmp_path):
    "'4 8' written on one line: `test_dl` counts 2 digits, `predict` says so (a `NoDigitError` too); one digit counts 1"
    dls, learns = sample48
    imgs, _ = originals(dls)
    four, eight = imgs[0], imgs[-1]
    pair = np.hstack([255 - four, np.full((28, 10), 255, np.uint8), 255 - eight])  # dark ink on white, a space between
    big = np.asarray(Image.fromarray(pair).resize((pair.shape[1]*8, 28*8), Image.BICUBIC))
    Image.fromarray(big).save(tmp_path/'48.png')
    dl = dls.test_dl([tmp_path/'48.png', 255 - four, big[:, :big.shape[1]//2]])
    assert dl.digits.tolist() == [2, 1, 1] and dl.found.all()
    with pytest.raises(ManyDigitsError, match='holds 2 digits side by side'): learns['cnn'].predict(tmp_path/'48.png')
    assert issubclass(ManyDigitsError, NoDigitError)
    assert prepare_digit(big) is not None  # both, in one box, as the page shows them


def test_polarity_and_colour_decided_from_the_picture(sample48):
    "Dark on light, light on dark, coloured ink on coloured paper: the same 28x28"
    dls, _ = sample48
    a = originals(dls)[0][7]
    big = np.asarray(Image.fromarray(a).resize((200, 200), Image.BICUBIC)).astype(np.float32)/255
    light_on_dark = prepare_digit((big*255).astype(np.uint8))
    dark_on_light = prepare_digit(((1-big)*255).astype(np.uint8))
    red_on_green = prepare_digit((np.array([40, 200, 60])*(1-big[..., None]) + np.array([220, 30, 30])*big[..., None]
                                  ).astype(np.uint8))
    for p in (dark_on_light, red_on_green): assert np.abs(p.astype(int) - light_on_dark).mean() < 6


def test_thin_and_thick_strokes_come_out_as_mnist_strokes(sample48):
    "A pen's thin lines on a large page and a marker's thick ones both come out with MNIST's stroke width"
    from scipy import ndimage
    dls, learns = sample48
    imgs, ys = originals(dls)
    lo, _, hi = MNIST_STROKE
    right, drawn_widths = 0, []
    for a, y in zip(imgs[::20], ys[::20]):
        core = np.kron(a > 200, np.ones((25, 25), bool))  # MNIST's darkest pixels, 25x: lines 25-50 px wide of 700
        thin = ndimage.distance_transform_edt(core) > 11   # thinned to a few pixels: a pen on a large page
        big = np.asarray(Image.fromarray(a).resize((700, 700), Image.BICUBIC)) > 127
        thick = ndimage.distance_transform_edt(~big) <= 45  # a marker: 90 px more of 700
        drawn_widths.append((stroke_width(thin)*20/700, stroke_width(thick)*20/700))
        for drawn in (thin, thick):
            p = prepare_digit(np.where(drawn, 30, 250).astype(np.uint8))
            w = stroke_width(np.asarray(Image.fromarray(p).resize((112, 112), Image.BICUBIC))/255)/4
            assert 0.8*lo <= w <= 1.1*hi
            right += learns['cnn'].predict(p)[0] == dls.vocab[int(y)]
    thin_w, thick_w = np.mean(drawn_widths, 0)
    assert thin_w < lo and thick_w > hi  # as drawn, outside MNIST's range
    assert right >= 0.9*2*len(imgs[::20])


def test_no_digit_found_in_blank_uniform_and_noise_pictures():
    for seed in range(3):
        for name, image in no_digit_images(seed).items(): assert prepare_digit(image) is None, (seed, name)


def test_transparent_canvas_ink_is_alpha(sample48):
    "A web canvas: the colour under a transparent background says nothing; the alpha is the ink"
    dls, _ = sample48
    a = originals(dls)[0][3]
    big = np.asarray(Image.fromarray(a).resize((280, 280), Image.BICUBIC))
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[..., :3] = 255  # white, where transparent and where inked: only the alpha holds the digit
    rgba[..., 3] = big
    assert np.abs(prepare_digit(Image.fromarray(rgba)).astype(int) - a).mean() < 20


def test_bad_images_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'): prepare_digit(tmp_path/'nope.png')
    (tmp_path/'bad.png').write_bytes(b'not a picture')
    with pytest.raises(ValueError, match='Could not read the image'): prepare_digit(tmp_path/'bad.png')
    with pytest.raises(IsADirectoryError, match='is a folder'): prepare_digit(tmp_path)
    with pytest.raises(TypeError, match='Cannot make an image of a dict'): prepare_digit({'a': 1})
    with pytest.raises(ValueError, match='must be HxW'): prepare_digit(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match='NaN'): prepare_digit(np.full((10, 10), np.nan))


def test_show_prepared_draws_each_image_beside_what_the_model_sees(sample48, tmp_path):
    import matplotlib; matplotlib.use('Agg')
    dls, _ = sample48
    drawn = render(originals(dls)[0][:2], 'photo', seed=3)
    drawn[0].save(tmp_path/'photo.jpg')
    fig = show_prepared([tmp_path/'photo.jpg', drawn[1], np.full((50, 50), 255, np.uint8)])
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(shown) == 5 and sum(s.shape == (28, 28) for s in shown) == 2
    assert [ax.get_title() for ax in fig.axes][:2] == ['photo.jpg', 'what the model sees']
    assert any('no digit' in t.get_text() for ax in fig.axes for t in ax.texts)


# ---------------------------------------------------------------------------------------------------------------
# Where images enter a trained model

def test_test_dl_prepares_and_says_which_held_no_digit(sample48):
    dls, learns = sample48
    imgs, _ = originals(dls)
    drawn = render(imgs[:3], 'ink_on_white', seed=5)
    items = drawn + [no_digit_images()['white'], imgs[0]]
    dl = dls.test_dl(items)
    assert dl.found.tolist() == [True, True, True, False, True]
    x = dl.one_batch()[0].cpu()
    for row, item in zip(x, items[:3]):
        assert torch.equal((row*255).round().byte(), torch.from_numpy(prepare_digit(item)).view(-1))
    assert x[3].sum() == 0  # served blank
    assert torch.equal((x[4]*255).round().byte().view(28, 28), torch.from_numpy(imgs[0]))
    off = dls.test_dl(items, prepare=False)  # resized whole, as before
    assert off.found.all() and not torch.equal(off.one_batch()[0].cpu()[:3], x[:3])
    with pytest.raises(TypeError, match='`prepare` must be True'): dls.test_dl(items, prepare='yes')


def test_predict_prepares_and_raises_when_there_is_no_digit(sample48):
    dls, learns = sample48
    imgs, ys = originals(dls)
    learn = learns['cnn']
    for kind in RENDERINGS:
        for a, y, drawn in zip(imgs[::50], ys[::50], render(imgs[::50], kind, seed=7)):
            digit, label, prob = learn.predict(drawn)
            assert digit == dls.vocab[int(y)], kind
    for name, image in no_digit_images().items():
        with pytest.raises(NoDigitError, match='No digit found'): learn.predict(image)
    assert issubclass(NoDigitError, ValueError)


def test_switched_off_and_carried_by_export(sample48, tmp_path):
    from fastai.learner import load_learner
    dls, learns = sample48
    with pytest.raises(TypeError, match='`prepare` must be True'):
        BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, prepare=1)
    off = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, prepare=False)
    assert off.prepare is False and dls.prepare is True
    learn = binary_learner(off)
    learn.export(tmp_path/'off.pkl')
    with pytest.warns(UserWarning, match='pickle'): loaded = load_learner(tmp_path/'off.pkl')
    assert loaded.dls.prepare is False
    assert loaded.dls.test_dl([no_digit_images()['white']]).found.all()  # off: nothing is judged, only resized


def test_interpretation_gets_the_rows_back_untouched(sample48):
    "fastai's interpretation rebuilds loaders from the rows: they must not be prepared again"
    import matplotlib; matplotlib.use('Agg')
    from fastai.interpret import ClassificationInterpretation
    dls, learns = sample48
    items = dls.valid.dataset.items[:20]
    dl = dls.test_dl(items, with_labels=True, process=True)
    assert torch.equal(dl.dataset.x.cpu(), dls.valid.dataset.x[:20].cpu())
    interp = ClassificationInterpretation.from_learner(learns['cnn'])
    interp.plot_top_losses(4)
    learns['cnn'].show_results(max_n=4)


def test_exported_learner_in_a_new_process_gives_the_same_answers(sample48, tmp_path):
    dls, learns = sample48
    imgs, _ = originals(dls)
    files = []
    for i, kind in enumerate(RENDERINGS):
        for j, im in enumerate(render(imgs[::60], kind, seed=11 + i)):
            fn = tmp_path/f'{kind}_{j}.{"jpg" if im.mode == "RGB" and kind != "transparent_png" else "png"}'
            im.save(fn)
            files.append(str(fn))
    Image.fromarray(no_digit_images()['uniform noise']).save(tmp_path/'noise.png')
    files.append(str(tmp_path/'noise.png'))
    learn = learns['cnn']
    learn.export(tmp_path/'cnn.pkl')
    dl = learn.dls.test_dl(files)
    with learn.no_bar(): here = learn.get_preds(dl=dl)[0].view(-1).tolist()
    code = ("import json, sys, warnings\n"
            "from fastai.learner import load_learner\n"
            "from fastai_binary_digits import NoDigitError\n"
            "warnings.simplefilter('ignore')\n"
            f"learn = load_learner({str(tmp_path/'cnn.pkl')!r})\n"
            f"files = {files!r}\n"
            "dl = learn.dls.test_dl(files)\n"
            "with learn.no_bar(): p = learn.get_preds(dl=dl)[0].view(-1).tolist()\n"
            "try: learn.predict(files[-1]); raised = False\n"
            "except NoDigitError: raised = True\n"
            "print(json.dumps(dict(p=p, found=dl.found.tolist(), digit=str(learn.predict(files[0])[0]), raised=raised)))\n")
    out = json.loads(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                                    cwd=tmp_path).stdout.splitlines()[-1])  # after the progress bars of `predict`
    assert out['found'] == dl.found.tolist() == [True]*(len(files)-1) + [False]
    assert np.allclose(out['p'], here, atol=1e-5)
    assert out['raised'] and out['digit'] == str(learn.predict(files[0])[0])


# ---------------------------------------------------------------------------------------------------------------
# Accuracy per rendering: the bundled sample always, the full set when present

@pytest.mark.skipif(full_set_path() is not None, reason='the full set is present: its test of the bounds runs instead')
def test_renderings_keep_the_accuracy_of_the_originals_sample(sample48):
    "The bounds on the sample's 4 vs 8, where the full set is absent (with it, the full-set test below asserts them)"
    dls, learns = sample48
    assert_within_bounds(rendering_table([rendering_hits(learns, dls, SAMPLE_IMAGES)]), '4 vs 8 of the sample')


@pytest.fixture(scope='module')
def full_hits(idx_dir):
    """`rendering_hits` of each pair of `FULL_PAIRS` on `FULL_IMAGES` of its official testing images, with models
    trained on all its training images"""
    out = {}
    for pair in FULL_PAIRS:
        dls = BinaryDigitsDataLoaders.from_mnist(pair=pair, path=idx_dir, valid='testing', seed=0)
        learns = {arch: train(dls, arch, one_cycle=(2, 1.0)) for arch in ('linear', 'cnn')}
        out[pair] = rendering_hits(learns, dls, FULL_IMAGES)
    return out


def test_renderings_keep_the_accuracy_of_the_originals_full(full_hits):
    "The bounds on the three pairs' images together (a paired comparison: the same images in every rendering)"
    for pair, t in full_hits.items(): print(f'\n{pair[0]} vs {pair[1]}: ' + json.dumps(rendering_table([t])))
    assert_within_bounds(rendering_table(list(full_hits.values())), ', '.join(f'{a} vs {b}' for a, b in FULL_PAIRS))


def test_mnist_images_prepared_keep_their_accuracy_full(idx_dir):
    "All testing images of 4 vs 8 given as pictures (PIL images, as a PNG folder gives them), preparation on"
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=idx_dir, valid='testing', seed=0)
    learn = train(dls, 'linear')
    imgs, ys = originals(dls)
    pics = [Image.fromarray(a) for a in imgs]
    assert abs(accuracy(learn, pics, ys) - accuracy(learn, pics, ys, prepare=False)) <= 0.002
