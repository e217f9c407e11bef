"""Prediction with trained cropjax models: `cropjax.predict`, `predict_crop`, `load_model`.

    import cropjax
    model = cropjax.load_model('workdirs/demo')          # once; reuse it
    r = cropjax.predict('a.jpg', 'b.jpg', model=model)
    r.is_crop, r.probability, r.original, r.box, r.top_left

    crop_model = cropjax.load_model('workdirs/autocrop')
    c = cropjax.predict_crop('photo.jpg', model=crop_model)
    c.left, c.top, c.right, c.bottom, c.angle

Images may be paths, PIL images or numpy arrays of any size and mode (RGB,
RGBA, L, P, CMYK, 16-bit); EXIF orientation is applied, so every result is in
the upright frame a person sees. Paths may name camera raw files (CR2, NEF,
ARW, DNG, ...) when rawpy is installed (`pip install -e '.[raw]'`; see
`load_image`). Without `model=`, the model is the latest checkpoint of the
workdir named by the environment variable `CROPJAX_MODEL`.

A model is a training workdir (its `config.json` and the latest checkpoint in
`checkpoints/`) or one checkpoint step folder inside it. The forward pass is
compiled once per batch shape: batches are padded to a power of two, up to
`batch_size`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import itertools
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

import numpy as np
from PIL import Image, ImageOps

from cropjax import metadata
from cropjax import threads

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]
ENV = 'CROPJAX_MODEL'


class InputError(ValueError):
  """An image cannot be used; the message names it and says why."""


class ModelError(ValueError):
  """A model cannot be loaded or does not fit the request; the message says why."""


# ------------------------------------------------------------------ results


@dataclasses.dataclass(frozen=True)
class PairPrediction:
  """Is one image a crop of the other, which is the original, and where the crop lies in it.

  `box` is (x0, y0, x1, y1) in pixels of the original (upright), `box_fraction`
  the same as fractions of its width and height; `top_left` = box[:2]. A
  straightened crop's box is its rectangle as it would be unturned and `angle`
  how far it is turned about its centre, in degrees with Lightroom's sign
  (positive: clockwise on screen; `cropjax.metadata`'s convention). With
  alignment (the default) the box is the refined one, `probability` the
  verdict's (network and alignment evidence together), `alignment_score` the
  correlation of crop and original inside the box and `converged` whether the
  refinement settled; without it they are the network's alone (and None).
  Where the box is the original's whole frame (`whole_frame`: two copies of one
  picture), it is given as exactly that, and the original is the image with more
  pixels (of two the same size, the one alignment named).
  """
  is_crop: bool
  probability: float            # P(one image is a crop of the other)
  original: str                 # 'a' or 'b'
  original_probability: float   # P(that image is the original | a crop pair)
  box: tuple[float, float, float, float]
  box_fraction: tuple[float, float, float, float]
  top_left: tuple[float, float]
  top_left_fraction: tuple[float, float]
  original_size: tuple[int, int]  # width, height of the original
  angle: float = 0.0            # degrees the crop is turned (alignment fits it; 0 without)
  alignment_score: float | None = None   # ZNCC in the refined box (with alignment)
  converged: bool | None = None          # the refinement settled (with alignment)
  network_probability: float | None = None  # the network's P(crop pair), before the verdict

  def to_json(self) -> dict[str, Any]:
    return _jsonable(dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class CropPrediction:
  """The suggested crop: the unturned rectangle in pixels and fractions, and the angle.

  The same convention as `cropjax.metadata.Crop` (Lightroom's angle sign).
  """
  left: float
  top: float
  right: float
  bottom: float
  fraction: tuple[float, float, float, float]
  angle: float
  size: tuple[int, int]  # width, height of the upright photo

  def to_crop(self) -> metadata.Crop:
    return metadata.Crop(*self.fraction, angle=self.angle)

  def to_json(self) -> dict[str, Any]:
    return _jsonable(dataclasses.asdict(self))


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
  def conv(v):
    if isinstance(v, (tuple, list)):
      return [conv(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
      return bool(v)
    if isinstance(v, (float, np.floating)):
      return round(float(v), 6)
    return v
  return {k: conv(v) for k, v in d.items()}


# ------------------------------------------------------------------ images


def load_image(image: ImageLike, name: str = 'image') -> Image.Image:
  """Any supported input -> an upright 8-bit RGB PIL image; InputError names the problem.

  A camera raw file is decoded by `cropjax.library.raw` with its long side at
  least RAW_MIN_SIDE where the file allows (its embedded preview when that is
  large enough, else a demosaic), turned upright by the orientation of its XMP
  (what the editor shows, see `metadata.read_photo`), else its own. Pixel
  results (sizes, boxes) then refer to that decoded picture; fractions hold
  for the photo at any size.
  """
  return _load(image, name)[0]


def _load(image: ImageLike, name: str = 'image', least_side: int | None = None
          ) -> tuple[Image.Image, tuple[int, int]]:
  """`load_image`, and the upright (width, height) its pixel results refer to. With
  `least_side`, a JPEG file is decoded at a reduced scale (draft mode: the decoder's own
  1/2, 1/4 or 1/8 DCT scaling) where its long side stays at least that many pixels; the
  size returned is still the file's full one."""
  from cropjax.annotate import _to_rgb
  where, full = name, None
  try:
    if isinstance(image, (str, os.PathLike)):
      where = os.fspath(image)
      if not os.path.exists(where):
        raise InputError(f'{where}: no such file')
      if os.path.isdir(where):
        raise InputError(f'{where}: is a folder, not an image')
      if os.path.getsize(where) == 0:
        raise InputError(f'{where}: empty file')
      if Path(where).suffix.lower() in metadata.RAW_EXTENSIONS:
        pil = _load_raw(where)
      else:
        with Image.open(where) as opened:
          if least_side and opened.format == 'JPEG':
            w, h = opened.size  # as stored: upright it is h x w when turned a quarter
            full = (h, w) if opened.getexif().get(0x0112, 1) in metadata.TRANSPOSING else (w, h)
            scale = least_side / max(w, h)
            if scale <= 0.5:  # the decoder's smallest reduction that keeps least_side
              opened.draft('RGB', (int(np.ceil(w * scale)), int(np.ceil(h * scale))))
          opened.load()
          pil = _upright(opened)
    elif isinstance(image, Image.Image):
      image.load()
      pil = _upright(image)
    elif isinstance(image, np.ndarray):
      pil = _from_array(image, where)
    else:
      raise InputError(f'{where}: expected a path, a PIL image or a numpy array, '
                       f'got {type(image).__name__}')
    if min(pil.size) < 1:
      raise InputError(f'{where}: empty image ({pil.size[0]}x{pil.size[1]})')
    return _to_rgb(pil), full or pil.size
  except InputError:
    raise
  except Image.UnidentifiedImageError:
    raise InputError(f'{where}: not an image (or a format Pillow cannot read)') from None
  except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
    raise InputError(f'{where}: cannot decode the image ({e})') from None


# A raw file is decoded with its long side at least this many pixels: what alignment uses at most.
RAW_MIN_SIDE = 2048


def _load_raw(path: str) -> Image.Image:
  from cropjax.library import raw  # rawpy is optional: imported for raw files only
  try:
    data = Path(path).read_bytes()
  except OSError as e:
    raise InputError(f'{path}: cannot read the file ({e.strerror or e})') from None
  try:
    orientation = metadata.read_photo(path, data=data).orientation
  except metadata.MetadataError:  # unusable XMP (or no rawpy, said below): the file's own orientation
    orientation = None
  try:
    return raw.read(path, RAW_MIN_SIDE, data=data, orientation=orientation).image
  except metadata.MetadataError as e:
    raise InputError(str(e)) from None


def _upright(image: Image.Image) -> Image.Image:
  """A copy turned by its EXIF orientation, keeping the ICC profile."""
  upright = ImageOps.exif_transpose(image)
  if 'icc_profile' in image.info:
    upright.info['icc_profile'] = image.info['icc_profile']
  return upright


def _from_array(a: np.ndarray, where: str) -> Image.Image:
  if a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
    raise InputError(f'{where}: an array must be HxW, HxWx3 or HxWx4, got shape {a.shape}')
  if a.size == 0:
    raise InputError(f'{where}: empty array {a.shape}')
  if a.dtype == np.uint16:
    a = (a.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
  elif np.issubdtype(a.dtype, np.floating):
    if not np.isfinite(a).all():
      raise InputError(f'{where}: the array holds NaN or infinite values')
    top = 1.0 if a.max() <= 1.0 else 255.0
    a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
  elif a.dtype != np.uint8:
    raise InputError(f'{where}: unsupported array dtype {a.dtype} (use uint8, uint16 or float)')
  return Image.fromarray(np.ascontiguousarray(a))


def resize_square(image: Image.Image, size: int) -> np.ndarray:
  """Stretches to size x size, area-averaged when shrinking: what the pair pipeline does."""
  method = Image.Resampling.BOX if max(image.size) > size else Image.Resampling.BILINEAR
  return np.asarray(image.resize((size, size), method), dtype=np.uint8)


def at_aspect(image: Image.Image, size: int) -> tuple[np.ndarray, tuple[float, float]]:
  """The image at its own aspect ratio, long side `size`, at the top left of a black size x
  size square (what the pair pipeline's `keep_aspect` makes) -> (pixels, (x, y) shares of the
  square it fills)."""
  w, h = image.size
  scale = size / max(w, h)
  new = (min(size, max(4, round(w * scale))), min(size, max(4, round(h * scale))))
  method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
  canvas = np.zeros((size, size, 3), np.uint8)
  canvas[:new[1], :new[0]] = np.asarray(image.resize(new, method), dtype=np.uint8)
  return canvas, (new[0] / size, new[1] / size)


def letterbox(image: Image.Image, size: int) -> tuple[np.ndarray, tuple[float, float, float]]:
  """The photo centred in a grey size x size square, aspect kept -> (pixels, (side, pad_x, pad_y))."""
  w, h = image.size
  side = max(w, h)
  scale = size / side
  new = (max(1, round(w * scale)), max(1, round(h * scale)))
  method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
  canvas = Image.new('RGB', (size, size), (128, 128, 128))
  canvas.paste(image.resize(new, method), ((size - new[0]) // 2, (size - new[1]) // 2))
  # The photo's frame inside the square, in the photo's own pixels.
  pad_x = (size - new[0]) / 2 / scale
  pad_y = (size - new[1]) / 2 / scale
  return np.asarray(canvas, dtype=np.uint8), (float(side), pad_x, pad_y)


# ------------------------------------------------------------------ models


class Model:
  """A trained cropjax model, loaded once; the forward pass is compiled once per batch shape."""

  def __init__(self, config, variables: dict[str, Any], source: str, step: int):
    import jax

    from cropjax import models
    from cropjax import train

    self.config = config
    self.task = config.task
    self.image_size = int(config.image_size)
    self.source = source
    self.step = step
    self.variables = variables
    module = train.build_model(config)

    @jax.jit
    def forward(variables, images, *extents):
      x = models.normalize(images.astype(jax.numpy.float32))
      return module.apply(variables, x, train=False, **({'extents': extents[0]} if extents else {}))

    self._forward = forward
    self.matching = hasattr(module, 'encode')  # a siamese pair model (heads.MatchingPairModel)
    # Pair models trained on sides kept at their aspect ratio see images that way (`at_aspect`).
    self.keep_aspect = self.task == 'pairs' and bool(
        config.data.get('pair_options', {}).get('keep_aspect', False))
    if self.matching:
      self._encode = jax.jit(lambda variables, images: module.apply(
          variables, models.normalize(images.astype(jax.numpy.float32)), method=module.encode))
      self._compare = jax.jit(lambda variables, a, b, *extents: module.apply(
          variables, a, b, *extents, method=module.compare))

  @functools.cached_property
  def verdict(self):
    """The fitted verdict saved beside the checkpoints (`cropjax.matching.verdict`)."""
    from cropjax.matching import verdict
    try:
      return verdict.load(Path(self.source) / verdict.FILE)
    except verdict.VerdictError as e:
      raise ModelError(str(e)) from None

  def __repr__(self) -> str:
    return (f'Model(task={self.task!r}, arch={self.config.model.arch!r}, '
            f'image_size={self.image_size}, step={self.step}, source={self.source!r})')

  def forward(self, images: np.ndarray, batch_size: int = 32, *,
              extents: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """uint8 [n, N, N, C] -> numpy outputs, in padded batches of a power of two; `extents`
    [n, 4]: each image's (x, y) share of its square where kept at its aspect ratio."""
    if extents is None:
      return _padded(lambda x: self._forward(self.variables, x), [images], batch_size)
    return _padded(lambda x, e: self._forward(self.variables, x, e),
                   [images, np.asarray(extents, np.float32)], batch_size)

  def encode(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """A matching pair model's features of uint8 [n, N, N, 3] images (each on its own)."""
    if not self.matching:
      raise ModelError(f'{self.source}: an early-fusion model encodes pairs, not images '
                       "(config.model.pair_head = 'match' trains one that does)")
    return _padded(lambda x: {'f': self._encode(self.variables, x)}, [images], batch_size)['f']

  def compare(self, a, b, batch_size: int = 32) -> dict[str, np.ndarray]:
    """A matching pair model's outputs for encoded images a[i] and b[i] (feature arrays, or
    `Encoded` from `cropjax.encode`, which carry each image's extent)."""
    if isinstance(a, Encoded) != isinstance(b, Encoded):
      raise ValueError('compare: give both sides as Encoded (cropjax.encode) or both as arrays')
    if isinstance(a, Encoded):
      return _padded(lambda x, y, ex, ey: self._compare(self.variables, x, y, ex, ey),
                     [a.features, b.features, a.extents, b.extents], batch_size)
    return _padded(lambda x, y: self._compare(self.variables, x, y), [a, b], batch_size)


def _padded(fn, arrays: list[np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  """fn over rows of `arrays` (one argument each, the same length) in batches padded to a power
  of two (one compilation per size) -> its outputs, concatenated."""
  import jax
  n, outs = len(arrays[0]), []
  for i in range(0, n, batch_size):
    chunks = [a[i:i + batch_size] for a in arrays]
    size = len(chunks[0])
    padded = min(1 << max(0, int(np.ceil(np.log2(size)))), max(batch_size, size))
    chunks = [np.concatenate([c, np.zeros((padded - size, *c.shape[1:]), c.dtype)])
              if padded > size else c for c in chunks]
    out = jax.device_get(fn(*chunks))
    outs.append({k: np.asarray(v)[:size] for k, v in out.items()})
  return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def _find_checkpoint(path: Path) -> tuple[Path, Path, int]:
  """(workdir, step folder, step) for a workdir, its checkpoints folder or one step folder."""
  candidates = [(path, path / 'checkpoints'), (path.parent, path),
                (path.parent.parent, path.parent)]
  for workdir, ckpts in candidates:
    if (workdir / 'config.json').is_file() and ckpts.is_dir() and ckpts.name == 'checkpoints':
      if ckpts == path.parent:  # a step folder was named
        if not path.name.isdigit():
          break
        return workdir, path, int(path.name)
      steps = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit() and p.is_dir())
      if not steps:
        raise ModelError(f'{path}: holds no checkpoint yet (training writes one every '
                         'config.checkpoint_every steps)')
      return workdir, ckpts / str(steps[-1]), steps[-1]
  if (path / 'variables').is_dir() and (path / 'meta').is_dir():
    raise ModelError(f'{path}: converted backbone weights (scripts/convert_weights.py), not a '
                     'trained cropjax model; train one with scripts/train.py and point at its workdir')
  raise ModelError(f'{path}: not a cropjax training workdir (no config.json next to a '
                   'checkpoints/ folder)')


def load_model(path: str | os.PathLike, *, task: str | None = None) -> Model:
  """Loads a trained model from a workdir (latest checkpoint) or a checkpoint step folder.

  `task` ('pairs' or 'autocrop'), when given, is checked against the model's.
  """
  import ml_collections
  import orbax.checkpoint as ocp

  path = Path(path).expanduser()
  if not path.exists():
    raise ModelError(f'{path}: no such workdir or checkpoint')
  workdir, step_dir, step = _find_checkpoint(path.resolve())
  try:
    config = ml_collections.ConfigDict(json.loads((workdir / 'config.json').read_text()))
  except (OSError, ValueError) as e:
    raise ModelError(f'{workdir / "config.json"}: unreadable ({e})') from None
  if task is not None and config.get('task') != task:
    names = {'pairs': 'a crop-pair model', 'autocrop': 'an auto-crop model'}
    raise ModelError(f'{path}: {names.get(config.get("task"), repr(config.get("task")))}, '
                     f'but {names.get(task, task)} is needed here')
  try:
    with ocp.StandardCheckpointer() as ckptr:
      restored = ckptr.restore(step_dir / 'default')
  except Exception as e:  # noqa: BLE001 -- orbax raises many kinds; report one line
    raise ModelError(f'{step_dir}: cannot read the checkpoint ({type(e).__name__}: {e})') from None
  variables = {'params': restored['params'], 'batch_stats': restored['batch_stats']}
  _check_shapes(config, variables, step_dir)
  return Model(config, variables, str(workdir), step)


def _check_shapes(config, variables, where) -> None:
  import jax

  from cropjax import models
  from cropjax import train
  shapes = jax.eval_shape(functools.partial(train.build_model(config).init, train=False),
                          jax.random.key(0), train.init_input(config))
  expected = models.variables_of(shapes)
  flat = lambda t: {'/'.join(str(getattr(k, 'key', k)) for k in p): np.shape(v)
                    for p, v in jax.tree_util.tree_flatten_with_path(t)[0]}
  want, got = flat(expected), flat(variables)
  if want != got:
    diff = sorted(set(want.items()) ^ set(got.items()))[:4]
    raise ModelError(f'{where}: the checkpoint does not fit its config '
                     f'({config.task}, {config.model.arch}): {diff}')


@functools.lru_cache(maxsize=4)
def _cached(path: str) -> Model:
  return load_model(path)


def default_model(task: str) -> Model:
  """The model named by $CROPJAX_MODEL (loaded once), else a ModelError saying what to do."""
  path = os.environ.get(ENV)
  if not path:
    how = ('python scripts/train.py --config configs/demo.py --workdir workdirs/demo'
           if task == 'pairs' else
           'python scripts/train.py --config configs/autocrop_demo.py --workdir workdirs/autocrop_demo')
    raise ModelError(f'no model given: pass model=cropjax.load_model(WORKDIR) or set {ENV}=WORKDIR '
                     f'(train one with: {how})')
  return _checked(_cached(os.path.abspath(path)), task)


def _checked(model: Model | str | os.PathLike | None, task: str) -> Model:
  if model is None:
    return default_model(task)
  if not isinstance(model, Model):
    return load_model(model, task=task)
  if model.task != task:
    names = {'pairs': 'a crop-pair model', 'autocrop': 'an auto-crop model'}
    raise ModelError(f'{model.source}: {names.get(model.task, model.task)}, but '
                     f'{names[task]} is needed here')
  return model


# ------------------------------------------------------------------ predict


def predict(image_a: ImageLike, image_b: ImageLike, *, model: Model | str | None = None,
            align: bool = True) -> PairPrediction:
  """Is one image a crop of the other? Which is the original, and where is the crop in it?

  With `align` (the default) the network's answer is checked and made exact by
  aligning the two images both ways (`cropjax.matching`); `align=False` gives
  the network's answer alone (faster, far less exact).
  """
  return predict_pairs([(image_a, image_b)], model=model, align=align)[0]


# Images are aligned with their long side at most this many pixels (boxes are
# scaled back to the full image): more costs memory and time, not accuracy.
ALIGN_MAX_SIDE = 2048


def _square(m: Model, image: Image.Image, size: int | None = None
            ) -> tuple[np.ndarray, tuple[float, float]]:
  """An image as the model sees it: stretched to N x N (or `size`), or (a model trained on
  sides kept at their aspect ratio) `at_aspect`; with its (x, y) share of the square."""
  size = size or m.image_size
  if m.keep_aspect:
    return at_aspect(image, size)
  return resize_square(image, size), (1.0, 1.0)


def _network_pairs(m: Model, loaded, batch_size: int):
  if m.matching:  # each distinct image resized and encoded once, then the pairs compared
    squares: dict[int, tuple[np.ndarray, tuple[float, float]]] = {}
    for pair in loaded:
      for side in pair:
        if id(side) not in squares:
          squares[id(side)] = _square(m, side.image)
    index = {key: k for k, key in enumerate(squares)}
    encoded = Encoded(m.encode(np.stack([p for p, _ in squares.values()]), batch_size),
                      np.array([e for _, e in squares.values()], np.float32))
    out = m.compare(encoded[[index[id(ia)] for ia, _ in loaded]],
                    encoded[[index[id(ib)] for _, ib in loaded]], batch_size)
  else:
    sides = [(_square(m, ia.image), _square(m, ib.image)) for ia, ib in loaded]
    stacked = np.stack([np.concatenate([pa, pb], axis=-1) for (pa, _), (pb, _) in sides])
    extents = np.array([[*ea, *eb] for (_, ea), (_, eb) in sides], np.float32)
    out = m.forward(stacked, batch_size, extents=extents if m.keep_aspect else None)
  results = [pair_result(out, i, ia.size, ib.size) for i, (ia, ib) in enumerate(loaded)]
  logits = out['is_pair'][:, 1] - out['is_pair'][:, 0]
  return results, logits


def _pyramid(side: _Side):
  """The side's alignment pyramid (long side at most ALIGN_MAX_SIDE) and its scale: pyramid
  pixels per pixel of the side's full size."""
  from cropjax.matching import Pyramid
  scale = min(1.0, ALIGN_MAX_SIDE / max(side.size))
  return Pyramid(np.asarray(_shrunk(side.image, ALIGN_MAX_SIDE))), scale


# The smallest side an image of a pair may have: alignment compares at least 2 x 2 pixels.
MIN_PAIR_SIDE = 2


def check_comparable(size: tuple[int, int], where: str = '') -> None:
  """InputError (naming `where`) for an image of `size` too small to be one side of a crop
  pair (`MIN_PAIR_SIDE`): there is nothing to align (a pyramid needs two pixels)."""
  if min(size) < MIN_PAIR_SIDE:
    raise InputError(f'{where + ": " if where else ""}too small to compare ({size[0]}x{size[1]} '
                     f'pixels; a crop pair needs at least {MIN_PAIR_SIDE} a side)')


@dataclasses.dataclass(eq=False)
class _Side:
  """One image of a pair: its pixels (a JPEG file's possibly decoded at a reduced scale, see
  `_load`) and the upright (width, height) that boxes and sizes in pixels refer to."""
  image: Image.Image
  size: tuple[int, int]


def _load_pairs(pairs, first: int = 0) -> list[tuple[_Side, _Side]]:
  """Each pair's images loaded; an input given more than once (the same path, or the same
  object) is loaded once and shared, so a matching model encodes it once. A JPEG file is
  decoded no larger than alignment reads it (ALIGN_MAX_SIDE): a camera's is read in a
  fraction of the time, and the network sees 64 pixels of it either way."""
  def key(image):
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else id(image)

  distinct: dict[Any, tuple[Any, str]] = {}  # key -> (input, name), in order of appearance
  for i, (a, b) in enumerate(pairs):
    distinct.setdefault(key(a), (a, f'pair {first + i} image a'))
    distinct.setdefault(key(b), (b, f'pair {first + i} image b'))

  def side(item) -> _Side:
    image, name = item
    pixels, size = _load(image, name, least_side=ALIGN_MAX_SIDE)
    check_comparable(size, os.fspath(image) if isinstance(image, (str, os.PathLike)) else name)
    return _Side(pixels, size)

  # Decoders release the GIL: the distinct inputs are read on every core. The first bad
  # input (in order) raises, as it would one after another.
  seen = dict(zip(distinct, threads.map(side, distinct.values())))
  return [(seen[key(a)], seen[key(b)]) for a, b in pairs]


def _network_and_evidence(m: Model, loaded, batch_size: int):
  """(the network's results, its pair logits, the alignment evidence, each pair's pyramid
  scales) for a chunk of pairs. The network runs on a thread of its own, and then puts its
  boxes through the first alignment stage, while the pyramids, the coarse search and the first
  stage from the search's places, which do not need its boxes, are made beside it;
  verification then goes on from both."""
  from cropjax.matching import verify
  pool = _network_thread()
  network = pool.submit(_network_pairs, m, loaded, batch_size)
  given = None
  try:
    images = {id(side): side for pair in loaded for side in pair}  # in several pairs: once
    made = dict(zip(images, threads.map(_pyramid, images.values())))
    pyramids = [(made[id(ia)][0], made[id(ib)][0]) for ia, ib in loaded]
    scales = [{'a': made[id(ia)][1], 'b': made[id(ib)][1]} for ia, ib in loaded]

    def network_starts():  # on the network's thread, after the network
      results, _ = network.result()
      starts = [{r.original: [np.asarray(r.box) * scales[i][r.original]]}
                for i, r in enumerate(results)]
      return starts, verify.align_given(pyramids, starts)
    given = pool.submit(network_starts)
    searched = verify.search_pairs(pyramids)
    placed = verify.align_places(pyramids, searched)
  finally:
    results, logits = network.result()
    if given is not None:
      starts, given_placed = given.result()
  return results, logits, verify.verify_batch(pyramids, starts, searched=searched, placed=placed,
                                              given_placed=given_placed), scales


@functools.cache
def _network_thread() -> concurrent.futures.ThreadPoolExecutor:
  return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='cropjax-network')


def evidence(pairs: Iterable[tuple[ImageLike, ImageLike]], *, model: Model | str | None = None,
             batch_size: int = 32):
  """(alignment evidence, network pair logits) for pairs: what the verdict is fitted on."""
  m = _checked(model, 'pairs')
  ev, logits = [], []
  for i, chunk in _chunks(pairs, batch_size):
    _, chunk_logits, chunk_ev, _ = _network_and_evidence(m, _load_pairs(chunk, i), batch_size)
    ev += chunk_ev
    logits.append(chunk_logits)
  return ev, np.concatenate(logits) if logits else np.zeros(0)


def _chunks(pairs: Iterable, size: int) -> Iterator[tuple[int, list]]:
  """(the first pair's number, the next `size` pairs) until `pairs` (any iterable) runs out:
  only one chunk's images are loaded at a time."""
  if size < 1:
    raise ValueError(f'batch_size must be at least 1, got {size}')
  it, first = iter(pairs), 0
  while chunk := list(itertools.islice(it, size)):
    yield first, chunk
    first += len(chunk)


def predict_pairs(pairs: Iterable[tuple[ImageLike, ImageLike]], *, model: Model | str | None = None,
                  batch_size: int = 32, align: bool = True) -> list[PairPrediction]:
  """The batched form of `predict`: one result per (a, b) pair, in order. `pairs` may be any
  iterable (a generator of file paths, say): `batch_size` pairs' images are read at a time."""
  m = _checked(model, 'pairs')
  out: list[PairPrediction] = []
  for i, chunk in _chunks(pairs, batch_size):  # a chunk's images in memory at a time
    out += _predict_chunk(m, _load_pairs(chunk, i), batch_size, align)
  return out


def _predict_chunk(m: Model, loaded, batch_size: int, align: bool) -> list[PairPrediction]:
  if not align:
    return _network_pairs(m, loaded, batch_size)[0]
  from cropjax.matching import verdict as verdict_lib
  judge = m.verdict
  network, logits, ev, scales = _network_and_evidence(m, loaded, batch_size)
  prob = judge.probability(verdict_lib.features(logits, ev))
  out = []
  for i, (e, (ia, ib)) in enumerate(zip(ev, loaded)):
    original, angle = e.original, -e.alignment.angle + 0.0
    w, h = (ia if original == 'a' else ib).size
    s = scales[i][original]
    box = tuple(float(v) / s for v in e.alignment.box)
    box = (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))
    f = (box[0] / w, box[1] / h, box[2] / w, box[3] / h)
    if whole_frame(f):
      # Copies of one picture: both align into each other at the whole frame, so the
      # evidence's side is a toss; the original is the one with more pixels (the other is an
      # export brought down; equal sizes keep the evidence's side), its whole frame the box.
      other = ib if original == 'a' else ia
      if other.size[0] * other.size[1] > w * h:
        original, angle = 'b' if original == 'a' else 'a', -angle + 0.0
        w, h = other.size
      f, box = (0.0, 0.0, 1.0, 1.0), (0.0, 0.0, float(w), float(h))
    net = network[i]
    out.append(PairPrediction(
        is_crop=bool(prob[i] > 0.5), probability=float(prob[i]), original=original,
        original_probability=(net.original_probability if net.original == original
                              else 1 - net.original_probability),
        box=box, box_fraction=f, top_left=box[:2], top_left_fraction=f[:2],
        original_size=(int(w), int(h)), angle=angle,
        alignment_score=e.alignment.score,
        converged=e.alignment.converged, network_probability=net.probability))
  return out


# A box within this share of its original's sides of every edge is the whole frame: the two
# images are copies of one picture (resized or re-encoded), not one cut from the other.
# Alignment puts a copy's box within 0.005 of every edge (development wallpapers, 69 copies
# at 0.4-1.3x and JPEG 30-95: docs/real_photos.md, "Copies of the whole picture"); the
# generator's crops and the yardstick's (but its copies) cover at most 0.9 of the area.
COPY_EDGE = 0.01


def whole_frame(box_fraction: Sequence[float]) -> bool:
  """Whether a box (fractions x0, y0, x1, y1 of its original) is the original's whole frame
  (`COPY_EDGE`): the crop is a copy of the whole picture."""
  x0, y0, x1, y1 = box_fraction
  return max(x0, y0, 1 - x1, 1 - y1) <= COPY_EDGE


def softmax(logits: np.ndarray) -> np.ndarray:
  """Probabilities from logits over the last axis, in numpy."""
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def pair_result(out: dict[str, np.ndarray], i: int, size_a: tuple[int, int],
                size_b: tuple[int, int]) -> PairPrediction:
  """Example i of the pair model's outputs, for images of these (width, height) sizes."""
  p = float(softmax(out['is_pair'][i])[1])
  p_swap = float(softmax(out['is_swapped'][i])[1])
  original = 'b' if p_swap > 0.5 else 'a'
  w, h = size_b if original == 'b' else size_a
  f = tuple(float(v) for v in out['box'][i])
  box = (f[0] * w, f[1] * h, f[2] * w, f[3] * h)
  return PairPrediction(
      is_crop=p > 0.5, probability=p, original=original,
      original_probability=p_swap if original == 'b' else 1 - p_swap,
      box=box, box_fraction=f, top_left=box[:2], top_left_fraction=f[:2],
      original_size=(int(w), int(h)))


@dataclasses.dataclass(frozen=True)
class Encoded:
  """Images encoded by a matching pair model: `features` [n, N/8, N/8, D] (unit length) and
  `extents` [n, 2] (the (x, y) share of its square each image fills). `encoded[rows]` selects."""
  features: np.ndarray
  extents: np.ndarray

  def __len__(self) -> int:
    return len(self.features)

  def __getitem__(self, rows) -> 'Encoded':
    return Encoded(self.features[rows], self.extents[rows])


def encode(images: Sequence[ImageLike], *, model: Model | str | None = None,
           batch_size: int = 32) -> Encoded:
  """A matching pair model's features of each image, to compare with many others
  (`Model.compare(a[i], b[j])`) without encoding them again."""
  m = _checked(model, 'pairs')
  sides = [_square(m, load_image(im, f'image {i}')) for i, im in enumerate(images)]
  return Encoded(m.encode(np.stack([p for p, _ in sides]), batch_size),
                 np.array([e for _, e in sides], np.float32).reshape(-1, 2))


def predict_crop(image: ImageLike, *, model: Model | str | None = None,
                 straighten: bool = True, mirror: bool = True) -> CropPrediction:
  """The crop (left, top, right, bottom, angle) the model suggests for a photo.

  The box: the network's; where the model was trained with close-ups
  (`autocrop_options.refine`), the mean of its answers on three close-ups round its
  first answer (`close_up`, `CLOSE_UP_GROWTHS`), which see the crop's edges with more
  pixels. With `mirror` (the
  default) all of that is done on the photo and on its mirror image, and the two
  answers (the mirror's mirrored back, its angle negated) are averaged: twice the
  network's time. With `straighten` (the default) the angle is settled by the photo's
  own straight lines (`cropjax.straighten.line_tilt`, looked for in its crop, on the
  photo brought down to 768 px, within `straightening_span` of the network's angle: three
  standard deviations of the network's own angle distribution, at most 10 degrees); where
  they do not stand out (or would tilt it beyond +-45 degrees), the network's angle stays.
  Where the turned crop would leave the photo, the box shrinks about its centre until it
  does not (`metadata.fit_in_frame`, as Lightroom does): a suggestion never leaves the
  frame or inverts.
  """
  return predict_crops([image], model=model, straighten=straighten, mirror=mirror)[0]


def predict_crops(images: Sequence[ImageLike], *, model: Model | str | None = None,
                  batch_size: int = 32, straighten: bool = True,
                  mirror: bool = True) -> list[CropPrediction]:
  """The batched form of `predict_crop`."""
  from cropjax import straighten as straighten_lib
  m = _checked(model, 'autocrop')
  options = m.config.data.autocrop_options
  resize = options.get('resize', 'letterbox')
  refine = resize == 'letterbox' and options.get('refine', 0.0) > 0
  inputs, frames, prepared, kept = [], [], [], []
  for i, image in enumerate(images):
    pil = load_image(image, image if isinstance(image, (str, os.PathLike)) else f'image {i}')
    if resize == 'letterbox':
      pixels, frame = letterbox(pil, m.image_size)
    else:
      pixels, frame = resize_square(pil, m.image_size), None
    inputs.append(pixels)
    frames.append((pil.size, frame))
    if straighten:  # a small grey copy, not the photo, is kept until the network has spoken
      prepared.append(straighten_lib.prepare(pil))
    if refine:  # and a copy with the detail the close-up can use
      kept.append(_shrunk(pil, CLOSE_UP_DETAIL * m.image_size))
  if not inputs:
    return []
  pixels = np.stack(inputs)
  boxes, angles, probs = _look(m, pixels, frames, kept, batch_size)
  if mirror:  # the same on the mirror images, mirrored back
    other, other_angles, other_probs = _look(m, pixels[:, :, ::-1], frames,
                                             [ImageOps.mirror(photo) for photo in kept], batch_size)
    boxes = (boxes + np.stack([1 - other[:, 2], other[:, 1], 1 - other[:, 0], other[:, 3]], -1)) / 2
    angles = (angles - other_angles) / 2
    if probs is not None:  # the bins are symmetric about 0: the mirror's, reversed, are negated
      probs = (probs + other_probs[:, ::-1]) / 2
  spans = straightening_span(probs, angles, getattr(m.config, 'max_angle', metadata.MAX_ANGLE))
  results = []
  for i, ((w, h), _) in enumerate(frames):
    f = _at_least_a_pixel(boxes[i], w, h)
    angle = float(angles[i])
    if straighten and f[0] < f[2] and f[1] < f[3] and np.isfinite(angle):
      tilt = straighten_lib.line_tilt(prepared[i], f, angle, span=float(spans[i]))
      if abs(tilt.angle) <= metadata.MAX_ANGLE:  # beyond it no crop takes that angle
        angle = tilt.angle
    if f[0] < f[2] and f[1] < f[3] and np.isfinite(angle):  # the turned crop stays in the photo
      f = metadata.fit_in_frame(metadata.Crop(*f, angle=angle), w, h).as_tuple()[:4]
    results.append(CropPrediction(left=f[0] * w, top=f[1] * h, right=f[2] * w, bottom=f[3] * h,
                                  fraction=f, angle=angle, size=(w, h)))
  return results


def _at_least_a_pixel(box: np.ndarray, w: int, h: int) -> tuple[float, float, float, float]:
  """The box (fractions) with each side at least one pixel of the photo, about its own centre
  and inside the frame: the edges are ordered but may meet (on a photo far from any shape the
  network was shown, such as a panorama a hundred times wider than tall)."""
  f = [float(v) for v in box]
  for lo, size in ((0, w), (1, h)):
    least = min(1.0, 1.0 / size)
    if f[lo + 2] - f[lo] < least:
      start = float(np.clip((f[lo] + f[lo + 2]) / 2 - least / 2, 0.0, 1.0 - least))
      f[lo], f[lo + 2] = start, start + least
  return tuple(f)


# Straightening looks for lines within this many standard deviations of the network's own
# angle distribution (`straightening_span`). Three, the usual bound, not tuned: on the
# development library (docs/autocrop.md) every photo that the lines straightened right was
# within two of them, and the lines that turned a straight photo 4-9 degrees were 4-10 away.
STRAIGHTEN_SPREADS = 3.0
STRAIGHTEN_MIN_SPAN = 1.0  # degrees: however sure the network is


def straightening_span(probs: np.ndarray | None, angles: np.ndarray,
                       max_angle: float) -> np.ndarray:
  """Degrees either side of each network angle that straightening searches: the standard
  deviation of the angle bins' centres about the angle, weighted by the network's
  probabilities `probs` [n, K] (bins evenly over +-max_angle), times `STRAIGHTEN_SPREADS`,
  within [`STRAIGHTEN_MIN_SPAN`, `straighten.SPAN`]; `straighten.SPAN` for a model without
  angle bins (`probs` None)."""
  from cropjax import straighten as straighten_lib
  angles = np.asarray(angles, np.float64).reshape(-1)
  if probs is None:
    return np.full(len(angles), straighten_lib.SPAN)
  probs = np.asarray(probs, np.float64)
  centres = np.linspace(-max_angle, max_angle, probs.shape[1])
  spread = np.sqrt((probs * (centres[None] - angles[:, None]) ** 2).sum(1) / probs.sum(1))
  return np.clip(STRAIGHTEN_SPREADS * spread, STRAIGHTEN_MIN_SPAN, straighten_lib.SPAN)


def _look(m: Model, pixels: np.ndarray, frames: list, close_ups: list[Image.Image],
          batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """The network's boxes (fractions of each photo, clipped to it), angles and angle bins'
  probabilities (None without bins) for the square inputs `pixels`; with `close_ups` (copies
  of the photos), the boxes of its second look: the mean of its answers on close-ups round
  each first box at each of `CLOSE_UP_GROWTHS`."""
  out = m.forward(pixels, batch_size)
  boxes = []
  for i, ((w, h), frame) in enumerate(frames):
    x0, y0, x1, y1 = (float(v) for v in out['crop'][i])
    if frame is not None:  # fractions of the square -> fractions of the photo
      side, pad_x, pad_y = frame
      x0, x1 = [(v * side - pad_x) / w for v in (x0, x1)]
      y0, y1 = [(v * side - pad_y) / h for v in (y0, y1)]
    boxes.append(tuple(float(np.clip(v, 0.0, 1.0)) for v in (x0, y0, x1, y1)))
  if close_ups:  # the second look: the same network on close-ups round each first answer
    looks = []
    for growth in CLOSE_UP_GROWTHS:
      close = [close_up(photo, box, m.image_size, growth)
               for photo, box in zip(close_ups, boxes)]
      again = m.forward(np.stack([c for c, _ in close]), batch_size)['crop']
      closer = [_from_close_up(np.asarray(again[i], np.float64), window, photo.size)
                for i, ((_, window), photo) in enumerate(zip(close, close_ups))]
      # A close-up answer that lies wholly in the grey beyond the photo is empty once
      # clipped: the first answer stands there.
      looks.append([c if c[2] - c[0] >= 1e-3 and c[3] - c[1] >= 1e-3 else b
                    for b, c in zip(boxes, closer)])
    boxes = np.mean(np.array(looks, np.float64), 0)  # a mean of boxes in the frame: in it
  probs = softmax(np.asarray(out['angle_logits'], np.float64)) if 'angle_logits' in out else None
  return np.array(boxes, np.float64).reshape(-1, 4), np.asarray(out['angle'], np.float64), probs


CLOSE_UP_DETAIL = 6  # the close-up pass reads a copy of the photo of at most this many N a side
# The close-ups' sides over the first answer's longer side: the middle of the range training
# sees (`cropjax.data.autocrop.REFINE_GROWTH`, 1.1-1.6) and 0.15 either side of it; their
# answers are averaged (chosen on the demo library's training photos: IoU 0.927 -> 0.932
# against the middle alone).
CLOSE_UP_GROWTHS = (1.2, 1.35, 1.5)


def close_up(photo: Image.Image, box: Sequence[float], size: int,
             growth: float | None = None) -> tuple[np.ndarray, tuple[int, int, int]]:
  """The square window round `box` (fractions of `photo`) whose side is `growth` times the
  box's longer side (default: the middle of the close-ups training sees,
  `cropjax.data.autocrop.REFINE_GROWTH`), grey beyond the photo, at size x size ->
  (pixels, (x0, y0, side) of the window in the photo's pixels)."""
  from cropjax.data import autocrop
  growth = sum(autocrop.REFINE_GROWTH) / 2 if growth is None else growth
  w, h = photo.size
  side = max(growth * max((box[2] - box[0]) * w, (box[3] - box[1]) * h), 8.0)
  x0 = round((box[0] + box[2]) / 2 * w - side / 2)
  y0 = round((box[1] + box[3]) / 2 * h - side / 2)
  side = max(1, round(side))
  canvas = Image.new('RGB', (side, side), (128, 128, 128))
  inside = (max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h))
  if inside[0] < inside[2] and inside[1] < inside[3]:
    canvas.paste(photo.convert('RGB').crop(inside), (inside[0] - x0, inside[1] - y0))
  method = Image.Resampling.BOX if side > size else Image.Resampling.BILINEAR
  return np.asarray(canvas.resize((size, size), method), np.uint8), (x0, y0, side)


def _from_close_up(box: np.ndarray, window: tuple[int, int, int],
                   size: tuple[int, int]) -> tuple[float, ...]:
  """A box in fractions of a close-up -> fractions of the photo (clipped to it)."""
  x0, y0, side = window
  w, h = size
  f = ((x0 + box[0] * side) / w, (y0 + box[1] * side) / h,
       (x0 + box[2] * side) / w, (y0 + box[3] * side) / h)
  return tuple(float(np.clip(v, 0.0, 1.0)) for v in f)


def _shrunk(photo: Image.Image, side: int) -> Image.Image:
  """`photo`, its long side brought down (area averaged) to at most `side` pixels."""
  from cropjax.annotate import target_size
  if max(photo.size) <= side:
    return photo
  return photo.resize(target_size(photo.size, side), Image.Resampling.BOX)
