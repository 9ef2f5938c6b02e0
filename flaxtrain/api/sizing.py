"""The Learner's batch-size search: the largest batch whose compiled train step fits the device memory."""

from __future__ import annotations

import jax
import numpy as np

from flaxtrain.errors import FlaxtrainError
from flaxtrain.train import batch_size as batch_search


class BatchSizing:
    """`find_batch_size` of the Learner (a mixin: it reads the learner's data, strategy and steps)."""

    def find_batch_size(self, target: int | None = None, *, memory_limit: int | None = None, max_batch_size: int = 1024,
                        headroom: float = 0.9, verbose: int = 1) -> int:
        """Sets the largest batch whose compiled train step fits the device memory (ktrain's users pick it by
        trial and out-of-memory errors), from XLA's memory analysis of the compiled step: nothing runs, so
        nothing runs out of memory. Returns the batch size (global, all devices) and sets it, with
        `eval_batch_size` when that was not given.

        The step is compiled on copies of the training set's longest rows: at two sizes, to learn its
        fixed and per-example bytes, then at the predicted size and its neighbours, in steps of
        8 x the data-parallel devices (1 x below 8). With `target`, a global batch larger than fits is
        kept and split into the fewest micro-batches that fit (`grad_accum_steps`). Each size's analysis is
        remembered (per program, options and devices), so a second search compiles only sizes not seen yet.

        Args:
          target: the global batch wanted (None: the largest that fits, at most `max_batch_size` and the
            training set's size).
          memory_limit: bytes per device (default: the device's limit; on CPU the host's available memory).
          headroom: the share of `memory_limit` a step may take.
        """
        limit = memory_limit if memory_limit is not None else batch_search.device_memory_limit()
        budget = int(limit * headroom)
        dp, processes = self.strategy.data_parallel, jax.process_count()
        cap = min(max_batch_size, len(self.train_data)) // dp * dp
        if cap < dp:
            raise FlaxtrainError(f"the training set has {len(self.train_data)} examples: fewer than the {dp} "
                                 "data-parallel devices")
        batches, _ = self.task.batches(self.train_data, batch_size=dp, shuffle=False, seed=self.seed,
                                       process_index=jax.process_index(), process_count=processes)
        sample = batch_search.longest_rows(batches)
        if sample is None:
            raise FlaxtrainError(f"train_data gave no batches: {self.train_data.empty_hint}")
        accum, self.grad_accum_steps = self.grad_accum_steps, 1
        self._steps = None  # compiled without accumulation: the memory of one micro-batch
        state, measured = self._train_state(), {}

        def peak(size: int) -> int:
            if size not in measured:
                rows = {k: np.resize(v, (size // processes, *np.shape(v)[1:])) for k, v in sample.items()}
                sizes = self.steps.memory(state, rows, jax.random.key(self.seed))
                if sizes is None:
                    raise FlaxtrainError(f"the {jax.default_backend()} backend gives no memory analysis of the "
                                         "compiled step: pass a whole number as batch_size")
                measured[size] = sizes["peak"]
            return measured[size]

        try:
            best, step = batch_search.largest_fitting(peak, data_parallel=dp, cap=cap, budget=budget)
            accum = 1 if target is None else batch_search.micro_batches(target, best, dp)
        finally:
            self.grad_accum_steps, self._steps = accum, None
        chosen = best if target is None else target
        self.batch_size = chosen
        if self._eval_follows:
            self.eval_batch_size = chosen // accum
        if verbose:
            size = batch_search.format_bytes
            fits = f"{best} fits in {size(measured[best])} of the {size(budget)} allowed per device"
            if best + step in measured:
                fits += f" ({best + step} would need {size(measured[best + step])})"
            print(f"batch size {chosen} as {accum} micro-batches of {chosen // accum}: {fits}" if accum > 1
                  else f"batch size {chosen}: {fits}")
        return chosen
