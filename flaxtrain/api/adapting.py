"""The Learner's LoRA calls: add adapters and freeze the rest, or merge them back in."""

from __future__ import annotations

from collections.abc import Sequence

from flaxtrain.models import lora
from flaxtrain.train import make_optimizer


class Adapters:
    """`add_lora` and `merge_lora` of the Learner (a mixin: it reads the learner's model, seed and freezing)."""

    def add_lora(self, rank: int = 8, alpha: float = 16, targets: str | Sequence[str] = ("query", "value"),
                 dropout: float = 0.0) -> None:
        """Trains LoRA adapters (Hu et al. 2021) instead of the whole model: rank-`rank` updates scaled by
        alpha / rank on the kernels `targets` names (module names such as 'query', 'value', 'attention/out',
        or one regular expression over whole param paths, as PEFT's target_modules). Everything else is
        frozen except the task head (PEFT's modules_to_save): the frozen params get no optimizer state
        and no backward pass. `merge_lora()` folds the adapters in; a predictor's `save_adapter` writes
        them in PEFT's format. Call it before fit; a train state in progress starts afresh."""
        self.model.add_lora(rank=rank, alpha=alpha, targets=targets, dropout=dropout, seed=self.seed)
        self._state, self._steps, self.frozen = None, None, ()
        self._freeze_for_lora()

    def _freeze_for_lora(self) -> None:
        """Freezes what LoRA leaves fixed: every top-level part but the adapters and the task head."""
        trainable = {lora.LORA, *self.model.lora_trainable()}
        self._set_frozen(tuple(name for name in self.model.params if name not in trainable))

    def merge_lora(self) -> None:
        """Folds the LoRA adapters into their kernels and trains the whole (plain) model from here on."""
        self.model.merge_lora()
        self._state, self._steps, self.frozen = None, None, ()
        self._tx = make_optimizer(self.model.default_lr, **self._optimizer)
