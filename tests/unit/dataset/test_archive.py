"""Safe archive extraction: every unsafe archive is refused whole and leaves nothing behind."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from kiln_dataset.archive import ArchiveLimits, ArchiveRejected, extract_archive


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def add_tar_file(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def assert_rejected(
    archive: Path, target: Path, kind: str, limits: ArchiveLimits | None = None
) -> ArchiveRejected:
    with pytest.raises(ArchiveRejected) as info:
        extract_archive(archive, target, limits)
    assert info.value.kind == kind, info.value
    assert isinstance(info.value, ValueError)
    assert list(target.iterdir()) == []
    return info.value


@pytest.fixture
def target(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    return out


def test_valid_zip_extracts_files_and_skips_os_junk(tmp_path: Path, target: Path) -> None:
    archive = make_zip(
        tmp_path / "upload.bin",  # the name says nothing; magic bytes decide
        {
            "data/cats/a.png": b"png-bytes",
            "data/dogs/b.jpg": b"jpg-bytes",
            "data/": b"",
            "__MACOSX/data/._a.png": b"resource fork",
            "data/.DS_Store": b"finder",
            "data/cats/Thumbs.db": b"windows",
        },
    )
    extracted = extract_archive(archive, target)
    assert sorted(extracted) == ["data/cats/a.png", "data/dogs/b.jpg"]
    assert (target / "data/cats/a.png").read_bytes() == b"png-bytes"
    assert not (target / "__MACOSX").exists()
    assert not (target / "data/.DS_Store").exists()


def test_valid_tar_gz_extracts(tmp_path: Path, target: Path) -> None:
    archive = tmp_path / "upload.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        add_tar_file(tf, "images/x.png", b"x" * 5000)
        add_tar_file(tf, "./labels/x.txt", b"0 0.5 0.5 0.1 0.1\n")
    assert sorted(extract_archive(archive, target)) == ["images/x.png", "labels/x.txt"]
    assert (target / "labels/x.txt").read_text() == "0 0.5 0.5 0.1 0.1\n"


def test_plain_tar_extracts(tmp_path: Path, target: Path) -> None:
    archive = tmp_path / "upload.tar"
    with tarfile.open(archive, "w", format=tarfile.USTAR_FORMAT) as tf:
        add_tar_file(tf, "a.txt", b"hello")
    assert extract_archive(archive, target) == ["a.txt"]


def test_zip_slip_is_refused(tmp_path: Path, target: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"ok.txt": b"fine", "../evil.txt": b"pwned"})
    error = assert_rejected(archive, target, "path-traversal")
    assert error.member == "../evil.txt"
    assert not (tmp_path / "evil.txt").exists()


def test_backslash_traversal_is_refused(tmp_path: Path, target: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"ok.txt": b"fine", "a\\..\\..\\evil.txt": b"pwned"})
    assert_rejected(archive, target, "path-traversal")


def test_absolute_path_is_refused(tmp_path: Path, target: Path) -> None:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        add_tar_file(tf, "fine.txt", b"fine")
        add_tar_file(tf, "/etc/x", b"pwned")
    assert_rejected(archive, target, "absolute-path")


def test_absolute_path_in_zip_is_refused(tmp_path: Path, target: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"fine.txt": b"x"})
    with zipfile.ZipFile(archive, "a") as zf:
        info = zipfile.ZipInfo("x")
        info.filename = "/etc/x"  # ZipInfo() strips a leading slash; set it as an attacker would
        zf.writestr(info, b"pwned")
    assert_rejected(archive, target, "absolute-path")


def test_symlink_in_tar_is_refused(tmp_path: Path, target: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        add_tar_file(tf, "a.txt", b"fine")
        link = tarfile.TarInfo("passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    assert_rejected(archive, target, "symlink")


def test_symlink_in_zip_is_refused(tmp_path: Path, target: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", b"fine")
        info = zipfile.ZipInfo("passwd")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    error = assert_rejected(archive, target, "symlink")
    assert error.member == "passwd"


def test_hardlink_in_tar_is_refused(tmp_path: Path, target: Path) -> None:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        add_tar_file(tf, "a.txt", b"fine")
        link = tarfile.TarInfo("b.txt")
        link.type = tarfile.LNKTYPE
        link.linkname = "a.txt"
        tf.addfile(link)
    assert_rejected(archive, target, "hardlink")


def test_device_file_in_tar_is_refused(tmp_path: Path, target: Path) -> None:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        fifo = tarfile.TarInfo("pipe")
        fifo.type = tarfile.FIFOTYPE
        tf.addfile(fifo)
    assert_rejected(archive, target, "special-file")


def test_zip_bomb_is_refused_by_its_compression_ratio(tmp_path: Path, target: Path) -> None:
    archive = tmp_path / "bomb.zip"
    zeros = bytes(1024 * 1024)
    # Written in chunks so the test never holds the 300 MB member in memory.
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("readme.txt", b"innocent")
        with zf.open("zeros.bin", "w", force_zip64=True) as member:
            for _ in range(300):
                member.write(zeros)
    assert archive.stat().st_size < 1024 * 1024
    error = assert_rejected(archive, target, "compression-ratio")
    assert error.member == "zeros.bin"


def test_member_over_the_size_limit_is_refused(tmp_path: Path, target: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"big.bin": os.urandom(20_000)})
    limits = ArchiveLimits(max_member_bytes=10_000)
    assert_rejected(archive, target, "too-large", limits)


def test_archive_over_the_total_size_limit_is_refused(tmp_path: Path, target: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {f"{i}.bin": os.urandom(4000) for i in range(5)})
    limits = ArchiveLimits(max_total_bytes=10_000)
    assert_rejected(archive, target, "too-large", limits)


def test_too_many_members_are_refused_in_zip_and_tar(tmp_path: Path, target: Path) -> None:
    limits = ArchiveLimits(max_members=50)
    archive = make_zip(tmp_path / "a.zip", {f"{i}.txt": b"x" for i in range(51)})
    assert_rejected(archive, target, "too-many-files", limits)
    tar = tmp_path / "a.tar"
    with tarfile.open(tar, "w") as tf:
        for i in range(51):
            add_tar_file(tf, f"{i}.txt", b"x")
    assert_rejected(tar, target, "too-many-files", limits)


def test_not_an_archive_is_refused(tmp_path: Path, target: Path) -> None:
    path = tmp_path / "photo.zip"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not an archive")
    assert_rejected(path, target, "not-an-archive")


def test_gzip_of_a_plain_file_is_not_an_archive(tmp_path: Path, target: Path) -> None:
    import gzip

    path = tmp_path / "data.tar.gz"
    path.write_bytes(gzip.compress(b"just some text, not a tar" * 100))
    assert_rejected(path, target, "not-an-archive")


def test_lying_headers_are_caught_while_streaming(tmp_path: Path, target: Path) -> None:
    # Data of 200 KB whose central directory claims 100 bytes: zipfile stops at the claimed
    # size and the CRC then fails, so the member is refused and nothing remains.
    archive = make_zip(tmp_path / "a.zip", {"first.txt": b"ok", "liar.bin": os.urandom(200_000)})
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("liar.bin")
    central = data.rfind(b"PK\x01\x02")
    assert data[central + 46 : central + 46 + 8] == b"liar.bin"
    data[central + 24 : central + 28] = (100).to_bytes(4, "little")  # uncompressed size
    archive.write_bytes(bytes(data))
    assert info.file_size == 200_000
    assert_rejected(archive, target, "corrupt")


def test_target_must_be_empty(tmp_path: Path, target: Path) -> None:
    (target / "existing").write_text("x")
    archive = make_zip(tmp_path / "a.zip", {"a.txt": b"x"})
    with pytest.raises(ValueError, match="not empty"):
        extract_archive(archive, target)
    assert (target / "existing").exists()


def test_rejection_is_a_kiln_problem_with_kind_and_member(tmp_path: Path, target: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"../evil.txt": b"x"})
    error = assert_rejected(archive, target, "path-traversal")
    problem = error.problem()
    assert problem["status"] == 422
    assert problem["kind"] == "path-traversal"
    assert problem["member"] == "../evil.txt"


def test_many_small_members_that_expand_together_are_refused(tmp_path: Path, target: Path) -> None:
    # Each member is under the per-member ratio floor; the archive as a whole is still a bomb.
    archive = make_zip(tmp_path / "a.zip", {f"{i}.bin": bytes(512 * 1024) for i in range(20)})
    error = assert_rejected(archive, target, "compression-ratio")
    assert error.member is None


def test_truncated_tar_gz_is_refused_as_corrupt(tmp_path: Path, target: Path) -> None:
    archive = tmp_path / "a.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        for i in range(3):
            add_tar_file(tf, f"{i}.bin", os.urandom(300_000))
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) * 2 // 3])
    assert_rejected(archive, target, "corrupt")


def test_tar_gz_bomb_is_refused_as_soon_as_it_crosses_the_ratio(
    tmp_path: Path, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gzip

    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for i in range(128):
            add_tar_file(tf, f"zeros/{i:03}.bin", bytes(1024 * 1024))
    # Count every byte the gzip decoder hands out, whoever asks for it.
    decompressed = 0
    original = gzip._GzipReader.read  # type: ignore[attr-defined]

    def counting(self: Any, size: int = -1) -> bytes:
        nonlocal decompressed
        data: bytes = original(self, size)
        decompressed += len(data)
        return data

    monkeypatch.setattr(gzip._GzipReader, "read", counting)  # type: ignore[attr-defined]
    error = assert_rejected(archive, target, "compression-ratio")
    # Refused at the member whose header crosses 100x, long before the 128 MiB end.
    assert error.member is not None and error.member < "zeros/064.bin"
    assert decompressed < 64 * 1024 * 1024


def test_tar_whose_decompressed_stream_runs_past_the_limits_is_refused(
    tmp_path: Path, target: Path
) -> None:
    # A GNU long-name block is read whole by tarfile before any header can be checked.
    archive = tmp_path / "longname.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.GNU_FORMAT) as tf:
        add_tar_file(tf, "a" * 100 + "/" + "b" * 5_000_000 + ".txt", b"x")
    assert archive.stat().st_size < 64 * 1024
    assert_rejected(archive, target, "compression-ratio")
