"""Model files that cannot run code: a learner's weights in `safetensors` with the few facts that rebuild it (the
pair, the architecture, the loss, the image preparation), beside fastai's pickle export, for trusted files only"""
from __future__ import annotations
import json, math, os, struct, sys
from pathlib import Path

import torch
from torch import nn
from safetensors.torch import save_file
from . import compat  # first: it imports fastai with fastai's import-time warning hidden
from fastai.data.transforms import CategoryMap
from fastai.learner import Learner, load_learner
from fastai.optimizer import SGD
from fastai.torch_core import default_device, rank_distrib

from .data import BinaryDigitsDataLoaders, BinaryDigitsDL, DigitTensors, check_pair
from .files import atomic_path
from .learner import BinaryLearner
from .losses import BinaryLoss, batch_accuracy, log_loss, mnist_loss
from .models import ARCHS

__all__ = ['export_binary_learner', 'load_binary_learner', 'load_model_file']

FORMAT = 'fastai_binary_digits'  # the `format` entry of the metadata: a model file of this package
FORMAT_VERSION = 1               # bumped whenever a file of the new layout could not be read by an older package
SAFE_SUFFIX, PICKLE_SUFFIX = '.safetensors', '.pkl'
LOSSES = {'mnist_loss': mnist_loss, 'log_loss': log_loss}  # losses the safe format holds, by name
_DTYPES = {torch.float32: 'F32', torch.float64: 'F64', torch.float16: 'F16', torch.bfloat16: 'BF16',
           torch.int64: 'I64', torch.int32: 'I32', torch.uint8: 'U8', torch.bool: 'BOOL'}  # safetensors' names
_ITEMSIZE = dict(F64=8, F32=4, F16=2, BF16=2, I64=8, I32=4, I16=2, I8=1, U8=1, BOOL=1)  # bytes per element
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
_FORMATS = ("'.safetensors' (the safe format: weights and settings only, it cannot run code; written by "
            "`learn.export('model.safetensors')`) or '.pkl' (fastai's pickle export, `learn.export('model.pkl')`, "
            "which runs code when loaded: only from people you trust)")


# ---------------------------------------------------------------------------------------------------------------
# Writing

def _same_structure(model:nn.Module, ref:nn.Module) -> bool:
    "Whether `model` is `ref` built again: the same module classes and settings, the same tensors' names and shapes"
    mods, refs = list(model.modules()), list(ref.modules())
    if len(mods) != len(refs): return False
    if any(type(m) is not type(r) or m.extra_repr() != r.extra_repr() for m, r in zip(mods, refs)): return False
    sd, rsd = model.state_dict(), ref.state_dict()
    return list(sd) == list(rsd) and all(sd[k].shape == rsd[k].shape for k in sd)


def arch_name(model:nn.Module) -> str|None:
    "The name in `ARCHS` of the built-in architecture `model` is, or None for any other model"
    return next((name for name, f in ARCHS.items() if _same_structure(model, f())), None)


def loss_name(loss_func) -> str|None:
    "The name in `LOSSES` of `loss_func` (also after a pickle round trip), or None for any other loss"
    if not isinstance(loss_func, BinaryLoss): return None
    return next((name for name, l in LOSSES.items() if loss_func.func is l.func), None)


def _export_error(what:str) -> ValueError:
    return ValueError(f"{what}, which the safe format cannot hold: it holds the built-in architectures "
                      f"({', '.join(ARCHS)}) trained with {' or '.join(LOSSES)}. Export fastai's pickle instead, "
                      "`learn.export('model.pkl')` (load it with `load_learner`, and share it only with people who "
                      "trust you: loading a pickle runs code)")


def export_binary_learner(learn:Learner, fname:str|Path='export.safetensors'):
    """Write `learn`'s weights and settings to `learn.path/fname` in the safe format (`safetensors`), atomically;
    `learn.export(fname)` does this for a `fname` ending in '.safetensors'. Load it with `load_binary_learner`"""
    fname = Path(fname)
    if fname.suffix.lower() != SAFE_SUFFIX:
        raise ValueError(f"`fname` {str(fname)!r} must end in '.safetensors' for the safe format; for fastai's "
                         "pickle use `learn.export('model.pkl')`")
    if rank_distrib(): return  # as fastai's `export`: only the main process writes
    name = arch_name(learn.model)
    if name is None: _raise_model(learn.model)
    loss = loss_name(learn.loss_func)
    if loss is None: raise _export_error(f"`learn.loss_func` is {learn.loss_func!r}")
    vocab = getattr(learn.dls, 'vocab', None)
    try: pair = check_pair(vocab)
    except (TypeError, ValueError):
        raise _export_error(f"`learn.dls.vocab` is {vocab!r}, not a pair of digits from `BinaryDigitsDataLoaders`"
                            ) from None
    prepare = bool(getattr(learn.dls, 'prepare', True))  # issue 10's setting; loaders without it prepared images
    metadata = dict(format=FORMAT, format_version=str(FORMAT_VERSION), pair=json.dumps(list(pair)), arch=name,
                    loss=loss, prepare=json.dumps(prepare), package_version=_version())
    ref = ARCHS[name]().state_dict()
    tensors = {}
    for k, v in learn.model.state_dict().items():
        if v.dtype != ref[k].dtype:
            raise ValueError(f"The weight {k!r} of the model is {v.dtype}; the safe format holds the built-in "
                             f"architectures as built, in {ref[k].dtype}: call `learn.model.float()` first")
        tensors[k] = v.detach().to('cpu', copy=True).contiguous()
    with atomic_path(learn.path/fname) as tmp: save_file(tensors, tmp, metadata=metadata)  # `tmp` is absolute


def _raise_model(model:nn.Module):
    "The error for a model that is not one of `ARCHS`, naming the closest reason"
    for name, f in ARCHS.items():
        ref = f()
        if type(model) is type(ref) and list(model.state_dict()) == list(ref.state_dict()):
            raise _export_error(f"`learn.model` is a {type(model).__name__} like {name!r}, but with other sizes or "
                                "settings")
    raise _export_error(f"`learn.model` is a custom {type(model).__name__}, not one of the built-in architectures")


# ---------------------------------------------------------------------------------------------------------------
# Reading

def _content_error(fn:Path, what:str) -> ValueError:
    return ValueError(f"Cannot load {fn} as a safetensors model file: {what}")


def _read_header(fn:Path, f) -> tuple:
    """The metadata and the tensors `{name: (dtype, shape, (start, stop))}` that the header of `fn` (open as `f`)
    describes, read without any parser but `json`; a pickle, or a header that does not fit the file's bytes, is a
    clear error"""
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    n = struct.unpack('<Q', head)[0] if size >= 8 else 0  # the header's size, in bytes
    header = f.read(n) if 8 + n <= size else b''
    looks_safe = header[:1] == b'{'  # a header size that fits, then the JSON header
    # a zip archive as `torch.save` writes, or a pickle of protocol 2 to 5 (its PROTO opcode, then the number)
    pickled = head.startswith(b'PK\x03\x04') or len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5
    if pickled and not looks_safe:
        kind = "a zip archive, as `torch.save` and fastai's `learn.export` write" if head[:1] == b'P' else 'a pickle'
        raise _content_error(fn, f"it holds {kind} (a pickle, which can run code when loaded, so it is never opened "
                                 "from a '.safetensors' name). Only if it comes from someone you trust, rename it "
                                 "to '.pkl' and load it as fastai's export")
    if size < 8: raise _content_error(fn, f"it is {size} bytes long, too short for the 8-byte header size "
                                          "(truncated or empty); export it again")
    if n > _MAX_HEADER: raise _content_error(fn, f"its first 8 bytes give a header of {n:,} bytes, which no "
                                                 "safetensors file has (is it another kind of file?)")
    if 8 + n > size: raise _content_error(fn, f"it is truncated: its header alone claims {n:,} bytes, but the file "
                                              f"holds {size - 8:,} after the header size; export it again")
    try: header = json.loads(header)
    except ValueError as e:  # `UnicodeDecodeError` and `json.JSONDecodeError` are `ValueError`s
        raise _content_error(fn, f"its header is not valid JSON ({e}); the file is damaged: export it again") from None
    if not isinstance(header, dict): raise _content_error(fn, "its header is not a JSON object")
    meta, entries = header.pop('__metadata__', None), {}
    for k, v in header.items():
        try: entries[k] = (str(v['dtype']), [int(d) for d in v['shape']], tuple(int(o) for o in v['data_offsets'][:2]))
        except (TypeError, KeyError, ValueError):
            raise _content_error(fn, f"its header describes the tensor {k!r} as {v!r}, not with a dtype, shape and "
                                     "data_offsets") from None
    data = size - 8 - n
    at = 0  # safetensors' rule, checked before the data are read: the tensors fill the data in turn, and nothing else
    for k, (start, stop) in sorted(((k, o) for k, (*_, o) in entries.items()), key=lambda e: e[1]):
        if start != at or stop < start:
            raise _content_error(fn, f"its header gives the tensor {k!r} the bytes {start:,} to {stop:,}, which "
                                     f"{'overlap another tensor' if start < at else 'do not follow the tensor before'} "
                                     "(the file is damaged: export it again)")
        at = stop
    if at > data: raise _content_error(fn, f"it is truncated: its header describes {at:,} bytes of tensors, but "
                                           f"{data:,} follow it; export it again")
    if at < data: raise _content_error(fn, f"{data - at:,} bytes follow the {at:,} bytes of tensors its header "
                                           "describes (two files joined, or a damaged one?); export it again")
    for k, (dtype, shape, (start, stop)) in entries.items():
        need = math.prod(shape)*_ITEMSIZE.get(dtype, 0)
        if dtype in _ITEMSIZE and stop - start != need:
            raise _content_error(fn, f"its header gives the tensor {k!r} ({dtype}, shape {shape}, {need:,} bytes) "
                                     f"{stop - start:,} bytes of data")
    return meta if isinstance(meta, dict) else {}, entries


def _read_metadata(fn:Path, meta:dict|None) -> dict:
    "The checked facts in a model file's metadata: format version, pair, architecture, loss, prepare"
    meta = meta or {}
    if meta.get('format') != FORMAT:
        raise _content_error(fn, "its metadata does not say `format: fastai_binary_digits` (it is a safetensors "
                                 "file, but not one written by `learn.export('model.safetensors')`)")
    try: version = int(meta.get('format_version', ''))
    except ValueError: version = None
    if version is None or version < 1:
        raise _content_error(fn, f"its format version is {meta.get('format_version')!r}; expected a whole number "
                                 f"from 1 to {FORMAT_VERSION}")
    if version > FORMAT_VERSION:
        raise _content_error(fn, f"it is format version {version}, written by a newer fastai_binary_digits "
                                 f"({meta.get('package_version', 'unknown')}); this one ({_version()}) reads up to "
                                 f"version {FORMAT_VERSION}: upgrade the package")
    try: pair = check_pair(json.loads(meta['pair']))
    except (KeyError, TypeError, ValueError):  # `json.JSONDecodeError` is a `ValueError`
        raise _content_error(fn, f"its `pair` is {meta.get('pair')!r}; expected two distinct digits 0-9 such as "
                                 "[4, 8]") from None
    arch, loss = meta.get('arch'), meta.get('loss')
    if arch not in ARCHS:
        raise _content_error(fn, f"its architecture (`arch`) is {arch!r}; this package knows {', '.join(ARCHS)}")
    if loss not in LOSSES: raise _content_error(fn, f"its `loss` is {loss!r}; this package knows {', '.join(LOSSES)}")
    prepare = meta.get('prepare', 'true')  # files written before issue 10's setting prepared images
    if prepare not in ('true', 'false'):
        raise _content_error(fn, f"its `prepare` is {prepare!r}; expected true or false")
    return dict(version=version, pair=pair, arch=arch, loss=loss, prepare=prepare == 'true')


def _version() -> str:
    from . import __version__
    return __version__


def _check_tensors(fn:Path, entries:dict, arch:str, ref:dict):
    "Each tensor of `arch` (its state dict `ref`) described in `entries` with its shape and dtype, and no other"
    missing, extra = [k for k in ref if k not in entries], sorted(set(entries) - set(ref))
    if missing: raise _content_error(fn, f"the {arch!r} architecture needs the tensor(s) {', '.join(missing)}, "
                                         "missing from the file")
    if extra: raise _content_error(fn, f"it holds tensor(s) {', '.join(extra)} that the {arch!r} architecture "
                                       "does not have")
    for k, r in ref.items():
        dtype, shape, _ = entries[k]
        if shape != list(r.shape):
            raise _content_error(fn, f"its tensor {k!r} has shape {shape}; the {arch!r} architecture needs "
                                     f"{list(r.shape)}")
        if dtype != _DTYPES.get(r.dtype):
            raise _content_error(fn, f"its tensor {k!r} is {dtype}; the {arch!r} architecture needs {_DTYPES[r.dtype]}")


def _empty_dls(pair:tuple, prepare:bool, path:Path, device) -> BinaryDigitsDataLoaders:
    "Loaders of `pair` holding no images, as fastai's `export` leaves them: `test_dl`, `vocab` and decoding work"
    vocab = CategoryMap(list(pair), sort=False)
    empty = lambda: DigitTensors(torch.empty(0, 28*28, device=device), torch.empty(0, 1, device=device), vocab)
    # `do_setup=False`, as fastai's `new_empty`: the loaders have no transforms to set up
    dls = BinaryDigitsDataLoaders(BinaryDigitsDL(empty(), shuffle=True, device=device, do_setup=False),
                                  BinaryDigitsDL(empty(), device=device, do_setup=False), path=path, device=device)
    dls.prepare = prepare  # issue 10's setting: whether `test_dl` prepares a person's images as MNIST's
    return dls


# Architectures built as a skeleton on PyTorch's meta device, without data, whose tensors are then made from the file:
# this skips a random initialisation of weights that would be overwritten, most of the build for large linear layers
# (`deep`: 0.9 ms on the CPU, 0.4 ms on meta). The small layers of `linear` and `cnn` build faster on the CPU, where
# there is no meta dispatch to pay for, and are overwritten in place (`benchmarks/model_files_bench.py` times loads)
_META_SKELETON = ('simple', 'deep')
_BIG_ENDIAN = sys.byteorder == 'big'  # safetensors stores little-endian numbers


def _read_weights(fn:Path, f, entries:dict, model:nn.Module, own:dict):
    """Read the bytes of each tensor of the file (open as `f`, just after its header) straight into `model`'s tensor
    of that name in `own` (its `state_dict(keep_vars=True)`), whose dtype, shape and byte count were checked against
    the header; a tensor of a skeleton built on the meta device gets its memory here, and replaces it as
    `load_state_dict(assign=True)` would"""
    with torch.no_grad():
        for k in sorted(entries, key=lambda k: entries[k][2]):  # in the file's order: they follow each other
            target = own[k]
            t = torch.empty(target.shape, dtype=target.dtype) if target.is_meta else target.detach()
            data = t.reshape(-1).view(torch.uint8).numpy()  # the tensor's memory, as bytes
            if f.readinto(data) != data.nbytes:
                raise _content_error(fn, f"it was cut short while its tensor {k!r} was read (is it being written?)")
            if _BIG_ENDIAN: t.numpy().byteswap(inplace=True)
            if target.is_meta:
                module_name, _, name = k.rpartition('.')
                module = model.get_submodule(module_name)
                if isinstance(target, nn.Parameter):
                    module.register_parameter(name, nn.Parameter(t, requires_grad=target.requires_grad))
                else: module.register_buffer(name, t)


def load_binary_learner(fname:str|Path, cpu:bool=True) -> BinaryLearner:
    """The inference-ready learner in the safe model file `fname` (written by `learn.export('model.safetensors')`):
    nothing in the file is run; every fact and tensor is checked first. On the CPU, or fastai's default device"""
    fn = _existing_file(fname)
    if fn.suffix.lower() != SAFE_SUFFIX:
        raise ValueError(f"{fn} does not end in '.safetensors': `load_binary_learner` reads only the safe format; "
                         "use `load_model_file` for either format")
    with open(fn, 'rb') as f:
        meta, entries = _read_header(fn, f)
        facts = _read_metadata(fn, meta)
        arch = facts['arch']
        model = ARCHS[arch](device='meta') if arch in _META_SKELETON else ARCHS[arch]()
        own = model.state_dict(keep_vars=True)  # its parameters and buffers themselves, by the file's names
        _check_tensors(fn, entries, arch, own)
        _read_weights(fn, f, entries, model, own)
    device = torch.device('cpu') if cpu else default_device()
    if device.type != 'cpu': model.to(device)
    model.eval()
    dls = _empty_dls(facts['pair'], facts['prepare'], fn.parent, device)
    return BinaryLearner(dls, model, loss_func=LOSSES[facts['loss']], opt_func=SGD, metrics=batch_accuracy)


def _existing_file(fname) -> Path:
    fn = Path(fname).expanduser()
    if not fn.exists(): raise FileNotFoundError(f"Model file {fname} does not exist")
    if not fn.is_file(): raise ValueError(f"Model {fname} is not a file; give a model file ({_FORMATS})")
    return fn


def _load_pickle(fn:Path, cpu:bool) -> Learner:
    "fastai's `load_learner`, its warning shown; a clear error when the file is not a learner of two digits"
    with open(fn, 'rb') as f: head = f.read(9)
    if len(head) == 9 and head[8:] == b'{' and struct.unpack('<Q', head[:8])[0] < _MAX_HEADER:
        raise ValueError(f"{fn} is a safetensors file, not a pickle: rename it to {fn.with_suffix(SAFE_SUFFIX).name} "
                         "and it loads safely")
    try: learn = load_learner(fn, cpu=cpu)  # fastai warns that pickles can run code: never hidden
    except Exception as e:
        raise ValueError(f"Could not load the model {fn} ({type(e).__name__}: {e}); give a learner exported by "
                         "`fastai-binary-digits train` or `learn.export()`") from e
    vocab = getattr(getattr(learn, 'dls', None), 'vocab', None) if isinstance(learn, Learner) else None
    if vocab is None or len(vocab) != 2 or not all(isinstance(d, int) and 0 <= d <= 9 for d in vocab):
        raise ValueError(f"{fn} holds a {type(learn).__name__}, not a learner of two digits exported by "
                         "`fastai-binary-digits train` or `learn.export()`")
    return learn


def check_model_suffix(fname:str|Path, what:str='Model file') -> str:
    "The suffix of `fname`, '.safetensors' or '.pkl' (in any case), or an error naming the two formats"
    suffix = Path(fname).suffix.lower()
    if suffix in (SAFE_SUFFIX, PICKLE_SUFFIX): return suffix
    ends = f'ends in {Path(fname).suffix!r}' if suffix else 'has no suffix'
    raise ValueError(f"{what} {fname} {ends}: a model file ends in {_FORMATS}")


def load_model_file(fname:str|Path, cpu:bool=True) -> Learner:
    """The learner in `fname`, chosen by its suffix: '.safetensors' is read safely (`load_binary_learner`), '.pkl'
    with fastai's `load_learner` (it runs code: only files you trust); any other name is refused"""
    fn = _existing_file(fname)
    suffix = check_model_suffix(fname)
    return load_binary_learner(fn, cpu=cpu) if suffix == SAFE_SUFFIX else _load_pickle(fn, cpu)
