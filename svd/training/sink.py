"""Dataset sink mode's input: training steps streamed, each built only when the sink pulls it.

Building every step's inputs before the first step (as a list) held them all in host memory at
once: about 1.1 TB for configs/svd_train.yaml's 10000 steps of 14 frames at 576x1024. A
``StepStream`` builds step ``s``'s inputs (``make(s)``, the same function the host loop calls)
when the dataset pipeline asks for row ``s``; MindSpore's prefetch queue bounds what is held.
"""


class StepStream:
    """Iterable over ``make(step)`` for ``start <= step < stop``, built lazily, in order.

    The first step is built once up front (the dataset needs its column count) and handed out first.
    """

    def __init__(self, make, start, stop):
        if stop <= start:
            raise ValueError(f"no steps to stream: start {start} >= stop {stop}")
        self.make, self.start, self.stop = make, start, stop
        self._first = tuple(make(start))
        self.columns = len(self._first)

    def __len__(self):
        return self.stop - self.start

    def __iter__(self):
        for step in range(self.start, self.stop):
            if step == self.start and self._first is not None:
                first, self._first = self._first, None
                yield first
            else:
                yield tuple(self.make(step))


def sink_dataset(make, start, stop):
    """A MindSpore GeneratorDataset over ``StepStream(make, start, stop)`` (in order, no shuffling)."""
    import mindspore as ms

    stream = StepStream(make, start, stop)
    return ms.dataset.GeneratorDataset(stream, column_names=[f"in{i}" for i in range(stream.columns)],
                                       shuffle=False)
