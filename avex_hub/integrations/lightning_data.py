"""The Lightning data side of fine-tuning (the ``lightning`` extra): :class:`AvexDataModule`, train / val / test /
predict audio splits with the padding-mask collate and a seeded shuffle, and :func:`check_labels`, the check that
every split and the classifier name the same classes in the same order.

    from avex_hub.integrations.lightning import AvexDataModule      # also importable from here
    data = AvexDataModule.from_manifest("data/manifest.csv", clip_s=5.0, batch_size=16, num_workers=4)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import lightning as L
import torch

from ..audio.arrays import WINDOW_S
from ..heads.train_options import check_count

__all__ = ["AvexDataModule", "check_labels"]


def check_labels(expected: Sequence[str], found: Sequence[str], *, expected_name: str = "the classifier",
                 found_name: str = "the data",
                 hint: str = "build AvexClassifier with labels=<datamodule>.labels") -> None:
    """ValueError unless ``found`` names the same classes in the same order as ``expected``."""
    expected, found = list(expected), list(found)
    if expected == found:
        return
    show = lambda names: f"{names[:10]}{' ...' if len(names) > 10 else ''}"  # noqa: E731
    if len(expected) != len(found):
        raise ValueError(f"{expected_name} has {len(expected)} classes but {found_name} has {len(found)}: "
                         f"{show(expected)} vs {show(found)}; {hint}")
    wrong = [(i, a, b) for i, (a, b) in enumerate(zip(expected, found)) if a != b]
    raise ValueError(f"the labels of {expected_name} and {found_name} differ at {len(wrong)} positions (index, "
                     f"{expected_name}, {found_name}): {wrong[:10]}; {hint}")



class AvexDataModule(L.LightningDataModule):
    """Train / val / test / predict :class:`avex_hub.audio.datasets.AudioDataset` splits with the padding-mask collate.

    The train loader shuffles with a DistributedSampler seeded by ``seed`` on one device as on many, so the order is
    a function of ``(seed, epoch)``. Evaluation loaders keep dataset order (Lightning shards them under DDP).
    Every labelled split must have the same labels in the same order.
    """

    def __init__(self, train=None, val=None, test=None, predict=None, *, batch_size: int = 8,
                 eval_batch_size: int | None = None, num_workers: int = 0, seed: int = 0, pin_memory: bool = False,
                 drop_last: bool = False) -> None:
        super().__init__()
        batch_size, seed = check_count("batch_size", batch_size, 1), check_count("seed", seed, 0)
        num_workers = check_count("num_workers", num_workers, 0)
        if eval_batch_size is not None:
            eval_batch_size = check_count("eval_batch_size", eval_batch_size, 1)
        self.train_set, self.val_set, self.test_set, self.predict_set = train, val, test, predict
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed, self.pin_memory, self.drop_last = num_workers, seed, pin_memory, drop_last
        splits = {name: ds for name, ds in (("train", train), ("val", val), ("test", test))
                  if ds is not None and getattr(ds, "labels", None)}
        if splits:
            first, reference = next(iter(splits.items()))
            for name, ds in splits.items():
                check_labels(reference.labels, ds.labels, expected_name=f"the {first} split",
                             found_name=f"the {name} split", hint="give every split the same label_map")
            self._labels, self._multilabel = list(reference.labels), bool(getattr(reference, "multilabel", False))
        else:
            self._labels, self._multilabel = [], False

    @classmethod
    def from_manifest(cls, manifest: str | os.PathLike, *, clip_s: float | None = WINDOW_S,
                      splits: dict[str, str | None] | None = None, label_map=None, random_crop: bool = True,
                      seed: int = 0, channels="mix", label_column: str = "label", dataset_kwargs: dict | None = None,
                      **kwargs) -> "AvexDataModule":
        """Splits from a manifest's ``split`` column: ``splits`` maps ``train``/``val``/``test``/``predict`` to split
        values (default: train, val, test; None leaves one out). The train split crops at seeded random offsets."""
        from ..audio.datasets import AudioDataset

        splits = {"train": "train", "val": "val", "test": "test"} if splits is None else dict(splits)
        unknown = set(splits) - {"train", "val", "test", "predict"}
        if unknown:
            raise ValueError(f"splits keys must be train/val/test/predict, got {sorted(unknown)}")
        common = dict(clip_s=clip_s, label_map=label_map, channels=channels, label_column=label_column,
                      **(dataset_kwargs or {}))
        sets = {role: AudioDataset.from_manifest(manifest, split=value, random_crop=random_crop and role == "train",
                                                 seed=seed, **common)
                for role, value in splits.items() if value is not None}
        return cls(**sets, seed=seed, **kwargs)

    @classmethod
    def from_folders(cls, train=None, val=None, test=None, *, clip_s: float | None = WINDOW_S, label_map=None,
                     random_crop: bool = True, seed: int = 0, dataset_kwargs: dict | None = None,
                     **kwargs) -> "AvexDataModule":
        """Class-folder datasets (``root/<label>/<files>``) per split; labels are the union of the folders' names."""
        from ..audio.datasets import AudioDataset

        roots = {role: root for role, root in (("train", train), ("val", val), ("test", test)) if root is not None}
        if label_map is None:
            label_map = sorted({p.name for root in roots.values() for p in os.scandir(root)
                                if p.is_dir() and not p.name.startswith(".")})
        sets = {role: AudioDataset.from_folder(root, label_map=label_map, clip_s=clip_s, seed=seed,
                                               random_crop=random_crop and role == "train", **(dataset_kwargs or {}))
                for role, root in roots.items()}
        return cls(**sets, seed=seed, **kwargs)

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    @property
    def num_classes(self) -> int:
        return len(self._labels)

    @property
    def multilabel(self) -> bool:
        return self._multilabel

    def _loader(self, dataset, *, train: bool) -> torch.utils.data.DataLoader:
        from ..audio.collate import collate_audio

        sampler = None
        if train:
            trainer = self.trainer
            world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                                          seed=self.seed, drop_last=False)
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size if train else self.eval_batch_size, sampler=sampler, shuffle=False,
            collate_fn=collate_audio, num_workers=self.num_workers, pin_memory=self.pin_memory,
            drop_last=self.drop_last and train, persistent_workers=False)

    def _need(self, dataset, role: str):
        if dataset is None:
            raise ValueError(f"this data module has no {role} dataset; pass {role}= (or a manifest split for it)")
        return dataset

    def train_dataloader(self):
        loader = self._loader(self._need(self.train_set, "train"), train=True)
        if len(loader) == 0:  # otherwise the schedule fails on "total_steps >= 1", which does not say why
            items = len(loader.sampler)
            raise ValueError("the train split is empty; give the data module at least one training item" if not items
                             else f"drop_last=True with batch_size={self.batch_size} leaves no training batch: "
                                  f"{items} training items per device; lower batch_size or pass drop_last=False")
        return loader

    def val_dataloader(self):
        return self._loader(self.val_set, train=False) if self.val_set is not None else []  # [] = no validation

    def test_dataloader(self):
        return self._loader(self._need(self.test_set, "test"), train=False)

    def predict_dataloader(self):
        return self._loader(self._need(self.predict_set, "predict"), train=False)
