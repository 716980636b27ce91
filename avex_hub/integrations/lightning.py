"""Fine-tuning with PyTorch Lightning (the ``lightning`` extra): a classifier module, a data module, multi-GPU and
multi-node training through Lightning's strategies.

    import lightning as L
    from avex_hub.integrations.lightning import AvexClassifier, AvexDataModule
    data = AvexDataModule.from_manifest("data/manifest.csv", clip_s=5.0, batch_size=16, num_workers=4)
    module = AvexClassifier(avex_hub.esp_aves2_sl_beats_all(), labels=data.labels, unfreeze=4, lr=1e-4,
                            noise="noise/", mixup=0.5)
    L.Trainer(max_epochs=10, precision="bf16-mixed", strategy="ddp", devices=4).fit(module, data)
    module.export("my-finetune")      # model.safetensors + label_map.json + config.json, loads with checkpoint=

Reproducible and resumable: the shuffling order is a function of ``(seed, epoch)`` (a seeded DistributedSampler,
also on one device), the augmentations and the model's own randomness (dropout, layer drop) of a step are a function
of ``(seed, epoch, batch, rank)``, so ``Trainer.fit(..., ckpt_path=...)`` from an end-of-epoch checkpoint continues
exactly as the uninterrupted run would. Lightning checkpoints are pickles: load only your own.

The data module and the label check live in :mod:`avex_hub.integrations.lightning_data`, importable from here.
Distributed prediction over large archives (``Trainer.predict`` writing one shard per rank, then merged with
each window exactly once) is :class:`ShardedPredictionWriter`, :func:`merge_shards` and
:func:`extract_embeddings_distributed`, from :mod:`avex_hub.integrations.lightning_predict` and importable from here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..heads import finetune
from ..audio.augment import AddBackgroundNoise, Mixup, multi_hot
from ..audio.datasets import check_dataset_rate
from ..labels import LabelMap
from ..encoder.model import AvexModel
from .lightning_data import AvexDataModule, check_labels

__all__ = ["AvexClassifier", "AvexDataModule", "check_labels", "default_precision"]


def default_precision(accelerator: str = "auto") -> str:
    """``"bf16-mixed"`` where bf16 is fast and supported (CUDA devices that support it), else ``"32-true"``; pass it
    as ``Trainer(precision=...)``. The filterbank and the position convolution always run in fp32."""
    cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if cuda and torch.cuda.is_bf16_supported() else "32-true"


def _step_seed(*keys: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


class _FrozenModulesNotice(L.Callback):
    """Silences Lightning's "Found N module(s) in eval mode at the start of training" for an AvexClassifier whose
    eval-mode modules are exactly its frozen parts (N = their count), from on_fit_start until on_train_start (right
    after Lightning's check) or a failure before it. Harmless: those modules are the frozen layers and embedding stage,
    the parameter-free filterbank, the unused AudioSet predictor and, with some layers unfrozen, the containers of
    frozen layers (whose own train-mode behaviour, layer drop and input dropout, would act on frozen layers); none of
    them has a trainable parameter of its own. Any other count still warns."""

    def __init__(self) -> None:
        self._quiet = None

    def on_fit_start(self, trainer, pl_module) -> None:
        import warnings

        pl_module.train()  # the modes fitting runs with (AvexClassifier.train)
        frozen = [name for name, module in pl_module.named_modules() if not module.training]
        if frozen and self._quiet is None:
            self._quiet = warnings.catch_warnings()
            self._quiet.__enter__()
            warnings.filterwarnings("ignore", message=rf"Found {len(frozen)} module\(s\) in eval mode at the start")

    def _restore(self) -> None:
        quiet, self._quiet = self._quiet, None
        if quiet is not None:
            quiet.__exit__(None, None, None)

    def on_train_start(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore()


def _training_data(trainer) -> str:
    """What the trainer's training loader holds, for the message when it gives no step."""
    loader = trainer.train_dataloader
    loader = getattr(loader, "iterables", loader)  # Lightning's CombinedLoader
    if isinstance(loader, dict):
        loader = next(iter(loader.values()), None)
    elif isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    dataset, batch_size = getattr(loader, "dataset", None), getattr(loader, "batch_size", None)
    if dataset is None or not hasattr(dataset, "__len__"):
        return "the training loader yields no batch; check the train split"
    if len(dataset) == 0:
        return "the train split is empty; give the data module a train dataset with at least one item"
    per_device = len(getattr(loader, "sampler", dataset))
    if getattr(loader, "drop_last", False):
        return (f"{per_device} training items per device in batches of {batch_size} with drop_last=True leave no "
                f"full batch; lower batch_size or pass drop_last=False")
    return (f"{per_device} training items per device in batches of {batch_size} give no step; check the trainer's "
            "limits (limit_train_batches, accumulate_grad_batches)")


class AvexClassifier(L.LightningModule):
    """Classification on an :class:`AvexModel`: mean-pooled last-layer frames -> linear head (the model's own
    ``classifier``, so an export has the published layout).

    Args:
        model: the hub model; it is trained in place (pass a copy to keep the original).
        labels: class names (a list or LabelMap), a class count, or None to keep the model's head and labels. The
            pretrained head is reused when the names equal the model's (``head="auto"``); otherwise a new head is
            initialised from ``seed``.
        multilabel: BCE on multi-hot targets and mAP; else cross-entropy and accuracy.
        unfreeze: ``"all"`` (full fine-tuning) or N: the top N transformer layers and the head (0: head only).
        lr, layer_decay, weight_decay, betas: AdamW with layer-wise LR decay (see
            :func:`avex_hub.heads.finetune.layerwise_param_groups`); ``layer_decay=None``: ``finetune.LAYER_DECAY`` (0.75); the weights'
            published ``layer_wise_gradient_decay_ratio`` acts on gradients inside the encoder (as in the reference).
        warmup_steps / warmup_fraction, total_steps, min_lr_ratio: linear warm-up then cosine decay, stepped per
            optimiser step; ``total_steps`` (>= 1) defaults to the trainer's estimate, ``warmup_fraction`` and
            ``min_lr_ratio`` lie in [0, 1]. Every option is checked when the module is built; training data that
            gives no optimiser step (an empty train split, ``drop_last`` with a batch larger than the data) is an
            error saying so.
        noise: an :class:`AddBackgroundNoise`, a noise folder, or True for generated noise (p=0.5, [-10, 20] dB).
        mixup: a :class:`Mixup` or its probability. With single-label data a mixed row's target is the union of
            its two classes, normalised to sum to one (soft cross-entropy).
        layerdrop: in [0, 1), overrides the config's layer drop (default: the config's for ``"all"``; partial
            fine-tuning keeps the encoder in eval mode, so no layer drop). Layer drop > 0 under DDP needs
            ``strategy="ddp_find_unused_parameters_true"``.
        seed: head initialisation, augmentations and the model's dropout / layer drop draws.
    """

    def __init__(self, model: AvexModel, labels: Sequence[str] | LabelMap | int | None = None, *,
                 multilabel: bool = False, unfreeze: str | int = "all", lr: float = 1e-4, layer_decay: float | None = None,
                 weight_decay: float = 0.01, betas: tuple[float, float] = (0.9, 0.98), warmup_steps: int | None = None,
                 warmup_fraction: float = 0.1, total_steps: int | None = None, min_lr_ratio: float = 0.0,
                 noise: AddBackgroundNoise | str | os.PathLike | bool | None = None, mixup: Mixup | float | None = None,
                 layerdrop: float | None = None, head: str = "auto", seed: int = 0) -> None:
        super().__init__()
        if not isinstance(model, AvexModel):
            raise TypeError(f"model must be an avex_hub.AvexModel (e.g. avex_hub.esp_aves2_sl_beats_all()), got "
                            f"{type(model).__name__}")
        if head not in ("auto", "new", "reuse"):
            raise ValueError(f"head must be 'auto', 'new' or 'reuse', got {head!r}")
        names = self._label_names(model, labels)
        if len(names) < (1 if multilabel else 2):
            raise ValueError(f"need at least {1 if multilabel else 2} classes, got {len(names)}")
        finetune.lowest_trainable_depth(unfreeze, model.num_layers)  # validates unfreeze
        finetune.check_schedule(lr=lr, warmup_steps=warmup_steps, warmup_fraction=warmup_fraction,
                                total_steps=total_steps, min_lr_ratio=min_lr_ratio, layerdrop=layerdrop, seed=seed)
        if layer_decay is None:  # resolved here so that the saved hyperparameters record the value used
            layer_decay = finetune.LAYER_DECAY
        self.model = model
        self.multilabel, self.unfreeze, self.seed = bool(multilabel), unfreeze, int(seed)
        self.metric_name = "mAP" if self.multilabel else "accuracy"
        self._attach_head(names, head)
        if layerdrop is not None or unfreeze != "all":
            model.backbone.encoder.layerdrop = float(layerdrop or 0.0)
        finetune.set_trainable(model, unfreeze)
        self._training_modules = finetune.trainable_modules(model, unfreeze)
        if noise is None or noise is False or isinstance(noise, AddBackgroundNoise):
            self.noise = noise or None
        else:  # True: generated noise; else a folder or list of noise files
            self.noise = AddBackgroundNoise(None if noise is True else noise)
        self.mixup = mixup if isinstance(mixup, Mixup) or mixup is None else Mixup(float(mixup))
        self.save_hyperparameters(ignore=["model", "noise", "mixup", "labels"])
        self.hparams["labels"] = list(names)
        self._outputs: dict[str, list] = {"val": [], "test": []}

    # -- the head ------------------------------------------------------------------------------------------------
    @staticmethod
    def _label_names(model: AvexModel, labels) -> list[str]:
        if labels is None:
            if model.classifier is None:
                raise ValueError(f"{model.name} has no species head; pass labels= (class names or a count)")
            return list(model.labels)
        if isinstance(labels, bool):
            raise TypeError("labels must be class names, a LabelMap, a class count or None, not a bool")
        if isinstance(labels, int):
            return [f"class_{i}" for i in range(int(labels))]
        return list(LabelMap.from_names([str(n) for n in labels]).names)

    def _attach_head(self, names: list[str], head: str) -> None:
        model = self.model
        same = model.classifier is not None and list(model.labels) == names
        if head == "reuse" and not same:
            raise ValueError(f"head='reuse' needs labels equal to the model's {len(model.labels)} labels in order; got "
                             f"{len(names)} others (use head='auto' or 'new')")
        if head == "new" or not same:
            device = next(model.parameters()).device
            with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's RNG (CPU init)
                torch.default_generator.manual_seed(self.seed)
                model.classifier = nn.Linear(model.embedding_dim, len(names)).to(device)
            model.label_map = LabelMap.from_names(names)
        model.return_features_only = False

    @property
    def labels(self) -> list[str]:
        return list(self.model.labels)

    @property
    def num_classes(self) -> int:
        return len(self.model.labels)

    @property
    def monitor(self) -> str:
        """The logged validation metric (``val_accuracy`` or ``val_mAP``), for ModelCheckpoint / EarlyStopping."""
        return f"val_{self.metric_name}"

    # -- modes: exactly the trainable parts train; frozen parts stay in eval mode ------------------------------------
    def train(self, mode: bool = True):
        """Train mode for the trainable parts (dropout, layer drop and input dropout act there); the frozen parts,
        the parameter-free filterbank and the unused AudioSet ``predictor`` stay in eval mode."""
        super().train(mode)
        if mode:
            self.model.eval()
            for module in self._training_modules:
                module.train()
            for module in self.model.modules():  # frozen leaves inside trained parts: the unused predictor, and the
                own = list(module.parameters(recurse=False))  # shared position table when layer 0 is frozen
                if module is self.model.fbank or (own and not any(p.requires_grad for p in own)):
                    module.eval()
        return self

    def on_fit_start(self) -> None:
        # Lightning keeps the modes a module has when fitting starts (a model from build_model is in eval mode), so
        # set them here; its evaluation loops restore them after each validation.
        self.train()

    def configure_callbacks(self):
        return [_FrozenModulesNotice()]

    def forward(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, classes]``."""
        return self.model.logits(audio, padding_mask)

    # -- data checks -----------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        for role in ("train", "val", "test", "predict"):
            check_dataset_rate(getattr(datamodule, f"{role}_set", None), self.model, f"the data module's {role} split")
        if datamodule is not None and getattr(datamodule, "labels", None):
            check_labels(self.labels, datamodule.labels, found_name="the data module")
            if getattr(datamodule, "multilabel", False) and not self.multilabel:  # (single-label data may train BCE)
                raise ValueError("the data is multi-label but the classifier was built with multilabel=False; pass "
                                 "multilabel=True (BCE and mAP)")

    def _targets(self, batch: dict) -> torch.Tensor:
        """Multi-hot float targets ``[B, classes]`` from the batch's ``target`` or ``label``; checked."""
        if "target" in batch:
            targets = batch["target"]
            if targets.dim() != 2 or targets.shape[1] != self.num_classes:
                raise ValueError(f"the batch's targets have shape {tuple(targets.shape)} but the classifier has "
                                 f"{self.num_classes} classes; the data and the model's labels do not match")
            return targets.float()
        if "label" not in batch:
            raise ValueError("the batch has neither 'label' nor 'target'; training needs a labelled dataset")
        labels = torch.as_tensor(batch["label"])
        if labels.numel() and int(labels.max()) >= self.num_classes:
            raise ValueError(f"the batch has class id {int(labels.max())} but the classifier has {self.num_classes} "
                             "classes; the data and the model's labels do not match")
        return multi_hot(labels.to(self.device), self.num_classes)

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, targets)
        return F.cross_entropy(logits, targets / targets.sum(dim=1, keepdim=True).clamp(min=1e-12))

    # -- training --------------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        check_dataset_rate(dataset, self.model, "the training data")
        if hasattr(dataset, "set_epoch"):  # seeded random crops vary per epoch (AudioDataset)
            dataset.set_epoch(self.current_epoch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        audio, mask, targets = batch["audio"], batch.get("padding_mask"), self._targets(batch)
        keys = (self.seed, self.current_epoch, batch_idx)
        generator = torch.Generator().manual_seed(_step_seed(*keys, self.global_rank, 1))
        if self.mixup is not None:
            mixed = self.mixup(audio, mask, targets, generator=generator)
            audio, mask, targets = mixed.audio, mixed.padding_mask, mixed.targets
        if self.noise is not None:
            audio = self.noise(audio, mask, generator=generator)
        # Dropout / layer drop draw from a per-step seed, the same on every rank (layer drop then skips the same
        # layers everywhere) and after a resume; the global RNG is restored afterwards.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.default_generator.manual_seed(seed := _step_seed(*keys, 2))
            if devices:
                torch.cuda.manual_seed(seed)
            logits = self.model.logits(audio, mask)
        loss = self._loss(logits, targets)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=audio.shape[0],
                 sync_dist=True)
        return loss

    def configure_optimizers(self):
        h = self.hparams
        groups = finetune.layerwise_param_groups(self.model, lr=h.lr, layer_decay=h.layer_decay,
                                                 weight_decay=h.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=h.lr, betas=tuple(h.betas))
        total = h.total_steps if h.total_steps is not None else self.trainer.estimated_stepping_batches
        if not np.isfinite(total):
            raise ValueError("cannot size the LR schedule: the trainer has no max_epochs/max_steps; pass total_steps=")
        total = int(total)
        if total < 1:
            raise ValueError(f"the training data gives no optimiser step: {_training_data(self.trainer)}")
        warmup = h.warmup_steps if h.warmup_steps is not None else int(round(h.warmup_fraction * total))
        scheduler = finetune.warmup_cosine_scheduler(optimizer, warmup_steps=warmup, total_steps=total,
                                                     min_lr_ratio=h.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # -- evaluation: per-epoch metric over all ranks, each item once ---------------------------------------------
    def _eval_step(self, batch: dict, batch_idx: int, stage: str) -> None:
        logits = self.model.logits(batch["audio"], batch.get("padding_mask")).float()
        index = batch.get("index")
        index = torch.as_tensor(index, device=self.device) if index is not None else \
            torch.full((logits.shape[0],), -1, device=self.device)
        self._outputs[stage].append((index, logits, self._targets(batch)))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def _eval_epoch_end(self, stage: str) -> None:
        outputs, self._outputs[stage] = self._outputs[stage], []
        if not outputs:
            return
        index, logits, targets = (torch.cat(parts) for parts in zip(*outputs))
        if self.trainer.world_size > 1:  # DistributedSampler gives every rank the same count (it pads)
            index, logits, targets = (self.all_gather(t).flatten(0, 1) for t in (index, logits, targets))
        if bool((index >= 0).all()):  # each dataset item once: the sampler's padding repeats some
            index_np = index.cpu().numpy()
            _, first = np.unique(index_np, return_index=True)
            keep = torch.as_tensor(first, device=index.device)
            logits, targets = logits[keep], targets[keep]
        from ..heads import metrics

        loss = self._loss(logits, targets)
        if self.multilabel:
            score = metrics.mean_average_precision(targets.cpu(), logits.cpu())
        else:
            score = metrics.accuracy(targets.argmax(dim=1).cpu(), logits.cpu())
        # Every rank holds the same gathered values; sync_dist averages equal numbers (and keeps Lightning quiet).
        self.log(f"{stage}_loss", loss, prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}_{self.metric_name}", float(score), prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}_items", float(len(logits)), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """``index`` [B] (dataset positions), ``logits`` [B, classes] and ``embedding`` [B, C] (the pooled last
        layer the head reads), float32."""
        out = self.model.encode(batch["audio"], batch.get("padding_mask"))
        embedding = self.model.pool(out.features, out.padding_mask, "mean")
        index = batch.get("index")
        result = {"logits": self.model.classifier(embedding).float(), "embedding": embedding.float()}
        if index is not None:
            result["index"] = torch.as_tensor(index)
        return result

    # -- export ----------------------------------------------------------------------------------------------------
    def export(self, folder: str | os.PathLike, *, overwrite: bool = False):
        """Save the fine-tuned model in the published layout (see :func:`avex_hub.heads.finetune.export_model`),
        recording the latest validation metrics in its provenance."""
        trainer = self._trainer
        metrics = ({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
                   if trainer is not None else None)
        return finetune.export_model(self.model, folder, overwrite=overwrite, metrics=metrics or None)


from .lightning_predict import (  # noqa: E402  (re-exported: one place to import the Lightning API from)
    AvexLightningEmbedder, MergedPredictions, ShardedPredictionWriter, extract_embeddings_distributed, merge_shards,
    window_dataset,
)

__all__ += ["AvexLightningEmbedder", "MergedPredictions", "ShardedPredictionWriter", "extract_embeddings_distributed",
            "merge_shards", "window_dataset"]
