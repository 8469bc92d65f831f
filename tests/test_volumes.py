"""An archive in several volumes: a round trip byte for byte, a missing, truncated or
corrupt volume refused before the output folder is touched, the parts of an older, larger
set never mixed into a newer one, and the previous set intact when a write dies."""
import filecmp
import io
import os
import tarfile

import pytest

from fosc_jax.reproduce import __main__ as cli
from fosc_jax.reproduce import archive, volumes

VOLUME = 8192


def _tree(root, big: int = 40_000, seed: int = 0) -> str:
    """An output folder: a model, a run with two checkpoints and a lock, an evaluation."""
    rng = __import__("numpy").random.default_rng(seed)
    files = {"models/m/variables.npz": rng.bytes(big), "eval/m.json": b'{"clean": 1}' * 50,
             "runs/m/metrics.jsonl": b'{"epoch": 1}\n' * 30, "runs/m/.lock": b"",
             "runs/m/checkpoints/10/commit_success.txt": b"",
             "runs/m/checkpoints/10/state": rng.bytes(5000),
             "runs/m/checkpoints/20/commit_success.txt": b"",
             "runs/m/checkpoints/20/state": rng.bytes(big // 2)}
    for name, data in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return str(root)


def _set(folder, base="a.tar.gz"):
    return sorted(f for f in os.listdir(folder) if f.startswith(base))


def test_a_set_of_tiny_volumes_unpacks_byte_for_byte(tmp_path):
    src = _tree(tmp_path / "src")
    box = str(tmp_path / "box" / "a.tar.gz")
    packed = archive.pack(src, box, volume_bytes=VOLUME, max_volumes=100)
    names = _set(tmp_path / "box")
    assert len(names) == len(packed.files) >= 5 and names[0] == "a.tar.gz"
    assert all(os.path.getsize(f) <= VOLUME for f in packed.files)
    kept = list(archive.members(src))
    assert archive.unpack(box, str(tmp_path / "new")) == len(kept) == 5
    assert "runs/m/checkpoints/10/state" not in kept and "runs/m/.lock" not in kept
    for dirpath, _, files in os.walk(tmp_path / "new"):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), tmp_path / "new")
            assert rel in kept, rel
    match, mismatch, errors = filecmp.cmpfiles(src, tmp_path / "new", kept, shallow=False)
    assert sorted(match) == sorted(kept) and not mismatch and not errors
    # The set is a split .tar.gz: concatenated in order, standard tools read it.
    joined = b"".join(open(f, "rb").read() for f in packed.files)
    with tarfile.open(fileobj=io.BytesIO(joined), mode="r:gz") as tar:
        assert tar.getnames() == [volumes.MANIFEST] + kept


def test_an_archive_that_fits_one_volume_is_one_plain_tar_gz_and_old_ones_still_unpack(
        tmp_path):
    src = _tree(tmp_path / "src", big=1000)
    box = str(tmp_path / "a.tar.gz")
    assert archive.pack(src, box).files == [box]
    with tarfile.open(box, "r:gz") as tar:
        assert tar.getnames()[0] == volumes.MANIFEST
    old = str(tmp_path / "old.tar.gz")         # as written before volumes
    with tarfile.open(old, "w:gz") as tar:
        tar.add(os.path.join(src, "eval"), arcname="eval")
    assert archive.unpack(old, str(tmp_path / "new")) == 1


@pytest.mark.parametrize("damage, message", [
    ("remove", r"volume 2 of \d+, a\.tar\.gz\.[0-9a-f]{8}\.part2, is missing"),
    ("truncate", r"volume 2 of \d+, a\.tar\.gz\.[0-9a-f]{8}\.part2, holds 100 bytes, not 8192"),
    ("flip", r"volume 2 of \d+, a\.tar\.gz\.[0-9a-f]{8}\.part2, is corrupt")])
def test_a_damaged_middle_volume_is_refused_before_the_output_folder_is_touched(
        tmp_path, capsys, damage, message):
    box = str(tmp_path / "a.tar.gz")
    packed = archive.pack(_tree(tmp_path / "src"), box, volume_bytes=VOLUME, max_volumes=100)
    part2 = packed.files[1]
    assert part2.endswith(".part2")
    if damage == "remove":
        os.remove(part2)
    else:
        data = open(part2, "rb").read()
        data = data[:100] if damage == "truncate" else data[:50] + bytes([data[50] ^ 1]) + data[51:]
        open(part2, "wb").write(data)
    fresh = str(tmp_path / "fresh")
    with pytest.raises(archive.ArchiveError, match=message):
        archive.unpack(box, fresh)
    assert sorted(os.listdir(tmp_path)) == sorted(["src"] + [os.path.basename(f) for f in
                                                             packed.files if os.path.exists(f)])
    assert cli.main(["mnist", "--data", "bundled", "--out", fresh, "--from-archive", box]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --from-archive: the archive") and err.count("\n") == 1
    assert not os.path.exists(fresh)


def test_parts_of_an_older_larger_set_never_leak_into_a_newer_one(tmp_path, monkeypatch):
    box = str(tmp_path / "a.tar.gz")
    big = archive.pack(_tree(tmp_path / "big", big=60_000, seed=1), box, VOLUME, 100)
    small_src = _tree(tmp_path / "small", big=12_000, seed=2)
    small = archive.pack(small_src, box, VOLUME, 100)
    assert len(small.files) < len(big.files)
    assert _set(tmp_path) == sorted(os.path.basename(f) for f in small.files)
    archive.unpack(box, str(tmp_path / "new"))
    kept = list(archive.members(small_src))
    assert filecmp.cmpfiles(small_src, tmp_path / "new", kept, shallow=False)[0] == kept

    # A write that dies after its parts, before FILE: the previous set stays whole; the
    # next write removes the orphaned parts.
    real = os.replace

    def dies_on_the_first_volume(a, b):
        if os.path.abspath(b) == box:
            raise OSError("the session ended")
        real(a, b)
    monkeypatch.setattr(os, "replace", dies_on_the_first_volume)
    with pytest.raises(OSError):
        archive.pack(str(tmp_path / "big"), box, VOLUME, 100)
    monkeypatch.setattr(os, "replace", real)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    archive.unpack(box, str(tmp_path / "again"))
    assert filecmp.cmpfiles(small_src, tmp_path / "again", kept, shallow=False)[0] == kept
    again = archive.pack(small_src, box, VOLUME, 100)
    assert _set(tmp_path) == sorted(os.path.basename(f) for f in again.files)
