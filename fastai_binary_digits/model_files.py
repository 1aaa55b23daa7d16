"Safe model files (safetensors: weights, pair check, the facts that rebuild a learner); fastai's pickle, if trusted"
import hashlib, json, os, re
from pathlib import Path

import torch
from torch import nn
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors, save

from . import __version__
from .checks import PICKLE_SUFFIX, SAFE_SUFFIX, BinaryDigitsError, check_pair, existing_model_file
from .files import atomic_path, open_regular
from .losses import BinaryLoss, log_loss, mnist_loss
from .models import ARCHS
from .pair_check import PREFIX, PairCheck

__all__ = ['export_binary_learner', 'read_model_file', 'load_pickle', 'content_sha256', 'file_size']

FORMAT = 'fastai_binary_digits'  # the `format` entry of the metadata: a model file of this package
FORMAT_VERSION = 2               # bumped when an older package cannot read the new layout; 2 adds the pair check
LOSSES = {'mnist_loss': mnist_loss, 'log_loss': log_loss}  # the losses the safe format holds, by name
MAX_HEADER = 100_000     # bytes of JSON header: ours are a few KB; a larger one is not a model file of this package
MAX_FILE = 64*2**20      # bytes: the largest built-in model's file is about 1 MB; a larger file is refused unread
MAX_DIGITS = 20          # the header's numbers are whole, of at most this many digits (a 64-bit size or offset)


def _structure(model:nn.Module) -> tuple:
    "What makes `model` a built-in architecture: its modules' classes and settings, its tensors' names and shapes"
    return [type(m) for m in model.modules()], repr(model), [(k, t.shape) for k, t in model.state_dict().items()]


def _export_error(what:str) -> BinaryDigitsError:
    return BinaryDigitsError(f"{what}, which the safe format cannot hold: it holds the built-in architectures "
                             f"({', '.join(ARCHS)}) trained with {' or '.join(LOSSES)}. Export fastai's pickle "
                             "instead, `learn.export('model.pkl')` (load it with `load_learner`, and share it only "
                             "with people who trust you: loading a pickle runs code)")


def _arch_name(model:nn.Module) -> str:
    "The name in `ARCHS` of the built-in architecture `model` is, or the error that says why it is none"
    for name, f in ARCHS.items():
        ref = f()
        if _structure(model) == _structure(ref): return name
        if type(model) is type(ref) and list(model.state_dict()) == list(ref.state_dict()):
            raise _export_error(f"`learn.model` is a {type(model).__name__} like {name!r}, but with other sizes or "
                                "settings")
    raise _export_error(f"`learn.model` is a custom {type(model).__name__}, not one of the built-in architectures")


def _facts(learn) -> dict:
    "The metadata that rebuilds `learn`: the pair in label order, the architecture, the loss, `prepare`, the version"
    arch = _arch_name(learn.model)
    lf = learn.loss_func
    loss = next((n for n, l in LOSSES.items() if isinstance(lf, BinaryLoss) and lf.func is l.func), None)
    if loss is None: raise _export_error(f"`learn.loss_func` is {lf!r}")
    vocab = getattr(learn.dls, 'vocab', None)
    try: pair = check_pair(vocab)
    except (TypeError, ValueError):
        raise _export_error(f"`learn.dls.vocab` is {vocab!r}, not a pair of digits from `BinaryDigitsDataLoaders`"
                            ) from None
    version = FORMAT_VERSION if getattr(learn.dls, 'pair_check', None) is not None else 1  # 1: older packages read it
    return dict(format=FORMAT, format_version=str(version), pair=json.dumps(list(pair)), arch=arch, loss=loss,
                prepare=json.dumps(bool(getattr(learn.dls, 'prepare', True))), package_version=__version__)


def content_sha256(tensors:dict, metadata:dict) -> str:
    "sha256 of a model file's metadata (but `sha256`) and each tensor's name, dtype, shape and bytes: any change shows"
    h = hashlib.sha256(json.dumps({k: v for k, v in metadata.items() if k != 'sha256'}, sort_keys=True).encode())
    for k in sorted(tensors):
        t = tensors[k].detach().to('cpu').contiguous()
        h.update(json.dumps([k, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def file_size(arch:str, suffix:str=SAFE_SUFFIX, pair_check:bool=False) -> int:
    "At most how many bytes the model file of a learner of the built-in `arch` takes (with its `pair_check`'s tensors)"
    with torch.device('meta'): model = ARCHS[arch]()  # a skeleton: shapes and types, no data
    data = sum(t.numel()*t.element_size() for t in model.state_dict().values())
    if pair_check: data += PairCheck.size()
    return data + (64_000 if suffix.lower() == PICKLE_SUFFIX else 16_000)  # fastai's pickle of a learner; the header


def export_binary_learner(learn, fname:str|Path='export.safetensors'):
    "Write `learn` to `learn.path/fname` in the safe format, atomically, as `learn.export('model.safetensors')` does"
    from fastai.torch_core import rank_distrib
    if Path(fname).suffix.lower() != SAFE_SUFFIX:
        raise BinaryDigitsError(f"`fname` {str(fname)!r} must end in '.safetensors' for the safe format; for fastai's "
                                "pickle use `learn.export('model.pkl')`")
    if rank_distrib(): return  # as fastai's `export`: only the main process writes
    metadata, check = _facts(learn), getattr(learn.dls, 'pair_check', None)
    ref = ARCHS[metadata['arch']]().state_dict()
    tensors = {}
    for k, v in learn.model.state_dict().items():
        if v.dtype != ref[k].dtype:
            raise BinaryDigitsError(f"The weight {k!r} of the model is {v.dtype}; the safe format holds the built-in "
                                    f"architectures as built, in {ref[k].dtype}: call `learn.model.float()` first")
        tensors[k] = v.detach().to('cpu', copy=True).contiguous()
    if check is not None:
        check_tensors, metadata['pair_check'] = check.state()
        tensors.update(check_tensors)
    metadata['sha256'] = content_sha256(tensors, metadata)  # checked on load: a damaged file is refused
    with atomic_path(Path(learn.path).expanduser()/Path(fname).expanduser()) as tmp:  # `tmp` is absolute
        tmp.write_bytes(save(tensors, metadata=metadata))  # Python's own write: a full disk is an `OSError` (ENOSPC)


def _content_error(fn:Path, what:str) -> BinaryDigitsError:
    return BinaryDigitsError(f"Cannot load {fn} as a safetensors model file: {what}")


def _looks_safe(head:bytes) -> bool:
    "Whether a file's first 9 bytes start a safetensors file: a header size, then the JSON header"
    return head[8:9] == b'{' and int.from_bytes(head[:8], 'little') <= MAX_HEADER


_SAFETENSORS_WORDS = {  # safetensors' own errors, in words that say what is wrong with the file
    'file not fully covered': "the tensors its header describes do not fill the file: it is truncated, or other "
                              "bytes follow them (two files joined?)",
    'invalid offset': "its header gives a tensor bytes that overlap another tensor or do not follow the tensor before",
    'invalid shape, data type, or offset': "its header gives a tensor a shape and data type that do not match its "
                                           "bytes",
}


def _read_bytes(fn:Path) -> bytes:
    "The bytes of the model file `fn`: a regular file (no FIFO or device) of at most `MAX_FILE` bytes, and no pickle"
    with open_regular(fn, 'model file') as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(MAX_FILE + 1) if size <= MAX_FILE else b''
    if size > MAX_FILE or len(data) > MAX_FILE:
        raise _content_error(fn, f"it is {max(size, len(data)):,} bytes long; a model file of this package is at most "
                                 f"{MAX_FILE:,} (its largest architecture's is about 1 MB): it is another kind of file")
    head = data[:9]  # a zip archive (`torch.save`) or a pickle (protocols 2-5)?
    if re.match(rb'PK\x03\x04|\x80[\x02-\x05]', head) and not _looks_safe(head):
        kind = "a zip archive, as `torch.save` and fastai's `learn.export` write" if head[:1] == b'P' else 'a pickle'
        raise _content_error(fn, f"it holds {kind} (a pickle, which can run code when loaded, so it is never opened "
                                 "from a '.safetensors' name). Only if it comes from someone you trust, rename it "
                                 "to '.pkl' and load it as fastai's export")
    return data


def _strict_json(fn:Path, text:str|bytes):
    "`text` parsed as a model file's header: each key once, whole numbers only (no fractions, NaN...), or a clear error"
    def no_duplicates(pairs):
        d = {}
        for k, v in pairs:
            if k in d: raise _content_error(fn, f"its header names {k!r} twice (JSON does not say which one counts): "
                                                "the file is damaged or was edited; export it again")
            d[k] = v
        return d
    def whole(s:str):
        if len(s.lstrip('-')) > MAX_DIGITS or not s.lstrip('-').isdigit():
            raise _content_error(fn, f"its header holds the number {s[:30]}; a model file's header holds only whole "
                                     f"numbers of at most {MAX_DIGITS} digits: the file is damaged; export it again")
        return int(s)
    try:
        if isinstance(text, bytes): text = text.decode('utf-8')  # safetensors' headers are UTF-8, nothing else
        return json.loads(text, object_pairs_hook=no_duplicates, parse_int=whole, parse_float=whole,
                          parse_constant=whole)
    except RecursionError:
        raise _content_error(fn, "its header nests lists or objects too deeply to read (a safetensors header nests "
                                 "three deep): the file is damaged; export it again") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _content_error(fn, f"its header is not valid JSON ({e}); the file is damaged: export it again") from None


def _metadata(fn:Path, data:bytes) -> dict:
    "The metadata in the JSON header of the safetensors bytes `data`, after the checks of its size that need no parser"
    if len(data) < 8: raise _content_error(fn, f"it is {len(data)} bytes long, too short for the 8-byte header size "
                                                "(truncated or empty); export it again")
    n = int.from_bytes(data[:8], 'little')
    if n > MAX_HEADER:
        raise _content_error(fn, f"its first 8 bytes give a header of {n:,} bytes; a model file's header is a few KB "
                                 f"(at most {MAX_HEADER:,} bytes): is it another kind of file?")
    if 8 + n > len(data): raise _content_error(fn, f"it is truncated: its header alone claims {n:,} bytes, but the "
                                                    f"file holds {len(data) - 8:,} after the header size; export it "
                                                    "again")
    header = _strict_json(fn, data[8:8+n])
    if not isinstance(header, dict): raise _content_error(fn, "its header is not a JSON object")
    meta = header.get('__metadata__', {})  # a JSON object of strings, as safetensors requires (or none: empty)
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _content_error(fn, "its `__metadata__` is not a JSON object of strings, as safetensors requires: the "
                                 "file is damaged; export it again")
    return meta


def _tensors(fn:Path, data:bytes) -> dict:
    "The tensors of the safetensors bytes `data`, checked by safetensors itself, its errors in the package's words"
    try: return dict(sorted(load_safetensors(data).items()))  # (safetensors gives them in no fixed order)
    except SafetensorError as e:
        why = str(e).split(': ', 1)[-1] if str(e).startswith('Error while') else str(e)
        words = next((w for k, w in _SAFETENSORS_WORDS.items() if k in why), f"its header is damaged ({why})")
        raise _content_error(fn, f"{words}; export it again") from None
    except Exception as e:  # safetensors' conversion to torch tensors: a data type torch lacks, ...
        raise _content_error(fn, f"its tensors cannot be read ({type(e).__name__}: {e}); export it again") from None


def _read_metadata(fn:Path, meta) -> dict:
    "The checked facts in a model file's metadata: format version, pair, architecture, loss, prepare"
    if meta.get('format') != FORMAT:
        raise _content_error(fn, "its metadata does not say `format: fastai_binary_digits` (it is a safetensors file, "
                                 "but not one written by `learn.export('model.safetensors')`)")
    version = meta.get('format_version')
    if not (isinstance(version, str) and version.isdecimal() and int(version) >= 1):
        raise _content_error(fn, f"its format version is {version!r}; expected a whole number from 1 to "
                                 f"{FORMAT_VERSION}")
    if int(version) > FORMAT_VERSION:
        raise _content_error(fn, f"it is format version {version}, written by a newer fastai_binary_digits "
                                 f"({meta.get('package_version', 'unknown')}); this one ({__version__}) reads up to "
                                 f"version {FORMAT_VERSION}: upgrade the package")
    try: pair = check_pair(_strict_json(fn, meta['pair']))
    except (KeyError, ValueError):  # `BinaryDigitsError` is a `ValueError`
        raise _content_error(fn, f"its `pair` is {meta.get('pair')!r}; expected two distinct digits 0-9 such as "
                                 "[4, 8]") from None
    arch, loss, prepare = meta.get('arch'), meta.get('loss'), meta.get('prepare', 'true')
    for value, known, name in ((arch, ARCHS, 'architecture (`arch`)'), (loss, LOSSES, '`loss`')):
        if value not in known:
            raise _content_error(fn, f"its {name} is {value!r}; this package knows {', '.join(known)}")
    if prepare not in ('true', 'false'):
        raise _content_error(fn, f"its `prepare` is {prepare!r}; expected true or false")
    return dict(pair=pair, arch=arch, loss=LOSSES[loss], prepare=prepare == 'true')


def _model(fn:Path, arch:str, tensors:dict) -> nn.Module:
    "A fresh `arch` holding `tensors`, which must be its own: each one, and no other, of its shape and dtype"
    model = ARCHS[arch]()
    for k, t in model.state_dict().items():
        if k in tensors and tensors[k].dtype != t.dtype:  # (`load_state_dict` would convert it)
            raise _content_error(fn, f"its tensor {k!r} is {tensors[k].dtype}; the {arch!r} architecture needs "
                                     f"{t.dtype}")
    try: model.load_state_dict(tensors)
    except RuntimeError as e:  # PyTorch names each missing, extra and misshapen tensor
        why = ' '.join(str(e).split('\n')[1:]).replace('\t', '').strip()
        if len(why) > 600: why = why[:600] + ' ...'  # a header may name thousands of tensors
        raise _content_error(fn, f"its tensors are not those of the {arch!r} architecture: {why}") from None
    return model


def read_model_file(fname:str|Path) -> tuple:
    "The facts and the model in the safe model file `fname`, all checked first: a pickle named so is never opened"
    fn = existing_model_file(fname)
    if fn.suffix.lower() != SAFE_SUFFIX:
        raise BinaryDigitsError(f"{fn} does not end in '.safetensors': `load_binary_learner` reads only the safe "
                                "format; use `load_model_file` for either format")
    data = _read_bytes(fn)
    meta = _metadata(fn, data)
    facts, tensors = _read_metadata(fn, meta), _tensors(fn, data)
    if 'sha256' in meta and meta['sha256'] != content_sha256(tensors, meta):  # (files written before checksums: none)
        raise _content_error(fn, "its content does not match its checksum (sha256): a byte of it was changed since it "
                                 "was written (a damaged disk or copy?); export it again")
    facts['pair_check'] = None
    if 'pair_check' in meta:
        try: facts['pair_check'] = PairCheck.from_state(tensors, meta['pair_check'])  # takes its tensors out
        except ValueError as e: raise _content_error(fn, str(e)) from None
    elif any(k.startswith(PREFIX) for k in tensors):
        raise _content_error(fn, f"it holds tensors of a pair check ('{PREFIX}*') but no `pair_check` metadata")
    return facts, _model(fn, facts['arch'], tensors)


def load_pickle(fname:str|Path, cpu:bool=True):
    "fastai's `load_learner`, its warning shown; a clear error when the file is not a learner of two digits"
    from fastai.learner import Learner, load_learner
    fn = existing_model_file(fname)
    with open_regular(fn, 'model file') as f:
        if _looks_safe(f.read(9)):
            raise BinaryDigitsError(f"{fn} is a safetensors file, not a pickle: rename it to "
                                    f"{fn.with_suffix(SAFE_SUFFIX).name} and it loads safely")
    try: learn = load_learner(fn, cpu=cpu)  # fastai warns that pickles can run code: never hidden
    except Exception as e:
        raise BinaryDigitsError(f"Could not load the model {fn} ({type(e).__name__}: {e}); give a learner exported by "
                                "`fastai-binary-digits train` or `learn.export()`") from e
    vocab = getattr(getattr(learn, 'dls', None), 'vocab', None) if isinstance(learn, Learner) else None
    if vocab is None or len(vocab) != 2 or not all(isinstance(d, int) and 0 <= d <= 9 for d in vocab):
        raise BinaryDigitsError(f"{fn} holds a {type(learn).__name__}, not a learner of two digits exported by "
                                "`fastai-binary-digits train` or `learn.export()`")
    return learn
