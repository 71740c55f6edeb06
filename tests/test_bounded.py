"""Pure logic, no services: the bounded readers of mysimbdp/bounded.py on what a hostile app could leave."""

from __future__ import annotations

import os

import pytest

from mysimbdp import bounded


def test_remove_tree_takes_deep_wide_and_linked_trees(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    for i in range(2500):  # more sub-folders than one pass of a folder reads at once
        (root / f"d{i}").mkdir()
        (root / f"d{i}" / "x").write_text("1")
        (root / f"f{i}").write_text("2")
    deep = root / "d0"
    cwd = os.getcwd()
    try:
        os.chdir(deep)
        for _ in range(300):  # deeper, and with longer paths, than PATH_MAX allows to name
            os.mkdir("n" * 200)
            os.chdir("n" * 200)
        os.symlink("/etc", "link")
    finally:
        os.chdir(cwd)
    outside = tmp_path / "keep"
    outside.write_text("mine")
    os.symlink(outside, root / "to-outside")
    size = bounded.tree_size(root, max_entries=100_000, max_depth=8)
    assert size.too_many  # deeper than 8
    bounded.remove_tree(root)
    assert not root.exists() and outside.read_text() == "mine"  # links are removed, never followed


def test_loads_json_refuses_deep_and_large_documents_before_parsing():
    assert bounded.loads_json(b'{"a": "[[[[", "b": [1, [2]]}', max_bytes=100, max_depth=3) == {
        "a": "[[[[",
        "b": [1, [2]],
    }
    with pytest.raises(ValueError, match="deeper"):
        bounded.loads_json(b"[" * 100_000 + b"]" * 100_000, max_bytes=1 << 20, max_depth=32)
    with pytest.raises(bounded.TooLarge):
        bounded.loads_json(b"1" * 70_000, max_bytes=64 * 1024)
    with pytest.raises(ValueError):
        bounded.loads_json(b"\xff\xfe{}", max_bytes=100)


def test_rate_limit_forgets_old_keys_and_refills():
    r = bounded.RateLimit(per_second=2, burst=3, max_keys=10)
    assert [r.allow("a", now=0) for _ in range(4)] == [True, True, True, False]
    assert r.refused("a") == 1 and r.allow("a", now=0.5)
    for k in range(100):
        r.allow(k, now=1)
    assert len(r._buckets) == 10


def test_copy_head_makes_a_new_file_of_its_own_mode_and_cuts_at_a_whole_line(tmp_path):
    import stat

    src = tmp_path / "rejects.csv"
    src.write_bytes(b"line,reason\n" + b"2,xxxxxxxx\n" * 100)
    src.chmod(0o6777)
    kept, whole = bounded.copy_head(src, tmp_path / "all.csv", 1 << 20)
    assert (kept, whole) == (src.stat().st_size, True)
    assert stat.S_IMODE((tmp_path / "all.csv").stat().st_mode) == 0o640
    kept, whole = bounded.copy_head(src, tmp_path / "head.csv", 50)  # 12 + 3 * 11 = 45 bytes of whole lines
    assert (kept, whole) == (45, False) and (tmp_path / "head.csv").read_bytes().endswith(b"xx\n")
    with pytest.raises(FileExistsError):  # never over a file that is there already (or a link planted there)
        bounded.copy_head(src, tmp_path / "head.csv", 50)
    os.symlink("/etc/hostname", tmp_path / "link.csv")
    os.mkfifo(tmp_path / "fifo.csv")
    for bad in ("link.csv", "fifo.csv"):  # not regular files: refused at once, the FIFO never blocks
        with pytest.raises(OSError):
            bounded.copy_head(tmp_path / bad, tmp_path / f"copy-{bad}", 50)
