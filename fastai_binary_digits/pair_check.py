"The pair check: whether an image is one of the two digits, by a CNN against the other eight and the pair's shapes"
import copy, json, math
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from fastai.data.transforms import CategoryMap
from fastai.layers import ConvLayer

from .checks import BinaryDigitsError
from .data import BinaryDigitsDataLoaders, images_to_x, split_indices
from .fastai_internals import BinaryDigitsDL, DigitsDataset
from .mnist import load_source

__all__ = ['PairCheck', 'NotInPairError', 'check_net', 'pair_check_dls']

PREFIX = 'pair_check.'  # the check's tensors in a safe model file: 'pair_check.model.*' and 'pair_check.centroids'
N_FREQ = 6              # the similarity sees the lowest 6x6 spatial frequencies (DCT): a digit's shape, not its strokes
N_CENTROIDS = 600       # centroids of the pair's training digits in that space (float16: 43 kB)
SIMILARITY_SHARE = 0.005  # the share of the pair's validation digits the similarity may flag; the CNN flags the rest


class NotInPairError(BinaryDigitsError):
    "Raised by `learn.predict` when the pair check finds that the image is not one of the model's two digits"
    def __init__(self, msg:str, probability:float=math.nan):
        super().__init__(msg)
        self.probability = probability  # the check's probability that the image is another digit


def check_net() -> nn.Module:
    "The check's model: fastai's `ConvLayer`s of stride 2, 28x28 -> 14 -> 7 -> 4, one output (another digit), 26 kB"
    sizes = [1, 8, 16, 32]
    convs = [ConvLayer(ni, nf, stride=2, init=None) for ni, nf in zip(sizes, sizes[1:])]
    return nn.Sequential(nn.Unflatten(1, (1, 28, 28)), *convs, nn.Flatten(), nn.Linear(32*4*4, 1))


@cache
def _dct_basis(device:torch.device) -> Tensor:
    "The 784 x `N_FREQ`**2 basis of the lowest frequencies of the 2-d DCT of a 28x28 image: fixed, nothing to store"
    f, i = torch.arange(N_FREQ, device=device), torch.arange(28, device=device) + 0.5
    c = torch.cos(math.pi*f[:, None]*i[None]/28)
    return torch.einsum('ai,bj->abij', c, c).reshape(N_FREQ**2, 28*28).T.contiguous()


def shape_features(x:Tensor) -> Tensor:
    "Rows `x` (n, 784) as unit vectors of their lowest spatial frequencies, their mean ink left out: what the shape is"
    x = x.float()
    return F.normalize((x - x.mean(1, keepdim=True)) @ _dct_basis(x.device), dim=1)


def _centroids(z:Tensor, k:int, seed:int=0, iters:int=10) -> Tensor:
    "`k` centroids of the unit vectors `z` by spherical k-means, seeded"
    c = z[torch.randperm(len(z), generator=torch.Generator().manual_seed(seed))[:k]]
    for _ in range(iters):
        s = torch.zeros_like(c).index_add_(0, (z @ c.T).argmax(1), z)
        c = torch.where(s.norm(dim=1, keepdim=True) > 0, F.normalize(s, dim=1), c)
    return c


def _pass_threshold(probs:Tensor, ok:Tensor, target:float) -> float:
    "The least threshold on `probs` under which, with `ok`, at least `target` of all the images pass"
    kept, need = probs[ok], max(math.ceil(target*len(probs)), 1)
    if need > len(kept): return 1.0  # the similarity alone flags more than 1-target: the CNN passes everything
    return float(kept.kthvalue(need).values)


class PairCheck:
    """Whether rows (as the loaders serve them) look like one of the pair's digits: the CNN's probability of another
    digit at most `threshold`, and the shape's similarity to a centroid of the pair's at least `min_similarity`"""
    def __init__(self, model:nn.Module, threshold:float, centroids:Tensor, min_similarity:float, stats:dict|None=None):
        self.model, self.threshold, self.min_similarity = model.eval(), threshold, min_similarity
        self.centroids = centroids  # float16 (k, 36): unit vectors of `shape_features`
        self.stats = stats or {}  # what calibration measured on the validation images: `passed`, `flagged`

    def scores(self, x:Tensor) -> tuple[Tensor, Tensor]:
        "The CNN's probability that each row of `x` is another digit, and its shape's similarity to the pair's"
        dev = next(self.model.parameters()).device
        x = x.to(dev).float()
        with torch.inference_mode():
            p = torch.sigmoid(self.model.eval()(x).view(-1))
            sim = (shape_features(x) @ self.centroids.to(dev).float().T).max(1).values
        return p, sim

    def in_pair(self, x:Tensor) -> tuple[Tensor, Tensor]:
        "Whether each row of `x` (n, 784; 0..1) looks like one of the pair's digits, and the probability it is another"
        p, sim = self.scores(x)
        return ((p <= self.threshold) & (sim >= self.min_similarity)).to(x.device), p.to(x.device)

    @classmethod
    def from_learner(cls, learn, target:float=0.99, seed:int=0) -> 'PairCheck':
        "The check of `fit_pair_check`'s `learn`, calibrated so that `target` of the pair's validation digits pass"
        (xt, yt), (xv, yv) = [(dl.dataset.x, dl.dataset.y.view(-1)) for dl in (learn.dls.train, learn.dls.valid)]
        z = shape_features(xt[yt == 0]).cpu()
        centroids = _centroids(z, min(N_CENTROIDS, len(z)//2), seed).half()
        check = cls(copy.deepcopy(learn.model), 1.0, centroids, -1.0)  # its own: `learn` may be trained on
        p, sim = [t.cpu() for t in check.scores(xv)]
        pair = yv.cpu() == 0
        check.min_similarity = float(torch.quantile(sim[pair], SIMILARITY_SHARE))
        check.threshold = _pass_threshold(p[pair], sim[pair] >= check.min_similarity, target)
        ok = check.in_pair(xv)[0].cpu()
        check.stats = dict(passed=float(ok[pair].float().mean()), flagged=float((~ok[~pair]).float().mean()))
        return check

    @staticmethod
    def size() -> int:
        "How many bytes a check's tensors take in a safe model file"
        with torch.device('meta'): model = check_net()  # a skeleton: shapes and types, no data
        return sum(t.numel()*t.element_size() for t in model.state_dict().values()) + N_CENTROIDS*N_FREQ**2*2

    def to(self, device) -> 'PairCheck':
        "This check with its model and centroids on `device`"
        self.model.to(device)
        self.centroids = self.centroids.to(device)
        return self

    def state(self) -> tuple[dict, str]:
        "The tensors (under `PREFIX`) and the metadata (JSON) that hold this check in a safe model file"
        tensors = {**self.model.state_dict(prefix=f'{PREFIX}model.'), f'{PREFIX}centroids': self.centroids}
        return ({k: v.detach().to('cpu', copy=True).contiguous() for k, v in tensors.items()},
                json.dumps(dict(threshold=self.threshold, min_similarity=self.min_similarity, **self.stats)))

    @classmethod
    def from_state(cls, tensors:dict, meta:str) -> 'PairCheck':
        "The check that `state` wrote, each part checked; a `ValueError` saying what is wrong otherwise"
        try: facts = json.loads(meta, object_pairs_hook=_once, parse_constant=_no_constant)
        except ValueError as e:
            raise ValueError(f"its `pair_check` metadata is not JSON ({e}): {meta[:80]!r}") from None
        if not isinstance(facts, dict): facts = {}
        for k in ('threshold', 'min_similarity'):
            if not (type(facts.get(k)) in (int, float) and -1 <= facts[k] <= 1):
                raise ValueError(f"its pair check's `{k}` is {facts.get(k)!r}; expected a number from -1 to 1")
        c = tensors.pop(f'{PREFIX}centroids', None)
        if c is None or c.dtype != torch.float16 or c.ndim != 2 or c.shape[1] != N_FREQ**2 or not len(c):
            got = 'absent' if c is None else f'{c.dtype} of shape {tuple(c.shape)}'
            raise ValueError(f"its pair check's centroids are {got}; expected float16 (k, {N_FREQ**2})")
        model = check_net()
        own = {k[len(PREFIX + 'model.'):]: tensors.pop(k) for k in list(tensors) if k.startswith(PREFIX + 'model.')}
        for k, t in model.state_dict().items():
            if k in own and own[k].dtype != t.dtype:
                raise ValueError(f"its pair check's tensor {k!r} is {own[k].dtype}, not {t.dtype}")
        try: model.load_state_dict(own)
        except RuntimeError as e:
            why = ' '.join(str(e).split()[1:])  # PyTorch names each missing, extra and misshapen tensor
            raise ValueError(f"its pair check's tensors are not the check's model: {why}") from None
        stats = {k: facts[k] for k in ('passed', 'flagged') if type(facts.get(k)) is float}
        stats = stats if len(stats) == 2 else None  # what `__repr__` shows: both figures, or none
        return cls(model, float(facts['threshold']), c, float(facts['min_similarity']), stats)

    def __repr__(self):
        seen = (f": on the validation images, {self.stats['passed']:.1%} of the pair's digits pass and "
                f"{self.stats['flagged']:.1%} of the other digits are flagged") if self.stats else ''
        return f'{type(self).__name__}(threshold={self.threshold:.4f}, min_similarity={self.min_similarity:.4f}){seen}'


def _once(pairs) -> dict:
    "A JSON object whose keys each come once (JSON leaves it to the reader which of two counts)"
    d = dict(pairs)
    if len(d) != len(pairs): raise ValueError(f"a key comes twice in {[k for k, _ in pairs]}")
    return d


def _no_constant(s:str): raise ValueError(f"{s} is no number")


def _subset(images:Tensor, n:int, g:torch.Generator) -> Tensor:
    "At most `n` of `images`, drawn at random by `g`"
    return images if len(images) <= n else images[torch.randperm(len(images), generator=g)[:n]]


def _other_digits(dls, max_per_digit:int) -> tuple:
    "The other eight digits' images from the source of `dls`, as uint8 (n, 28, 28): for training and for validation"
    args = getattr(dls, 'mnist_args', None)
    if args is None: raise BinaryDigitsError(
        "The pair check loads MNIST's other digits from where `dls` came from, but these loaders do not say where: "
        "make them with `BinaryDigitsDataLoaders.from_mnist`")
    others, seed = [d for d in range(10) if d not in dls.vocab], args['seed']
    g = torch.Generator()
    if seed is None: g.seed()
    else: g.manual_seed(seed)
    try: train = load_source(args['source'], others, 'training')
    except FileNotFoundError as e:
        raise BinaryDigitsError(f"The pair check learns from MNIST's other digits, which are not there: {e}") from None
    missing = [d for d in others if not len(train[d][0])]
    if missing: raise BinaryDigitsError(f"{args['source'][1]} holds no training images of the digit(s) "
                                        f"{', '.join(map(str, missing))}: the pair check needs all ten digits")
    train = [_subset(train[d][0], max_per_digit, g) for d in others]
    if args['valid'] == 'testing':
        testing = load_source(args['source'], others, 'testing')
        return torch.cat(train), torch.cat([_subset(testing[d][0], max_per_digit, g) for d in others])
    splits = [split_indices(len(t), args['valid_pct'], seed) for t in train]  # (valid, train) indices of each digit
    return tuple(torch.cat([t[s[i]] for t, s in zip(train, splits)]) for i in (1, 0))


def pair_check_dls(dls:BinaryDigitsDataLoaders, max_per_digit:int=6000, bs:int=256) -> BinaryDigitsDataLoaders:
    """Loaders for the pair check: the pair's digits of `dls` (label 0, split as `dls`) against MNIST's other eight from
    the same source (label 1, at most `max_per_digit` of each, split alike)"""
    train, valid = _other_digits(dls, max_per_digit)
    vocab = CategoryMap([f'{dls.vocab[0]} or {dls.vocab[1]}', 'other'], sort=False)
    def ds(pair_x:Tensor, other:Tensor) -> DigitsDataset:
        x = torch.cat([pair_x, images_to_x(other, pair_x.device)])
        y = torch.cat([torch.zeros(len(pair_x), 1), torch.ones(len(other), 1)]).to(pair_x.device)
        return DigitsDataset(x, y, vocab)
    device = dls.train.dataset.x.device
    trn = BinaryDigitsDL(ds(dls.train.dataset.x, train), bs=bs, shuffle=True, device=device)
    val = BinaryDigitsDL(ds(dls.valid.dataset.x, valid), bs=bs, device=device)
    return BinaryDigitsDataLoaders(trn, val, path=dls.path, device=device)
