"""Download the preprocessed NYUv2 (MTAN release, 795 train / 654 val at 288x384) and unpack it.

    python scripts/download_nyuv2.py --out data/nyuv2            # resumable; prints where it put it
    python scripts/download_nyuv2.py --out data/nyuv2 --sha256 HEX

The pieces live in gradnorm/data/download.py (tested offline); docs/nyuv2.md has the details.
"""

from gradnorm.data.download import main

if __name__ == "__main__":
    main()
