"""The search's results as JSON lines, CSV and an HTML page a person can scroll through."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from pathlib import Path
from typing import IO, Sequence

from PIL import Image, ImageDraw

from cropjax.search.find import Match

FIELDS = ('query', 'original', 'x0', 'y0', 'x1', 'y1', 'angle', 'score', 'alignment_score',
          'similarity', 'original_width', 'original_height')


def _row(m: Match) -> dict:
  return {'query': m.query, 'original': m.original,
          **dict(zip(('x0', 'y0', 'x1', 'y1'), (round(v, 2) for v in m.box))),
          'angle': round(m.angle, 2), 'score': round(m.score, 4),
          'alignment_score': None if m.alignment_score is None else round(m.alignment_score, 4),
          'similarity': round(m.similarity, 4),
          'original_width': m.original_size[0], 'original_height': m.original_size[1]}


def write_jsonl(matches: Sequence[Match], out: IO[str]) -> None:
  for m in matches:
    out.write(json.dumps(_row(m)) + '\n')


def write_csv(matches: Sequence[Match], path: str | os.PathLike) -> None:
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, FIELDS)
    w.writeheader()
    w.writerows(_row(m) for m in matches)


def _thumbnail(path: str, box=None, side: int = 320, angle: float = 0.0) -> str:
  """A JPEG data URI of the photo at `side` pixels, `box` (its full upright pixels) drawn,
  turned by `angle` degrees about its centre."""
  from cropjax.search.descriptors import read_photo
  image, full = read_photo(path, side)
  scale = side / max(image.size)
  image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                       Image.Resampling.BOX)
  if box is not None:
    from cropjax import metadata
    fw, fh = full
    crop = metadata.Crop(box[0] / fw, box[1] / fh, box[2] / fw, box[3] / fh, angle=angle)
    corners = metadata.corners(crop, image.width, image.height)
    ImageDraw.Draw(image).polygon(corners, outline=(255, 40, 40), width=3)
  buf = io.BytesIO()
  image.save(buf, 'JPEG', quality=85)
  return 'data:image/jpeg;base64,' + base64.b64encode(buf.getvalue()).decode()


def write_html(matches: Sequence[Match], path: str | os.PathLike, *, title: str = 'cropjax find',
               skipped: Sequence[tuple[str, str]] = (), summary: str = '') -> None:
  """One row per match, best first: the crop, the original with the box drawn, the numbers."""
  e = html.escape
  rows = []
  for m in matches:
    rows.append(
        f'<tr><td><img src="{_thumbnail(m.query)}"><br>{e(m.query)}</td>'
        f'<td><img src="{_thumbnail(m.original, m.box, angle=m.angle)}"><br>{e(m.original)}</td>'
        f'<td>score {m.score:.3f}<br>alignment {m.alignment_score or 0:.3f}<br>'
        f'box {", ".join(f"{v:.0f}" for v in m.box)}<br>'
        f'of {m.original_size[0]} x {m.original_size[1]}</td></tr>')
  bad = ''.join(f'<li>{e(p)}: {e(why)}</li>' for p, why in skipped)
  page = f'''<!doctype html><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:sans-serif}} td{{vertical-align:top;padding:6px}}
img{{max-width:320px;max-height:320px}}</style>
<h1>{e(title)}</h1><p>{e(summary)}</p>
<table><tr><th>crop</th><th>original (the crop's place in red)</th><th></th></tr>
{''.join(rows)}</table>
{f"<h2>Skipped</h2><ul>{bad}</ul>" if bad else ""}
'''
  Path(path).write_text(page)
