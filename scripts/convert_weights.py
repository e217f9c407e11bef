"""Converts a torchvision ResNet checkpoint into cropjax (Flax) weights.

    python scripts/convert_weights.py --arch resnet50 --input resnet50-11ad3fa6.pth \
        --output weights/resnet50

Reads `.pth`/`.pt` (with `torch.load(weights_only=True)`) or `.safetensors`
(no torch needed) and writes an orbax directory that `cropjax.weights.load`
reads and training configs point at (`config.init.checkpoint`). With
`--in-channels 6` the stem is widened for the stacked-pair input.
"""

from __future__ import annotations

import argparse
import os
import sys



def main(argv: list[str] | None = None) -> int:
  from cropjax import models

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--arch', required=True,
                      choices=[a for a in models.ARCHITECTURES if a.startswith('resnet')])
  parser.add_argument('--input', required=True, help='torchvision .pth/.pt or .safetensors file')
  parser.add_argument('--output', required=True, help='directory to create')
  parser.add_argument('--in-channels', type=int, default=3,
                      help='input channels: 3 (RGB) or 6 (stacked pair; the stem is expanded)')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing --output')
  args = parser.parse_args(argv)

  from cropjax import weights
  try:
    if os.path.exists(args.output) and not args.overwrite:
      raise weights.WeightsError(f'{args.output}: already exists (use --overwrite to replace it)')
    state = weights.read_state_dict(args.input)
    variables = weights.convert(state, args.arch, source=args.input)
    if args.in_channels != 3:
      variables = weights.expand_stem(variables, args.in_channels)
    path = weights.save(variables, args.output, arch=args.arch,
                        source=os.path.abspath(args.input), overwrite=args.overwrite)
  except weights.WeightsError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  n = models.count_params(variables['params'])
  print(f'wrote {args.arch} ({n:,} parameters, {args.in_channels} input channels) to {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
