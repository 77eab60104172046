#!/usr/bin/env python
"""Throughput and memory benchmark of the data path and the training step (a script, not a test).

Every figure is measured in one run on one machine, each measurement in its own child process,
so that its peak RSS is the kernel's figure for that child alone (``os.wait4``'s ``ru_maxrss``;
the child also reports its ``VmHWM`` and its RSS right after importing torch, and leaves with
``os._exit`` so that the interpreter's teardown, which adds about 130 MB with torch loaded, does
not count). Stages:

1. dataset: the built-in generator (``cilaudio.synth.generate``) writes an FSD50K-layout set of
   ``--clips`` 1-s development clips (44.1 kHz WAV, ``clips / 50`` per class) and a small eval
   set into ``--workdir``; an existing set of the same size is reused.
2. extraction: ``extract_to_hdf5`` (one process, one thread) on the small set (``--small``)
   and on all clips: clips/s, multiple of real time per core, peak RSS and the ratio of the
   two peaks (flat is the goal). Then the workflow's way: one shard per core in parallel, joined
   with ``join_shards`` (a copy into one self-contained file); training below reads the joined files.
3. training memory: peak RSS of one epoch of width-8 CNN14 (``train.fit``, batch 32, streaming
   from HDF5) on the small and on the full set; the epoch is capped at ``--max-steps`` updates,
   the dataset is not.
4. loader: FeatureDataset + DataLoader against a reference dataset that decodes, resamples
   and computes log-mels in ``__getitem__`` every epoch; excerpts/s and their ratio.
5. loading share of a CPU training step (width 8, batch 32, streaming, no loader workers).
6. GPU: full-width CNN14 on 10-s inputs, fp32 and bf16 autocast (needs CUDA); on a CPU the
   full-width model on 1-s inputs instead (a couple of steps).

Usage (see docs/benchmark.md)::

    .venv/bin/python tools/benchmark.py --quick      # 4,000 clips, a couple of minutes
    .venv/bin/python tools/benchmark.py              # 20,000 clips, about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

GROUP_SIZES = (30, 5, 5, 5, 5)
N_CLASSES = sum(GROUP_SIZES)
CLIP_SECONDS = 1.0
SOURCE_RATE = 44100
BATCH = 32
NARROW = 8
WIDE = 64
RSS_FLAT = 1.10  # target for "memory does not grow with the number of clips": ratio of peaks
LOADER_RATIO = 20.0
SHARE_TARGET = 0.10

# The default run's features (config/config.yaml) and the papers' (32 kHz, 1024 / 320), 1-s excerpts.
FEATURES = {
    "16k": dict(sample_rate=16000, n_fft=512, win_length=512, hop_length=160, n_mels=64, f_min=20.0,
                f_max=7000.0, excerpt_seconds=1.0, hop_seconds=1.0, min_last_seconds=0.5, dtype="float32"),
    "papers": dict(sample_rate=32000, n_fft=1024, win_length=1024, hop_length=320, n_mels=64, f_min=20.0,
                   f_max=14000.0, excerpt_seconds=1.0, hop_seconds=1.0, min_last_seconds=0.5,
                   dtype="float32"),
}
RESULT_TAG = "BENCH_RESULT "


# ------------------------------------------------------------------------------ child side


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _memory() -> dict:
    return {"vmhwm_kb": _status_kb("VmHWM"), "vmrss_kb": _status_kb("VmRSS")}


def _baseline() -> int:
    """RSS right after the heavy imports (what every child pays before doing any work)."""
    import h5py  # noqa: F401
    import torch  # noqa: F401
    import torchaudio  # noqa: F401

    import cilaudio.excerpts  # noqa: F401
    import cilaudio.features  # noqa: F401
    import cilaudio.train  # noqa: F401

    return _status_kb("VmRSS")


def child_probe(a: dict) -> dict:
    import torch

    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    if out["cuda"]:
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def child_generate(a: dict) -> dict:
    from cilaudio import synth

    total = (a["dev_per_class"] + a["eval_per_class"]) * N_CLASSES
    step = max(1, total // 10)
    t0 = time.perf_counter()

    def progress(done: int, n: int) -> None:
        if done % step == 0 or done == n:
            el = time.perf_counter() - t0
            print(f"    generated {done}/{n} clips, {el:.0f} s, {done / el:.0f} clips/s",
                  file=sys.stderr, flush=True)

    synth.generate(Path(a["root"]), seed=a["seed"], group_sizes=GROUP_SIZES,
                   dev_clips=[a["dev_per_class"] * s for s in GROUP_SIZES],
                   eval_clips=[a["eval_per_class"] * s for s in GROUP_SIZES],
                   sample_rate=SOURCE_RATE, min_seconds=CLIP_SECONDS, max_seconds=CLIP_SECONDS,
                   progress=progress)
    return {"seconds": time.perf_counter() - t0, "clips": total}


def child_lists(a: dict) -> dict:
    """One training list of every development clip (all 50 classes) and an evenly spread subset."""
    import pandas as pd

    from cilaudio import lists as L
    from cilaudio.fsd50k import FSD50K

    ds = FSD50K(Path(a["root"]))
    vocab = ds.load_vocabulary()["label"].tolist()
    dev = ds.load_split("dev")
    labels = [L.join_labels(x) for x in dev["labels"]]
    frame = pd.DataFrame({"fname": dev["fname"], "labels": labels, "all_labels": labels})
    n, k = len(frame), a["small"]
    pick = sorted({int(i * n / k) for i in range(k)})
    out = Path(a["out"])
    out.mkdir(parents=True, exist_ok=True)
    L.write_list(frame, out / "all.tsv")
    L.write_list(frame.iloc[pick], out / "small.tsv")
    (out / "classes.txt").write_text("\n".join(vocab) + "\n")
    return {"all": n, "small": len(pick)}


def child_extract(a: dict) -> dict:
    from cilaudio.features import FeatureSettings, extract_to_hdf5, shard_of
    from cilaudio.fsd50k import FSD50K
    from cilaudio.lists import read_list

    base = _baseline()
    ds = FSD50K(Path(a["root"]))
    names = read_list(a["list"])["fname"].tolist()
    if a.get("n_shards", 1) > 1:
        names = shard_of(names, a["shard"], a["n_shards"])
    paths = [(n, ds.audio_path("dev", n)) for n in names]
    start = time.time()
    t0 = time.perf_counter()
    n_ex = extract_to_hdf5(paths, a["out"], FeatureSettings(**a["features"]), threads=a["threads"])
    dt = time.perf_counter() - t0
    return {"clips": len(paths), "excerpts": n_ex, "seconds": dt, "start": start, "end": start + dt,
            "threads": a["threads"], "baseline_kb": base, **_memory()}


def child_join(a: dict) -> dict:
    from cilaudio.features import join_shards

    t0 = time.perf_counter()
    n = join_shards(a["shards"], a["out"])
    return {"excerpts": n, "seconds": time.perf_counter() - t0}


def _table(a: dict):
    """(classes, the list's excerpt table) for the list ``a['list']`` and features ``a['features']``."""
    from cilaudio.excerpts import excerpt_index, excerpts_of
    from cilaudio.lists import read_list

    classes = Path(a["classes"]).read_text().split("\n")
    classes = [c for c in classes if c]
    return classes, excerpts_of(read_list(a["list"]), classes, excerpt_index(a["features"]),
                                source=a["list"], features=a["features"])


def child_train_epoch(a: dict) -> dict:
    import torch

    from cilaudio.losses import bce_loss
    from cilaudio.model import CNN14, ModelSettings
    from cilaudio.phases import ClassSplit
    from cilaudio.train import ExecutionSettings, OptimSettings, fit, pos_weights_of
    from cilaudio.training_data import training_set

    base = _baseline()
    torch.set_num_threads(a["threads"])
    torch.manual_seed(0)
    classes = [c for c in Path(a["classes"]).read_text().split("\n") if c]
    class_split = ClassSplit.from_sizes(classes, [len(classes)])
    loader = ExecutionSettings(num_workers=0, in_memory=False)
    t0 = time.perf_counter()
    data = training_set(phase=0, class_split=class_split, lists=[Path(a["list"])], features=Path(a["features"]),
                        cumulative=False, in_memory=loader.in_memory)
    t_set = time.perf_counter() - t0
    after_set = _status_kb("VmRSS")
    model = CNN14(ModelSettings(norm="bn", width=a["width"], n_mels=64, n_classes=len(classes)))
    pos_weight = pos_weights_of(data.table.targets, 0)

    def step_loss(x, y):
        logits, _ = model(x)
        loss = bce_loss(logits, y, pos_weight)
        return loss, {"bce": loss.detach()}

    steps = math.ceil(len(data) / BATCH)
    if a["max_steps"]:
        steps = min(steps, a["max_steps"])
    epoch_size = min(len(data), steps * BATCH)
    optim = OptimSettings(epochs=1, batch_size=BATCH, lr=0.01, lr_min=1e-4)
    t0 = time.perf_counter()
    fit(model=model, data=data, optim=optim, execution=loader, seed=0, device=torch.device("cpu"),
         step_loss=step_loss, what="benchmark", epoch_size=epoch_size)
    dt = time.perf_counter() - t0
    return {"excerpts": len(data), "steps": steps, "seconds": dt, "set_seconds": t_set,
            "rss_after_set_kb": after_set, "baseline_kb": base, **_memory()}


def _warm_page_cache(paths) -> int:
    """Read ``paths`` once so that timed reads come from the page cache; returns bytes read."""
    total = 0
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                total += len(chunk)
    return total


def _timed_batches(loader, n_batches: int, warm: int = 1) -> tuple[int, float]:
    """Items and seconds of ``n_batches`` batches, after ``warm`` untimed ones (worker start-up)."""
    it = iter(loader)
    for _ in range(warm):
        next(it)
    items, t0 = 0, time.perf_counter()
    for _ in range(n_batches):
        x, _ = next(it)
        items += len(x)
    dt = time.perf_counter() - t0
    del it  # stops the loader's workers
    return items, dt


def child_loader(a: dict) -> dict:
    import h5py
    import soundfile as sf
    import torch
    import torchaudio
    from torch.utils.data import Dataset

    from cilaudio.excerpts import FeatureDataset
    from cilaudio.features import FeatureSettings, LogMel, open_features
    from cilaudio.fsd50k import FSD50K
    from cilaudio.batches import TRANSFER_GROUP, training_batches

    torch.set_num_threads(1)  # one core per loading process (workers get one thread anyway)
    _, table = _table(a)
    settings = FeatureSettings(**a["feature_settings"])

    if a["kind"] == "hdf5":
        dataset = FeatureDataset(a["features"], table, in_memory=False)
    else:
        with open_features(a["features"]) as h5:
            names = h5["fname"].asstr()[:][table.rows]
            starts = h5["start"][:][table.rows]
        ds = FSD50K(Path(a["root"]))

        class ReferenceDataset(Dataset):
            """Decode, resample and compute the log-mel of an excerpt at every access."""

            def __init__(self) -> None:
                self.paths = [str(ds.audio_path("dev", n)) for n in names]
                self.logmel = LogMel(settings)

            def __len__(self) -> int:
                return len(self.paths)

            def __getitem__(self, i: int):
                data, rate = sf.read(self.paths[i], dtype="float32", always_2d=True)  # (samples, ch)
                wave = torchaudio.functional.resample(torch.from_numpy(data.mean(axis=1)), rate,
                                                      settings.sample_rate)
                s = int(round(float(starts[i]) * settings.sample_rate))
                piece = torch.zeros(settings.excerpt_samples)
                seg = wave[s:s + settings.excerpt_samples]
                piece[:len(seg)] = seg
                with torch.inference_mode():
                    x = self.logmel(piece)  # (frames, mels)
                return x, torch.from_numpy(table.targets[i])

        dataset = ReferenceDataset()
    # both designs go through the training loop's own loader (batches.training_batches: with workers, they
    # hand over TRANSFER_GROUP batches at once); only the dataset differs
    warm = TRANSFER_GROUP if a["workers"] else 1  # untimed: worker start-up, the first hand-over
    loader = training_batches(dataset, BATCH, seed=0, device=torch.device("cpu"),
                              epoch_size=(a["batches"] + warm) * BATCH, num_workers=a["workers"])
    items, dt = _timed_batches(loader, a["batches"], warm)
    x = dataset[0][0]
    return {"items": items, "seconds": dt, "excerpts_per_s": items / dt, "shape": list(x.shape),
            "workers": a["workers"], **_memory()}


def child_share(a: dict) -> dict:
    """Time waiting on the loader vs forward/backward/step of the narrow model, batch by batch."""
    import torch

    from cilaudio.excerpts import FeatureDataset
    from cilaudio.losses import bce_loss
    from cilaudio.model import CNN14, ModelSettings
    from cilaudio.batches import training_batches
    from cilaudio.train import pos_weights_of

    torch.set_num_threads(a["threads"])
    torch.manual_seed(0)
    classes, table = _table(a)
    dataset = FeatureDataset(a["features"], table, in_memory=False)
    loader = training_batches(dataset, BATCH, seed=0, device=torch.device("cpu"),
                              epoch_size=(a["warmup"] + a["steps"]) * BATCH,
                              num_workers=a["workers"])  # the training loop's own loader
    model = CNN14(ModelSettings(norm="bn", width=a["width"], n_mels=64, n_classes=len(classes)))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    pos_weight = pos_weights_of(table.targets, 0)
    wait = compute = 0.0
    it = iter(loader)
    for i in range(a["warmup"] + a["steps"]):
        t0 = time.perf_counter()
        x, y = next(it)
        t1 = time.perf_counter()
        logits, _ = model(x)
        loss = bce_loss(logits, y, pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        t2 = time.perf_counter()
        if i >= a["warmup"]:
            wait += t1 - t0
            compute += t2 - t1
    del it
    return {"steps": a["steps"], "wait_s": wait, "compute_s": compute, "share": wait / (wait + compute),
            "threads": torch.get_num_threads(), "workers": a["workers"], **_memory()}


def child_model_speed(a: dict) -> dict:
    """Training throughput of CNN14 on random inputs, per precision (fp32 / bf16 autocast)."""
    import torch

    from cilaudio.losses import bce_loss
    from cilaudio.model import CNN14, ModelSettings
    from cilaudio.train import autocast

    dev = torch.device(a["device"])
    if dev.type == "cpu":
        torch.set_num_threads(a["threads"])
    torch.manual_seed(0)
    model = CNN14(ModelSettings(norm="bn", width=a["width"], n_mels=64, n_classes=N_CLASSES)).to(dev)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(a["batch"], a["frames"], 64, device=dev)  # (batch, frames, mels)
    y = (torch.rand(a["batch"], N_CLASSES, device=dev) < 0.05).float()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    out = {"device": str(dev), "threads": torch.get_num_threads()}
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)
    for precision in a["precisions"]:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for i in range(a["warmup"] + a["steps"]):
            if i == a["warmup"]:
                sync()
                t0 = time.perf_counter()
            with autocast(dev, precision):
                logits, _ = model(x)
                loss = bce_loss(logits, y, 10.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()
        dt = time.perf_counter() - t0
        out[precision] = {"clips_per_s": a["steps"] * a["batch"] / dt, "seconds": dt, "steps": a["steps"]}
        if dev.type == "cuda":
            out[precision]["peak_gpu_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    out.update(_memory())
    return out


def _ten_second_features(path: Path, n: int) -> None:
    """``n`` random 10-s excerpts (1001 x 64 float16) in the workflow's HDF5 layout; the content
    does not matter for speed. Kept for the next run of the same size."""
    import h5py
    import numpy as np

    from cilaudio.features import FeatureSettings

    if path.exists():
        return
    rng = np.random.default_rng(0)
    tmp = path.with_name(path.name + ".part")
    with h5py.File(tmp, "w") as h5:
        feats = h5.create_dataset("features", shape=(n, 1001, 64), dtype="float16", chunks=(1, 1001, 64))
        for i in range(0, n, 256):
            m = min(256, n - i)
            feats[i:i + m] = rng.standard_normal((m, 1001, 64), dtype=np.float32).astype(np.float16)
        h5.create_dataset("fname", data=np.array([f"c{i}" for i in range(n)], dtype=object),
                          dtype=h5py.string_dtype())
        h5.create_dataset("start", data=np.zeros(n, dtype="float32"))
        h5.attrs["settings"] = json.dumps(asdict(FeatureSettings(
            sample_rate=32000, n_fft=1024, win_length=1024, hop_length=320, n_mels=64, f_min=20.0,
            f_max=14000.0, excerpt_seconds=10.0, hop_seconds=10.0, dtype="float16")))
        h5.attrs["skipped"] = "{}"
    tmp.rename(path)


def child_fit_speed(a: dict) -> dict:
    """The workflow's training loop end to end: ``train.fit`` streaming 10-s float16 excerpts
    from HDF5 through the DataLoader (workers, pinned memory and non-blocking copies on CUDA),
    one epoch of ``steps`` updates, start-up included."""
    import numpy as np
    import torch

    from cilaudio.excerpts import ExcerptTable, FeatureDataset
    from cilaudio.losses import bce_loss
    from cilaudio.model import CNN14, ModelSettings
    from cilaudio.train import ExecutionSettings, NumericSettings, OptimSettings, fit

    path = Path(a["features"])
    _ten_second_features(path, a["clips"])
    dev = torch.device(a["device"])
    torch.set_num_threads(a["threads"])
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = a["clips"]
    table = ExcerptTable(rows=np.arange(n), targets=(rng.random((n, N_CLASSES)) < 0.05).astype(np.float32),
                         clip=np.arange(n))
    data = FeatureDataset(path, table)
    model = CNN14(ModelSettings(norm="bn", width=a["width"], n_mels=64, n_classes=N_CLASSES)).to(dev)

    def step_loss(x, y):
        logits, _ = model(x)
        loss = bce_loss(logits, y, 10.0)
        return loss, {"bce": loss.detach()}

    out = {"device": str(dev), "workers": a["workers"], "width": a["width"], "threads": torch.get_num_threads()}
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)
    for precision in a["precisions"]:
        execution = ExecutionSettings(num_workers=a["workers"], in_memory=False)
        t0 = time.perf_counter()
        fit(model=model, data=data, optim=OptimSettings(epochs=1, batch_size=BATCH, lr=0.01, lr_min=1e-4),
             execution=execution, numeric=NumericSettings(precision=precision), seed=0, device=dev, step_loss=step_loss, what="benchmark",
             epoch_size=a["steps"] * BATCH)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        out[precision] = {"clips_per_s": a["steps"] * BATCH / dt, "seconds": dt, "steps": a["steps"]}
    out.update(_memory())
    return out


CHILDREN = {
    "probe": child_probe, "generate": child_generate, "lists": child_lists, "extract": child_extract,
    "join": child_join, "train_epoch": child_train_epoch, "loader": child_loader, "share": child_share,
    "model_speed": child_model_speed, "fit_speed": child_fit_speed,
}


def child_main(stage: str, args_json: str) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    result = CHILDREN[stage](json.loads(args_json))
    print(RESULT_TAG + json.dumps(result), flush=True)
    logging.shutdown()
    sys.stderr.flush()
    # Skip the interpreter's teardown: with torch loaded it raises the RSS by about 130 MB after
    # the work is done, and the kernel's peak of the process (ru_maxrss) would count it.
    os._exit(0)


# ----------------------------------------------------------------------------- parent side


class ChildFailed(RuntimeError):
    pass


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.t0 = time.perf_counter()
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def say(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f} s] {msg}", flush=True)

    def start(self, stage: str, args: dict, name: str, *, show_stderr: bool = False):
        out = open(self.logs / f"{name}.out", "w")
        err = None if show_stderr else open(self.logs / f"{name}.log", "w")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, json.dumps(args)]
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        return proc, name, out, err

    def finish(self, handle) -> dict:
        """Wait for a child; its result with the kernel's peak RSS of that child (``maxrss_kb``)."""
        proc, name, out, err = handle
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.close()
        if err is not None:
            err.close()
        lines = [x for x in (self.logs / f"{name}.out").read_text().splitlines() if x.startswith(RESULT_TAG)]
        if proc.returncode != 0 or not lines:
            tail = ""
            if (self.logs / f"{name}.log").exists():
                tail = "\n".join((self.logs / f"{name}.log").read_text().splitlines()[-15:])
            raise ChildFailed(f"{name} failed (exit {proc.returncode}); log {self.logs / name}.log:\n{tail}")
        result = json.loads(lines[-1][len(RESULT_TAG):])
        result["maxrss_kb"] = usage.ru_maxrss  # KiB on Linux
        return result

    def run(self, stage: str, args: dict, name: str, what: str, *, show_stderr: bool = False) -> dict:
        self.say(f"{what} ...")
        t = time.perf_counter()
        result = self.finish(self.start(stage, args, name, show_stderr=show_stderr))
        self.say(f"{what}: done in {time.perf_counter() - t:.1f} s")
        return result


def _mb(kb: float) -> float:
    return kb / 1024.0


class Figures:
    """The summary table: (figure, value, unit, target, PASS/FAIL/-)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, figure: str, value, unit: str = "", *, target: str = "", ok: bool | None = None,
            note: str = "") -> None:
        status = "-" if ok is None else ("PASS" if ok else "FAIL")
        self.rows.append({"figure": figure, "value": value, "unit": unit, "target": target,
                          "status": status, "note": note})

    def table(self) -> str:
        def fmt(v) -> str:
            if isinstance(v, float):
                return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
            return str(v)

        head = ("figure", "value", "target", "result")
        body = [(r["figure"], f"{fmt(r['value'])} {r['unit']}".strip(), r["target"], r["status"])
                for r in self.rows]
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def parse_args(argv=None) -> argparse.Namespace:
    cores = len(os.sched_getaffinity(0))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/cilaudio-bench"),
                   help="cache folder: generated datasets, features, logs")
    p.add_argument("--clips", type=int, default=None, help="development clips of the large set "
                   "(a multiple of 50; default 20,000, or 4,000 with --quick)")
    p.add_argument("--small", type=int, default=2000, help="clips of the small set")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 4,000 clips, fewer batches and steps, no full-width CPU model")
    p.add_argument("--papers", action="store_true",
                   help="also time extraction at the papers' features (32 kHz, n_fft 1024, hop 320)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="cap of updates per training epoch in the memory stage (0: full epochs; "
                        "default 100, 40 with --quick)")
    p.add_argument("--workers", type=int, default=cores,
                   help="loader workers and extraction shards of the parallel measurements")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the CPU training measurements (the workflow's training jobs "
                        "use 1); loaders and extraction use 1 per process")
    p.add_argument("--loader-batches", type=int, default=None,
                   help="timed batches of the HDF5 loader (default 300, 100 with --quick; the "
                        "reference loader gets a tenth, at least 10)")
    p.add_argument("--share-steps", type=int, default=None,
                   help="timed training steps of the loading-share stage (default 60, 25 with --quick)")
    p.add_argument("--fit-clips", type=int, default=2000,
                   help="10-s excerpts of the end-to-end training-loop file (random float16, kept in --workdir)")
    p.add_argument("--fit-steps", type=int, default=60, help="updates of the end-to-end GPU measurement")
    p.add_argument("--gpu-workers", type=int, default=min(8, cores),
                   help="loader workers of the end-to-end GPU measurement (the presets use 8)")
    p.add_argument("--no-wide-cpu", action="store_true",
                   help="on a CPU, skip the full-width model (1-s clips, a couple of steps)")
    p.add_argument("--seed", type=int, default=0, help="generator seed of the dataset")
    p.add_argument("--out", type=Path, default=None, help="JSON results (default <workdir>/benchmark.json)")
    a = p.parse_args(argv)
    if a.clips is None:
        a.clips = 4000 if a.quick else 20000
    if a.max_steps is None:
        a.max_steps = 40 if a.quick else 100
    if a.loader_batches is None:
        a.loader_batches = 100 if a.quick else 300
    if a.share_steps is None:
        a.share_steps = 25 if a.quick else 60
    if a.quick:
        a.no_wide_cpu = True
    per_class = a.clips // N_CLASSES
    if per_class < 1:
        p.error(f"--clips must be at least {N_CLASSES}")
    if per_class * N_CLASSES != a.clips:
        print(f"--clips {a.clips} rounded down to {per_class * N_CLASSES} (a multiple of {N_CLASSES})")
        a.clips = per_class * N_CLASSES
    if not 1 <= a.small <= a.clips:
        p.error("--small must be between 1 and --clips")
    a.workers = max(1, a.workers)
    a.threads = max(1, a.threads)
    a.out = a.out or a.workdir / "benchmark.json"
    return a


@dataclass
class Run:
    """What the stages share: the arguments, the runner, the figures, the raw results and the
    files each stage leaves for the next."""

    a: argparse.Namespace
    b: "Bench"
    figs: "Figures"
    raw: dict
    cores: int
    probe: dict | None = None
    root: Path | None = None
    lists: Path | None = None
    sets: dict | None = None
    feats: Path | None = None
    joined: dict | None = None
    classes: str | None = None
    common: dict | None = None


def stage_dataset(r: Run) -> None:
    """1. The synthetic dataset (generated, or reused when it is there) and its two lists."""
    a, b, figs, raw = r.a, r.b, r.figs, r.raw
    root = a.workdir / f"synth-{a.clips}-seed{a.seed}"
    dev_csv = root / "FSD50K.ground_truth" / "dev.csv"
    have = dev_csv.exists() and sum(1 for _ in open(dev_csv)) - 1 == a.clips
    if have:
        b.say(f"dataset: reusing {root}")
        figs.add("dataset", "reused", note=str(root))
    else:
        raw["generate"] = b.run("generate", {"root": str(root), "seed": a.seed, "dev_per_class": a.clips // N_CLASSES,
                                             "eval_per_class": 2}, "generate",
                                f"dataset: generating {a.clips} dev clips into {root}", show_stderr=True)
        g = raw["generate"]
        figs.add("synthetic clips generated / s (1 process)", g["clips"] / g["seconds"], "clips/s")
    lists = a.workdir / f"lists-{a.clips}-{a.small}-seed{a.seed}"
    raw["lists"] = b.run("lists", {"root": str(root), "small": a.small, "out": str(lists)}, "lists", "lists")
    sets = {"small": (lists / "small.tsv", raw["lists"]["small"]), "all": (lists / "all.tsv", raw["lists"]["all"])}
    feats = a.workdir / f"features-{a.clips}-{a.small}-seed{a.seed}"
    feats.mkdir(parents=True, exist_ok=True)
    r.root, r.lists, r.sets, r.feats = root, lists, sets, feats



def stage_extraction(r: Run) -> None:
    """2. Feature extraction: throughput and peak memory at two sizes, then the workflow's
    sharded extraction and the joins that the training stages read."""
    a, b, figs, raw, root, lists, sets, feats = r.a, r.b, r.figs, r.raw, r.root, r.lists, r.sets, r.feats
    n_small, n_all = sets["small"][1], sets["all"][1]
    # every extraction reads its WAVs from the page cache, the first one included (a reused
    # dataset may have been evicted since it was generated)
    warm = _warm_page_cache(sorted((root / "FSD50K.dev_audio").glob("*.wav")))
    b.say(f"page cache warmed: {warm / 2**20:.0f} MB of WAVs read")
    kinds = ["16k"] + (["papers"] if a.papers else [])
    for kind in kinds:
        peaks = {}
        for which in ("small", "all"):
            lst, n = sets[which]
            res = b.run("extract", {"root": str(root), "list": str(lst), "out": str(feats / f"{kind}-{which}.h5"),
                                  "features": FEATURES[kind], "threads": 1},
                      f"extract-{kind}-{which}", f"extraction [{kind}] of {n} clips, 1 process, 1 thread")
            raw[f"extract_{kind}_{which}"] = res
            rate = res["clips"] / res["seconds"]
            figs.add(f"extraction [{kind}] {n} clips: throughput", rate, "clips/s")
            figs.add(f"extraction [{kind}] {n} clips: x real time per core",
                     res["clips"] * CLIP_SECONDS / res["seconds"] / res["threads"], "x")
            figs.add(f"extraction [{kind}] {n} clips: peak RSS", _mb(res["maxrss_kb"]), "MB",
                     note=f"after imports {_mb(res['baseline_kb']):.0f} MB")
            peaks[which] = res["maxrss_kb"]
        ratio = peaks["all"] / peaks["small"]
        figs.add(f"extraction [{kind}] peak RSS {n_all}/{n_small} clips", ratio, "",
                 target=f"<= {RSS_FLAT:.2f} (flat)", ok=ratio <= RSS_FLAT)
        figs.add(f"extraction [{kind}] peak RSS {n_all} minus {n_small} clips",
                 _mb(peaks["all"] - peaks["small"]), "MB")

    # the workflow's way: one shard per core in parallel, copied into one joined file
    n_shards = a.workers
    b.say(f"extraction [16k] of {n_all} clips in {n_shards} parallel shards ...")
    t = time.perf_counter()
    handles = [b.start("extract", {"root": str(root), "list": str(sets["all"][0]),
                                   "out": str(feats / f"shard{i}of{n_shards}.h5"), "features": FEATURES["16k"],
                                   "threads": 1, "shard": i, "n_shards": n_shards}, f"extract-shard{i}of{n_shards}")
               for i in range(n_shards)]
    shard_results = [b.finish(h) for h in handles]
    b.say(f"sharded extraction: done in {time.perf_counter() - t:.1f} s")
    raw["extract_shards"] = shard_results
    wall = max(r["end"] for r in shard_results) - min(r["start"] for r in shard_results)
    figs.add(f"extraction [16k] {n_all} clips, {n_shards} shards: throughput", n_all / wall, "clips/s",
             note="wall time from the first shard's start to the last one's end")
    figs.add(f"extraction [16k] {n_all} clips, {n_shards} shards: x real time per core",
             n_all * CLIP_SECONDS / wall / n_shards, "x")
    figs.add(f"extraction [16k] {n_shards} shards: largest peak RSS of a shard",
             _mb(max(r["maxrss_kb"] for r in shard_results)), "MB")
    # Training reads joined files, as in the workflow. The memory comparison joins each set's
    # single-process file (same structure at both sizes); the loader stages read the sharded one.
    joined = {"small": feats / "joined-small.h5", "all": feats / "joined-all.h5",
              "sharded": feats / "joined-sharded.h5"}
    for which, shards in (("small", [feats / "16k-small.h5"]), ("all", [feats / "16k-all.h5"]),
                          ("sharded", [feats / f"shard{i}of{n_shards}.h5" for i in range(n_shards)])):
        raw[f"join_{which}"] = b.run("join", {"shards": [str(x) for x in shards], "out": str(joined[which])},
                                     f"join-{which}", f"join {joined[which].name} ({len(shards)} shard(s))")
    r.joined, r.classes = joined, str(lists / "classes.txt")



def stage_training_memory(r: Run) -> None:
    """3. Peak memory of a training epoch at two sizes (flat when features stream)."""
    a, b, figs, raw, sets, joined, classes = r.a, r.b, r.figs, r.raw, r.sets, r.joined, r.classes
    n_small, n_all = sets["small"][1], sets["all"][1]
    peaks = {}
    for which in ("small", "all"):
        lst, n = sets[which]
        res = b.run("train_epoch", {"list": str(lst), "features": str(joined[which]), "classes": classes,
                                  "width": NARROW, "max_steps": a.max_steps, "threads": a.threads},
                  f"train-{which}", f"training epoch on {n} clips (width {NARROW}, batch {BATCH}, streaming"
                  + (f", at most {a.max_steps} steps)" if a.max_steps else ")"))
        raw[f"train_{which}"] = res
        peaks[which] = res["maxrss_kb"]
        figs.add(f"training epoch {n} clips ({res['steps']} steps): peak RSS", _mb(res["maxrss_kb"]), "MB",
                 note=f"after imports {_mb(res['baseline_kb']):.0f} MB; training set built in {res['set_seconds']:.2f} s")
        figs.add(f"training epoch {n} clips: time per step", 1000 * res["seconds"] / res["steps"], "ms",
                 note=f"{a.threads} torch threads")
    ratio = peaks["all"] / peaks["small"]
    figs.add(f"training peak RSS {n_all}/{n_small} clips", ratio, "", target=f"<= {RSS_FLAT:.2f} (flat)",
             ok=ratio <= RSS_FLAT)
    figs.add(f"training peak RSS {n_all} minus {n_small} clips", _mb(peaks["all"] - peaks["small"]), "MB")



def stage_loader(r: Run) -> None:
    """4. Loader throughput: the HDF5 dataset against decoding audio on the fly."""
    a, b, figs, raw, sets, feats, root, joined, classes = (r.a, r.b, r.figs, r.raw, r.sets, r.feats, r.root,
                                                           r.joined, r.classes)
    n_shards = a.workers
    ref_batches = max(10, a.loader_batches // 10)
    common = {"list": str(sets["all"][0]), "features": str(joined["sharded"]), "classes": classes,
              "root": str(root), "feature_settings": FEATURES["16k"]}
    # both loaders read from the page cache: the shards behind the joined file and the WAVs
    warm = _warm_page_cache([feats / f"shard{i}of{n_shards}.h5" for i in range(n_shards)]
                            + sorted((root / "FSD50K.dev_audio").glob("*.wav")))
    b.say(f"page cache warmed: {warm / 2**20:.0f} MB read")
    best: dict[str, tuple[float, int]] = {}  # design -> (excerpts/s, workers) at its best setting
    for workers in sorted({0, a.workers}):
        rates = {}
        for kind, batches in (("hdf5", a.loader_batches), ("reference", ref_batches)):
            res = b.run("loader", {**common, "kind": kind, "workers": workers, "batches": batches},
                        f"loader-{kind}-w{workers}",
                        f"loader [{kind}] {workers} workers, {batches} batches of {BATCH}")
            raw[f"loader_{kind}_w{workers}"] = res
            rates[kind] = res["excerpts_per_s"]
            if rates[kind] > best.get(kind, (0.0, 0))[0]:
                best[kind] = (rates[kind], workers)
            label = "HDF5 FeatureDataset" if kind == "hdf5" else "reference (decode+resample+log-mel)"
            figs.add(f"loader {label}, {workers} workers", res["excerpts_per_s"], "excerpts/s")
        ratio = rates["hdf5"] / rates["reference"]
        figs.add(f"loader HDF5 / reference, {workers} workers", ratio, "x", target=f">= {LOADER_RATIO:.0f}x",
                 ok=ratio >= LOADER_RATIO)
    ratio = best["hdf5"][0] / best["reference"][0]
    figs.add("loader HDF5 / reference, each at its best setting", ratio, "x", target=f">= {LOADER_RATIO:.0f}x",
             ok=ratio >= LOADER_RATIO,
             note=f"HDF5 with {best['hdf5'][1]} workers, reference with {best['reference'][1]}")

    r.common = common


def stage_share(r: Run) -> None:
    """5. The share of a CPU training step spent waiting on the loader."""
    a, b, figs, raw, common = r.a, r.b, r.figs, r.raw, r.common
    res = b.run("share", {**common, "width": NARROW, "workers": 0, "warmup": 5, "steps": a.share_steps,
                        "threads": a.threads},
              "share", f"loading share of {a.share_steps} CPU training steps (width {NARROW}, batch {BATCH})")
    raw["share"] = res
    figs.add("CPU training step: waiting on the loader", 1000 * res["wait_s"] / res["steps"], "ms/step")
    figs.add("CPU training step: forward/backward/step", 1000 * res["compute_s"] / res["steps"], "ms/step",
             note=f"{res['threads']} torch threads")
    figs.add("CPU training step: data loading share", 100 * res["share"], "%", target=f"< {100 * SHARE_TARGET:.0f} %",
             ok=res["share"] < SHARE_TARGET)



def stage_full_width(r: Run) -> None:
    """6. The papers' full-width model: GPU throughput (inputs on the GPU, and streamed end to
    end), or on a CPU a short width-64 measurement and the narrow end-to-end loop."""
    a, b, figs, raw, probe = r.a, r.b, r.figs, r.raw, r.probe
    if probe["cuda"]:
        res = b.run("model_speed", {"device": "cuda", "width": WIDE, "frames": 1001, "batch": BATCH, "warmup": 5,
                                  "steps": 20, "precisions": ["fp32", "bf16"]},
                  "gpu", f"GPU training, width {WIDE}, 10-s clips (1001 x 64), batch {BATCH}")
        raw["gpu"] = res
        for prec in ("fp32", "bf16"):
            figs.add(f"GPU width {WIDE}, 10-s clips, {prec}: training throughput", res[prec]["clips_per_s"],
                     "clips/s", note=f"{res['gpu']}, peak {res[prec]['peak_gpu_mb']:.0f} MB; inputs already on the GPU")
        fit = b.run("fit_speed", {"device": "cuda", "width": WIDE, "clips": a.fit_clips, "steps": a.fit_steps,
                                  "workers": a.gpu_workers, "threads": 1, "precisions": ["fp32", "bf16"],
                                  "features": str(a.workdir / f"features-10s-v2-{a.fit_clips}.h5")},
                    "gpu-fit", f"GPU training loop end to end, width {WIDE}, 10-s float16 excerpts streamed "
                    f"from HDF5, {a.gpu_workers} loader workers, {a.fit_steps} steps")
        raw["gpu_fit"] = fit
        for prec in ("fp32", "bf16"):
            rate = fit[prec]["clips_per_s"]
            figs.add(f"GPU width {WIDE}, 10-s clips, {prec}, streamed from HDF5: training throughput", rate,
                     "clips/s", note=f"{a.gpu_workers} workers; start-up included")
            figs.add(f"GPU {prec}: streamed / inputs on the GPU", rate / res[prec]["clips_per_s"], "",
                     note="near 1: the loader keeps the GPU busy")
    else:
        b.say("GPU training throughput (width 64, 10-s clips): needs CUDA, skipped")
        figs.add(f"GPU width {WIDE}, 10-s clips: training throughput", "needs CUDA", target="", ok=None)
        if not a.no_wide_cpu:
            res = b.run("model_speed", {"device": "cpu", "width": WIDE, "frames": 101, "batch": BATCH, "warmup": 1,
                                      "steps": 2, "precisions": ["fp32"], "threads": a.threads},
                      "wide-cpu", f"CPU training, width {WIDE}, 1-s clips, batch {BATCH}, 2 steps")
            raw["wide_cpu"] = res
            figs.add(f"CPU width {WIDE}, 1-s clips, fp32: training throughput", res["fp32"]["clips_per_s"],
                     "clips/s", note=f"{res['threads']} torch threads")

    if not probe["cuda"] and not a.quick:
        # the same end-to-end loop on the CPU at the narrow width: checks the path a GPU run takes
        fit = b.run("fit_speed", {"device": "cpu", "width": NARROW, "clips": a.fit_clips, "steps": 10,
                                  "workers": 0, "threads": a.threads, "precisions": ["fp32"],
                                  "features": str(a.workdir / f"features-10s-v2-{a.fit_clips}.h5")},
                    "cpu-fit", f"CPU training loop end to end, width {NARROW}, 10-s float16 excerpts streamed "
                    "from HDF5, 10 steps")
        raw["cpu_fit"] = fit
        figs.add(f"CPU width {NARROW}, 10-s clips, streamed from HDF5: training throughput",
                 fit["fp32"]["clips_per_s"], "clips/s", note=f"{fit['threads']} torch threads; start-up included")



def write_summary(r: Run) -> int:
    """The figures as a table and the JSON results; 1 when a target failed."""
    a, b, figs, raw, cores, probe = r.a, r.b, r.figs, r.raw, r.cores, r.probe
    b.say("done")
    print()
    print(figs.table())
    notes = [f"  {r['figure']}: {r['note']}" for r in figs.rows if r["note"]]
    if notes:
        print("\nnotes:\n" + "\n".join(notes))
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cores": cores, "cpu": _cpu_name(), "python": platform.python_version(),
                    **{k: v for k, v in probe.items() if k != "maxrss_kb"}},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "figures": figs.rows,
        "raw": raw,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults: {a.out}; child logs: {b.logs}")
    return 1 if any(r["status"] == "FAIL" for r in figs.rows) else 0




STAGES = (stage_dataset, stage_extraction, stage_training_memory, stage_loader, stage_share, stage_full_width)


def main(argv=None) -> int:
    a = parse_args(argv)
    a.workdir.mkdir(parents=True, exist_ok=True)
    r = Run(a=a, b=Bench(a.workdir), figs=Figures(), raw={}, cores=len(os.sched_getaffinity(0)))
    r.b.say(f"benchmark: {a.clips} clips (small set {a.small}), {r.cores} cores, workdir {a.workdir}")
    r.raw["probe"] = r.probe = r.b.run("probe", {}, "probe", "probe torch")
    r.b.say(f"torch {r.probe['torch']}, {r.probe['threads']} threads, CUDA: {r.probe.get('gpu', 'no')}")
    for stage in STAGES:
        stage(r)
    return write_summary(r)


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3])
    else:
        try:
            sys.exit(main())
        except ChildFailed as exc:
            print(f"benchmark stopped: {exc}", file=sys.stderr)
            sys.exit(2)
