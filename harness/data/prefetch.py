"""Batches built off the step loop: a background thread fills a small queue ahead of the trainer.

``PrefetchedBatches(source, depth, pin_device)`` wraps any resumable batch iterator (the
token-store ``TrainBatches`` or the streamed ``HFTrainBatches``) and is used exactly like
it: ``next()``, ``state_dict()``, ``load_state_dict()``. Why a thread and not a DataLoader
with worker processes: building a batch is numpy slicing of a memory-mapped token store
(microseconds to a millisecond), and the expensive part of streaming, tokenisation, runs
in the `tokenizers` Rust code, which releases the GIL; one thread therefore hides the data
time without a second copy of the dataset per worker, and the iterator's own resume state
stays the only state.

Exact resume. The thread runs up to ``depth`` batches ahead, so the source's own state
describes the last batch *produced*. Right after producing each batch the thread records
``source.state_dict()`` and queues it with the batch; ``state_dict()`` here returns the
record of the last batch the trainer *consumed* (before any, the state the source had
when the thread started). A checkpoint therefore resumes with the first batch the
trainer had not yet seen, whatever the queue held.

Pinned memory (CUDA). With ``pin_device`` set, the thread copies each batch into
page-locked host memory, so the trainer's ``.to(device, non_blocking=True)`` is a real
asynchronous copy; it first makes ``pin_device`` the thread's current CUDA device (the
current device is per thread; otherwise every rank would open a context on GPU 0).
Without ``pin_device`` nothing is pinned.

Only on CUDA. There the main thread mostly waits for the GPU, with the GIL released and
the host's cores idle, so the thread's work is free. On the CPU the model's compute
already uses the cores: a token-store batch costs about 1% of even the tiniest model's
step, so nothing can be won, and a stream's tokenisation (``encode_batch`` spreads over
all cores by itself) then only competes with the compute; on the project's 2-core machine
an HF paper-mode run was up to 29% slower with the thread (docs/performance.md, "Feeding
the GPU: prefetch"). ``ebt-scaling bench --feed SPEC`` measures both ways on any machine.

Errors and shutdown. An exception raised by the source (a DataError from a stream, a
bug) is queued and raised again by the trainer's ``next()``: the same object, with its
original traceback, so the CLI still reports a DataError in one line. The thread is a
daemon and holds no reference to this object: when the wrapper is closed, garbage
collected or the interpreter exits, a stop flag is set and the thread ends within
``_POLL_S``; ``close()`` also waits for it.
"""
from __future__ import annotations

import copy
import queue
import threading
import weakref

import torch

DEPTH = 4  # batches built ahead: slack for a stream's chunked tokenisation (ENCODE_CHUNK documents at once)
_POLL_S = 0.1  # how often a thread blocked on a full queue checks the stop flag
_BATCH, _ERROR, _END = "batch", "error", "end"


def _produce(source, slots: queue.Queue, stop: threading.Event, pin_device: torch.device | None) -> None:
    """Thread body: (kind, payload, source state after this batch) into `slots` until stopped."""
    if pin_device is not None:
        torch.cuda.set_device(pin_device)
    while not stop.is_set():
        try:
            batch = next(source)
            if pin_device is not None:
                batch = batch.pin_memory()
            item = (_BATCH, batch, copy.deepcopy(source.state_dict()))
        except StopIteration:
            item = (_END, None, None)
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the trainer
            item = (_ERROR, exc, None)
        while not stop.is_set():
            try:
                slots.put(item, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        if item[0] != _BATCH:
            return


class PrefetchedBatches:
    """A resumable batch iterator whose batches a background thread builds ahead (see module docstring)."""

    def __init__(self, source, depth: int = DEPTH, pin_device: torch.device | None = None):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self.source, self.depth, self.pin_device = source, depth, pin_device
        self._state = copy.deepcopy(source.state_dict())  # of the last consumed batch
        self._thread: threading.Thread | None = None
        self._slots: queue.Queue | None = None
        self._stop: threading.Event | None = None
        self._finished: BaseException | None = None  # what ended the stream, raised again on every next()
        self._finalizer: weakref.finalize | None = None

    def __iter__(self) -> "PrefetchedBatches":
        return self

    def _start(self) -> None:
        self._slots, self._stop = queue.Queue(maxsize=self.depth), threading.Event()
        self._thread = threading.Thread(target=_produce, args=(self.source, self._slots, self._stop, self.pin_device),
                                        name="batch-prefetch", daemon=True)
        # The callback holds the event, never self: the wrapper stays collectable.
        self._finalizer = weakref.finalize(self, threading.Event.set, self._stop)
        self._thread.start()

    def __next__(self):
        if self._finished is not None:
            raise self._finished
        if self._thread is None:
            self._start()
        while True:
            try:
                kind, payload, state = self._slots.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._slots.empty():  # stopped under us: never by design
                    raise RuntimeError("the batch prefetch thread ended without a batch") from None
        if kind == _BATCH:
            self._state = state
            return payload
        self._finished = StopIteration() if kind == _END else payload
        self.close()
        raise self._finished

    def state_dict(self) -> dict:
        """The source's state right after the last batch the caller consumed."""
        return copy.deepcopy(self._state)

    def load_state_dict(self, state: dict) -> None:
        """Resume at `state`: batches already built ahead are dropped."""
        self.close()
        self._finished = None
        self.source.load_state_dict(state)
        self._state = copy.deepcopy(self.source.state_dict())

    def close(self) -> None:
        """Stop the thread and wait for it. The source is put back at the consumed position
        (the batches built ahead are dropped), so a later next() goes on where the caller
        stopped, in a new thread."""
        if self._thread is None:
            return
        self._stop.set()
        self._finalizer.detach()
        self._thread.join()
        self._thread = self._slots = self._stop = None
        if self._finished is None:
            self.source.load_state_dict(self._state)


def prefetched(source, device: torch.device):
    """What the trainer feeds from: on a GPU, `source` built DEPTH batches ahead and pinned;
    on the CPU, `source` itself (the thread would only compete with the model for the
    cores; "Only on CUDA" above)."""
    return PrefetchedBatches(source, DEPTH, device) if device.type == "cuda" else source
