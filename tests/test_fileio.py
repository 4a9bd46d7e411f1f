"""Atomic writes leave the old file or folder, or the whole new one, never a part; hashing streams."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genprop_cli.fileio import (
    HASH_BLOCK,
    atomic_file,
    atomic_folder,
    partial_owner,
    partial_path,
    sha256_file,
    write_text_atomic,
)


def test_temp_names_are_hidden_beside_the_target_keep_its_suffix_and_name_their_process(tmp_path):
    target = tmp_path / "clip.genprop-remove.mp4"
    temp = partial_path(target)
    assert temp.parent == target.parent and temp.name.startswith(".clip.genprop-remove.mp4.partial-")
    assert temp.suffix == ".mp4" and temp != partial_path(target)  # unique per call
    assert partial_owner(temp, target) == os.getpid()
    assert partial_owner(tmp_path / "other.mp4", target) is None
    assert partial_path(target, unique=False).name == ".clip.genprop-remove.mp4.partial"


@pytest.mark.parametrize("durable", [False, True])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, durable):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target, durable=durable) as temp:
        temp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    write_text_atomic(target, "new", durable=durable)
    assert target.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_a_folder_appears_only_once_complete_and_replaces_the_old_one(tmp_path):
    target = tmp_path / "checkpoints" / "step-00000010"
    target.mkdir(parents=True)
    (target / "old.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_folder(target) as temp:
        (temp / "state.bin").write_bytes(b"half")
        assert not (target / "state.bin").exists()
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["old.bin"]
    assert [p.name for p in target.parent.iterdir()] == ["step-00000010"]
    with atomic_folder(target) as temp:
        (temp / "state.bin").write_bytes(b"new")
    assert sorted(p.name for p in target.iterdir()) == ["state.bin"]
    assert [p.name for p in target.parent.iterdir()] == ["step-00000010"]


@given(data=st.binary(max_size=3 * HASH_BLOCK // 2))
def test_sha256_file_matches_hashlib(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("h") / "f"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
