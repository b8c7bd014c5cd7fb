"""Atomic writes: unique temporary names, and a failed write leaves the old file alone."""

from __future__ import annotations

import threading

import pytest

from ttsopt.data.files import atomic_path, atomic_write_bytes


def test_two_writers_of_one_file_never_share_a_temporary_name(tmp_path):
    target = tmp_path / "outcomes.parquet"
    inside = threading.Barrier(2)
    seen: list = []

    def write(payload: bytes) -> None:
        with atomic_path(target) as tmp:
            seen.append(tmp)
            tmp.write_bytes(payload)
            inside.wait(timeout=10)  # both are mid-write at the same moment

    threads = [threading.Thread(target=write, args=(p,)) for p in (b"first", b"second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen[0] != seen[1]
    assert target.read_bytes() in (b"first", b"second")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outcomes.parquet"]


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = atomic_write_bytes(tmp_path / "features.npz", b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["features.npz"]


def test_keep_existing_discards_a_second_copy_of_a_cache_folder(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target, directory=True, keep_existing=True) as tmp:
        (tmp / "config.json").write_text("mine")
    with atomic_path(target, directory=True, keep_existing=True) as tmp:
        (tmp / "config.json").write_text("theirs")
    assert (target / "config.json").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
