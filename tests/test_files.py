"""llmkit.files' ``*_inside`` operations against real symbolic links, hard links and FIFOs.

Each test plants the link in a real directory and checks that the file outside (its bytes and
its mtime) and the directory outside (its listing) are exactly as they were.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from llmkit.errors import LlmkitError
from llmkit.files import (
    UnsafePathError,
    atomic_write_inside,
    copy_inside,
    hash_inside,
    iter_files_inside,
    lstat_inside,
    makedirs_inside,
    open_inside,
    read_inside,
    regular_inside,
    remove_empty_dirs_inside,
    remove_inside,
    replace_inside,
    require_plain_tree,
    walk_inside,
)

OLD_NS = 1_000_000_000 * 10**9  # 2001: any write or touch moves it


class Outside:
    """A directory outside the tree with one precious file, and a snapshot to compare against."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "outside"
        self.dir.mkdir()
        self.file = self.dir / "precious"
        self.file.write_bytes(b"precious bytes\n")
        os.utime(self.file, ns=(OLD_NS, OLD_NS))
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, tuple[bytes, int]]:
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(self.dir.iterdir())}

    def untouched(self) -> bool:
        return self.snapshot() == self.before


@pytest.fixture
def outside(tmp_path: Path) -> Outside:
    return Outside(tmp_path)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    return tree


def test_a_linked_file_is_refused_for_writing_reading_and_hashing(root: Path, outside: Outside) -> None:
    (root / "f").symlink_to(outside.file)
    for flags in (os.O_WRONLY, os.O_WRONLY | os.O_TRUNC, os.O_WRONLY | os.O_CREAT, os.O_RDONLY):
        with pytest.raises(UnsafePathError, match="a symbolic link, not a regular file") as err:
            open_inside(root, "f", flags)
        assert err.value.path == str(root / "f")
    with pytest.raises(UnsafePathError):
        read_inside(root, "f")
    with pytest.raises(UnsafePathError):
        hash_inside(root, "f")
    with pytest.raises(UnsafePathError):
        regular_inside(root, "f")
    assert outside.untouched()
    # a user error: one line, exit 2, naming what is accepted
    assert isinstance(err.value, LlmkitError) and err.value.exit_code == 2
    assert "regular files and directories, no symbolic links" in str(err.value)


def test_a_linked_parent_is_refused_whatever_the_operation(root: Path, outside: Outside) -> None:
    (root / "etc").symlink_to(outside.dir)
    operations = [
        lambda: open_inside(root, "etc/precious", os.O_RDONLY),
        lambda: open_inside(root, "etc/new", os.O_WRONLY | os.O_CREAT, create_dirs=True),
        lambda: atomic_write_inside(root, "etc/precious", b"evil"),
        lambda: copy_inside(io.BytesIO(b"evil"), root, "etc/precious"),
        lambda: makedirs_inside(root, "etc/sub"),
        lambda: remove_inside(root, "etc/precious"),
        lambda: lstat_inside(root, "etc/precious"),
        lambda: replace_inside(root, "etc/precious", "moved"),
    ]
    for operation in operations:
        with pytest.raises(UnsafePathError, match=r"tree/etc: a symbolic link, not a directory"):
            operation()
    assert outside.untouched()
    assert [p.name for p in root.iterdir()] == ["etc"]


def test_a_deeper_linked_component_is_refused_too(root: Path, outside: Outside) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "c").symlink_to(outside.dir)
    with pytest.raises(UnsafePathError, match=r"tree/a/b/c: a symbolic link"):
        atomic_write_inside(root, "a/b/c/precious", b"evil")
    assert outside.untouched()


def test_a_link_that_appears_after_a_check_is_still_refused(root: Path, outside: Outside) -> None:
    makedirs_inside(root, "blobs")
    assert regular_inside(root, "blobs/x") is None  # the check a caller makes first
    (root / "blobs").rmdir()
    (root / "blobs").symlink_to(outside.dir)  # swapped in between
    with pytest.raises(UnsafePathError):
        open_inside(root, "blobs/x", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    assert outside.untouched()


def test_the_root_itself_may_be_a_link_the_user_wrote(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    atomic_write_inside(tmp_path / "alias", "a/b.txt", b"ok")
    assert (real / "a" / "b.txt").read_bytes() == b"ok"


def test_atomic_write_replaces_a_link_and_never_writes_through_it(root: Path, outside: Outside) -> None:
    (root / "manifest.json").symlink_to(outside.file)
    atomic_write_inside(root, "manifest.json", b"{}")
    assert outside.untouched()
    assert not (root / "manifest.json").is_symlink() and (root / "manifest.json").read_bytes() == b"{}"
    assert stat.S_IMODE((root / "manifest.json").stat().st_mode) == 0o644
    assert [p.name for p in root.iterdir()] == ["manifest.json"]  # no temporary file left


def test_a_hard_link_is_never_written_in_place_nor_truncated(root: Path, outside: Outside) -> None:
    os.link(outside.file, root / "model.gguf.part")
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
        with pytest.raises(UnsafePathError, match="a file with 2 hard links"):
            open_inside(root, "model.gguf.part", flags)
    assert outside.untouched()
    # reading one is fine (a backup made with cp -al), and a removal unlinks the name only
    assert read_inside(root, "model.gguf.part") == b"precious bytes\n"
    assert remove_inside(root, "model.gguf.part")
    assert outside.untouched()


def test_a_fifo_is_refused_without_blocking(root: Path) -> None:
    os.mkfifo(root / "template")
    for flags in (os.O_RDONLY, os.O_WRONLY):
        with pytest.raises(UnsafePathError, match="a FIFO, not a regular file"):
            open_inside(root, "template", flags)
    with pytest.raises(UnsafePathError, match="a FIFO"):
        require_plain_tree(root)


def test_o_trunc_applies_after_the_checks_and_truncates_a_file_of_ours(root: Path) -> None:
    (root / "x").write_bytes(b"0123456789")
    fd = open_inside(root, "x", os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"ab")
    finally:
        os.close(fd)
    assert (root / "x").read_bytes() == b"ab"


def test_copy_inside_hashes_what_it_wrote_and_a_failed_check_leaves_the_target(root: Path) -> None:
    (root / "f").write_bytes(b"old")
    digest, size = copy_inside(io.BytesIO(b"new"), root, "d/e/f")
    assert (root / "d" / "e" / "f").read_bytes() == b"new" and size == 3
    assert (digest, size) == hash_inside(root, "d/e/f")

    def refuse(_digest: str, _size: int) -> None:
        raise ValueError("not the expected sha256")

    with pytest.raises(ValueError, match="expected sha256"):
        copy_inside(io.BytesIO(b"other"), root, "f", refuse)
    assert (root / "f").read_bytes() == b"old"
    assert sorted(iter_files_inside(root)) == ["d/e/f", "f"]  # no temporary file left


def test_replace_inside_moves_only_a_regular_file(root: Path, outside: Outside) -> None:
    (root / "x.part").symlink_to(outside.file)
    with pytest.raises(UnsafePathError, match=r"x\.part: a symbolic link"):
        replace_inside(root, "x.part", "x")
    (root / "y.part").write_bytes(b"y")
    (root / "y").symlink_to(outside.file)  # a link at the destination is replaced, not followed
    replace_inside(root, "y.part", "y")
    assert (root / "y").read_bytes() == b"y" and not (root / "y").is_symlink()
    assert outside.untouched()


def test_remove_inside_removes_a_link_itself(root: Path, outside: Outside) -> None:
    (root / "stale.whl").symlink_to(outside.file)
    (root / "old").symlink_to(outside.dir)
    assert remove_inside(root, "stale.whl") and remove_inside(root, "old")
    assert not remove_inside(root, "missing") and not remove_inside(root, "no/such/dir")
    assert outside.untouched() and not list(root.iterdir())
    (root / "d").mkdir()
    with pytest.raises(UnsafePathError, match="a directory, not a file"):
        remove_inside(root, "d")


def test_the_walk_lists_links_and_never_enters_them(root: Path, outside: Outside) -> None:
    (root / "wheels").mkdir()
    (root / "wheels" / "a.whl").write_bytes(b"a")
    (root / "wheels" / "b.whl").symlink_to(outside.file)
    (root / "old").symlink_to(outside.dir)
    walked = dict(walk_inside(root))
    assert sorted(walked) == ["old", "wheels/a.whl", "wheels/b.whl"]
    assert stat.S_ISLNK(walked["old"]) and stat.S_ISREG(walked["wheels/a.whl"])
    assert list(iter_files_inside(root, "wheels")) == ["a.whl", "b.whl"]
    assert list(iter_files_inside(root, "missing")) == []
    with pytest.raises(UnsafePathError, match=r"tree/old: a symbolic link"):
        require_plain_tree(root)
    with pytest.raises(UnsafePathError, match=r"tree/wheels/b.whl: a symbolic link"):
        require_plain_tree(root, "wheels")
    with pytest.raises(UnsafePathError, match=r"tree/old: a symbolic link, not a directory"):
        list(walk_inside(root, "old"))


def test_pruning_removes_empty_directories_and_never_enters_a_link(root: Path, outside: Outside) -> None:
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    (root / "c" / "keep").write_bytes(b"k")
    empty_outside = outside.dir / "empty"
    empty_outside.mkdir()
    (root / "link").symlink_to(empty_outside)
    assert remove_empty_dirs_inside(root) == ["a/b", "a"]
    assert empty_outside.is_dir() and (root / "link").is_symlink() and (root / "c" / "keep").exists()


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../x", "a//b", "./a", ""])
def test_only_relative_paths_below_the_root(root: Path, rel: str) -> None:
    with pytest.raises(UnsafePathError):
        atomic_write_inside(root, rel, b"x")
    assert not list(root.iterdir())
