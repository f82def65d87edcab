"""The one writer. One task drains one queue; nothing else changes state.

For each batch of queued commands (everything waiting, no timer): decide each
on an overlay of the book, write all their events, postings and changed rows
in ONE SQLite transaction, and only after COMMIT merge the overlay into the
book, resolve each caller's future and publish the events. A failed commit
drops the overlay: the book and the database are exactly as before, and every
caller in the batch gets the error. The sequencer never awaits the network.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from engine.core.book import Book
from engine.core.decider import decide, evolve
from engine.core.messages import Result
from engine.persist import write_batch
from storage import Writer

log = logging.getLogger("botctl.sequencer")

_STOP = object()


class SequencerStopped(Exception):
    pass


class Sequencer:
    def __init__(self, book: Book, writer: Writer, max_batch: int = 4096, queue_size: int = 65536):
        self.book = book
        self.writer = writer
        self.max_batch = max_batch
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self._subscribers: list[Callable[[list], None]] = []
        self._task: asyncio.Task | None = None
        self._stopped = False
        self.committed_batches = 0
        self.committed_commands = 0
        # Test and drill seam: called with the batch's journal before the commit.
        self.before_commit: Callable[[list], None] | None = None

    # ---- lifecycle

    def start(self) -> "Sequencer":
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="botctl-sequencer")
        return self

    async def stop(self) -> None:
        """Finish what is queued, then stop. Later submits raise SequencerStopped."""
        if self._task is None or self._stopped:
            return
        self._stopped = True
        if self._task.done():  # cancelled or crashed: nothing left to drain
            return
        await self._queue.put((_STOP, None))
        await self._task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def subscribe(self, callback: Callable[[list], None]) -> Callable[[], None]:
        """`callback(events)` after each commit, on the loop; returns an unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    # ---- the door

    async def submit(self, command) -> Result:
        if self._stopped:
            raise SequencerStopped("the engine is stopping")
        future = asyncio.get_running_loop().create_future()
        queue = self._queue
        if queue.full():
            await queue.put((command, future))  # back-pressure: wait for room
        else:
            queue.put_nowait((command, future))  # same effect, without a coroutine per call
        return await future

    # ---- the loop

    async def _run(self) -> None:
        queue = self._queue
        while True:
            item = await queue.get()
            stop = item[0] is _STOP
            batch = [] if stop else [item]
            append, get_nowait, qsize = batch.append, queue.get_nowait, queue.qsize
            for _ in range(min(qsize(), self.max_batch - 1)):  # everything waiting, no timer
                item = get_nowait()
                if item[0] is _STOP:
                    stop = True
                else:
                    append(item)
            if batch:
                await self._process(batch)
            if stop:
                while not queue.empty():
                    cmd, future = queue.get_nowait()
                    if future is not None and not future.done():
                        future.set_exception(SequencerStopped("the engine stopped"))
                return

    def _decide_batch(self, batch: list) -> tuple[Book, list, list]:
        """Decide every command on one overlay. A command whose decide/evolve raises
        is failed alone: the overlay is rebuilt without it."""
        failed: dict[int, BaseException] = {}
        while True:
            overlay = self.book.overlay()
            seq = overlay.meta.get("seq")
            journal: list = []
            results: list = []
            retry = False
            add_result, add_entry = results.append, journal.append
            for index, (cmd, _future) in enumerate(batch):
                if failed and index in failed:
                    add_result(None)
                    continue
                try:
                    events = decide(overlay, cmd)
                    for event in events:
                        evolve(overlay, event)
                except Exception as exc:  # a bug in one command must not sink the others
                    log.exception("command failed: %r", cmd)
                    failed[index] = exc
                    retry = True
                    break
                for event in events:
                    seq += 1
                    add_entry((seq, event))
                add_result(events)
            if retry:
                continue
            overlay.meta.put("seq", seq)
            return overlay, journal, [failed.get(i, r) for i, r in enumerate(results)]

    async def _process(self, batch: list) -> None:
        overlay, journal, results = self._decide_batch(batch)
        cancelled = None
        try:
            async with self.writer.transaction() as tx:  # BEGIN IMMEDIATE ... COMMIT, one thread hop
                write_batch(tx, overlay, journal)
                if self.before_commit is not None:
                    self.before_commit(journal)
        except asyncio.CancelledError as stop:
            cancelled = stop  # the transaction committed (see Writer.commit): memory follows disk
        except Exception as exc:
            if len(batch) > 1 and cancelled is None:
                # One bad command must not sink the others: decide and commit each alone,
                # in queue order, so only the guilty one (or, for an I/O error, each) fails.
                log.warning("batch of %d failed to commit (%s); retrying one by one", len(batch), exc)
                for item in batch:
                    await self._process([item])
                return
            log.error("commit failed, nothing applied: %s", exc)
            for _cmd, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if cancelled is not None:
                raise cancelled
            return
        except BaseException as exc:
            log.error("commit interrupted, nothing applied: %s", exc)
            for _cmd, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            if not isinstance(exc, Exception):
                raise
            return
        overlay.merge()
        self._answer(batch, journal, results)
        if cancelled is not None:
            raise cancelled

    def _answer(self, batch: list, journal: list, results: list) -> None:
        self.committed_batches += 1
        self.committed_commands += len(batch)
        for (_cmd, future), result in zip(batch, results):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(Result(tuple(result)))
        if journal and self._subscribers:
            events = [event for _seq, event in journal]
            for callback in list(self._subscribers):
                try:
                    callback(events)
                except Exception:
                    log.exception("subscriber failed")
