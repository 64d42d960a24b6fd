"""The shared file helpers (desra_fast.utils) against independent references: hashlib on the
concatenated bytes, the XDG base-directory rule, and list files written by hand."""
import hashlib
import os
from pathlib import Path

import pytest

from desra_fast import utils


def test_write_bytes_atomic_replaces_and_cleans_up(tmp_path, monkeypatch):
    dst = tmp_path / "sub" / "x.bin"
    utils.write_bytes_atomic(dst, b"old")
    utils.write_bytes_atomic(dst, memoryview(b"new data"))
    assert dst.read_bytes() == b"new data"

    def boom(src, dst_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        utils.write_bytes_atomic(dst, b"never")
    assert dst.read_bytes() == b"new data"
    assert sorted(p.name for p in dst.parent.iterdir()) == ["x.bin"]  # no temporary file left


def test_file_sha256_matches_hashlib_on_concatenation(tmp_path):
    a, b = tmp_path / "a.param", tmp_path / "a.bin"
    a.write_bytes(b"7767517\n" * 1000)
    b.write_bytes(os.urandom(3 << 20))  # crosses the 1 MiB read blocks
    assert utils.file_sha256(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    assert utils.file_sha256(a, b) == hashlib.sha256(a.read_bytes() + b.read_bytes()).hexdigest()
    assert utils.file_sha256() == hashlib.sha256(b"").hexdigest()
    with pytest.raises(OSError):
        utils.file_sha256(tmp_path / "missing")


def test_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("DESRA_FAST_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert utils.cache_dir() == tmp_path / "explicit"
    assert utils.cache_dir("onnx") == tmp_path / "explicit" / "onnx"
    monkeypatch.delenv("DESRA_FAST_CACHE")
    assert utils.cache_dir("vgg19") == tmp_path / "xdg" / "desra_fast" / "vgg19"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty counts as unset (XDG base-directory spec)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert utils.cache_dir() == tmp_path / "home" / ".cache" / "desra_fast"
    assert not (tmp_path / "home").exists()  # only named, not created


def test_read_list_keys(tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("# picked by select\nn01/a.JPEG\n\n  ./b.png  \nc.webp\nd\nv1.2/e.tar\nf.jpg\r\n",
                   encoding="utf-8")
    assert utils.read_list(lst) == ["n01/a", "b", "c", "d", "v1.2/e.tar", "f"]


def test_read_list_errors(tmp_path):
    with pytest.raises(utils.ListFileError, match="cannot read list .*missing.txt"):
        utils.read_list(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a.png\n\xff\xfe\n")
    with pytest.raises(utils.ListFileError, match="not UTF-8"):
        utils.read_list(bad)
    with pytest.raises(utils.ListFileError, match="cannot read list"):
        utils.read_list(tmp_path)  # a folder
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    assert utils.read_list(empty) == []


def test_write_list_round_trip(tmp_path):
    names = ["n01/a.JPEG", "b.png", "ü/c.webp"]
    utils.write_list(tmp_path / "l.txt", names)
    assert (tmp_path / "l.txt").read_bytes() == "n01/a.JPEG\nb.png\nü/c.webp\n".encode("utf-8")
    assert utils.read_list(tmp_path / "l.txt") == ["n01/a", "b", "ü/c"]
    for bad in ("a\nb.png", "#x.png", " a.png", "", "a\u2028b.png"):
        with pytest.raises(utils.ListFileError, match="would not read back"):
            utils.write_list(tmp_path / "m.txt", [bad])
    assert not Path(tmp_path / "m.txt").exists()
