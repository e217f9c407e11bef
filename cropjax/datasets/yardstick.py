"""The real-photo yardstick: photographs no part of cropjax trains on, and pairs made from them.

    photos = yardstick.photos()                     # [(name, upright RGB PIL image)]
    pairs = yardstick.user_pairs(photos, seed=0)    # crops and negatives, made as people make them

The photos are 40 photographs (landscapes, plants and insects close up, water,
architecture, animals, still lifes, night skies) that ship as desktop
wallpapers in four Debian packages: `mate-backgrounds` (its `nature` set),
`lomiri-wallpapers-16.04` and `-20.04` (photographers' contributions, named by
author) and `plasma-workspace-wallpapers` (the photographic ones). Nothing is
downloaded at run time; install them with

    apt-get install mate-backgrounds lomiri-wallpapers plasma-workspace-wallpapers

`PHOTOS` lists each file with its SHA-256 and 64-bit dHash: a file that differs
from its entry is refused (another package version would be another
yardstick), and tests/test_yardstick.py checks that no photo is near any image
of cropjax's training sources (the demo library: procedural images and
scikit-image's photos). Photos are read with their long side capped at
`MAX_SIDE`, as a large original is usually handled.

`user_pairs` makes pairs the way people make crops, each side re-encoded as
JPEG at quality 30-95: `positive` (a window of 15-85 % of the area, aspect
0.6-1.7, resized to 0.5-1x), `straightened` (such a window turned by 0.5-8
degrees either way about its centre, shrunk where it must be to stay inside
the frame, as an editor's straightened crop is), `edited` (such a window toned or shaded by
one of `cropjax.datasets.edits`' edits, drawn uniformly: black and white, contrast,
exposure, saturation, white balance, a vignette, a graduated filter, an export's mix),
`copy` (the whole photo, resized to 0.5-1x: an export of it, not cut; its original is the
larger image), and the negatives `other_image` (a crop of
another photo), `outside` (the original is a view of the photo and the
window runs 25-45 % of its size over the view's edge), `mirrored` (a crop,
flipped left to right) and `near_duplicate` (the same scene taken twice: a
view of 45-75 % of the area and a second shot of it whose corners move by
8-12 % of its size, turned by up to 2 degrees, at another exposure). Half of
the pairs put the crop (the second shot) first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from typing import Sequence

import numpy as np
from PIL import Image

from cropjax.datasets import edits as edits_module

MAX_SIDE = 1600
INSTALL = 'apt-get install mate-backgrounds lomiri-wallpapers plasma-workspace-wallpapers'
# (New kinds go last: a pair's draws are keyed by its kind's index here.)
KINDS = ('positive', 'other_image', 'outside', 'mirrored', 'near_duplicate', 'straightened',
         'edited', 'copy')
PAIR_KINDS = ('positive', 'straightened', 'edited', 'copy')  # the rest are negatives
STRAIGHTENED = (0.5, 8.0)  # degrees a straightened crop is turned, either way


class YardstickError(RuntimeError):
  """The yardstick's photos are missing or differ from the manifest."""


@dataclasses.dataclass(frozen=True)
class Photo:
  name: str
  package: str
  path: str
  sha256: str
  dhash: int


PHOTOS = (
    Photo('Bridge_by_Sander_Klootwijk', 'lomiri-wallpapers-16.04', '/usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg',
          'bd86b081f9975e2b83527f71e49b9271a8ab40885428395969d9f7d834d7f050', 0x2f0f070707476218),
    Photo('Dragonfly_by_Bolly', 'lomiri-wallpapers-16.04', '/usr/share/backgrounds/Dragonfly_by_Bolly.jpg',
          'af5af17841009732def24b09bb1e669a1b09d2b4bdeee7812c371101c30d2bb3', 0x080c9a125577b70c),
    Photo('Infinite-Sea_by_Aury88', 'lomiri-wallpapers-20.04', '/usr/share/backgrounds/Infinite-Sea_by_Aury88.jpg',
          '9319dfb3651833881339a8d9b769b99efaf474969e6cd58e427eb2524aca8e8a', 0x6fe7f3f3fbfbfbfb),
    Photo('Kleiber_by_Lukas_Baubkus', 'lomiri-wallpapers-20.04', '/usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg',
          '6572410c09f4492c74ccadde133565a14c0161617d5917d4c820c66d65a44ba7', 0xbcbcfc9cd8b8b0f8),
    Photo('Picture_0B_by_freespace', 'lomiri-wallpapers-16.04', '/usr/share/backgrounds/Picture_0B_by_freespace.jpg',
          'c8c0ab18e48d9e0419fe42881112137f3afafc27dfddc29ec3a6d54c56d225ad', 0x0e1f29311919c3a3),
    Photo('Picture_1A_by_freespace', 'lomiri-wallpapers-16.04', '/usr/share/backgrounds/Picture_1A_by_freespace.jpg',
          '89e86af38d04daaef975665dc2127e9fa76f0fd68f4eea105a2d0ae3390b010b', 0x60e0eafa96c4c4cc),
    Photo('Wine_by_Jakkub_Mede', 'lomiri-wallpapers-16.04', '/usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg',
          'd2e96e6d4da40dd804b3d0ce295e94de04a2d7d9b6785d42cd9d92ba58bced74', 0xcdcccaca333a833b),
    Photo('aitzgorri_by_Aitzol_Berasategi', 'lomiri-wallpapers-16.04', '/usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg',
          '66268e7b48f8854d36a28765fac6e23ec1aee251daa6da1f64715f201020ad36', 0xb00fa6f2faf0c3ec),
    Photo('analogpattern_by_Peter_Nerlich', 'lomiri-wallpapers-16.04', '/usr/share/backgrounds/analogpattern_by_Peter_Nerlich.jpg',
          '15372488a192b2be2eafc67bd3ed31cbfca19abe3929e925607fcbc9cb4d4202', 0x80c4c4c484040e0a),
    Photo('free_by_Peter_Nerlich', 'lomiri-wallpapers-16.04', '/usr/share/backgrounds/free_by_Peter_Nerlich.jpg',
          '85a5453c2fed514c75973016f3d862aca62eb7ca087618822469274ac1092373', 0x109898f838300800),
    Photo('friends_by_Aitzol_Berasategi', 'lomiri-wallpapers-16.04', '/usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg',
          'cc40e313c74e421edffe3403def413c16878ce14661cce7ec5915baeab35538d', 0x3838183a2f4da747),
    Photo('greentock_by_Peter_Nerlich', 'lomiri-wallpapers-16.04', '/usr/share/backgrounds/greentock_by_Peter_Nerlich.jpg',
          'e7b20e2db9dcd6e2b278ca55873c2110b35d89cd38b04d0b18728726888e6889', 0x00082426733996d6),
    Photo('life_by_Aitzol_Berasategi', 'lomiri-wallpapers-16.04', '/usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg',
          '4c119350ead80201fe256850c3d316309ddfb4bdf10b235ce982dcde0c667c05', 0x98994c2cc8e66464),
    Photo('picosdeeuropa_by_Aitzol_Berasategi', 'lomiri-wallpapers-16.04', '/usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg',
          '414d0072b2f6f2c555deafeaef6e45c4fed6fa9ad26eba6560ca8803959cf97a', 0x8083c5e69e7eccc6),
    Photo('seeding_by_Clements_Engelhardt', 'lomiri-wallpapers-16.04', '/usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg',
          'a5634d1ab5e41a3568e92d4a894a500c92b891f9ff734e50bd224d6e185a605f', 0xf1d0a3e9c9d2c643),
    Photo('sunset_by_Aitzol_Berasategi', 'lomiri-wallpapers-16.04', '/usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg',
          '474dab6a4b9f94dc76c29dfe30e9f5db4af0fd2e33fe5d695f8152b371efca18', 0xf0f0f0f07171e484),
    Photo('Aqua', 'mate-backgrounds', '/usr/share/backgrounds/mate/nature/Aqua.jpg',
          '5c30118205982da441bf7e6a1ada636a8a0be879408140b3148280c665ed6bce', 0xfffffaf2e2e6f2f8),
    Photo('Blinds', 'mate-backgrounds', '/usr/share/backgrounds/mate/nature/Blinds.jpg',
          'f7aac0dcc2e06d0491643e84df3da1d9db7c4610f58806a880d56e074799f600', 0x4a92e2ead8fcf8dc),
    Photo('Dune', 'mate-backgrounds', '/usr/share/backgrounds/mate/nature/Dune.jpg',
          '8a67c2cb0be8c46b70c237311a4fa4d2b4ac7d39568135384787801fa5cc9a91', 0xf0e8f0f0f0a0e0f0),
    Photo('FreshFlower', 'mate-backgrounds', '/usr/share/backgrounds/mate/nature/FreshFlower.jpg',
          '972b0a0c4e5e3fa93f4f244fc84bc64b121a5eac3aaa5856f1308c1f38a02f8e', 0x949ccde5f173f3f6),
    Photo('Garden', 'mate-backgrounds', '/usr/share/backgrounds/mate/nature/Garden.jpg',
          'd3095ee09d425ef23d27155412136cf14fc3c9af76ca58b452f55e23da324e78', 0x7871e6c4ccc28383),
    Photo('GreenMeadow', 'mate-backgrounds', '/usr/share/backgrounds/mate/nature/GreenMeadow.jpg',
          '8fa0de0aa4089f7319c9fb7a6d006d4cab6023e8c8853731557cff53567b4832', 0x6672aaca73eaab8b),
    Photo('LadyBird', 'mate-backgrounds', '/usr/share/backgrounds/mate/nature/LadyBird.jpg',
          'e35a9a4126ef969c90b29c038058c5a575a20eadd84106a37bf1fa9931e7b61d', 0x93b3a3a664eaeece),
    Photo('RainDrops', 'mate-backgrounds', '/usr/share/backgrounds/mate/nature/RainDrops.jpg',
          '3e4ea9671c28c90a86cf67b3db9daf18c4741587c596333a7529ca589aaa0c16', 0xd2c682c0c0c2c4e4),
    Photo('Storm', 'mate-backgrounds', '/usr/share/backgrounds/mate/nature/Storm.jpg',
          '77ca53077831d3237f73393a91fc879158abc046d852941c26e90de336356957', 0xfeffffffffe0f8f8),
    Photo('TwoWings', 'mate-backgrounds', '/usr/share/backgrounds/mate/nature/TwoWings.jpg',
          '665e5abf8a5399070a91a9a8e455fe071e5b61697ff78fdeda4e9843ef545aeb', 0xe8e0e0d0b6b26468),
    Photo('Wood', 'mate-backgrounds', '/usr/share/backgrounds/mate/nature/Wood.jpg',
          '19c78500ac00a622e19907ab9cc7d06d46fe08c4a6142759a84195696150ec07', 0xe0fcdcc6b1f4e4f0),
    Photo('YellowFlower', 'mate-backgrounds', '/usr/share/backgrounds/mate/nature/YellowFlower.jpg',
          '254da96256acb7add685679775a04d1e4a5bc8cd13e5a5a3d61351ce198a5306', 0x3d7d6b7bce6c7168),
    Photo('BytheWater', 'plasma-workspace-wallpapers', '/usr/share/wallpapers/BytheWater/contents/images/1920x1080.jpg',
          'c272434ef39f2abf1ed48a15a8910088020f3165329a5092f3940ec9464bc05f', 0x88b4dcfcf0b8ecb8),
    Photo('ColdRipple', 'plasma-workspace-wallpapers', '/usr/share/wallpapers/ColdRipple/contents/images/1920x1080.jpg',
          '05bef6722fc0ed81292cceb3ed026c38d17e510f3c84be7d68610c2b1a723c3f', 0xe0e0f0e8333361e0),
    Photo('ColorfulCups', 'plasma-workspace-wallpapers', '/usr/share/wallpapers/ColorfulCups/contents/images/2560x1600.jpg',
          '6e0f3a72feb5a4a9fec191b77e34874c3c69e2d93040deb3f07773e73385023d', 0x4ab5da6ca4b35bec),
    Photo('DarkestHour', 'plasma-workspace-wallpapers', '/usr/share/wallpapers/DarkestHour/contents/images/1920x1080.jpg',
          '8e3703fae3a3c217b1fc2b399b706cd3720584268d071ba153e4809daa55f1ce', 0xf0f0f0e0e0f0e0e0),
    Photo('EveningGlow', 'plasma-workspace-wallpapers', '/usr/share/wallpapers/EveningGlow/contents/images/1920x1080.jpg',
          '586682dcb362b9f620068f10138f87d0d3649939aef238adc5807cb951976a7a', 0xe074f4f0a08c70f0),
    Photo('FallenLeaf', 'plasma-workspace-wallpapers', '/usr/share/wallpapers/FallenLeaf/contents/images/1920x1080.jpg',
          '95603a6560c7e8d50e0e03b3f4adbe39c5258c72528e74e4ecaea1daf4e499de', 0x9dc99cb959e4ec6e),
    Photo('Grey', 'plasma-workspace-wallpapers', '/usr/share/wallpapers/Grey/contents/images/1920x1080.jpg',
          '88c31d8944b7e6935d1b9a296654c692f0772cb512491713eb30a972a604c0ed', 0x3f1f07a153f8affc),
    Photo('Kite', 'plasma-workspace-wallpapers', '/usr/share/wallpapers/Kite/contents/images/1920x1080.jpg',
          'bdca288ce296a981e80659c021cf707caddc702c0c8d4247e60bd618476d47f8', 0x660e0d0c1c045831),
    Photo('MilkyWay', 'plasma-workspace-wallpapers', '/usr/share/wallpapers/MilkyWay/contents/images/1080x1920.png',
          'bccfdb78f772cf60f986275570bc52e6750186055b208c56dbbc7329698b0b14', 0x0d182452d0d860e0),
    Photo('OneStandsOut', 'plasma-workspace-wallpapers', '/usr/share/wallpapers/OneStandsOut/contents/images/1920x1080.jpg',
          'cb507baf1dafdcae362264f3aba9483ed4be5f6c9fdd770f0ec0920c6d9e80fd', 0x1caed5c9b4cfad16),
    Photo('Path', 'plasma-workspace-wallpapers', '/usr/share/wallpapers/Path/contents/images/1920x1080.jpg',
          '7477457d7f17b736259f1b021864778ad4ba802cf3214e6728181ff29126bba8', 0xd191915940c9ccc5),
    Photo('summer_1am', 'plasma-workspace-wallpapers', '/usr/share/wallpapers/summer_1am/contents/images/1920x1080.jpg',
          'c868b50789591dd42910153c768053f1ba0a98cb36bbfc2b7a96a1045d0477f8', 0xfefefcfcf8f8f8fe),
)

@dataclasses.dataclass(frozen=True)
class Pair:
  """Two images and the truth about them. The images are kept as the JPEG files they were
  saved as (`a_jpeg`, `b_jpeg`) and decoded each time `a` or `b` is read: hundreds of pairs
  of camera-size photos, decoded all at once, would take gigabytes."""
  name: str
  kind: str
  a_jpeg: bytes
  b_jpeg: bytes
  is_pair: bool
  original: str                            # 'a' or 'b' (for negatives: the wider image)
  box: tuple[float, float, float, float]   # the window in pixels of the original (unturned)
  original_size: tuple[int, int]
  angle: float = 0.0                       # degrees the window is turned (Lightroom's sign)
  edit: str = ''                           # the editor's edit of an `edited` crop

  @property
  def a(self) -> Image.Image:
    return _decoded(self.a_jpeg)

  @property
  def b(self) -> Image.Image:
    return _decoded(self.b_jpeg)


class Decoded:
  """Each pair's (a, b) decoded as it is read, any number of times: a sequence of pairs for
  `cropjax.predict_pairs` and the baselines that holds one chunk's images at a time."""

  def __init__(self, pairs: Sequence[Pair]):
    self.pairs = pairs

  def __len__(self) -> int:
    return len(self.pairs)

  def __iter__(self):
    return ((p.a, p.b) for p in self.pairs)


def photos(max_side: int = MAX_SIDE, *, minimum: int = 30) -> list[tuple[str, Image.Image]]:
  """The yardstick's photos that are installed, checked against `PHOTOS`, upright RGB.

  Raises YardstickError when fewer than `minimum` are installed, or when one
  differs from its manifest entry.
  """
  out = []
  for p in PHOTOS:
    if not os.path.isfile(p.path):
      continue
    with open(p.path, 'rb') as f:
      data = f.read()
    if hashlib.sha256(data).hexdigest() != p.sha256:
      raise YardstickError(f'{p.path}: differs from the yardstick manifest (another version of '
                           f'{p.package}?); the yardstick is defined by the files listed in '
                           'cropjax/datasets/yardstick.py')
    out.append((p.name, read_photo(io.BytesIO(data), max_side, name=p.path)))
  if len(out) < minimum:
    raise YardstickError(f'only {len(out)} of the yardstick\'s {len(PHOTOS)} photos are installed '
                         f'({minimum} needed); install them with: {INSTALL}')
  return out


# Your own photos (`own_photos`) taken at most this many unless told otherwise: as many as the
# yardstick has, 360 pairs (`scripts/eval.py --data real`: about 3 GB of memory at the
# yardstick's sizes, and two minutes on 2 cores with SIFT beside cropjax).
OWN_PHOTOS = 40
# Two of your own photos whose 64-bit dHashes are this close are one picture (the distance the
# demo library's splits and the yardstick's check use): the later one is left out.
NEAR_COPY = 6


def own_photos(roots: Sequence[str | os.PathLike], count: int | None = OWN_PHOTOS, *,
               max_side: int = MAX_SIDE
               ) -> tuple[list[tuple[str, Image.Image]], list[tuple[str, str]]]:
  """(photos, skipped files as (path, why)): your own photographs to make the yardstick's pairs
  from (`scripts/eval.py --data real --photo-dir`), read as the yardstick reads its own.

  The image files under `roots` (folders searched recursively, as `cropjax-find` lists a
  library), `count` of them spread evenly over their sorted paths (None: all), each named by
  its path. They should be distinct pictures: a copy of another among them (within
  `NEAR_COPY` dHash bits: re-encoded, resized, a burst's twin) is skipped and listed with the
  photo it repeats; a crop of another would be counted as `other_image`. Raises YardstickError
  where fewer than two can be used (`other_image` pairs another photo with each)."""
  from cropjax.datasets import splits
  from cropjax.search import descriptors
  from cropjax.search import index
  try:
    paths = index.library_files(roots)
  except FileNotFoundError as e:
    raise YardstickError(str(e)) from None
  if count is not None and len(paths) > count:
    paths = [paths[k] for k in np.linspace(0, len(paths) - 1, count).round().astype(int)]
  read, skipped = descriptors.read_photos(paths, max_side)
  photos = [(str(p), _capped(r[0], max_side)) for p, r in zip(paths, read) if r is not None]
  group = splits.groups([splits.Item(name, splits.dhash(image)) for name, image in photos],
                        NEAR_COPY)
  for k in [k for k, g in enumerate(group) if g != k]:
    skipped.append((photos[k][0], f'a copy of {photos[group[k]][0]} (its dHash within '
                                  f'{NEAR_COPY} bits), not another picture'))
  photos = [p for k, p in enumerate(photos) if group[k] == k]
  if len(photos) < 2:
    where = ', '.join(map(str, roots))
    raise YardstickError(f'{where}: {len(photos)} distinct photo{"" if len(photos) == 1 else "s"} '
                         f'could be read ({len(skipped)} skipped); the pairs need at least two')
  return photos, skipped


def _capped(image: Image.Image, max_side: int) -> Image.Image:
  """The image with its long side brought down to `max_side` (Lanczos) where longer."""
  if max(image.size) > max_side:
    s = max_side / max(image.size)
    image = image.resize((round(image.width * s), round(image.height * s)),
                         Image.Resampling.LANCZOS)
  return image


def read_photo(file, max_side: int = MAX_SIDE, *, name: str | None = None) -> Image.Image:
  """A photo (a path or a file object) as the yardstick reads its own: upright RGB (EXIF
  orientation), JPEGs decoded at a reduced size where enough, the long side capped at
  `max_side`."""
  from cropjax.inference import load_image
  with Image.open(file) as im:
    im.draft('RGB', (max_side, max_side))
    image = load_image(im, name or str(file))
  return _capped(image, max_side)


def _jpeg(image: Image.Image, quality: int) -> bytes:
  buf = io.BytesIO()
  image.save(buf, 'JPEG', quality=int(quality))
  return buf.getvalue()


def _decoded(data: bytes) -> Image.Image:
  with Image.open(io.BytesIO(data)) as im:
    im.load()
    return im.convert('RGB')


def _window(rng: np.random.Generator, size: tuple[int, int], area: tuple[float, float],
            aspect: tuple[float, float] = (0.6, 1.7)) -> np.ndarray:
  """A random window (x0, y0, x1, y1) of the frame with an area share and aspect in range."""
  w, h = size
  a = rng.uniform(*area)
  r = np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1])))
  ww, wh = min(np.sqrt(a * w * h * r), w), min(np.sqrt(a * w * h / r), h)
  x0, y0 = rng.uniform(0, w - ww), rng.uniform(0, h - wh)
  return np.array([x0, y0, x0 + ww, y0 + wh])


def _cut(image: Image.Image, box: np.ndarray, scale: float) -> Image.Image:
  """The window `box` (float pixels) resampled to `scale` times its size."""
  out = (max(8, round((box[2] - box[0]) * scale)), max(8, round((box[3] - box[1]) * scale)))
  return image.resize(out, Image.Resampling.LANCZOS, box=tuple(float(v) for v in box))


def _straightened(rng: np.random.Generator, image: Image.Image, scale: float
                  ) -> tuple[Image.Image, np.ndarray, float]:
  """A straightened crop: a window turned about its centre by `STRAIGHTENED` degrees either
  way (Lightroom's sign), shrunk about its centre as far as it must be to stay inside the
  frame, resampled to `scale` times its size -> (the crop, its unturned box, the angle)."""
  angle = float(rng.uniform(*STRAIGHTENED) * rng.choice([-1.0, 1.0]))
  crop, box = straightened_crop(image, _window(rng, image.size, (0.15, 0.85)), angle, scale)
  return crop, box, angle


def straightened_crop(image: Image.Image, window, angle: float, scale: float = 1.0
                      ) -> tuple[Image.Image, np.ndarray]:
  """The window (x0, y0, x1, y1 pixels) turned about its centre by `angle` degrees (Lightroom's
  sign), shrunk about its centre as far as it must be to stay inside the frame, exported
  upright at `scale` times its size -> (the crop, its unturned box in pixels)."""
  from cropjax import metadata
  w, h = image.size
  box = np.asarray(window, np.float64) / np.array([w, h, w, h])
  crop = metadata.fit_in_frame(metadata.Crop(*map(float, box), angle=angle), w, h)
  box = np.array([crop.left * w, crop.top * h, crop.right * w, crop.bottom * h])
  return turned_window(image, crop, scale), box


def turned_window(image: Image.Image, crop, scale: float = 1.0) -> Image.Image:
  """The pixels of a turned crop (`cropjax.metadata.Crop`: its unturned rectangle as fractions
  and its angle, Lightroom's sign) of `image`, at `scale` times the rectangle's size in pixels,
  upright: what an editor exports for a straightened crop."""
  import cv2

  from cropjax import metadata
  w, h = image.size
  (tl, tr, _, bl) = np.array(metadata.corners(crop, w, h))
  ow = max(8, round((crop.right - crop.left) * w * scale))
  oh = max(8, round((crop.bottom - crop.top) * h * scale))
  # output pixel (j, i) centre -> tl + (j + 0.5) / ow (tr - tl) + (i + 0.5) / oh (bl - tl)
  lin = np.stack([(tr - tl) / ow, (bl - tl) / oh], 1)
  src = np.asarray(image, np.float32)
  shrink = 1.0 / scale
  if shrink > 1.5:  # a shrinking warp reads an antialiased copy
    src = cv2.resize(src, (round(w / shrink), round(h / shrink)), interpolation=cv2.INTER_AREA)
    lin, tl = lin / shrink, tl / shrink
  m = np.concatenate([lin, (tl + lin @ [0.5, 0.5] - 0.5)[:, None]], 1)
  out = cv2.warpAffine(src, m, (ow, oh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REFLECT)
  return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def _second_shot(rng: np.random.Generator, image: Image.Image, view: np.ndarray,
                 scale: float) -> Image.Image:
  """The same view taken again: corners moved 8-12 % of its size, turned up to 2 degrees,
  another exposure."""
  import cv2
  x0, y0, x1, y1 = view
  w, h = x1 - x0, y1 - y0
  corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
  t = np.deg2rad(rng.uniform(-2, 2))
  c = corners.mean(0)
  rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
  corners = (corners - c) @ rot.T + c
  direction = rng.uniform(0, 2 * np.pi, 4)
  length = rng.uniform(0.08, 0.12, 4)
  corners += np.stack([np.cos(direction) * w, np.sin(direction) * h], -1) * length[:, None]
  corners[:, 0] = np.clip(corners[:, 0], 0, image.width)
  corners[:, 1] = np.clip(corners[:, 1], 0, image.height)
  ow, oh = max(8, round(w * scale)), max(8, round(h * scale))
  target = np.array([[0, 0], [ow, 0], [ow, oh], [0, oh]], np.float64)
  hmat = cv2.getPerspectiveTransform(target.astype(np.float32), corners.astype(np.float32))
  src = np.asarray(image, np.float32)
  # A shrinking warp reads an antialiased copy first.
  shrink = max(1.0, min(w / ow, h / oh))
  if shrink > 1.5:
    small = cv2.resize(src, (round(image.width / shrink), round(image.height / shrink)),
                       interpolation=cv2.INTER_AREA)
    hmat = np.diag([1 / shrink, 1 / shrink, 1.0]) @ hmat
    src = small
  out = cv2.warpPerspective(src, hmat, (ow, oh), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT)
  gain, gamma = np.exp(rng.uniform(np.log(0.8), np.log(1.25), 2))
  out = 255.0 * np.clip(out / 255.0 * gain, 0, 1) ** gamma
  return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def user_pairs(photos: Sequence[tuple[str, Image.Image]], seed: int = 0,
               per_kind: dict[str, int] | None = None,
               edits: Sequence[str] = edits_module.KINDS) -> list[Pair]:
  """Pairs made from each photo the way people make crops (see the module docstring).

  `per_kind`: how many pairs of each kind per photo (default 2 positives, one straightened,
  one edited, one copy, one of each negative). `edits`: what an `edited` crop's edit is drawn
  from.
  """
  per_kind = per_kind or {'positive': 2, 'straightened': 1, 'edited': 1, 'copy': 1,
                          'other_image': 1, 'outside': 1, 'mirrored': 1, 'near_duplicate': 1}
  edits = tuple(edits)
  unknown = set(per_kind) - set(KINDS)
  if unknown:
    raise ValueError(f'unknown kinds {sorted(unknown)}; choose from {KINDS}')
  if len(photos) < 2 and per_kind.get('other_image'):
    raise ValueError('other_image pairs need at least two photos')
  out = []
  for i, (name, photo) in enumerate(photos):
    for kind in KINDS:
      for k in range(per_kind.get(kind, 0)):
        rng = np.random.default_rng([seed, i, KINDS.index(kind), k])
        q1, q2 = rng.integers(30, 96, 2)
        scale = rng.uniform(0.5, 1.0)
        original, is_pair, angle, edit = photo, kind in PAIR_KINDS, 0.0, ''
        if kind == 'straightened':
          second, box, angle = _straightened(rng, photo, scale)
        elif kind == 'near_duplicate':
          view = _window(rng, photo.size, (0.45, 0.75))
          original = _cut(photo, view, 1.0)
          second = _second_shot(rng, photo, view, scale)
          box = np.array([0, 0, original.width, original.height], np.float64)
        elif kind == 'outside':
          w, h = photo.size
          vw, vh = w * rng.uniform(0.6, 0.8), h * rng.uniform(0.6, 0.8)
          view = np.array([rng.uniform(0, w - vw), rng.uniform(0, h - vh)])
          view = np.concatenate([view, view + [vw, vh]])
          original = _cut(photo, view, 1.0)
          win = _window(rng, (vw, vh), (0.1, 0.25))
          axis = int(rng.integers(0, 2))
          extent = win[2 + axis] - win[axis]
          over = rng.uniform(0.25, 0.45) * extent
          before = view[axis]  # room beyond the view's edge, in the photo
          after = (w, h)[axis] - view[2 + axis]
          span = (vw, vh)[axis]
          start = -over if before >= after else span - extent + over
          start = np.clip(start, -before, span - extent + after)
          win[axis], win[2 + axis] = start, start + extent
          box = win
          second = _cut(photo, win + np.tile(view[:2], 2), scale)
        elif kind == 'copy':
          box = np.array([0, 0, photo.width, photo.height], np.float64)
          second = _cut(photo, box, scale)
        else:
          source = photo
          if kind == 'other_image':
            j = (i + 1 + int(rng.integers(0, len(photos) - 1))) % len(photos)
            source = photos[j][1]
          box = _window(rng, source.size, (0.15, 0.85))
          second = _cut(source, box, scale)
          if kind == 'mirrored':
            second = second.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
          if kind == 'other_image':
            box = box / np.tile(source.size, 2) * np.tile(photo.size, 2)
          if kind == 'edited':
            edit = edits_module.draw(rng, edits)
            second = edits_module.edit(second, edit, rng)
        first, second = _jpeg(original, q1), _jpeg(second, q2)
        swap = bool(rng.uniform() < 0.5)
        a, b = (second, first) if swap else (first, second)
        out.append(Pair(name=f'{name}/{kind}{k}', kind=kind, a_jpeg=a, b_jpeg=b,
                        is_pair=is_pair, original='b' if swap else 'a',
                        box=tuple(float(v) for v in box), original_size=original.size,
                        angle=angle, edit=edit))
  return out
