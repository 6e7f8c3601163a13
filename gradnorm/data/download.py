"""Fetch, check and unpack the preprocessed NYUv2 of the MTAN project (``scripts/download_nyuv2.py``).

The pieces are separate so that each can be tested offline: :func:`fetch` (resumable HTTP download
through an injectable ``opener``), :func:`sha256_file`, :func:`unpack` (zip or tar, refusing paths
that leave the target folder) and :func:`check_layout` (the unpacked files, read by the loader's
own checks). docs/nyuv2.md explains the source and what the checksum can and cannot guarantee.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from gradnorm.checks import ConfigError
from gradnorm.data.nyuv2 import SPLITS, SplitFiles

#: The MTAN release (Liu et al., CVPR 2019, github.com/lorenmt/mtan): a Dropbox folder; ``dl=1``
#: asks Dropbox for the whole folder as one zip archive.
NYUV2_URL = "https://www.dropbox.com/sh/86nssgwm6hm3vkb/AACrnUQ4GxpdrBbLjb6n-mWNa?dl=1"
#: SHA-256 of that archive. Not pinned: the archive could not be fetched where this code was written
#: (no internet), and Dropbox builds folder archives on the fly, so their bytes may change. The
#: script prints the digest it saw; pass it back with --sha256 to pin a copy.
NYUV2_SHA256: str | None = None
EXPECTED_COUNTS = {"train": 795, "val": 654}
EXPECTED_SIZE = (288, 384)
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download, checksum or unpacking step failed; the message says what to do."""


def sha256_file(path: str | Path, chunk: int = CHUNK) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, dest: str | Path, opener: Callable = urllib.request.urlopen, chunk: int = CHUNK,
          log: Callable[[str], None] = print) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download (``dest`` + ``.part``).

    A partial file is continued with an HTTP ``Range: bytes=<size>-`` request. A server that answers
    206 gets the rest appended; one that ignores the range (200) makes the download start over;
    416 (nothing left to send) means the partial file is already complete. ``dest`` appears only
    once the transfer has finished.
    """
    dest = Path(dest)
    if dest.exists():
        log(f"already downloaded: {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "gradnorm-repro"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = opener(request)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            part.replace(dest)
            return dest
        raise DownloadError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"cannot download {url}: {getattr(err, 'reason', err)}") from None
    with response:
        status = getattr(response, "status", 200)
        if offset and status == 206:
            log(f"resuming {dest.name} at {offset} bytes")
            mode = "ab"
        else:
            if offset:
                log(f"the server ignored the resume request; downloading {dest.name} again")
            mode, offset = "wb", 0
        total = response.headers.get("Content-Length")
        total = offset + int(total) if total else None
        received = offset
        with open(part, mode) as f:
            try:
                while block := response.read(chunk):
                    f.write(block)
                    received += len(block)
            except (OSError, http.client.HTTPException) as err:
                raise DownloadError(f"download of {url} broke off at {received} bytes ({err}); "
                                    "run again to resume") from None
        if total is not None and received != total:
            raise DownloadError(f"download of {url} stopped at {received} of {total} bytes; run again to resume")
    part.replace(dest)
    return dest


def verify_checksum(path: Path, expected: str | None) -> str:
    """The file's SHA-256; a mismatch with ``expected`` removes the file and raises."""
    actual = sha256_file(path)
    if expected and actual.lower() != expected.lower():
        path.unlink()
        raise DownloadError(f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}; "
                            "the file was removed, run again to download it afresh")
    return actual


def unpack(archive: str | Path, out_dir: str | Path) -> Path:
    """Extract a zip or tar ``archive`` and move the folder holding ``train/`` and ``val/`` to
    ``out_dir``. Members with absolute paths or ``..`` are refused."""
    archive, out_dir = Path(archive), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DownloadError(f"{out_dir} exists and is not empty; remove it or choose another --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".unpack-") as tmp:
        _extract(archive, Path(tmp))
        roots = sorted({p.parent for p in Path(tmp).rglob("train") if p.is_dir() and (p.parent / "val").is_dir()})
        if not roots:
            raise DownloadError(f"{archive} holds no folder with train/ and val/ inside; is it the NYUv2 archive?")
        if out_dir.exists():
            out_dir.rmdir()
        shutil.move(str(roots[0]), str(out_dir))
    return out_dir


def _extract(archive: Path, target: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                _check_member(name, archive)
            zf.extractall(target)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                _check_member(member.name, archive)
                if not (member.isfile() or member.isdir()):
                    raise DownloadError(f"{archive}: refusing the link or special file {member.name!r}")
            tf.extractall(target, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    else:
        raise DownloadError(f"{archive} is neither a zip nor a tar archive")


def _check_member(name: str, archive: Path) -> None:
    path = Path(name)
    if path.is_absolute() or ".." in path.parts:
        raise DownloadError(f"{archive}: refusing the member {name!r}, which points outside the target folder")


def check_layout(root: Path, expected_counts: dict[str, int] | None = EXPECTED_COUNTS,
                 expected_size: tuple[int, int] | None = EXPECTED_SIZE) -> dict[str, int]:
    """Run the loader's checks on every file, then compare the sample counts and the image size."""
    try:
        splits = {folder: SplitFiles.scan(root, folder) for folder in SPLITS.values()}
    except ConfigError as err:
        raise DownloadError(str(err)) from None
    counts = {folder: len(split) for folder, split in splits.items()}
    if expected_counts and counts != expected_counts:
        raise DownloadError(f"{root} holds {counts} samples, expected {expected_counts}")
    size = splits["train"].image_size
    if expected_size and tuple(size) != tuple(expected_size):
        raise DownloadError(f"{root} holds {size[0]}x{size[1]} images, expected {expected_size[0]}x{expected_size[1]}")
    return counts


def main(argv: list[str] | None = None, opener: Callable = urllib.request.urlopen,
         expected_counts: dict[str, int] | None = EXPECTED_COUNTS,
         expected_size: tuple[int, int] | None = EXPECTED_SIZE) -> Path:
    parser = argparse.ArgumentParser(description="Download the preprocessed NYUv2 (MTAN release) for gradnorm-repro.")
    parser.add_argument("--out", default="data/nyuv2", help="where the data set goes (default: data/nyuv2)")
    parser.add_argument("--url", default=NYUV2_URL, help="archive URL (default: the MTAN release on Dropbox)")
    parser.add_argument("--sha256", default=NYUV2_SHA256, help="expected SHA-256 of the archive")
    parser.add_argument("--archive", default=None,
                        help="where the archive is kept (default: <out>.zip); an existing partial download resumes")
    parser.add_argument("--keep-archive", action="store_true", help="keep the archive after unpacking")
    args = parser.parse_args(argv)
    out = Path(args.out)
    archive = Path(args.archive) if args.archive else out.with_name(out.name + ".zip")
    try:
        fetch(args.url, archive, opener=opener)
        digest = verify_checksum(archive, args.sha256)
        print(f"sha256 {digest}  {archive}" + ("  (verified)" if args.sha256 else "  (not verified: no --sha256)"))
        unpack(archive, out)
        counts = check_layout(out, expected_counts, expected_size)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    if not args.keep_archive:
        archive.unlink()
    print(f"NYUv2 is in {out.resolve()} ({counts['train']} train / {counts['val']} val); "
          f"train with dataset.root={out}")
    return out
