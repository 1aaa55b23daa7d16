"Reading only regular files (a FIFO or a device could be read forever); writing files that are never left half-written"
import os, secrets, stat, time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Iterator

from .checks import BinaryDigitsError

__all__ = []  # internal: nothing here for `import *`

_NOT_REGULAR = {stat.S_IFIFO: 'a FIFO (named pipe)', stat.S_IFCHR: 'a character device', stat.S_IFBLK: 'a block device',
                stat.S_IFSOCK: 'a socket'}


def _a(what:str) -> str: return f"{'an' if what[0] in 'aeiou' else 'a'} {what}"


def _check_regular(fn:Path, mode:int, what:str):
    "A clear error unless `mode` (from `stat`) is a regular file's"
    if stat.S_ISDIR(mode): raise IsADirectoryError(f"{fn} is a folder, not {_a(what)}")
    if not stat.S_ISREG(mode):
        kind = _NOT_REGULAR.get(stat.S_IFMT(mode), 'not a regular file')
        raise BinaryDigitsError(f"{fn} is {kind}, not {_a(what)}: give a regular file (reading this one might never "
                                "end)")


def open_regular(fn:str|Path, what:str='file') -> BinaryIO:
    """`fn` opened for reading in binary if it is a regular file (`what`, such as 'image file', names it in errors);
    a folder, FIFO, device or socket is refused from its `stat`, before it is opened"""
    fn = Path(fn)
    try: _check_regular(fn, os.stat(fn).st_mode, what)
    except (FileNotFoundError, NotADirectoryError):  # (the latter: a file where a folder of the path should be)
        raise FileNotFoundError(f"{what.capitalize()} {fn} does not exist") from None
    fd = os.open(fn, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))  # no wait, should a FIFO have been put there since
    try: _check_regular(fn, os.fstat(fd).st_mode, what)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, 'rb')


@contextmanager
def atomic_path(fn:str|Path) -> Iterator[Path]:
    "A temporary path beside `fn`, synced and renamed over it on success, else removed (`export` takes no file object)"
    fn = Path(fn)
    tmp = fn.parent/f'.{fn.name}.{secrets.token_hex(6)}.tmp'
    tmp.touch(exist_ok=False)  # made at once, never over another file; as `open` makes it, the umask applies
    try:
        yield tmp
        with open(tmp, 'rb') as f: os.fsync(f.fileno())
        os.replace(tmp, fn)
    except BaseException:
        with suppress(OSError): os.unlink(tmp)
        raise


def remove_stale_temporaries(fn:str|Path, age:float=600.):
    """Remove the temporary files `atomic_path` left beside `fn` when a process writing it was killed: those at least
    `age` seconds old (a younger one may be another process's write in progress)"""
    fn = Path(fn)
    for tmp in fn.parent.glob(f'.{fn.name}.*.tmp'):
        with suppress(OSError):
            if time.time() - tmp.lstat().st_mtime >= age: tmp.unlink()
