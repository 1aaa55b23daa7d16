"Checks of a user's arguments, shared by the Python API and the command line: no torch or fastai needed to run them"
import numbers
from pathlib import Path

__all__ = ['BinaryDigitsError', 'ARCH_NAMES', 'SAFE_SUFFIX', 'PICKLE_SUFFIX', 'check_pair', 'check_prepare', 'check_bs',
           'check_device', 'check_port', 'check_model_suffix', 'existing_model_file']

ARCH_NAMES = ('linear', 'simple', 'deep', 'cnn')  # the built-in architectures, in `models.ARCHS`' order
SAFE_SUFFIX, PICKLE_SUFFIX = '.safetensors', '.pkl'
_FORMATS = ("'.safetensors' (the safe format: weights and settings only, it cannot run code) or '.pkl' (fastai's "
            "pickle export, which runs code when loaded: only from people you trust)")


class BinaryDigitsError(ValueError):
    "A user's mistake or a bad input, with a message that says what was wrong and what to do"


def check_pair(pair) -> tuple:
    "`pair` as a tuple of two distinct ints 0-9, or a clear error (a string such as '37', booleans and 3.5 are refused)"
    msg = f"`pair` must be two distinct digits 0-9, such as (4, 8), got {pair!r}"
    if isinstance(pair, (str, bytes)):
        raise BinaryDigitsError(f"{msg}: a string, not two numbers; write (3, 7), not '37'")
    try: (x, y), (a, b) = pair, (int(d) for d in pair)
    except (TypeError, ValueError, OverflowError): raise BinaryDigitsError(msg) from None  # (int(inf): overflow)
    if any(type(d).__name__ in ('bool', 'bool_') for d in (x, y)):  # Python's and numpy's booleans
        raise BinaryDigitsError(f"{msg}: True and False are not digits")
    if a == b or not (0 <= a <= 9 and 0 <= b <= 9) or x != a or y != b: raise BinaryDigitsError(msg)
    return a, b


def check_prepare(prepare) -> bool:
    "`prepare` if it is a bool, or a clear error"
    if type(prepare).__name__ not in ('bool', 'bool_'):
        raise TypeError(f"`prepare` must be True (make images look like MNIST's with `prepare_digit`) or False (images "
                        f"are already 28x28 light-on-dark digits), got {prepare!r}")
    return bool(prepare)


def check_bs(bs) -> int:
    "`bs` if it is a whole number of at least 1, or a clear error"
    if not isinstance(bs, numbers.Integral) or isinstance(bs, bool) or bs < 1:
        raise BinaryDigitsError(f"`bs` must be a whole number of at least 1, got {bs!r}")
    return int(bs)


def check_device(device):
    "`device` (or fastai's `default_device()` when None) as a `torch.device` that this machine has, or a clear error"
    import torch
    from fastai.torch_core import default_device
    if device is None: return default_device()
    try: device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise BinaryDigitsError(f"`device` {device!r} is not a device name: {e}") from e
    n = torch.cuda.device_count() if device.type == 'cuda' else None
    if n == 0: raise BinaryDigitsError(f"`device` {device} asked for a GPU, but this machine has none that PyTorch "
                                       "can use; use device='cpu' (or leave it out for fastai's default_device())")
    if n and (device.index or 0) >= n:
        raise BinaryDigitsError(f"`device` {device} does not exist: this machine has {n} GPU(s)")
    if device.type == 'mps' and not torch.backends.mps.is_available():
        raise BinaryDigitsError(f"`device` {device} is not available on this machine; use device='cpu'")
    return device


def check_port(host:str, port:int|None=None):
    "A clear error when `host` is not this machine's or `port` on it is taken (rather than Gradio's search for another)"
    import errno, socket
    if port is not None and not (isinstance(port, int) and 0 < port < 65536):
        raise BinaryDigitsError(f"`port` must be a whole number from 1 to 65535, got {port!r}")
    with socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: only a listener blocks it
        try: s.bind((host, port or 0))
        except OSError as e:
            if port and e.errno == errno.EADDRINUSE:
                raise BinaryDigitsError(f"Port {port} on {host} is not free ({e.strerror}); choose another port with "
                                        "`--port` (Python: `port=`)") from None
            if port and e.errno == errno.EACCES:
                raise BinaryDigitsError(f"Port {port} on {host} needs administrator rights ({e.strerror}); choose a "
                                        "port from 1024 with `--port` (Python: `port=`)") from None
            raise BinaryDigitsError(f"Cannot serve on {host} ({e.strerror}): give an address of this machine with "
                                    "`--host` (Python: `host=`), such as 127.0.0.1 (this machine only) or 0.0.0.0 "
                                    "(every network it is on)") from None


def check_model_suffix(fname:str|Path, what:str='Model file') -> str:
    "The suffix of `fname`, '.safetensors' or '.pkl' (in any case), or an error naming the two formats"
    suffix = Path(fname).suffix.lower()
    if suffix in (SAFE_SUFFIX, PICKLE_SUFFIX): return suffix
    ends = f'ends in {Path(fname).suffix!r}' if suffix else 'has no suffix'
    raise BinaryDigitsError(f"{what} {fname} {ends}: a model file ends in {_FORMATS}")


def existing_model_file(fname:str|Path) -> Path:
    "`fname` (`~` expanded), a model file that exists, or a clear error"
    fn = Path(fname).expanduser()
    if not fn.exists(): raise FileNotFoundError(f"Model file {fname} does not exist")
    if not fn.is_file(): raise BinaryDigitsError(f"Model {fname} is not a file; give a model file ({_FORMATS})")
    return fn
