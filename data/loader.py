"""Batches of ready-to-use (x, y), prepared one at a time, optionally a batch ahead in a thread."""
import queue
import threading

import numpy as np

from .transforms import prepare_batch, random_shift


class BatchLoader:
    """Iterate (x float32 (B, 3, S, S), y int64 (B,)) over uint8 images, one epoch per iteration.

    Shuffling is seeded by (seed, epoch) and augmentation by (seed, epoch, batch), so a resumed
    run sees exactly the batches an uninterrupted one does; `set_epoch(e)` picks the epoch and
    `start_batch` skips the batches an interrupted epoch had already done. Memory holds the
    raw images plus a few batches, whatever the image size. prefetch=True prepares the next
    batch in a background thread while the model computes on this one (NumPy releases the GIL
    in the heavy parts).

    shard=(rank, ranks) (data-parallel training, models/distributed.py): every rank draws the
    same batches of batch_size images and prepares only its part, the rank-th of `ranks` equal
    parts (batch_size must divide evenly), shifted as the whole batch would have been.
    """

    def __init__(self, images, labels, batch_size, image_size, mean, std, shuffle=False,
                 seed=0, drop_last=False, augment_shift=0, prefetch=False, shard=(0, 1)):
        if len(images) != len(labels):
            raise ValueError(f"BatchLoader: {len(images)} images but {len(labels)} labels")
        if batch_size < 1 or image_size < 1:
            raise ValueError(f"BatchLoader: batch_size and image_size must be >= 1, got "
                             f"{batch_size} and {image_size}")
        if batch_size % shard[1]:
            raise ValueError(f"BatchLoader: a batch of {batch_size} does not split into {shard[1]} equal parts")
        self.images, self.labels = images, labels
        self.batch_size, self.image_size = batch_size, image_size
        self.mean, self.std = mean, std
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.augment_shift, self.prefetch = augment_shift, prefetch
        self.shard = shard
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch, start_batch=0):
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self):
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _batches(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.images)) if self.shuffle else np.arange(len(self.images))
        for b in range(self.start_batch, len(self)):
            idx = np.sort(order[b * self.batch_size:(b + 1) * self.batch_size])
            images, labels = self.images[idx], self.labels[idx]
            if self.augment_shift:
                images = random_shift(images, self.augment_shift, np.random.default_rng([self.seed, self.epoch, b]))
            rank, ranks = self.shard
            part = slice(rank * len(idx) // ranks, (rank + 1) * len(idx) // ranks)
            yield prepare_batch(images[part], self.image_size, self.mean, self.std), labels[part]

    def __iter__(self):
        if not self.prefetch:
            yield from self._batches()
            return
        q = queue.Queue(maxsize=2)
        stop = threading.Event()
        done = object()

        def work():
            try:
                for item in self._batches():
                    if stop.is_set():
                        return
                    q.put(item)
            except BaseException as err:  # handed to the consumer, never lost in the thread
                q.put(err)
            q.put(done)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(0.05)
