"""so3krates.files: atomic writes with the user's umask, refusing to overwrite, probing output folders."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from so3krates import files


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path: Path, mask: int) -> None:
    previous = os.umask(mask)
    try:
        assert files.umask() == mask
        files.atomic_write_text(tmp_path / "a.txt", "x")
        with open(tmp_path / "plain.txt", "w") as f:  # what any other program would create
            f.write("x")
    finally:
        os.umask(previous)
    got = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert got == 0o666 & ~mask == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)


def test_a_failed_write_keeps_the_old_file_and_names_the_path(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    target.write_bytes(b"good")

    def full_disk(f: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left on device") as caught:
        files.atomic_write(target, full_disk)
    assert caught.value.filename == str(target)
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]  # no temporary file left behind

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(target, lambda f: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert target.read_bytes() == b"good" and len(list(tmp_path.iterdir())) == 1


def test_check_new_output_refuses_existing_files_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "md.extxyz"
    files.check_new_output(out, "--out")  # nothing there: fine
    out.write_text("user's trajectory")
    with pytest.raises(ValueError, match=r"--out .*md\.extxyz.*exists.*--overwrite"):
        files.check_new_output(out, "--out", what="trajectory")
    files.check_new_output(out, "--out", overwrite=True)
    with pytest.raises(ValueError, match="is a directory"):
        files.check_new_output(tmp_path, "--out", overwrite=True)
    assert out.read_text() == "user's trajectory"


def test_check_writable_dir(tmp_path: Path) -> None:
    files.check_writable_dir(tmp_path / "new" / "run", "--out")
    assert (tmp_path / "new" / "run").is_dir() and not any((tmp_path / "new" / "run").iterdir())
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match=r"--out .*a_file/run: cannot write there"):
        files.check_writable_dir(tmp_path / "a_file" / "run", "--out")
    if Path("/proc/self").is_dir():  # a read-only file system, even for root
        with pytest.raises(ValueError, match="cannot write there"):
            files.check_writable_dir(Path("/proc/self/so3krates-run"), "--out")


def test_sha256_of_chunks_equals_sha256_of_their_concatenation() -> None:
    assert files.sha256([b"ab", b"c"]) == files.sha256(b"abc") != files.sha256(b"abd")


def test_a_trained_run_has_the_users_permissions(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every file `so3krates train` wrote (through the CLI) is readable as the umask allows, not 0600."""
    from test_train_helpers import trained_run

    run_dir, _, _ = trained_run(tmp_path_factory)
    written = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"model.safetensors", "config.yaml", "metadata.json", "split.npz"}
    for p in written:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~files.umask(), p


def test_a_rewritten_file_keeps_its_permissions(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    files.atomic_write_bytes(target, b"one")
    target.chmod(0o600)  # the user's choice survives the next write
    files.atomic_write_bytes(target, b"two")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == b"two"
