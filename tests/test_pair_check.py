"""The pair check for real: a model of two digits says 'neither' for MNIST's other digits, people's drawings of them and
shapes that are no digit; everywhere an answer leaves the package; in both model files. On the full set (MNIST_IDX_DIR),
the figures: `pytest tests/test_pair_check.py -k full -s -n 0` prints the per-digit and per-shape tables."""
import copy, json, math, re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from scipy.stats import rankdata

from fastai_binary_digits import (BinaryDigitsDataLoaders, BinaryDigitsError, NoDigitError, NotInPairError, PairCheck,
                                  binary_learner, load_binary_learner, load_model_file, pair_check_dls)
from fastai_binary_digits.cli import main
from fastai_binary_digits.data import images_to_x, testing_dl as pair_testing_dl  # (not a test)
from fastai_binary_digits.mnist import load_digits
from fastai_binary_digits.model_files import content_sha256
from fastai_binary_digits.prepare import digit_images
from renderings import RENDERINGS, render
from shapes import SHAPES, shapes

FULL_PAIRS = [(4, 8), (3, 7), (1, 7)]  # 9 is the hardest other digit for 4 vs 8
PICKLE_WARNING = r"insecure pickle"


def train(dls, epochs:int=20):
    "The book's linear model on `dls`, seeded, quietly"
    learn = binary_learner(dls, seed=0)
    with learn.no_bar(), learn.no_logging(): learn.fit(epochs, 0.1)
    return learn


def rates(check, digits:dict, pair) -> dict:
    "`{digit: share of its images (uint8 (n, 28, 28)) that pass the check}`, and the pair's and the others' overall"
    ok = {d: check.in_pair(images_to_x(ims))[0] for d, ims in digits.items()}
    res = {d: float(o.float().mean()) for d, o in ok.items()}
    res['pair'] = float(torch.cat([ok[d] for d in pair]).float().mean())
    res['others'] = float(torch.cat([ok[d] for d in ok if d not in pair]).float().mean())
    return res


def auroc(pair_scores:torch.Tensor, other_scores:torch.Tensor) -> float:
    "The area under the ROC curve of scores meant to be higher for the other digits (Mann-Whitney, ties count half)"
    r = rankdata(torch.cat([pair_scores, other_scores]).numpy())
    n0, n1 = len(pair_scores), len(other_scores)
    return float((r[n0:].sum() - n1*(n1 + 1)/2)/(n0*n1))


# ---------------------------------------------------------------------------------------------------------------
# On the bundled sample: 3 vs 7, the book's pair

@pytest.fixture(scope='module')
def sample37():
    "3 vs 7 of the bundled sample with the book's model and its pair check, and the sample's testing digits"
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(3, 7), sample=True, seed=0, device='cpu')
    learn = train(dls, 10)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}, learn.validate()
    check_learn = learn.fit_pair_check(seed=0, quiet=True)
    testing = {d: ims for d, (ims, _) in load_digits(range(10), 'testing', sample=True).items()}
    return learn, check_learn, before, testing


def test_the_check_is_an_addition_the_model_is_untouched(sample37):
    learn, check_learn, (weights, valid), _ = sample37
    assert all(torch.equal(v, weights[k]) for k, v in learn.model.state_dict().items())
    assert learn.validate() == valid and learn.dls.vocab == [3, 7]
    assert isinstance(learn.pair_check, PairCheck) and learn.dls.pair_check is learn.pair_check
    # the check's own fastai learner, to look at: its loaders, its table, its interpretation
    assert check_learn.dls.vocab == ['3 or 7', 'other']
    train_y, valid_y = check_learn.dls.train.dataset.y.view(-1), check_learn.dls.valid.dataset.y.view(-1)
    assert (train_y == 0).sum() == 1600 and (valid_y == 0).sum() == 400  # the pair's own split
    assert (train_y == 1).sum() == 8*800 and (valid_y == 1).sum() == 8*200  # the other digits, split alike
    assert len(check_learn.recorder.values) == 5 and check_learn.recorder.values[-1][-1] > 0.9


def test_calibrated_on_the_validation_images(sample37):
    "At least 99% of the pair's validation digits pass, as measured and as stored in `stats`"
    learn, check_learn, _, _ = sample37
    check, valid = learn.pair_check, check_learn.dls.valid.dataset
    ok = check.in_pair(valid.x)[0]
    pair = valid.y.view(-1) == 0
    assert ok[pair].float().mean() >= 0.99 and check.stats['passed'] == pytest.approx(float(ok[pair].float().mean()))
    assert check.stats['flagged'] == pytest.approx(float((~ok[~pair]).float().mean()))
    assert 0 < check.threshold <= 1 and -1 <= check.min_similarity < 1
    assert re.fullmatch(r"PairCheck\(threshold=0\.\d{4}, min_similarity=0\.\d{4}\): on the validation images, "
                        r"99\.\d% of the pair's digits pass and \d+\.\d% of the other digits are flagged", repr(check))


def test_the_sample_testing_digits(sample37):
    "The sample's testing images: the pair's pass, the other digits are flagged"
    learn, _, _, testing = sample37
    r = rates(learn.pair_check, testing, (3, 7))
    print('\n3 vs 7, bundled sample, share flagged: ' + ', '.join(f'{d}: {1 - r[d]:.3f}' for d in range(10)))
    assert r['pair'] >= 0.97 and 1 - r['others'] >= 0.9


def test_in_pair_contract(sample37):
    "`in_pair(x)`: rows (n, 784) in 0..1 -> bool (n,) and the probability of another digit (n,), as rows come"
    learn, _, _, testing = sample37
    check = learn.pair_check
    x = images_to_x(torch.cat([testing[3][:5], testing[5][:5]]))
    ok, p = check.in_pair(x)
    assert ok.dtype == torch.bool and ok.shape == (10,) and p.dtype == torch.float32 and p.shape == (10,)
    assert ((0 <= p) & (p <= 1)).all()
    assert torch.equal(ok, (p <= check.threshold) & (check.scores(x)[1] >= check.min_similarity))
    one = [check.in_pair(x[i:i+1]) for i in range(10)]
    assert torch.equal(torch.cat([o for o, _ in one]), ok)
    assert torch.allclose(torch.cat([q for _, q in one]), p, atol=1e-6)
    assert torch.equal(check.in_pair(x.double())[0], ok)


def _clear(learn, testing, digit:int, n:int=30, other:bool=False):
    "The image of `digit` among its first `n` testing images that the check is surest about (pass, or `other`: flagged)"
    ims = testing[digit][:n]
    p, sim = learn.pair_check.scores(images_to_x(ims))
    return ims[int(p.argmax() if other else (p - sim).argmin())].numpy()


def test_test_dl_says_which_images_are_of_the_pair(sample37):
    learn, _, _, testing = sample37
    three, five = _clear(learn, testing, 3), _clear(learn, testing, 5, other=True)
    dl = learn.dls.test_dl([three, five, np.full((50, 50), 255, np.uint8), Image.fromarray(three).resize((90, 90))])
    assert dl.found.tolist() == [True, True, False, True] and dl.in_pair.tolist() == [True, False, False, True]
    assert dl.in_pair.dtype == torch.bool and dl.in_pair.shape == dl.found.shape
    q = dl.other_probs
    assert q[1] > learn.pair_check.threshold >= q[0] and math.isnan(q[2])
    with learn.no_bar(): assert len(learn.get_preds(dl=dl)[0]) == 4  # the model still answers every image


def test_predict_raises_not_in_pair(sample37, unlike):
    learn, _, _, testing = sample37
    three, five = _clear(learn, testing, 3), _clear(learn, testing, 5, other=True)
    assert learn.predict(three)[0] == 3
    with pytest.raises(NotInPairError, match=r"^Neither 3 nor 7: it looks like another digit \(the pair check's "
                                             r"probability (0\.\d{3}|1\.000), above its threshold 0\.\d{3}\)\. This "
                                             r"model only knows 3 and 7") as e:
        learn.predict(five)
    assert e.value.probability > learn.pair_check.threshold
    assert isinstance(e.value, BinaryDigitsError) and not isinstance(e.value, NoDigitError)
    # a shape the CNN would pass, flagged by its shape: the other reason in words
    check = learn.pair_check
    learn.pair_check = copy.copy(check)
    learn.pair_check.threshold = 1.0
    try:
        with pytest.raises(NotInPairError, match=r"^Neither 3 nor 7: its shape is unlike the 3s and 7s the check "
                                                 r"learned from\. This model only knows 3 and 7"):
            learn.predict(unlike)
    finally: learn.pair_check = check


@pytest.fixture(scope='module')
def unlike(sample37):
    "A letter whose shape the check finds unlike the pair's"
    check, letters = sample37[0].pair_check, shapes('letters', 20, seed=1)
    sim = check.scores(images_to_x(torch.from_numpy(digit_images(letters)[0])))[1]
    return letters[int(torch.nonzero(sim < check.min_similarity)[0])]


def test_dots_and_dashes_are_no_digit(sample37):
    "A click of the brush or a short stroke is too small to be a digit: no digit found, not 'neither'"
    learn, _, _, _ = sample37
    for kind in ('dots', 'dashes'):
        found = digit_images(shapes(kind, 40, seed=2))[1]
        assert (~found).mean() >= (1.0 if kind == 'dots' else 0.9), kind
    with pytest.raises(NoDigitError, match='No digit found'): learn.predict(shapes('dots', 1, seed=3)[0])


# ---------------------------------------------------------------------------------------------------------------
# Model files: the safe file and fastai's pickle both hold the check

@pytest.fixture(scope='module')
def exported(sample37, tmp_path_factory):
    "The sample learner exported with its check (both formats) and without one"
    learn = sample37[0]
    d = tmp_path_factory.mktemp('pair_check_files')
    learn.export(d/'checked.safetensors')
    learn.export(d/'checked.pkl')
    check = learn.pair_check
    learn.pair_check = None
    try: learn.export(d/'plain.safetensors')
    finally: learn.pair_check = check
    return d


def _same_answers(a, b, images):
    da, db = a.dls.test_dl(images), b.dls.test_dl(images)
    assert torch.equal(da.in_pair, db.in_pair) and torch.equal(da.other_probs, db.other_probs)


def test_the_safe_file_holds_the_check(sample37, exported):
    learn, _, _, testing = sample37
    with safe_open(exported/'checked.safetensors', framework='pt') as f:
        meta, keys = f.metadata(), set(f.keys())
        assert meta['format_version'] == '2' and f.get_tensor('pair_check.centroids').dtype == torch.float16
    facts = json.loads(meta['pair_check'])
    check = learn.pair_check
    assert (facts['threshold'], facts['min_similarity']) == (check.threshold, check.min_similarity)
    assert {k for k in keys if not k.startswith('pair_check.')} == set(learn.model.state_dict())
    assert {k[len('pair_check.model.'):] for k in keys if k.startswith('pair_check.model.')} == set(
        learn.pair_check.model.state_dict())
    added = (exported/'checked.safetensors').stat().st_size - (exported/'plain.safetensors').stat().st_size
    assert 0 < added <= 100_000, added  # the budget for the check: 100 kB
    back = load_binary_learner(exported/'checked.safetensors')
    assert repr(back.pair_check) == repr(learn.pair_check)
    _same_answers(learn, back, [testing[d][i].numpy() for d in range(10) for i in range(5)])


def test_fastais_pickle_holds_the_check(sample37, exported):
    learn, _, _, testing = sample37
    with pytest.warns(UserWarning, match=PICKLE_WARNING): back = load_model_file(exported/'checked.pkl')
    assert isinstance(back.pair_check, PairCheck) and back.pair_check.threshold == learn.pair_check.threshold
    _same_answers(learn, back, [testing[d][i].numpy() for d in range(10) for i in range(5)])
    with pytest.raises(NotInPairError): back.predict(_clear(learn, testing, 5, other=True))


def test_a_file_without_the_check_loads_and_says_so(sample37, exported, images, capsys):
    learn, _, _, testing = sample37
    with safe_open(exported/'plain.safetensors', framework='pt') as f:
        assert f.metadata()['format_version'] == '1' and 'pair_check' not in f.metadata()  # as older packages wrote
        assert not [k for k in f.keys() if k.startswith('pair_check')]
    back = load_binary_learner(exported/'plain.safetensors')
    assert back.pair_check is None
    five = _clear(learn, testing, 5, other=True)
    dl = back.dls.test_dl([five, np.full((40, 40), 255, np.uint8)])
    assert dl.in_pair.tolist() == [True, False] and dl.other_probs.isnan().all()  # no check: every digit is answered
    assert back.predict(five)[0] in (3, 7)
    capsys.readouterr()  # (`predict`'s progress bar)
    assert main(['predict', str(exported/'plain.safetensors'), str(images[0][5])]) == 0  # answered, with a note
    out = capsys.readouterr()
    assert re.fullmatch(rf'{images[0][5]}: [37] \(\d\.\d{{3}}\)\n', out.out)
    assert out.err.splitlines() == [f"note: {exported/'plain.safetensors'} holds no pair check, so it answers 3 or 7 "
                                    "for any digit; train it again without --no-check to add one"]


def _tensors_and_metadata(fn):
    with safe_open(fn, framework='pt') as f: return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _check_meta(**kw):
    def edit(t, m): m['pair_check'] = json.dumps({**json.loads(m['pair_check']), **kw})
    return edit


LIES = [  # (what, edit of the tensors `t` and metadata `m`, the error)
    ('metadata not json', lambda t, m: m.update(pair_check='{threshold'), r"its `pair_check` metadata is not JSON"),
    ('a key twice', lambda t, m: m.update(pair_check='{"threshold": 0.5, "min_similarity": 0.9, "threshold": 0.99}'),
     r"its `pair_check` metadata is not JSON \(a key comes twice"),
    ('threshold NaN', lambda t, m: m.update(pair_check='{"threshold": NaN, "min_similarity": 0.9}'),
     r"its `pair_check` metadata is not JSON \(NaN is no number\)"),
    ('threshold a string', _check_meta(threshold='0.5'),
     r"its pair check's `threshold` is '0.5'; expected a number from -1 to 1"),
    ('threshold above 1', _check_meta(threshold=7), r"its pair check's `threshold` is 7"),
    ('no min_similarity', lambda t, m: m.update(pair_check='{"threshold": 0.5}'),
     r"its pair check's `min_similarity` is None"),
    ('centroids float32', lambda t, m: t.update({'pair_check.centroids': t['pair_check.centroids'].float()}),
     r"its pair check's centroids are torch.float32 of shape \(\d+, 36\); expected float16 \(k, 36\)"),
    ('centroids missing', lambda t, m: t.pop('pair_check.centroids'), r"its pair check's centroids are absent"),
    ('a model tensor missing', lambda t, m: t.pop('pair_check.model.5.weight'),
     r"its pair check's tensors are not the check's model: .*Missing key\(s\).*\"5.weight\""),
    ('a model tensor misshapen', lambda t, m: t.update({'pair_check.model.5.weight': torch.zeros(1, 3)}),
     r"its pair check's tensors are not the check's model: .*size mismatch for 5.weight"),
    ('tensors without metadata', lambda t, m: m.pop('pair_check'),
     r"it holds tensors of a pair check \('pair_check.\*'\) but no `pair_check` metadata"),
]


@pytest.mark.parametrize('what, edit, message', LIES, ids=[w for w, *_ in LIES])
def test_a_file_whose_check_lies(what, edit, message, exported, tmp_path):
    "Lies told consistently (the checksum written for them): each named"
    t, m = _tensors_and_metadata(exported/'checked.safetensors')
    edit(t, m)
    m['sha256'] = content_sha256(t, m)
    save_file(t, tmp_path/'lying.safetensors', metadata=m)
    with pytest.raises(ValueError, match=r"Cannot load .*lying.safetensors as a safetensors model file: " + message):
        load_model_file(tmp_path/'lying.safetensors')


@pytest.mark.parametrize('stats', [dict(flagged=None), dict(passed='0.99'), dict(passed=None, flagged=None)])
def test_a_file_whose_check_lacks_its_figures_loads_without_them(stats, exported, tmp_path):
    "The calibration's figures only describe the check: a file with one missing or not a number loads, shown without"
    t, m = _tensors_and_metadata(exported/'checked.safetensors')
    facts = {k: v for k, v in {**json.loads(m['pair_check']), **stats}.items() if v is not None}
    m['pair_check'] = json.dumps(facts)
    m['sha256'] = content_sha256(t, m)
    save_file(t, tmp_path/'partial.safetensors', metadata=m)
    check = load_model_file(tmp_path/'partial.safetensors').pair_check
    assert check.stats == {} and repr(check) == (f'PairCheck(threshold={facts["threshold"]:.4f}, '
                                                 f'min_similarity={facts["min_similarity"]:.4f})')


def test_the_check_needs_loaders_from_mnist(exported, sample_png):
    back = load_binary_learner(exported/'plain.safetensors')
    with pytest.raises(BinaryDigitsError, match=r"make them with `BinaryDigitsDataLoaders.from_mnist`"):
        back.fit_pair_check()
    two = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), path=sample_png, seed=0)  # a folder of 4s and 8s only
    with pytest.raises(BinaryDigitsError, match=r"The pair check learns from MNIST's other digits, which are not "
                                                r"there: .*has no folder training/0"):
        pair_check_dls(two)


# ---------------------------------------------------------------------------------------------------------------
# The command line

@pytest.fixture(scope='module')
def images(sample37, tmp_path_factory):
    "Testing digits as PNG files: a 3 and a 7 the check passes, a 5 and a 9 it flags, a letter, a dot"
    learn, _, _, testing = sample37
    d = tmp_path_factory.mktemp('pair_check_images')
    fns = {}
    for digit in (3, 5, 7, 9):
        fns[digit] = d/f'{digit}.png'
        Image.fromarray(_clear(learn, testing, digit, other=digit in (5, 9))).save(fns[digit])
    shapes('dots', 1, seed=4)[0].save(d/'dot.png')
    return fns, d/'dot.png'


def test_predict_says_neither(exported, images, capsys):
    fns, dot = images
    model = str(exported/'checked.safetensors')
    assert main(['predict', model, *map(str, fns.values()), str(dot)]) == 1
    out = capsys.readouterr()
    assert out.err == ''
    lines = out.out.splitlines()
    for line, digit in zip(lines[::2], (3, 7)): assert re.fullmatch(rf'{fns[digit]}: {digit} \(\d\.\d{{3}}\)', line)
    for line, digit in zip(lines[1::2], (5, 9)):
        assert re.fullmatch(rf'{fns[digit]}: neither 3 nor 7 \(it looks like another digit: (0\.\d{{3}}|1\.000)\)',
                            line)
    assert lines[4] == f'{dot}: no digit found'
    assert main(['predict', model, str(fns[3]), str(fns[7])]) == 0


def test_predict_says_which_part_flagged_it(exported, unlike, tmp_path, capsys):
    "A shape unlike the pair's that the CNN passes (its threshold raised to 1 in a copy of the file): other words"
    t, m = _tensors_and_metadata(exported/'checked.safetensors')
    _check_meta(threshold=1.0)(t, m)
    m['sha256'] = content_sha256(t, m)
    save_file(t, tmp_path/'lenient.safetensors', metadata=m)
    unlike.save(tmp_path/'letter.png')
    assert main(['predict', str(tmp_path/'lenient.safetensors'), str(tmp_path/'letter.png')]) == 1
    assert capsys.readouterr().out == (f"{tmp_path/'letter.png'}: neither 3 nor 7 (its shape is unlike the 3s and 7s "
                                       "the check learned from)\n")


def test_predict_json_says_in_pair(sample37, exported, images, capsys):
    fns, dot = images
    assert main(['predict', '--json', str(exported/'checked.safetensors'), str(fns[3]), str(fns[5]), str(dot)]) == 1
    three, five, none = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    threshold = sample37[0].pair_check.threshold
    assert three['digit'] == 3 and three['in_pair'] is True and three['other_probability'] <= threshold
    assert five['digit'] is None and five['in_pair'] is False and five['other_probability'] > threshold
    assert five['probability'] is None and set(five['probabilities']) == {'3', '7'}  # what the model alone would say
    assert none == dict(image=str(dot), digit=None, in_pair=None, probability=None, probabilities=None,
                        other_probability=None, digits=0)
    assert main(['predict', '--json', str(exported/'plain.safetensors'), str(fns[5])]) == 0  # no check: answered
    row = json.loads(capsys.readouterr().out)
    assert row['digit'] in (3, 7) and row['in_pair'] is None and row['other_probability'] is None


def test_the_page_reads_the_check(sample37, exported):
    "The page's reader (no browser): another digit is 'neither', one of the pair is read; so from the safe file too"
    from fastai_binary_digits.demo import DigitReader
    learn, _, _, testing = sample37
    three, five = _clear(learn, testing, 3), _clear(learn, testing, 5, other=True)
    for each in (learn, load_binary_learner(exported/'checked.safetensors')):
        read = DigitReader(each)
        assert read(three).in_pair and read(three).probs['3'] > 0.5 and not read(five).in_pair
        assert read(shapes('dots', 1, seed=3)[0]).probs is None  # a click of the brush: no digit found


# ---------------------------------------------------------------------------------------------------------------
# The full set: pairs trained from the IDX files, measured on every testing image

@pytest.fixture(scope='module')
def full(idx_dir):
    "For each pair of `FULL_PAIRS`: the book's model, its accuracy before the check, then with its check"
    testing = {d: ims for d, (ims, _) in load_digits(range(10), 'testing', path=idx_dir).items()}
    res = {}
    for pair in FULL_PAIRS:
        learn = train(BinaryDigitsDataLoaders.from_mnist(pair=pair, path=idx_dir, seed=0), 10)
        dl = pair_testing_dl(pair, path=idx_dir)
        with learn.no_bar(): before = learn.validate(dl=dl)[1]
        learn.fit_pair_check(seed=0, quiet=True)
        with learn.no_bar(): after = learn.validate(dl=dl)[1]
        res[pair] = learn, before, after
    return res, testing


@pytest.mark.parametrize('pair', FULL_PAIRS)
def test_full_the_check_meets_its_figures(full, pair):
    "AUROC >= 0.995, the pair's testing digits pass (>= 98.5%), the others flagged (>= 97%, each digit >= 93%)"
    res, testing = full
    learn, before, after = res[pair]
    check = learn.pair_check
    p = {d: check.scores(images_to_x(testing[d]))[0] for d in range(10)}
    auc = auroc(torch.cat([p[d] for d in pair]), torch.cat([p[d] for d in range(10) if d not in pair]))
    r = rates(check, testing, pair)
    others = [d for d in range(10) if d not in pair]
    print(f"\n{pair[0]} vs {pair[1]} (full set, all testing images): {check}\n  AUROC {auc:.4f}; the pair's testing "
          f"digits pass {r['pair']:.2%}; flagged: all others {1 - r['others']:.2%}, " +
          ', '.join(f'{d}: {1 - r[d]:.2%}' for d in others) +
          f"; accuracy {before:.4f} before the check, {after:.4f} after")
    assert auc >= 0.995 and r['pair'] >= 0.985 and 1 - r['others'] >= 0.97
    assert all(1 - r[d] >= 0.93 for d in others), {d: 1 - r[d] for d in others}
    assert after == before


@pytest.fixture(scope='module')
def drawn(full):
    "People's digits: 120 testing images of each digit, 20 drawn each way of `RENDERINGS`, as the models see them"
    _, testing = full
    rng = np.random.default_rng(0)
    res = {}
    for d in range(10):
        pick = testing[d].numpy()[rng.permutation(len(testing[d]))[:20*len(RENDERINGS)]]
        images, found = digit_images([im for i, kind in enumerate(RENDERINGS)
                                      for im in render(pick[20*i:20*(i+1)], kind, 10*d + i)])
        assert found.all()
        res[d] = torch.from_numpy(images)
    return res


@pytest.mark.parametrize('pair', FULL_PAIRS)
def test_full_peoples_digits(full, drawn, pair):
    "The same on people's digits (ink on paper, photos, canvases): >= 97% of the pair's pass, >= 95% of others flagged"
    r = rates(full[0][pair][0].pair_check, drawn, pair)
    print(f"\n{pair[0]} vs {pair[1]}, people's digits ({len(drawn[0])} of each digit): the pair's pass "
          f"{r['pair']:.2%}, others flagged {1 - r['others']:.2%}: " +
          ', '.join(f'{d}: {1 - r[d]:.2%}' for d in range(10) if d not in pair))
    assert r['pair'] >= 0.97 and 1 - r['others'] >= 0.95


def test_full_beyond_digits(full):
    "What each part catches of shapes that are no digit; dots, dashes and noise are no digit at all"
    pictures = {kind: digit_images(shapes(kind, 100, seed=5)) for kind in SHAPES}
    print('\nshare caught (no digit found, or neither): no digit | CNN | similarity | the check')
    caught = {}
    for pair in FULL_PAIRS:
        check = full[0][pair][0].pair_check
        for kind, (images, found) in pictures.items():
            p, sim = check.scores(images_to_x(torch.from_numpy(images)))
            cnn, similar = (p > check.threshold).numpy() & found, (sim < check.min_similarity).numpy() & found
            caught[pair, kind] = (~found | cnn | similar).mean()
            print(f'{pair[0]} vs {pair[1]}  {kind:10s} {(~found).mean():.2f} | {cnn.mean():.2f} | {similar.mean():.2f} '
                  f'| {caught[pair, kind]:.2f}')
    assert all(caught[p, k] == 1.0 for p in FULL_PAIRS for k in ('dots', 'noise'))
    assert all(caught[p, k] >= 0.9 for p in FULL_PAIRS for k in ('dashes', 'rings'))
    assert all(caught[p, 'letters'] >= 0.7 for p in FULL_PAIRS)
