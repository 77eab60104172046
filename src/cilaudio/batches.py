"""How training batches reach the model: a seeded sampler over a phase's excerpts, served by
a plain DataLoader, by loader workers that hand over several batches at once
(:class:`GroupedBatches`), or from features held on the GPU (:class:`DeviceBatches`)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from .excerpts import FeatureDataset
from .features import open_features

log = logging.getLogger(__name__)

__all__ = ["DeviceBatches", "GPU_FEATURE_SHARE", "GroupedBatches", "TRANSFER_GROUP", "features_fit_on_gpu",
           "training_batches"]


class DeviceBatches:
    """Batches indexed straight from features held on the device (``features_on_gpu``)."""

    def __init__(self, dataset: FeatureDataset, sampler: RandomSampler, batch_size: int,
                 device: torch.device) -> None:
        self.sampler, self.batch_size = sampler, batch_size
        self.x = dataset.move_to(device)  # (n, frames, mels), no host copy kept
        self.y = torch.from_numpy(dataset.table.targets).to(device)  # (n, classes)

    def __iter__(self):
        for idx in BatchSampler(self.sampler, self.batch_size, drop_last=False):
            i = torch.as_tensor(idx, device=self.x.device)
            yield self.x[i].float(), self.y[i]


class GroupedBatches:
    """Loader workers hand over ``group`` batches at once (one DataLoader batch of
    ``group * batch_size`` items), cut back into batches of ``batch_size`` here. Handing a batch
    from a worker to the training process (shared memory, a file descriptor sent over a socket)
    costs as much as reading a batch of 1-s excerpts from HDF5; grouping pays it once per
    ``group`` batches. The sampler's order is kept, so the batches are the same as those of a
    DataLoader of ``batch_size`` (the last, partial one included)."""

    def __init__(self, dataset, sampler: RandomSampler, batch_size: int, group: int, **kwargs) -> None:
        self.sampler, self.batch_size = sampler, batch_size
        self.loader = DataLoader(dataset, batch_size=batch_size * group, sampler=sampler, drop_last=False,
                                 **kwargs)

    def __iter__(self):
        for x, y in self.loader:
            for i in range(0, len(x), self.batch_size):
                yield x[i:i + self.batch_size], y[i:i + self.batch_size]


TRANSFER_GROUP = 4  # batches per hand-over from a loader worker (see GroupedBatches)
GPU_FEATURE_SHARE = 0.5  # features_on_gpu: at most this share of the GPU's free memory


def features_fit_on_gpu(dataset: FeatureDataset, device: torch.device) -> bool:
    """Whether ``dataset``'s features (in their stored dtype) take at most GPU_FEATURE_SHARE of
    the free memory of ``device``, leaving the rest to the model, activations and optimiser.
    Says so in the log either way."""
    with open_features(dataset.h5_path) as h5:
        feats = h5["features"]
        need = len(dataset) * int(np.prod(feats.shape[1:])) * feats.dtype.itemsize
    free, _ = torch.cuda.mem_get_info(device)
    fits = need <= GPU_FEATURE_SHARE * free
    log.log(logging.INFO if fits else logging.WARNING,
            f"features_on_gpu: the phase's features need {need / 2**30:.2f} GiB, the GPU has "
            f"{free / 2**30:.2f} GiB free: " + ("held on the GPU" if fits else
                                                f"more than {GPU_FEATURE_SHARE:.0%} of it, streamed instead"))
    return fits


def training_batches(dataset: FeatureDataset, batch_size: int, *, seed: int, device: torch.device,
                     epoch_size: int, num_workers: int = 0,
                     features_on_gpu: bool = False) -> DataLoader | GroupedBatches | DeviceBatches:
    """The batches of one epoch of training, in the order a seeded sampler draws ``epoch_size``
    excerpts without replacement: indexed on the GPU (``features_on_gpu`` with CUDA, when they
    fit), handed over in groups by loader workers (``num_workers > 0``), or a plain DataLoader.
    Every design gives the same batches; iterate it once per epoch."""
    gen = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(dataset, replacement=False, num_samples=epoch_size, generator=gen)
    if features_on_gpu and device.type == "cuda" and features_fit_on_gpu(dataset, device):
        return DeviceBatches(dataset, sampler, batch_size, device)
    # The DataLoader draws its workers' base seed from this generator, not from the global RNG
    # (which it would touch at every epoch without workers and only once with persistent ones):
    # the model's randomness (dropout) is then the same with and without workers, and on resume.
    workers_gen = torch.Generator().manual_seed(seed)
    if num_workers > 0:
        return GroupedBatches(dataset, sampler, batch_size, TRANSFER_GROUP, num_workers=num_workers,
                              pin_memory=device.type == "cuda", persistent_workers=True, generator=workers_gen)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=False,
                      pin_memory=device.type == "cuda", generator=workers_gen)
