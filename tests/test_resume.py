"""A training job killed at any moment and rerun continues from its last saved epoch and ends
with the same checkpoint as an uninterrupted run; no final-named output is ever truncated."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from cilaudio.checkpoint import load_checkpoint
from cilaudio.train import history_path, resume_path

EPOCHS = 4


def _command(root: Path, out: Path, workers: int = 0, pause_after: int | None = None) -> list[str]:
    """The training job as a Python command line. With ``pause_after`` k, the job stops right
    after logging "epoch k/EPOCHS" (its state for epoch k is saved before that line) and waits
    on its stdin, so that a signal sent then lands between epochs k and k+1 however slow or
    loaded the machine is."""
    pause = "" if pause_after is None else f"""
class _Pause(logging.Handler):
    def emit(self, record):
        if re.search(r": epoch {pause_after}/{EPOCHS} ", record.getMessage()):
            sys.stderr.flush()
            sys.stdin.read()  # until the test's signal (or the test closes stdin)
logging.getLogger().addHandler(_Pause())
"""
    code = f"""
import logging, re, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
{pause}
from cilaudio import workflow_steps as W
W.train_base(classes={str(root / 'lists/classes.tsv')!r}, train_list={str(root / 'lists/train_phase0.tsv')!r},
             features={str(root / 'dev.h5')!r}, out={str(out)!r}, norm="bn", seed=5,
             model=dict(width=4), optim=dict(epochs={EPOCHS}, batch_size=4, lr=0.01, lr_min=1e-4),
             execution=dict(num_workers={workers}, in_memory=False))
"""
    return [sys.executable, "-c", code]


def _run(root: Path, out: Path, workers: int = 0) -> str:
    proc = subprocess.run(_command(root, out, workers), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def _same(a: Path, b: Path) -> bool:
    (ma, _), (mb, _) = load_checkpoint(a), load_checkpoint(b)
    sa, sb = ma.state_dict(), mb.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def uninterrupted(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "phase0.pt"
    _run(prepared, out)
    assert not resume_path(out).exists()  # removed once the phase is done
    return out


# the uninterrupted run has no loader workers: with 2, the resumed run must still end the same
@pytest.mark.parametrize("sig, after_epochs, workers", [(signal.SIGKILL, 1, 0), (signal.SIGTERM, 2, 0),
                                                        (signal.SIGKILL, 2, 2)])
def test_killed_training_resumes_from_last_epoch(prepared, uninterrupted, tmp_path, sig, after_epochs, workers):
    out = tmp_path / "phase0.pt"
    state = resume_path(out)
    proc = subprocess.Popen(_command(prepared, out, workers, pause_after=after_epochs), stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    guard = threading.Timer(900, proc.kill)  # only bounds a hang: a killed job's stderr ends
    guard.start()
    seen = 0
    try:
        for line in proc.stderr:  # until the job pauses after logging epoch `after_epochs`
            if re.search(rf": epoch \d+/{EPOCHS} ", line):
                seen += 1
                if seen == after_epochs:
                    break
        assert seen == after_epochs, "training did not report its epochs"
        proc.send_signal(sig)
        proc.wait(timeout=300)
    finally:
        guard.cancel()
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stderr.close()
    assert not out.exists()
    assert state.exists()
    log = _run(prepared, out, workers)
    assert f"resuming after epoch {after_epochs} of {EPOCHS}" in log
    assert f"epoch 1/{EPOCHS}" not in log  # the finished epochs were not trained again
    assert _same(out, uninterrupted)
    assert not state.exists()


def test_kill_while_writing_leaves_no_final_file(prepared, uninterrupted, tmp_path):
    """Kill the job at many moments, including while it writes its state and checkpoint:
    a final-named file, when present, is always complete, and a rerun always ends right."""
    out = tmp_path / "phase0.pt"
    for delay in (0.5, 1.5, 2.5, 3.5, 4.5):
        proc = subprocess.Popen(_command(prepared, out), stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        history = history_path(out)
        if history.exists():  # written after the checkpoint, whole: only beside a finished phase
            assert out.exists()
            assert len(pd.read_csv(history, sep="\t")) == EPOCHS
            history.unlink()
        if out.exists():
            load_checkpoint(out)  # complete, or it would not have its final name
            out.unlink()
        leftovers = [p for p in tmp_path.iterdir() if p.name != resume_path(out).name]
        assert all(".tmp-" in p.name for p in leftovers)
    _run(prepared, out)
    assert _same(out, uninterrupted)


def test_killed_feature_extraction_leaves_no_final_file(tmp_path):
    """SIGKILL at several moments of an extraction: the final-named HDF5 appears only whole."""
    import h5py
    import numpy as np
    import soundfile as sf

    clips = []
    for i in range(60):
        path = tmp_path / f"{i}.wav"
        sf.write(path, 0.1 * np.random.default_rng(i).standard_normal(16000), 16000, subtype="PCM_16")
        clips.append((str(i), str(path)))
    out = tmp_path / "dev.h5"
    code = f"""
from pathlib import Path
from cilaudio.features import FeatureSettings, extract_to_hdf5
s = FeatureSettings(sample_rate=16000, n_fft=512, win_length=512, hop_length=160, n_mels=64, f_min=20.0,
                    f_max=7000.0, excerpt_seconds=1.0, hop_seconds=1.0)
extract_to_hdf5([(n, Path(p)) for n, p in {clips!r}], {str(out)!r}, s, chunk=4)
"""
    finished = 0
    for delay in (0.3, 1.0, 2.0, 3.0, 4.5, 6.0):
        proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        if out.exists():  # it finished before the kill: then it is complete
            with h5py.File(out, "r") as h5:
                assert h5["features"].shape[0] == 60 and len(h5["fname"]) == 60
            finished += 1
            out.unlink()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out, "r") as h5:
        assert h5["features"].shape[0] == 60


# ----------------------------------------------------------------------------- GPU resume state, CUDA mocked


class _Scaler:
    """Records what a resume loads into the gradient scaler."""

    def __init__(self) -> None:
        self.loaded = []

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if not state:  # what torch's enabled GradScaler does with the state of a disabled one
            raise RuntimeError("The source state dict is empty")
        self.loaded.append(state)


def _parts():
    from cilaudio.model import CNN14, ModelSettings

    model = CNN14(ModelSettings(norm="bn", width=4, n_classes=3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2)
    return dict(model=model, opt=opt, sched=sched, scaler=_Scaler(), sampler_gen=torch.Generator())


def test_resume_identity_holds_precision_and_device():
    """A state of an fp32 or CPU run must not be resumed by an fp16 run on a GPU (and so on)."""
    from cilaudio.train import NumericSettings, run_id

    ids = {run_id("job", NumericSettings(precision=p), torch.device(d))
           for p in ("fp32", "bf16", "fp16") for d in ("cpu", "cuda")}
    assert len(ids) == 6
    assert run_id("job", NumericSettings(), torch.device("cpu")) == run_id("job", NumericSettings(), torch.device("cpu"))


def test_empty_scaler_state_is_not_loaded():
    from cilaudio.train import restore_training_state, training_state

    parts = _parts()
    state = training_state(run_id="x", epoch=0, history=[], **parts)
    assert state["scaler"] == {}
    restore_training_state(state, **parts)  # an enabled scaler would raise on {}
    assert parts["scaler"].loaded == []
    state["scaler"] = {"scale": 1024.0}
    restore_training_state(state, **parts)
    assert parts["scaler"].loaded == [{"scale": 1024.0}]


def test_cuda_generators_saved_and_restored(monkeypatch, caplog):
    """On CUDA, dropout draws from the GPU generators: the resume state must hold them, and a
    resume must restore them (only with as many devices as saved them)."""
    from cilaudio.train import restore_training_state, training_state

    saved = [torch.tensor([1, 2, 3], dtype=torch.uint8), torch.tensor([4, 5, 6], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [t.clone() for t in saved])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(states))
    parts = _parts()
    state = training_state(run_id="x", epoch=0, history=[], **parts)
    assert [torch.equal(a, b) for a, b in zip(state["cuda_rng"], saved)] == [True, True]
    restore_training_state(state, **parts)
    assert len(restored) == 1 and all(torch.equal(a, b) for a, b in zip(restored[0], saved))
    # one device now: not restored, and the log says the masks will differ
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with caplog.at_level("WARNING"):
        restore_training_state(state, **parts)
    assert len(restored) == 1 and "2 CUDA generator state(s)" in caplog.text


def test_no_cuda_no_cuda_state(monkeypatch):
    from cilaudio.train import restore_training_state, training_state

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    called = []
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: called.append(states))
    parts = _parts()
    state = training_state(run_id="x", epoch=0, history=[], **parts)
    assert state["cuda_rng"] is None
    restore_training_state(state, **parts)
    assert called == []
