"""Seeded mutations of a real model file, each loaded under a time limit: every one is refused with the package's
`BinaryDigitsError`, or loads exactly the file's own facts and weights (a mutation the checks cannot see changed nothing
that is used); none raises anything else, hangs, or loads something different"""
import collections, json, random, re

import pytest
import torch

from fastai_binary_digits import BinaryDigitsDataLoaders, BinaryDigitsError, binary_learner
from fastai_binary_digits.model_files import read_model_file
from conftest import time_limit

N_MUTATIONS = 1200  # at least 500, seeded: the same mutations on every run
SEED = 21
TIME_LIMIT = 2.0   # seconds for one load; a good one takes milliseconds


@pytest.fixture(scope='module')
def good(tmp_path_factory):
    "The bytes of a real `cnn` model file (26 tensors, floats and BatchNorm's int64 counters), its facts and weights"
    dls = BinaryDigitsDataLoaders.from_mnist(pair=(4, 8), sample=True, seed=0, device='cpu')
    learn = binary_learner(dls, 'cnn', seed=0)  # as initialised: the file is the same kind of file once trained
    fn = tmp_path_factory.mktemp('fuzz')/'good.safetensors'
    learn.export(fn)
    facts, model = read_model_file(fn)
    return fn.read_bytes(), facts, model.state_dict()


def split(b:bytes) -> tuple:
    "The header (a dict) and the data of a model file's bytes"
    n = int.from_bytes(b[:8], 'little')
    return json.loads(b[8:8+n]), b[8+n:]


def join(header, data:bytes) -> bytes:
    "A model file's bytes from a header (a dict, or JSON text) and data"
    h = (header if isinstance(header, str) else json.dumps(header)).encode()
    return len(h).to_bytes(8, 'little') + h + data


# ---------------------------------------------------------------------------------------------------------------
# The mutations: each a function of the good file's bytes and a random generator, returning the mutated bytes

def flip_header(b, r):
    n = int.from_bytes(b[:8], 'little')
    i = r.randrange(8, 8+n)
    return b[:i] + bytes([b[i] ^ r.randrange(1, 256)]) + b[i+1:]

def flip_data(b, r):
    i = r.randrange(8 + int.from_bytes(b[:8], 'little'), len(b))
    return b[:i] + bytes([b[i] ^ (1 << r.randrange(8))]) + b[i+1:]

def flip_size(b, r):
    i = r.randrange(8)
    return b[:i] + bytes([b[i] ^ r.randrange(1, 256)]) + b[i+1:]

def truncate(b, r): return b[:r.randrange(len(b))]
def append(b, r): return b + r.randbytes(r.randrange(1, 64))
def huge_size(b, r): return r.choice([2**63, 2**40, 10**8, len(b), 100_001]).to_bytes(8, 'little') + b[8:]

def huge_string(b, r):
    h, d = split(b)
    h['__metadata__'][r.choice(['note', 'pair', 'arch'])] = 'x' * r.choice([100_001, 2_000_000])
    return join(h, d)

def deep(b, r):
    "Lists nested 4 to 40,000 deep, in the metadata, as a tensor's shape, or beside the tensors"
    h, d = split(b)
    where, depth = r.choice(['metadata', 'shape', 'top']), r.choice([4, 50, 5_000, 40_000])
    if where == 'metadata': h['__metadata__']['note'] = 'NEST'
    elif where == 'shape': h[r.choice([k for k in h if k != '__metadata__'])]['shape'] = 'NEST'
    else: h['nest'] = 'NEST'
    return join(json.dumps(h).replace('"NEST"', '[' * depth + ']' * depth), d)


def duplicate_key(b, r):
    "A key twice, as JSON text allows: `pair` with the digits swapped, another metadata entry, or a tensor's entry"
    h, d = split(b)
    text = json.dumps(h)
    k = r.choice(['pair', 'arch', 'tensor'])
    if k == 'pair': text = text.replace('"__metadata__": {', '"__metadata__": {"pair": "[8, 4]", ', 1)
    elif k == 'arch': text = text.replace('"__metadata__": {', '"__metadata__": {"arch": "cnn", ', 1)
    else:
        name = r.choice([k for k in h if k != '__metadata__'])
        text = text[:-1] + f', {json.dumps(name)}: {json.dumps(h[name])}}}'
    return join(text, d)

def bad_offsets(b, r):
    h, d = split(b)
    names = [k for k in h if k != '__metadata__']
    t = h[r.choice(names)]
    a, z = t['data_offsets']
    how = r.randrange(6)
    if how == 0: t['data_offsets'] = [z, a]
    elif how == 1: t['data_offsets'] = [a + r.choice([-8, -4, -1, 1, 4, 8]), z]
    elif how == 2: t['data_offsets'] = [a, z + r.choice([-4, 4, 2**64, 2**70])]
    elif how == 3: t['data_offsets'] = [-1, z]
    elif how == 4: t['data_offsets'] = [a, z, z]
    else:  # the bytes of two tensors of the same size swapped: safetensors sees a valid layout
        same = [k for k in names if h[k]['data_offsets'][1] - h[k]['data_offsets'][0] == z - a and h[k] is not t]
        if same: t['data_offsets'], h[same[0]]['data_offsets'] = h[same[0]]['data_offsets'], t['data_offsets']
    return join(h, d)

NUMBERS = re.compile(r'(?<=[\[ ,:])\d+(?=[\],}])')

def bad_number(b, r):
    "A number of the header replaced by `Infinity`, a fraction, an exponent, a huge number, or a list, object or string"
    h, d = split(b)
    text = json.dumps(h)
    spots = [m.span() for m in NUMBERS.finditer(text)]
    i, j = r.choice(spots)
    new = r.choice(['Infinity', '-Infinity', 'NaN', '1e400', '1.5', '4e0', '-3', '9' * 30, '[]', '[4, [8]]', '{}',
                    '{"a": 1}', '"12"', 'null', 'true'])
    return join(text[:i] + new + text[j:], d)

def bad_value(b, r):
    "A metadata entry or a tensor's `dtype` given another value or type"
    h, d = split(b)
    if r.random() < 0.5:
        k = r.choice(list(h['__metadata__']))
        h['__metadata__'][k] = r.choice([4, [4, 8], {'a': 'b'}, None, '', '[8, 4]', '[4, 8, 1]', 'linear', '2', '0',
                                         'true', 'false', 'log_loss', 'x' * 1000])
    else:
        t = h[r.choice([k for k in h if k != '__metadata__'])]
        t['dtype'] = r.choice(['F16', 'F64', 'BF16', 'I64', 'I32', 'U8', 'BOOL', 'F8_E4M3', 'F8_E8M0', 'F4', 'XYZ', 7])
    return join(h, d)

def bad_shape(b, r):
    h, d = split(b)
    t = h[r.choice([k for k in h if k != '__metadata__'])]
    t['shape'] = r.choice([[], [0], list(reversed(t['shape'])), t['shape'] + [1], [2**62, 2**62], [-1], [1] * 64])
    return join(h, d)

def rename_or_remove(b, r):
    "A tensor renamed or removed, a metadata entry removed (the checksum too)"
    h, d = split(b)
    how = r.randrange(3)
    if how == 0: h['renamed'] = h.pop(r.choice([k for k in h if k != '__metadata__']))
    elif how == 1: h.pop(r.choice([k for k in h if k != '__metadata__']))
    else: h['__metadata__'].pop(r.choice(list(h['__metadata__'])))
    return join(h, d)

def whitespace(b, r):
    "The same header written with spaces and newlines between its tokens: the same JSON"
    h, d = split(b)
    return join(json.dumps(h, indent=r.choice([0, 1, 4])), d)

MUTATIONS = [flip_header, flip_data, flip_size, truncate, append, huge_size, huge_string, deep, duplicate_key,
             bad_offsets, bad_number, bad_value, bad_shape, rename_or_remove, whitespace]


def same_as_good(facts, model, good_facts, good_sd) -> bool:
    sd = model.state_dict()
    return facts == good_facts and list(sd) == list(good_sd) and all(
        sd[k].dtype == good_sd[k].dtype and torch.equal(sd[k], good_sd[k]) for k in sd)


def test_every_mutation_is_refused_or_changes_nothing(good, tmp_path):
    """Mutations seen to load cleanly, each with the file's own facts and weights: the same header with other
    whitespace; an edit that writes what was there (a 1-D shape reversed, a value set to its own); two tensors of equal
    bytes swapped (BatchNorm's batch counters); the checksum entry removed (then the file is as one written before
    checksums, whose other checks all pass)"""
    data, good_facts, good_sd = good
    r = random.Random(SEED)
    fn = tmp_path/'mutated.safetensors'
    outcomes, wrong = collections.Counter(), []
    for i in range(N_MUTATIONS):
        mutate = MUTATIONS[i % len(MUTATIONS)]
        fn.write_bytes(mutate(data, r))
        try:
            with time_limit(TIME_LIMIT, f'loading mutation {i} ({mutate.__name__})'): facts, model = read_model_file(fn)
        except BinaryDigitsError as e:
            assert str(fn) in str(e) and '\n' not in str(e), str(e)
            outcomes[mutate.__name__, 'refused'] += 1
            continue
        except BaseException as e:
            wrong.append(f'{i} {mutate.__name__}: {type(e).__name__}: {str(e)[:300]}')
            continue
        if same_as_good(facts, model, good_facts, good_sd): outcomes[mutate.__name__, 'loaded, unchanged'] += 1
        else: wrong.append(f'{i} {mutate.__name__}: loaded with other facts or weights')
    print(dict(sorted(outcomes.items())))
    assert not wrong, '\n'.join(wrong)
    for m in MUTATIONS:
        if m not in (whitespace,): assert outcomes[m.__name__, 'refused'], f'{m.__name__}: nothing refused'
    assert outcomes['whitespace', 'loaded, unchanged'] == N_MUTATIONS // len(MUTATIONS)
