"Writing files so that one already there is never left half-written: the cache, the sample, exports, report pictures"
from __future__ import annotations
import os, tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

__all__ = []  # internal: nothing here for `import *`


def _umask() -> int:
    "The process's umask (reading it means setting it: set it back at once)"
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(fn:str|Path) -> Iterator[Path]:
    """A temporary path beside `fn` for the block to write; once the block succeeds it is synced to disk and renamed
    over `fn`, and on any error it is removed, leaving `fn` as it was. (fastcore's `atomic_save` hands out a file
    object, which fastai's `export` cannot take, leaves the file private to its owner and does not sync it.)"""
    fn = Path(fn)
    fd, tmp = tempfile.mkstemp(dir=fn.parent, prefix=f'.{fn.name}.', suffix='.tmp')
    os.close(fd)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try: os.fsync(fd)
        finally: os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # as `open` would have made it (mkstemp makes it private)
        os.replace(tmp, fn)
    except BaseException:
        with suppress(OSError): os.unlink(tmp)
        raise
