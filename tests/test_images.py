"""The one door every image comes in by (`as_pil_image`): regular files only, the size bounded from the header before
anything is decoded, and every failure to read a picture the package's `BinaryDigitsError` naming the file"""
import os, random, socket, struct, zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from fastai_binary_digits import BinaryDigitsError, prepare_digit
from fastai_binary_digits.images import MAX_ASPECT, MAX_PIXELS, as_pil_image
from fastai_binary_digits.prepare import digit_images
from conftest import time_limit


def png_header(w:int, h:int, bit_depth:int=8) -> bytes:
    "A greyscale PNG whose header says `w`x`h` pixels, holding the data of one row only: decoding it would fail"
    def chunk(kind:bytes, data:bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    ihdr = struct.pack('>IIBBBBB', w, h, bit_depth, 0, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(bytes(w*bit_depth//8 + 1)))
            + chunk(b'IEND', b''))


def jpeg_of_size(w:int, h:int) -> bytes:
    "A JPEG whose frame header (SOF0) says `w`x`h` pixels, its data an 8x8 picture's"
    import io
    buf = io.BytesIO()
    Image.new('L', (8, 8), 128).save(buf, format='JPEG')
    b = buf.getvalue()
    i = b.index(b'\xff\xc0') + 5  # the marker, its length (2 bytes), the precision (1 byte): then height, width
    return b[:i] + struct.pack('>HH', h, w) + b[i+4:]


@pytest.fixture
def never_decoded(monkeypatch):
    "PIL's decoding of a file's pixels, made to fail loudly: a picture refused from its header never gets there"
    def load(self, *a, **k): raise AssertionError('the pixels were decoded')
    monkeypatch.setattr(ImageFile.ImageFile, 'load', load)


BOMBS = [  # (name, bytes, message): each refused from its header, naming the limit
    ('strip.png', lambda: png_header(4, 40_000_000),
     r"The image .*strip.png is 4x40,000,000 pixels \(160 megapixels\): images of up to 50 megapixels are read; "
     r"shrink it, or crop it around the digit"),
    ('big16.png', lambda: png_header(13_000, 13_000, 16),
     r"is 13,000x13,000 pixels \(169 megapixels\): images of up to 50"),
    ('photo.jpg', lambda: jpeg_of_size(9_000, 9_000), r"is 9,000x9,000 pixels \(81 megapixels\)"),
    ('thin.jpg', lambda: jpeg_of_size(1, 600),
     r"The image .*thin.jpg is 1x600 pixels, a strip: a picture of a digit is at most 50 times longer than wide "
     r"\(1:50\); crop it around the digit"),
    ('wide.png', lambda: png_header(2_000, 30), r"is 2,000x30 pixels, a strip"),
]


@pytest.mark.filterwarnings('ignore::PIL.Image.DecompressionBombWarning')  # PIL's, for over 89 megapixels
@pytest.mark.parametrize('name, content, message', BOMBS, ids=[n for n, *_ in BOMBS])
def test_too_large_or_too_thin_is_refused_from_the_header(name, content, message, tmp_path, never_decoded):
    (tmp_path/name).write_bytes(content())
    with pytest.raises(BinaryDigitsError, match=message): as_pil_image(tmp_path/name)
    with pytest.raises(BinaryDigitsError, match=message): prepare_digit(str(tmp_path/name))


def test_larger_than_pils_own_bomb_limit_names_ours(tmp_path):
    (tmp_path/'huge.png').write_bytes(png_header(20_000, 10_000))  # PIL refuses it itself, inside `Image.open`
    with pytest.raises(BinaryDigitsError, match=r"Could not read the image .*huge.png: it is larger than 50 "
                                                r"megapixels"):
        as_pil_image(tmp_path/'huge.png')


def test_in_memory_images_are_bounded_too():
    "Arrays and PIL images are checked from their shape, before any conversion"
    with pytest.raises(BinaryDigitsError, match=r"The image array of shape \(4, 20000\) is 20,000x4 pixels, a strip"):
        as_pil_image(np.zeros((4, 20_000), np.uint8))
    with pytest.raises(BinaryDigitsError, match=r"The image is 8,000x8,000 pixels \(64 megapixels\)"):
        as_pil_image(Image.new('1', (8_000, 8_000)))
    assert MAX_PIXELS == 50_000_000 and MAX_ASPECT == 50


def test_within_the_limits_pictures_still_read(tmp_path):
    "A tall JPEG within the aspect limit is decoded small (`draft`); a 16-bit picture is scaled to 8 bits"
    Image.new('L', (13, 600), 200).save(tmp_path/'tall.jpg')
    im = as_pil_image(tmp_path/'tall.jpg')
    assert im.mode == 'L' and im.size[1] < 600 and min(im.size) >= 1
    a = np.linspace(0, 65535, 64*64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(a).save(tmp_path/'deep.png')
    got = np.asarray(as_pil_image(tmp_path/'deep.png'))
    assert got.dtype == np.uint8 and got[0, 0] == 0 and got[-1, -1] == 255
    assert np.abs(got.astype(int) - np.rint(a/257)).max() == 0


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='needs named pipes (os.mkfifo)')
def test_fifos_sockets_and_devices_are_refused_before_opening(tmp_path):
    os.mkfifo(tmp_path/'fifo.png')
    (tmp_path/'zero.png').symlink_to('/dev/zero')
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path/'sock.png'))
        with time_limit(20, 'reading it'):
            for name, kind in [('fifo', r'a FIFO \(named pipe\)'), ('zero', 'a character device'),
                               ('sock', 'a socket')]:
                with pytest.raises(BinaryDigitsError, match=rf"{name}.png is {kind}, not an image file: give a "
                                                            "regular file"):
                    as_pil_image(tmp_path/f'{name}.png')


@pytest.mark.filterwarnings('ignore::PIL.Image.DecompressionBombWarning')
def test_test_dl_and_predict_go_through_the_same_door(sample_dls, tmp_path):
    from fastai_binary_digits import binary_learner
    os.mkfifo(tmp_path/'fifo.png')
    (tmp_path/'strip.png').write_bytes(png_header(4, 40_000_000))
    learn = binary_learner(sample_dls)
    with time_limit(20, 'reading it'):
        with pytest.raises(BinaryDigitsError, match='is a FIFO'): sample_dls.test_dl([tmp_path/'fifo.png'])
        with pytest.raises(BinaryDigitsError, match='160 megapixels'): learn.predict(tmp_path/'strip.png')
        with pytest.raises(BinaryDigitsError, match='160 megapixels'):
            sample_dls.test_dl([tmp_path/'strip.png'], prepare=False)


def _mutate(b:bytes, r:random.Random) -> bytes:
    "A byte flipped, a few bytes overwritten, the file cut short, or a piece of it repeated"
    i = r.randrange(len(b))
    how = r.randrange(4)
    if how == 0: return b[:i] + bytes([b[i] ^ r.randrange(1, 256)]) + b[i+1:]
    if how == 1: return b[:i] + r.randbytes(8) + b[i+8:]
    if how == 2: return b[:i]
    return b[:i] + b[i:i+r.randrange(1, 64)]*r.randrange(2, 50) + b[i:]


def test_damaged_pictures_are_the_packages_error_or_a_picture(tmp_path):
    "420 seeded mutations of real pictures in each format read: each a clear error naming the file, or a usable picture"
    digit = np.zeros((40, 30, 3), np.uint8)
    digit[8:32, 12:18] = 255
    originals = {}
    for fmt in ('PNG', 'JPEG', 'GIF', 'TIFF', 'BMP', 'WEBP'):
        fn = tmp_path/f'digit.{fmt.lower()}'
        Image.fromarray(digit).save(fn, format=fmt)
        originals[fn] = fn.read_bytes()
    r, outcomes = random.Random(21), []
    for i in range(420):
        fn = list(originals)[i % len(originals)]
        bad = tmp_path/f'bad{fn.suffix}'
        bad.write_bytes(_mutate(originals[fn], r))
        with time_limit(20, 'reading it'):
            try: im = as_pil_image(bad)
            except BinaryDigitsError as e:
                assert str(bad) in str(e), str(e)
                outcomes.append('refused')
                continue
        assert im.mode in ('L', 'LA', 'RGB', 'RGBA') and min(im.size) >= 1
        a = prepare_digit(im)
        assert a is None or (a.shape == (28, 28) and a.dtype == np.uint8)
        outcomes.append('read')
    assert outcomes.count('refused') > 50 and outcomes.count('read') > 50, outcomes.count('refused')


def test_digit_images_reads_one_picture_at_a_time(tmp_path, monkeypatch):
    "Memory does not grow with the number of items: each picture is let go before the next is read"
    import weakref
    import fastai_binary_digits.prepare as prep
    for i in range(5): Image.new('L', (300, 300), 255 - 40*i).save(tmp_path/f'{i}.png')
    alive, most = [], [0]
    def counting(o):
        if not isinstance(o, Image.Image):  # a file: a new picture (a PIL image is one being prepared)
            most[0] = max(most[0], sum(r() is not None for r in alive))
        im = as_pil_image(o)
        alive.append(weakref.ref(im))
        return im
    monkeypatch.setattr(prep, 'as_pil_image', counting)
    images, found = digit_images(sorted(tmp_path.glob('*.png')))
    assert images.shape == (5, 28, 28) and len(alive) == 10 and most[0] == 0
