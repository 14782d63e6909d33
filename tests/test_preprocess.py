"""The deployment pre-processing's fast path (`fna_zoo.runtime.preprocess`): OpenCV's resize and the fast decoders
against the numpy / PIL reference and torch's bilinear kernel, the fallback without them, reduced JPEG decodes."""
import numpy as np
import pytest
import torch
from PIL import Image

from fna_zoo.runtime import preprocess as pp
from fna_zoo.runtime.preprocess import InputSpec, bilinear, decode_image, load_image, load_input, resize_array, \
    resize_bilinear, resize_image

MEAN = (0.485, 0.456, 0.406)
# NOTE: OpenCV computes the source positions in another float order than torch: at most ~4e-5 apart on the
# photos (1/100 of one 8-bit level), 1 ulp where the scale is exact; the numpy reference stays within 1e-5
FAST_TOL = 6e-5


def _pixels(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth image with edges (random noise would make every pixel an edge)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 100 * np.sin(x / 7 + c) * np.cos(y / 5 - c) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize('hw,size', [((40, 80), (32, 64)), ((91, 70), (64, 64)), ((64, 64), (32, 32)),
                                     ((30, 20), (91, 70)), ((400, 400), (320, 320)), ((3, 200), (1, 64))])
def test_opencv_resize_is_torchs_bilinear_within_float_rounding(hw, size):
    cv2 = pytest.importorskip('cv2')
    cv2.setNumThreads(1)
    arr = _pixels(*hw).astype(np.float32) * np.float32(1 / 255)
    ref = torch.nn.functional.interpolate(torch.from_numpy(arr).permute(2, 0, 1)[None], size=size, mode='bilinear',
                                          align_corners=False)[0].permute(1, 2, 0).numpy()
    fast, numpy_ref = resize_bilinear(arr, size, 'opencv'), resize_bilinear(arr, size, 'numpy')
    assert fast.shape == numpy_ref.shape == (*size, 3) and fast.dtype == np.float32
    assert np.abs(fast - ref).max() < FAST_TOL  # exact 2x: OpenCV's INTER_AREA shortcut is the same average
    assert np.abs(numpy_ref - ref).max() < 1e-5 and np.array_equal(numpy_ref, bilinear(arr, size))


@pytest.mark.parametrize('resize,size', [('letterbox', (64, 64)), ('stretch', (48, 96)), ('letterbox', (32, 96))])
def test_fast_path_is_the_reference_network_input(tmp_path, resize, size):
    pytest.importorskip('cv2')
    spec = InputSpec(size, resize, MEAN)
    pixels = _pixels(50, 90)
    for suffix in ('.png', '.jpg'):
        path = tmp_path / f'im{suffix}'
        Image.fromarray(pixels).save(path, quality=90)
        ref, ref_scale = resize_image(load_image(path), spec, backend='numpy')
        for decoder in pp.DECODERS:
            x, scale = load_input(path, spec, decoder=decoder)
            assert scale == ref_scale and x.shape == (3, *size) and x.dtype == np.float32
            assert np.abs(x - ref).max() < FAST_TOL, (suffix, decoder)
        if resize == 'letterbox':  # padded below and right with the mean colour, as before
            nh, nw = round(50 * ref_scale[1]), round(90 * ref_scale[0])
            assert np.array_equal(x[:, nh:], np.broadcast_to(np.float32(MEAN)[:, None, None], x[:, nh:].shape))
            assert np.array_equal(x[:, :, nw:], np.broadcast_to(np.float32(MEAN)[:, None, None], x[:, :, nw:].shape))


def test_fast_decoders_give_pils_pixels(tmp_path):
    """RGB PNG (8 and 16 bits) and JPEG: pyspng, OpenCV and simplejpeg decode PIL's pixels (EXIF orientation
    ignored, as PIL); other modes stay with PIL in 'auto'."""
    pytest.importorskip('cv2')
    pixels = _pixels(37, 53)
    Image.fromarray(pixels).save(tmp_path / 'a.png')
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display: PIL's pixels are the stored ones
    Image.fromarray(pixels).save(tmp_path / 'a.jpg', quality=85, exif=exif)
    Image.fromarray(pixels[..., 0]).save(tmp_path / 'grey.png')
    Image.fromarray(pixels).convert('P').save(tmp_path / 'palette.png')
    cv2 = pytest.importorskip('cv2')
    cv2.imwrite(str(tmp_path / 'a16.png'), pixels.astype(np.uint16) * 257 + 3)  # 48-bit RGB: the high bytes
    for name in ('a.png', 'a.jpg', 'a16.png', 'grey.png', 'palette.png'):
        ref = np.asarray(load_image(tmp_path / name))
        decoders = ['auto', 'pil', 'opencv'] + [d for d in ('simplejpeg', 'spng') if pp.fast_backends()[d]]
        for decoder in decoders:
            got, size = decode_image(tmp_path / name, decoder)
            assert size == (53, 37)
            if decoder == 'auto' or name.startswith('a.'):
                assert np.array_equal(got, ref), (name, decoder)


def test_without_opencv_or_simplejpeg_everything_falls_back(tmp_path, monkeypatch):
    Image.fromarray(_pixels(40, 60)).save(tmp_path / 'a.jpg', quality=90)
    monkeypatch.setattr(pp, '_optional', lambda name: None)
    assert pp.fast_backends() == {'opencv': False, 'simplejpeg': False, 'spng': False}
    spec = InputSpec((32, 32), 'letterbox', MEAN)
    ref = resize_image(load_image(tmp_path / 'a.jpg'), spec, backend='numpy')
    for decoder in pp.DECODERS:
        for backend in pp.BACKENDS:
            x, scale = load_input(tmp_path / 'a.jpg', spec, decoder=decoder, backend=backend)
            assert np.array_equal(x, ref[0]) and scale == ref[1]  # bit for bit the reference
    assert np.array_equal(load_input(tmp_path / 'a.jpg', spec, draft=True)[0], ref[0])  # 40 x 60: nothing to reduce


def test_reduced_jpeg_decode_is_an_option_with_the_same_geometry(tmp_path):
    pixels = _pixels(400, 600)
    Image.fromarray(pixels).save(tmp_path / 'big.jpg', quality=90)
    spec = InputSpec((96, 96), 'letterbox', MEAN)  # 600 -> 96: a 1/4 decode still covers 96 x 64
    ref, ref_scale = resize_image(load_image(tmp_path / 'big.jpg'), spec, backend='numpy')
    for decoder in ('pil', 'opencv', 'simplejpeg'):
        if decoder != 'pil' and not pp.fast_backends()[decoder]:
            continue
        small, full = decode_image(tmp_path / 'big.jpg', decoder, draft=(96, 64))
        assert full == (600, 400) and 96 <= small.shape[1] <= 300 and 64 <= small.shape[0] <= 200, decoder
        x, scale = load_input(tmp_path / 'big.jpg', spec, decoder=decoder, draft=True)
        assert scale == ref_scale and x.shape == ref.shape
        assert 0 < np.abs(x - ref).mean() < 0.02  # other pixels, the same picture
    # the default decodes the full image: the reference's input
    assert np.abs(load_input(tmp_path / 'big.jpg', spec)[0] - ref).max() < FAST_TOL


def test_bad_files_and_choices_are_one_line_errors(tmp_path):
    (tmp_path / 'x.png').write_bytes(b'not an image')
    spec = InputSpec((32, 32), 'letterbox', MEAN)
    for decoder in pp.DECODERS:
        with pytest.raises(ValueError, match=r"image '.*x.png' is not a readable image \(.*\); expected a PNG/JPEG"):
            load_input(tmp_path / 'x.png', spec, decoder=decoder)
    with pytest.raises(FileNotFoundError, match="image '.*none.png' does not exist"):
        load_input(tmp_path / 'none.png', spec)
    with pytest.raises(IsADirectoryError, match='is a directory; expected a PNG/JPEG file'):
        decode_image(tmp_path)
    with pytest.raises(ValueError, match=r"decoder is 'libjpeg'; expected one of \('auto'"):
        decode_image(tmp_path / 'x.png', 'libjpeg')
    with pytest.raises(ValueError, match=r"backend is 'cuda'; expected one of \('auto', 'opencv', 'numpy'\)"):
        resize_array(np.zeros((4, 4, 3), np.float32), spec, backend='cuda')
