"""The download pieces, offline: checksum, resumable fetch through a fake server, unpacking, the CLI."""

import hashlib
import io
import shutil
import tarfile
import urllib.error
import zipfile

import pytest

from gradnorm.data import download
from gradnorm.data.download import DownloadError, check_layout, fetch, sha256_file, unpack
from gradnorm.data.fake_nyuv2 import write_fake_nyuv2

BLOB = bytes(range(256)) * 40  # 10,240 bytes


class FakeResponse(io.BytesIO):
    def __init__(self, body: bytes, status: int):
        super().__init__(body)
        self.status = status
        self.headers = {"Content-Length": str(len(body))}


class FakeServer:
    """Serves ``blob``; honours Range unless ``ranges=False``; ``cut_after`` ends a transfer early."""

    def __init__(self, blob=BLOB, ranges=True, cut_after=None):
        self.blob, self.ranges, self.cut_after = blob, ranges, cut_after
        self.requests = []

    def __call__(self, request):
        range_header = request.get_header("Range")
        self.requests.append(range_header)
        start = int(range_header.split("=")[1].rstrip("-")) if range_header and self.ranges else 0
        if start >= len(self.blob) and range_header:
            raise urllib.error.HTTPError(request.full_url, 416, "Range Not Satisfiable", {}, None)
        body = self.blob[start:]
        response = FakeResponse(body, 206 if start else 200)
        if self.cut_after is not None:
            cut, self.cut_after = self.cut_after, None
            response.read = _breaking_reader(response, cut)
        return response


def _breaking_reader(response, cut):
    sent = [0]

    def read(n=-1):
        if sent[0] >= cut:
            raise ConnectionResetError("connection reset by peer")
        block = io.BytesIO.read(response, min(n, cut - sent[0]))
        sent[0] += len(block)
        return block

    return read


def test_sha256_file(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(BLOB)
    assert sha256_file(path, chunk=1000) == hashlib.sha256(BLOB).hexdigest()


def test_interrupted_download_resumes_where_it_stopped(tmp_path):
    server = FakeServer(cut_after=4096)
    dest = tmp_path / "nyuv2.zip"
    with pytest.raises(DownloadError, match="broke off at 4096 bytes.*run again to resume"):
        fetch("https://example.org/nyuv2.zip", dest, opener=server, chunk=1024, log=lambda _: None)
    assert not dest.exists() and (tmp_path / "nyuv2.zip.part").stat().st_size == 4096
    fetch("https://example.org/nyuv2.zip", dest, opener=server, chunk=1024, log=lambda _: None)
    assert server.requests == [None, "bytes=4096-"]
    assert dest.read_bytes() == BLOB and not (tmp_path / "nyuv2.zip.part").exists()


def test_server_without_ranges_restarts_the_download(tmp_path):
    (tmp_path / "a.zip.part").write_bytes(b"stale bytes")
    server = FakeServer(ranges=False)
    fetch("https://example.org/a.zip", tmp_path / "a.zip", opener=server, log=lambda _: None)
    assert (tmp_path / "a.zip").read_bytes() == BLOB


def test_complete_partial_file_is_accepted_on_416(tmp_path):
    (tmp_path / "a.zip.part").write_bytes(BLOB)
    fetch("https://example.org/a.zip", tmp_path / "a.zip", opener=FakeServer(), log=lambda _: None)
    assert (tmp_path / "a.zip").read_bytes() == BLOB


def test_checksum_mismatch_removes_the_file(tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(BLOB)
    with pytest.raises(DownloadError, match=f"expected sha256 {'0' * 64}, got {hashlib.sha256(BLOB).hexdigest()}"):
        download.verify_checksum(path, "0" * 64)
    assert not path.exists()


@pytest.fixture(scope="module")
def fake_tree(tmp_path_factory):
    """A tiny data set nested one folder deep, as archives tend to be."""
    top = tmp_path_factory.mktemp("tree")
    write_fake_nyuv2(top / "nyuv2", n_train=3, n_val=2, height=8, width=12)
    return top


def _zip(tree, path):
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(tree.rglob("*")):
            zf.write(file, file.relative_to(tree))
    return path


def test_unpack_zip_and_tar_find_the_data_root(fake_tree, tmp_path):
    archive = _zip(fake_tree, tmp_path / "a.zip")
    root = unpack(archive, tmp_path / "out_zip")
    assert check_layout(root, {"train": 3, "val": 2}, (8, 12)) == {"train": 3, "val": 2}
    tar_path = tmp_path / "a.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        tf.add(fake_tree / "nyuv2", arcname="nyuv2")
    root = unpack(tar_path, tmp_path / "out_tar")
    assert (root / "val" / "normal" / "1.npy").is_file()


def test_unpack_refuses_paths_outside_the_target(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(DownloadError, match="refusing the member '../escape.txt'"):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_check_layout_reports_wrong_counts(fake_tree):
    with pytest.raises(DownloadError, match=r"holds \{'train': 3, 'val': 2\} samples, expected \{'train': 795"):
        check_layout(fake_tree / "nyuv2")


def test_command_line_end_to_end(fake_tree, tmp_path, capsys):
    blob = _zip(fake_tree, tmp_path / "served.zip").read_bytes()
    server = FakeServer(blob=blob, cut_after=len(blob) // 2)
    out = tmp_path / "data" / "nyuv2"
    args = ["--out", str(out), "--url", "https://example.org/x.zip", "--sha256", hashlib.sha256(blob).hexdigest()]
    with pytest.raises(SystemExit) as stopped:  # the transfer breaks off half way
        download.main(args, opener=server, expected_counts={"train": 3, "val": 2}, expected_size=(8, 12))
    assert stopped.value.code == 1 and "run again to resume" in capsys.readouterr().err
    download.main(args, opener=server, expected_counts={"train": 3, "val": 2}, expected_size=(8, 12))
    printed = capsys.readouterr().out
    assert "(verified)" in printed and f"NYUv2 is in {out.resolve()} (3 train / 2 val)" in printed
    assert (out / "train" / "image" / "2.npy").is_file() and not (tmp_path / "data" / "nyuv2.zip").exists()
    shutil.rmtree(out)
