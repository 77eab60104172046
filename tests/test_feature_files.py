"""The joined feature file is self-contained, and every reader refuses a file it cannot trust.

The joined ``features/<split>.h5`` holds a copy of its shards' features: it reads the same with
its shards deleted, copied elsewhere, or read from a folder holding another run's shards at the
same relative path. A file written by the older join (an HDF5 virtual dataset over the shards,
which reads zeros for a missing shard and resolves the shards from the current directory), or
one missing what a feature file holds, is refused by every reader, naming the file and the fix.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tracemalloc
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf

from cilaudio.excerpts import ExcerptTable, FeatureDataset, excerpt_index
from cilaudio.features import FeatureSettings, extract_to_hdf5, join_shards, read_settings, skipped_clips

SMALL = FeatureSettings(sample_rate=16000, n_fft=512, win_length=512, hop_length=160, n_mels=64,
                        f_min=20.0, f_max=7000.0, excerpt_seconds=1.0, hop_seconds=1.0,
                        min_last_seconds=0.5)


def _clip(folder: Path, name: str, seconds: float, seed: int) -> tuple[str, Path]:
    path = folder / f"{name}.wav"
    wave = 0.2 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))
    sf.write(path, wave, 16000, subtype="PCM_16")
    return name, path


def make_shards(root: Path, n_shards: int = 2, seed: int = 0, dtype: str = "float32") -> list[Path]:
    """Shards of split ``dev`` under ``root/features/dev`` as the workflow extracts them: clips of
    several lengths (so several excerpts per clip), and a bad clip skipped in the last shard."""
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    settings = FeatureSettings(**{**asdict(SMALL), "dtype": dtype})
    shards = []
    for s in range(n_shards):
        clips = [_clip(audio, f"s{s}c{j}", seconds, seed * 100 + 10 * s + j)
                 for j, seconds in enumerate((0.7, 2.0, 1.6))]
        if s == n_shards - 1:
            clips.append((f"s{s}bad", audio / "gone.wav"))
        out = root / "features" / "dev" / f"shard{s}of{n_shards}.h5"
        extract_to_hdf5(clips, out, settings, on_bad_audio="skip")
        shards.append(out)
    return shards


def read_shards(shards: list[Path]) -> dict:
    """What the joined file must hold, read from the shards themselves."""
    feats, names, starts, skipped, settings = [], [], [], {}, set()
    for path in shards:
        with h5py.File(path, "r") as h5:
            feats.append(h5["features"][:])
            names += list(h5["fname"].asstr()[:])
            starts.append(h5["start"][:])
            skipped.update(json.loads(h5.attrs["skipped"]))
            settings.add(h5.attrs["settings"])
            dtype = h5["features"].dtype
    assert len(settings) == 1
    return {"features": np.concatenate(feats), "fname": names, "start": np.concatenate(starts),
            "skipped": skipped, "settings": json.loads(settings.pop()), "dtype": dtype}


def all_rows(path: Path) -> ExcerptTable:
    n = sum(len(r) for r in excerpt_index(path).values())
    return ExcerptTable(np.arange(n), np.zeros((n, 1), dtype=np.float32), np.arange(n))


def read_every_way(path: Path) -> dict[str, np.ndarray]:
    """The features as each reader returns them: streamed items, through a worker, in memory."""
    table = all_rows(path)
    streamed = FeatureDataset(path, table, in_memory=False)
    return {
        "item": np.stack([streamed[i][0].numpy() for i in range(len(table))]),
        "worker": np.stack([x.numpy() for x, _ in pickle.loads(pickle.dumps(streamed))]),
        "in_memory": np.stack([x.numpy() for x, _ in FeatureDataset(path, table, in_memory=True)]),
    }


def assert_reads(path: Path, expected: dict) -> None:
    index = excerpt_index(path)
    assert {k: list(v) for k, v in index.items()} == {
        n: [i for i, m in enumerate(expected["fname"]) if m == n] for n in set(expected["fname"])}
    assert index.skipped == expected["skipped"]
    for way, x in read_every_way(path).items():
        np.testing.assert_array_equal(x, expected["features"].astype(np.float32), err_msg=way)
    assert read_settings(path) == expected["settings"]
    assert skipped_clips(path) == expected["skipped"]


def test_joined_file_holds_the_shards_data(tmp_path):
    shards = make_shards(tmp_path, n_shards=3, dtype="float16")
    expected = read_shards(shards)
    out = tmp_path / "features" / "dev.h5"
    n = join_shards(shards, out, block_bytes=3 * 101 * 64 * 2)  # 3 rows a block: several blocks a shard
    assert n == len(expected["fname"]) == 3 * 5
    with h5py.File(out, "r") as h5:
        feats = h5["features"]
        assert not feats.is_virtual
        assert feats.dtype == expected["dtype"] == np.float16
        assert feats.chunks == (1, SMALL.n_frames, SMALL.n_mels)
        assert feats.compression is None
        np.testing.assert_array_equal(feats[:], expected["features"])
        assert list(h5["fname"].asstr()[:]) == expected["fname"]
        np.testing.assert_array_equal(h5["start"][:], expected["start"])
        assert h5["start"].dtype == np.float32
        assert json.loads(h5.attrs["settings"]) == expected["settings"]
        assert json.loads(h5.attrs["skipped"]) == expected["skipped"]
        assert list(expected["skipped"]) == ["s2bad"]
        assert json.loads(h5.attrs["shards"]) == [f"dev/shard{i}of3.h5" for i in range(3)]
    assert_reads(out, expected)
    assert not list(out.parent.glob("*.tmp-*"))


def test_joined_file_reads_right_with_a_shard_deleted(tmp_path):
    shards = make_shards(tmp_path)
    expected = read_shards(shards)
    out = tmp_path / "features" / "dev.h5"
    join_shards(shards, out)
    shards[1].unlink()  # deleted to save space, or removed by Snakemake after a failed re-extraction
    assert_reads(out, expected)
    shards[0].unlink()
    assert_reads(out, expected)


def test_copied_results_read_their_own_features_not_a_decoy_in_the_cwd(tmp_path, monkeypatch):
    """results/ copied to node-local scratch without the shards, read from a folder holding
    another run's ``dev/shard0of1.h5`` (the relative path the old join's virtual source used)."""
    shards = make_shards(tmp_path / "home" / "results", n_shards=1, seed=1)
    expected = read_shards(shards)
    join_shards(shards, tmp_path / "home/results/features/dev.h5")
    scratch = tmp_path / "scratch/results/features"
    scratch.mkdir(parents=True)
    shutil.copy2(tmp_path / "home/results/features/dev.h5", scratch / "dev.h5")
    shutil.rmtree(tmp_path / "home")
    decoy = make_shards(tmp_path / "other", n_shards=1, seed=2)[0]
    with h5py.File(decoy, "r") as h5:
        assert h5["features"].shape[1:] == expected["features"].shape[1:]
        assert not np.array_equal(h5["features"][: len(expected["fname"])], expected["features"])
    cwd = tmp_path / "cwd"
    (cwd / "dev").mkdir(parents=True)
    shutil.copy2(decoy, cwd / "dev/shard0of1.h5")
    monkeypatch.chdir(cwd)
    assert_reads(scratch / "dev.h5", expected)


def write_shard(path: Path, x: np.ndarray, **options) -> Path:
    """A shard in the extraction's layout holding ``x``, its features dataset made with ``options``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("features", data=x, chunks=(1, *x.shape[1:]), **options)
        h5.create_dataset("fname", data=np.array([f"c{i}" for i in range(len(x))], dtype=object),
                          dtype=h5py.string_dtype())
        h5.create_dataset("start", data=np.zeros(len(x), dtype=np.float32))
        h5.attrs["settings"] = json.dumps(asdict(SMALL))
        h5.attrs["skipped"] = "{}"
    return path


def test_join_reads_the_shards_in_bounded_blocks(tmp_path):
    """A shard of 12 MB joined with 1-MB blocks: memory stays near one block, not one shard."""
    rows, frames, mels = 480, SMALL.n_frames, SMALL.n_mels
    x = np.random.default_rng(0).standard_normal((rows, frames, mels)).astype(np.float32)
    shard = write_shard(tmp_path / "features/dev/shard0of1.h5", x)
    del x
    out = tmp_path / "features/dev.h5"
    tracemalloc.start()
    try:
        join_shards([shard], out, block_bytes=2**20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows * frames * mels * 4 > 10 * 2**20
    assert peak < 4 * 2**20, f"the join held {peak / 2**20:.1f} MiB at once"
    with h5py.File(out, "r") as h5, h5py.File(shard, "r") as src:
        np.testing.assert_array_equal(h5["features"][:], src["features"][:])


def test_join_keeps_the_shards_compression(tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 7, 3)).astype(np.float32)
    shards = [write_shard(tmp_path / f"dev/shard{i}of2.h5", x + i, compression="gzip", compression_opts=4,
                          shuffle=True) for i in range(2)]
    join_shards(shards, tmp_path / "dev.h5", block_bytes=2 * 7 * 3 * 4)
    with h5py.File(tmp_path / "dev.h5", "r") as h5:
        feats = h5["features"]
        assert (feats.compression, feats.compression_opts, feats.shuffle) == ("gzip", 4, True)
        assert feats.chunks == (1, 7, 3)
        np.testing.assert_array_equal(feats[:], np.concatenate([x, x + 1]))


def test_failed_join_leaves_no_file(tmp_path):
    shards = make_shards(tmp_path)
    other = FeatureSettings(**{**asdict(SMALL), "n_mels": 40})
    name, path = _clip(tmp_path / "audio", "x", 1.0, 9)
    extract_to_hdf5([(name, path)], shards[1], other)
    out = tmp_path / "features/dev.h5"
    with pytest.raises(ValueError, match="shard1of2.h5.*other feature settings"):
        join_shards(shards, out)
    assert not out.exists() and not list(out.parent.glob("*.tmp-*"))


# ---- files the readers must refuse -------------------------------------------------------------


def write_legacy_join(shards: list[Path], out: Path) -> None:
    """A joined file as the older cilaudio wrote it: ``features`` a virtual dataset over the shards."""
    metas = []
    for path in shards:
        with h5py.File(path, "r") as h5:
            metas.append((path, h5["features"].shape, h5["features"].dtype, h5["fname"].asstr()[:],
                           h5["start"][:], h5.attrs["settings"], json.loads(h5.attrs["skipped"])))
    total = sum(m[1][0] for m in metas)
    layout = h5py.VirtualLayout(shape=(total, *metas[0][1][1:]), dtype=metas[0][2])
    n0 = 0
    for path, shape, *_ in metas:
        layout[n0:n0 + shape[0]] = h5py.VirtualSource(os.path.relpath(path, out.parent), "features", shape=shape)
        n0 += shape[0]
    with h5py.File(out, "w") as h5:
        h5.create_virtual_dataset("features", layout)
        h5.create_dataset("fname", data=np.concatenate([m[3] for m in metas]).astype(object),
                          dtype=h5py.string_dtype())
        h5.create_dataset("start", data=np.concatenate([m[4] for m in metas]).astype("float32"))
        h5.attrs["settings"] = metas[0][5]
        h5.attrs["skipped"] = json.dumps({k: v for m in metas for k, v in m[6].items()})
        h5.attrs["shards"] = json.dumps([os.path.relpath(m[0], out.parent) for m in metas])


def readers(path: Path) -> dict:
    """Every way the library reads a feature file."""
    from cilaudio import features as F

    table = ExcerptTable(np.arange(2), np.zeros((2, 1), dtype=np.float32), np.arange(2))
    return {
        "open_features": lambda: F.open_features(path).close(),
        "excerpt_index": lambda: excerpt_index(path),
        "FeatureDataset": lambda: FeatureDataset(path, table)[0],
        "FeatureDataset in_memory": lambda: FeatureDataset(path, table, in_memory=True),
        "skipped_clips": lambda: skipped_clips(path),
        "read_settings": lambda: read_settings(path),
    }


@pytest.mark.parametrize("keep_shards", [True, False])
def test_legacy_virtual_file_is_refused_by_every_reader(tmp_path, keep_shards):
    shards = make_shards(tmp_path)
    out = tmp_path / "features/dev.h5"
    write_legacy_join(shards, out)
    if not keep_shards:
        shards[1].unlink()
    for name, read in readers(out).items():
        with pytest.raises(ValueError) as err:
            read()
        text = str(err.value)
        assert str(out) in text, name
        assert "virtual dataset" in text and "zeros" in text and "current directory" in text, name
        assert "delete" in text.lower() and "rerun" in text and "re-join" in text, name


def test_worker_handle_refuses_a_file_replaced_by_a_legacy_one(tmp_path):
    """A DataLoader worker opens its own handle: that open is checked too."""
    shards = make_shards(tmp_path)
    out = tmp_path / "features/dev.h5"
    join_shards(shards, out)
    data = FeatureDataset(out, all_rows(out))
    legacy = tmp_path / "legacy.h5"
    write_legacy_join(shards, legacy)
    os.replace(legacy, out)
    worker = pickle.loads(pickle.dumps(data))
    with pytest.raises(ValueError, match="virtual dataset"):
        worker[0]


def _h5(path: Path, *, features: bool = True, fname: bool = True, attrs: tuple = ("settings", "skipped")) -> Path:
    with h5py.File(path, "w") as h5:
        if features:
            h5.create_dataset("features", data=np.zeros((2, 3, 4), dtype=np.float32), chunks=(1, 3, 4))
        if fname:
            h5.create_dataset("fname", data=np.array(["a", "b"], dtype=object), dtype=h5py.string_dtype())
        h5.create_dataset("start", data=np.zeros(2, dtype=np.float32))
        for key in attrs:
            h5.attrs[key] = json.dumps(asdict(SMALL)) if key == "settings" else "{}"
    return path


@pytest.mark.parametrize("kwargs, what", [
    (dict(features=False), "'features'"),
    (dict(fname=False), "'fname'"),
    (dict(attrs=("skipped",)), "'settings'"),
    (dict(attrs=("settings",)), "'skipped'"),
])
def test_incomplete_file_is_refused_by_every_reader(tmp_path, kwargs, what):
    path = _h5(tmp_path / "dev.h5", **kwargs)
    for name, read in readers(path).items():
        with pytest.raises(ValueError) as err:
            read()
        assert str(path) in str(err.value) and what in str(err.value), name
        assert "rerun" in str(err.value), name


def test_missing_or_foreign_file_is_named(tmp_path):
    from cilaudio.features import open_features

    with pytest.raises(FileNotFoundError, match="nothere.h5"):
        open_features(tmp_path / "nothere.h5")
    (tmp_path / "text.h5").write_text("not HDF5")
    with pytest.raises(ValueError, match="text.h5.*not an HDF5 file"):
        open_features(tmp_path / "text.h5")


def test_open_features_is_a_context_manager(tmp_path):
    from cilaudio.features import open_features

    path = _h5(tmp_path / "ok.h5")
    with open_features(path) as h5:
        assert h5["features"].shape == (2, 3, 4)
    assert not h5.id.valid


def test_move_to_device_keeps_no_host_copy(tmp_path):
    """`features_on_gpu` moves a phase's features to the GPU: the host must keep no copy (the
    dataset's in-memory rows are released) and, streamed, must not hold two copies at once while
    ordering them. The "meta" device stands in for a GPU: it stores nothing, so the host memory
    traced is all the move costs."""
    join = tmp_path / "dev.h5"
    join_shards(make_shards(tmp_path, n_shards=2), join)
    table = all_rows(join)
    expected = np.stack([x.numpy() for x, _ in FeatureDataset(join, table)])
    for in_memory in (False, True):
        ds = FeatureDataset(join, table, in_memory=in_memory)
        np.testing.assert_array_equal(ds.move_to("cpu").numpy(), expected)
        assert ds._cache is None  # nothing of it kept on the host by the dataset
    FeatureDataset(join, table).move_to("meta")  # first-call costs (imports, caches) not counted
    ds = FeatureDataset(join, table)
    tracemalloc.start()
    moved = ds.move_to("meta")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert moved.shape == expected.shape and moved.device.type == "meta"
    assert peak < 1.5 * expected.nbytes, (peak, expected.nbytes)


def test_evaluation_with_loader_workers_scores_the_same(tmp_path):
    """Evaluation and CKA read test excerpts through loader workers when `training.num_workers`
    is set: the scores must be those of the plain loop, in the same order."""
    import torch

    from cilaudio.evaluate import predict
    from cilaudio.model import CNN14, ModelSettings

    join = tmp_path / "dev.h5"
    join_shards(make_shards(tmp_path, n_shards=2), join)
    data = FeatureDataset(join, all_rows(join))
    torch.manual_seed(0)
    model = CNN14(ModelSettings(norm="bn", width=4, n_classes=3))
    plain = predict(model, data, batch_size=3, device=torch.device("cpu"))
    with torch.no_grad():  # an independent computation: every excerpt on its own, in table order
        one_by_one = np.concatenate([torch.sigmoid(model.eval()(data[i][0][None])[0]).numpy()
                                     for i in range(len(data))])
    np.testing.assert_allclose(plain, one_by_one, rtol=1e-5, atol=1e-6)
    workers = predict(model, data, batch_size=3, device=torch.device("cpu"), num_workers=2)
    np.testing.assert_array_equal(workers, plain)
