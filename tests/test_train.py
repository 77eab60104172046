"""Training and evaluation through the library, without Snakemake, on a tiny generated dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cilaudio import workflow_steps as W
from cilaudio.checkpoint import load_checkpoint
from cilaudio.lists import read_classes, read_list
from cilaudio.train import ExecutionSettings
from cilaudio.training_data import training_set

OPTIM0 = dict(epochs=2, batch_size=8, lr=0.01, lr_min=1e-4)
OPTIM = dict(epochs=1, batch_size=8, lr=1e-3, lr_min=1e-4)
LOADER = dict(num_workers=0, in_memory=False)
MODEL = dict(width=4, dropout=0.2)


def _base(root: Path, out: Path, seed: int = 0, execution: dict = LOADER) -> None:
    W.train_base(classes=str(root / "lists/classes.tsv"), train_list=str(root / "lists/train_phase0.tsv"),
                 features=str(root / "dev.h5"), out=str(out), norm="bn", seed=seed, model=MODEL,
                 optim=OPTIM0, execution=execution)


def _incremental(root: Path, previous: Path, out: Path, method: dict, phase: int = 1, lists=None) -> None:
    W.train_incremental(classes=str(root / "lists/classes.tsv"),
                        train_lists=lists or [str(root / f"lists/train_phase{phase}.tsv")],
                        features=str(root / "dev.h5"), previous=str(previous), out=str(out), phase=phase,
                        method_name="m", seed=0, method=method, optim=OPTIM, execution=LOADER)


def _evaluate(root: Path, ckpt: Path, out: Path, phase: int) -> dict:
    """The metrics record of one phase model (the workflow's evaluate step, on a chain of one)."""
    W.evaluate(classes=str(root / "lists/classes.tsv"), checkpoints=[str(ckpt)], phases=[phase],
               test_lists=[str(root / f"lists/test_phase{phase}.tsv")], base_list=str(root / "lists/test_phase0.tsv"),
               features=str(root / "eval.h5"), out=str(out), meta={"dataset": "t", "norm": "bn", "run": "base", "seed": "0"},
               threshold=0.5, batch_size=16)
    (record,) = json.loads(out.read_text())["phases"]
    return record


def test_fixed_seed_gives_identical_models_and_metrics(prepared, tmp_path):
    _base(prepared, tmp_path / "a.pt")
    _base(prepared, tmp_path / "b.pt")
    _base(prepared, tmp_path / "c.pt", seed=1)
    (ma, _), (mb, _), (mc, _) = (load_checkpoint(tmp_path / f"{n}.pt") for n in "abc")
    sa, sb, sc = ma.state_dict(), mb.state_dict(), mc.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    ja = _evaluate(prepared, tmp_path / "a.pt", tmp_path / "a.json", 0)
    jb = _evaluate(prepared, tmp_path / "b.pt", tmp_path / "b.json", 0)
    assert ja == jb


def test_incremental_phase_grows_and_keeps_the_classes(prepared, tmp_path):
    _base(prepared, tmp_path / "p0.pt")
    method = {"data": "current", "bce_on": "new", "feature_distill": 1.0, "output_distill": "kl",
              "temperature": 2.0, "lambda_base": 5.0, "lambda_exponent": 0.66, "kd_weight": 1.0}
    _incremental(prepared, tmp_path / "p0.pt", tmp_path / "p1.pt", method)
    model, state = load_checkpoint(tmp_path / "p1.pt")
    class_split = read_classes(prepared / "lists/classes.tsv")
    assert state["classes"] == list(class_split.seen(1)) and model.classifier.out_features == 5
    result = _evaluate(prepared, tmp_path / "p1.pt", tmp_path / "p1.json", 1)
    assert set(result["subsets"]) == {"all", "base", "group0", "group1"}


def test_checkpoint_of_another_class_split_is_refused(prepared, tmp_path):
    _base(prepared, tmp_path / "p0.pt")
    method = {"data": "current", "bce_on": "all"}
    _incremental(prepared, tmp_path / "p0.pt", tmp_path / "p1.pt", method)
    with pytest.raises(ValueError, match="another class split"):
        # phase 1's model handed to phase 1 again: it already holds phase 1's classes
        _incremental(prepared, tmp_path / "p1.pt", tmp_path / "bad.pt", method)
    assert not (tmp_path / "bad.pt").exists()


def test_joint_training_set_is_the_union_with_all_seen_labels(prepared):
    class_split = read_classes(prepared / "lists/classes.tsv")
    lists = [prepared / f"lists/train_phase{k}.tsv" for k in range(3)]
    joint = training_set(phase=2, class_split=class_split, lists=lists, features=prepared / "dev.h5", cumulative=True)
    current = training_set(phase=2, class_split=class_split, lists=lists[2:], features=prepared / "dev.h5",
                           cumulative=False)
    n_clips = sum(len(read_list(p)) for p in lists)
    assert len(np.unique(joint.table.clip)) == n_clips
    # current-phase targets only have the new classes; joint targets reach the old ones too
    assert current.table.targets[:, :5].sum() == 0
    assert joint.table.targets[:, :5].sum() > 0
    # later-phase clips that hold old sounds are labelled with them in joint training
    frame = read_list(lists[2])
    old_in_phase2 = sum(any(c in class_split.seen(1) for c in f.split("|")) for f in frame["all_labels"])
    assert old_in_phase2 > 0


def test_replay_memory_is_chosen_from_old_clips_and_carried_on(prepared, tmp_path):
    from cilaudio.exemplar_memory import candidates

    _base(prepared, tmp_path / "p0.pt")
    method = {"data": "current", "bce_on": "new", "replay": "annealing", "memory_clips": 5}
    lists = [str(prepared / "lists/train_phase0.tsv"), str(prepared / "lists/train_phase1.tsv")]
    _incremental(prepared, tmp_path / "p0.pt", tmp_path / "p1.pt", method, phase=1, lists=lists)
    _, state1 = load_checkpoint(tmp_path / "p1.pt")
    phase0 = read_list(prepared / "lists/train_phase0.tsv")
    mem1 = state1["memory"]
    assert len(mem1) == 5 and {m["fname"] for m in mem1} <= set(phase0["fname"])
    # each exemplar keeps the labels it was trained with
    labels0 = dict(zip(phase0["fname"], phase0["labels"]))
    assert all(m["labels"] == labels0[m["fname"]] for m in mem1)
    # phase 2 chooses from phase 1's memory and phase 1's list only
    lists = [str(prepared / "lists/train_phase1.tsv"), str(prepared / "lists/train_phase2.tsv")]
    _incremental(prepared, tmp_path / "p1.pt", tmp_path / "p2.pt", method, phase=2, lists=lists)
    _, state2 = load_checkpoint(tmp_path / "p2.pt")
    pool = candidates(mem1, read_list(prepared / "lists/train_phase1.tsv"), 1)
    assert {m["fname"] for m in state2["memory"]} <= set(pool["fname"])
    result = _evaluate(prepared, tmp_path / "p2.pt", tmp_path / "p2.json", 2)
    assert result["memory"]["n_clips"] == 5
    assert sum(result["memory"]["label_counts"].values()) >= 5


def test_replay_targets_mark_unknown_entries(prepared):
    class_split = read_classes(prepared / "lists/classes.tsv")
    memory = read_list(prepared / "lists/train_phase0.tsv").head(3).assign(phases="0")
    data = training_set(phase=1, class_split=class_split, lists=[prepared / "lists/train_phase1.tsv"],
                        features=prepared / "dev.h5", cumulative=False,
                        bce_on="new", memory=memory)
    t = data.table.targets
    n_cur = len(t) - len(data.table.clip[data.table.clip >= len(read_list(prepared / "lists/train_phase1.tsv"))])
    current, replayed = t[:n_cur], t[n_cur:]
    assert (current[:, :3] == -1).all() and set(np.unique(current[:, 3:])) <= {0, 1}
    assert (replayed[:, 3:] == -1).all() and replayed[:, :3].max() == 1


def test_frozen_blocks_do_not_change(prepared, tmp_path):
    _base(prepared, tmp_path / "p0.pt")
    method = {"data": "current", "bce_on": "all", "freeze_blocks": [1, 2], "freeze_norm_stats": True}
    _incremental(prepared, tmp_path / "p0.pt", tmp_path / "p1.pt", method)
    (m0, _), (m1, _) = load_checkpoint(tmp_path / "p0.pt"), load_checkpoint(tmp_path / "p1.pt")
    s0, s1 = m0.state_dict(), m1.state_dict()
    for k in s0:
        if k.startswith(("block1.", "block2.")):
            assert torch.equal(s0[k], s1[k]), k  # weights and running statistics
    assert not torch.equal(s0["block4.conv1.weight"], s1["block4.conv1.weight"])
    assert not torch.equal(s0["block3.norm1.running_mean"], s1["block3.norm1.running_mean"])


def test_checkpoint_of_another_width_is_refused(prepared, tmp_path):
    _base(prepared, tmp_path / "p0.pt")
    with pytest.raises(ValueError, match="width=4 but the config says model.width=8"):
        W.train_incremental(classes=str(prepared / "lists/classes.tsv"),
                            train_lists=[str(prepared / "lists/train_phase1.tsv")],
                            features=str(prepared / "dev.h5"), previous=str(tmp_path / "p0.pt"),
                            out=str(tmp_path / "p1.pt"), phase=1, method_name="m", seed=0,
                            method={"data": "current"}, optim=OPTIM, execution=LOADER,
                            model={"width": 8, "dropout": 0.2})
    assert not (tmp_path / "p1.pt").exists()


def test_features_of_another_config_are_refused(prepared, tmp_path):
    other = dict(sample_rate=16000, n_mels=64)
    with pytest.raises(ValueError, match="sample_rate: file 8000 vs config 16000.*another configuration"):
        W.train_base(classes=str(prepared / "lists/classes.tsv"), train_list=str(prepared / "lists/train_phase0.tsv"),
                     features=str(prepared / "dev.h5"), out=str(tmp_path / "p0.pt"), norm="bn", seed=0,
                     model=MODEL, optim=OPTIM0, execution=LOADER, feature_settings=other)
    assert not (tmp_path / "p0.pt").exists()


def test_features_go_to_the_gpu_only_when_they_fit(prepared, monkeypatch):
    """features_on_gpu holds the phase's features on the GPU when they take at most half of its
    free memory, and streams them otherwise (checked without a GPU: the free memory is faked
    and only the loader's kind is looked at, no batch is made)."""
    import h5py

    from cilaudio import batches as B

    class_split = read_classes(prepared / "lists/classes.tsv")
    data = training_set(phase=0, class_split=class_split, lists=[prepared / "lists/train_phase0.tsv"],
                        features=prepared / "dev.h5", cumulative=False)
    with h5py.File(prepared / "dev.h5", "r") as h5:
        need = h5["features"][np.sort(data.table.rows)].nbytes  # the rows this phase trains on
    cuda = torch.device("cuda")
    made = []
    monkeypatch.setattr(B, "DeviceBatches", lambda *a, **k: made.append("gpu") or "gpu")
    settings = ExecutionSettings(features_on_gpu=True)
    for free, expected in ((2 * need, "gpu"), (2 * need - 1, "stream")):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, free=free: (free, 4 * free))
        assert B.features_fit_on_gpu(data, cuda) == (expected == "gpu")
        loader = B.training_batches(data, 8, seed=0, device=cuda, epoch_size=len(data),
                                    num_workers=settings.num_workers, features_on_gpu=settings.features_on_gpu)
        assert (loader == "gpu") == (expected == "gpu")
        if expected == "stream":
            assert isinstance(loader, torch.utils.data.DataLoader)
    assert made == ["gpu"]


def test_loader_workers_give_the_same_batches_as_the_main_process(prepared):
    """With workers, batches are handed over in groups and cut back (GroupedBatches): the
    batches, the last partial one included, are those of a plain DataLoader on the same seed."""
    from torch.utils.data import DataLoader, RandomSampler

    from cilaudio import batches as B

    class_split = read_classes(prepared / "lists/classes.tsv")
    data = training_set(phase=0, class_split=class_split, lists=[prepared / "lists/train_phase0.tsv"],
                        features=prepared / "dev.h5", cumulative=False)
    epoch = len(data) - 3  # not a multiple of the batch nor of the group
    assert epoch % 8 and epoch % (8 * B.TRANSFER_GROUP)
    plain = DataLoader(data, batch_size=8, sampler=RandomSampler(
        data, num_samples=epoch, generator=torch.Generator().manual_seed(5)))
    grouped = B.training_batches(data, 8, seed=5, device=torch.device("cpu"), epoch_size=epoch, num_workers=2)
    assert isinstance(grouped, B.GroupedBatches)
    for _ in range(2):  # two epochs: the persistent workers go on with the sampler's generator
        expected = list(plain)
        got = list(grouped)
        assert [len(x) for x, _ in got] == [len(x) for x, _ in expected]
        assert len(got[-1][0]) == epoch % 8
        for (x, y), (xe, ye) in zip(got, expected):
            assert torch.equal(x, xe) and torch.equal(y, ye)


def test_in_memory_trains_the_same_model(prepared, tmp_path):
    """Features read into RAM give the same weights as streamed from HDF5: `training.in_memory`
    is an execution setting, and changing it reruns nothing (tests/test_workflow.py)."""
    _base(prepared, tmp_path / "stream.pt")
    _base(prepared, tmp_path / "ram.pt", execution=dict(LOADER, in_memory=True))
    (ms, _), (mr, _) = (load_checkpoint(tmp_path / f"{n}.pt") for n in ("stream", "ram"))
    s0, s1 = ms.state_dict(), mr.state_dict()
    assert all(torch.equal(s0[k], s1[k]) for k in s0)


def test_loader_workers_train_the_same_model(prepared, tmp_path):
    """Two epochs streamed through 2 loader workers give the same weights as without workers."""
    _base(prepared, tmp_path / "w0.pt")
    _base(prepared, tmp_path / "w2.pt", execution=dict(LOADER, num_workers=2))
    (m0, _), (m2, _) = (load_checkpoint(tmp_path / f"{n}.pt") for n in ("w0", "w2"))
    s0, s2 = m0.state_dict(), m2.state_dict()
    assert all(torch.equal(s0[k], s2[k]) for k in s0)



def test_no_host_sync_per_step(prepared, tmp_path, monkeypatch):
    """Reading a loss value on the host (`.item()`, `float(tensor)`) makes the CPU wait for the
    GPU before the next step is queued: the loop may read the loss terms once per epoch, never
    once per step. Counted on the CPU: the reads must not grow with the number of steps."""
    def reads(batch_size: int) -> tuple[int, int]:
        calls = {"n": 0}
        item, to_float = torch.Tensor.item, torch.Tensor.__float__

        def counted_item(self):
            calls["n"] += 1
            return item(self)

        def counted_float(self):
            calls["n"] += 1
            return to_float(self)

        with monkeypatch.context() as m:
            m.setattr(torch.Tensor, "item", counted_item)
            m.setattr(torch.Tensor, "__float__", counted_float)
            W.train_base(classes=str(prepared / "lists/classes.tsv"),
                         train_list=str(prepared / "lists/train_phase0.tsv"), features=str(prepared / "dev.h5"),
                         out=str(tmp_path / f"b{batch_size}.pt"), norm="bn", seed=0, model=MODEL,
                         optim=dict(OPTIM0, batch_size=batch_size), execution=LOADER)
        n_steps = OPTIM0["epochs"] * -(-len(read_list(prepared / "lists/train_phase0.tsv")) // batch_size)
        return calls["n"], n_steps

    few, few_steps = reads(16)
    many, many_steps = reads(2)
    assert many_steps >= 4 * few_steps  # the same epochs in many more steps
    assert many == few, (few, many)  # host reads per epoch and per job only


def test_the_workflow_passes_every_execution_setting():
    """The workflow reads the execution settings from the config by name (without importing
    torch at parse time); a field added to ExecutionSettings but not to that list would never
    reach a job."""
    from dataclasses import fields

    assert set(W.EXECUTION_KEYS) == {f.name for f in fields(ExecutionSettings)}
    config = {"training": {"num_workers": 2, "in_memory": True, "features_on_gpu": False, "lr": 0.1}}
    assert W.execution_settings(config)["execution"] == {"num_workers": 2, "in_memory": True,
                                                         "features_on_gpu": False}
