"""Write a small synthetic NYUv2 in exactly the on-disk format of the real one (for tests and smoke runs).

    python scripts/make_fake_nyuv2.py data/fake_nyuv2 --n-train 16 --n-val 8 --height 32 --width 48

Scenes are ray-cast rooms with boxes: depth, normals and labels are exact and learnable from the
image (gradnorm/data/fake_nyuv2.py). Train on it with dataset.root=OUT_DIR.
"""

import argparse
import shutil
import sys
from pathlib import Path

from gradnorm.data.fake_nyuv2 import write_fake_nyuv2


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n-train", type=int, default=32)
    parser.add_argument("--n-val", type=int, default=16)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR's train/ and val/ if present")
    args = parser.parse_args(argv)
    for name in ("n_train", "n_val", "height", "width"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    existing = [args.out_dir / s for s in ("train", "val") if (args.out_dir / s).exists()]
    if existing and not args.overwrite:
        print(f"error: {existing[0]} exists; pass --overwrite to replace it", file=sys.stderr)
        raise SystemExit(2)
    for path in existing:
        shutil.rmtree(path)
    write_fake_nyuv2(args.out_dir, args.n_train, args.n_val, args.height, args.width, args.seed)
    print(f"fake NYUv2 ({args.n_train} train / {args.n_val} val, {args.height}x{args.width}) in {args.out_dir}")
    return args.out_dir


if __name__ == "__main__":
    main()
