"""ONNX forward passes in a child process of their own, so that they never hold the
server's GIL.

With requests spread over many models every batch holds one request, and each pays a
whole forward pass. On the event loop a forward pass stops the loop; on a thread it still
contends with the loop for the GIL as it starts and ends. The child process has an
interpreter of its own. The loop sends each batch's raw window values over a Unix socket,
one write per turn of the loop however many batches closed in it. It reads the
original-unit forecasts back, one read for however many finished meanwhile. The child
does the arithmetic of :func:`tsloom.serve.batching.predict_batch` on the model's ONNX
graph and scaler, which it is sent once per model. It imports NumPy and ONNX Runtime,
not PyTorch.

Measured at 100 models on 2 cores (``benchmarks/serve_load.py``, interleaved with the
same server running its forward passes in-process): about 1.25× the requests/s at a lower
p99.

Wire format, little-endian. To the child: a header ``<BIIIIII`` (kind, id, model, rows,
steps, features, payload bytes) and the payload. Kind 1 registers model `id` (payload: the
pickled graph bytes, scaler and target index); 2 is job `id` for `model` (payload:
rows × steps × features float64); 3 forgets model `id`. Back: a header ``<BIIIId``
(status, job, rows, values per row, payload bytes, seconds) and the payload: for status 1,
rows × values float64; for 0, the pickled exception that failed the whole job; for 2, a
pickled list with a forecast or an exception per row (a batch with a bad window, each
row run alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["ForwardProcess", "ForwardProcessDied", "ForwardProcesses", "NotRunHere", "can_run"]

log = logging.getLogger("tsloom.serve")

TO_CHILD = struct.Struct("<BIIIIII")
FROM_CHILD = struct.Struct("<BIIIId")
REGISTER, JOB, FORGET = 1, 2, 3
FAILED, OK, MIXED = 0, 1, 2
SOCKET_BUFFER = 4 * 1024 * 1024
FLUSH_AFTER_S = 0.0003  # the child sends what finished once it has worked this long
LAST_JOB = 0xFFFFFFF0
RESTARTS = 3  # a failed forward-pass process is started again at most this often ...
RESTART_WINDOW_S = 60.0  # ... within this long; then forward passes stay in-process

Done = Callable[[Any, "float | None"], None]  # (results or an exception, seconds)


class NotRunHere(RuntimeError):
    """The forward-pass process could not run a batch (its model's session would not open
    there, or the model is unknown to it): the batch is to run in-process instead."""


class ForwardProcessDied(NotRunHere):
    """The forward-pass process exited; its jobs come back with this, to be run in-process."""


def can_run(model: Any) -> bool:
    """Whether the child can run `model`'s forward passes: it has an ONNX predictor."""
    return getattr(model, "onnx_predictor", None) is not None


class ForwardProcess:
    """The server's end of one child process, used from one event loop.

    ``send(model, windows, done)`` queues a batch; ``done(results, seconds)`` is called on
    the loop with one forecast array per window (or an exception in a window's place), or
    with an exception for the whole batch — :class:`NotRunHere` when the child could not
    run it at all. If the child dies, every batch in flight comes back with
    :class:`ForwardProcessDied` and :attr:`alive` turns false."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, threads: int = 1) -> None:
        self.loop = loop
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for end in (parent, child):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tsloom.serve.forward_process",
                    str(child.fileno()),
                    str(max(1, threads)),
                ],
                pass_fds=(child.fileno(),),
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        finally:
            child.close()
        parent.setblocking(False)
        self.sock = parent
        self.alive = True
        self.failure: str | None = None  # why the child died, once it has
        self._ids: dict[int, int] = {}  # id(model) → its id in the child
        self._next_model = 1
        self._next_job = 1
        self._jobs: dict[int, Done] = {}
        self._out = bytearray()  # not yet written to the child
        self._writing = False  # a write is scheduled, or waits for room
        self._in = bytearray()  # read from the child, not yet a whole answer
        self._forgotten: list[int] = []  # models collected (on any thread), to forget
        self._forget_lock = threading.Lock()
        loop.add_reader(parent.fileno(), self._readable)

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    def describe(self) -> str:
        """For /readyz: running (with its pid), or why it failed."""
        if self.failure is not None:
            return f"failed ({self.failure}); forward passes run in-process"
        return f"running (pid {self.proc.pid})" if self.alive else "stopped"

    # -- to the child (on the loop)

    def send(self, model: Any, windows: list[np.ndarray], done: Done) -> None:
        if not self.alive:
            raise ForwardProcessDied("the forward-pass process has exited")
        mid = self.register(model)
        x = windows[0][None] if len(windows) == 1 else np.stack(windows)
        x = np.ascontiguousarray(x, dtype=np.float64)
        job = self._next_job
        self._next_job = job + 1 if job < LAST_JOB else 1
        self._jobs[job] = done
        n, steps, feats = x.shape
        self._out += TO_CHILD.pack(JOB, job, mid, n, steps, feats, x.nbytes)
        self._out += x.data
        self._schedule_write()

    def register(self, model: Any) -> int:
        """Send `model` to the child unless it was sent already; its id there."""
        mid = self._ids.get(id(model))
        if mid is not None:
            return mid
        mid = self._next_model
        self._next_model += 1
        payload = pickle.dumps(
            (model.onnx_predictor.model_bytes, model.scaler, model.params.target_index)
        )
        self._out += TO_CHILD.pack(REGISTER, mid, 0, 0, 0, 0, len(payload)) + payload
        self._ids[id(model)] = mid
        with contextlib.suppress(TypeError):  # not weak-referenceable: kept till the end
            weakref.finalize(model, self._forget, id(model), mid)
        self._schedule_write()
        return mid

    def _forget(self, key: int, mid: int) -> None:
        """`model` was collected: the child may drop its session (sent with the next write)."""
        with self._forget_lock:
            self._forgotten.append(mid)
            if self._ids.get(key) == mid:
                del self._ids[key]

    def _schedule_write(self) -> None:
        if not self._writing:
            self._writing = True
            self.loop.call_soon(self._write)  # at the turn's end: one write for its batches

    def _write(self) -> None:
        if not self.alive:
            return
        with self._forget_lock:
            gone, self._forgotten = self._forgotten, []
        for mid in gone:
            self._out += TO_CHILD.pack(FORGET, mid, 0, 0, 0, 0, 0)
        if not self._send_some():
            self.loop.add_writer(self.sock.fileno(), self._drain)
        else:
            self._writing = False

    def _drain(self) -> None:
        if self._send_some():
            self.loop.remove_writer(self.sock.fileno())
            self._writing = False

    def _send_some(self) -> bool:
        """Write what the socket takes; True when nothing is left."""
        try:
            sent = self.sock.send(self._out)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._died(exc)
            return True
        del self._out[:sent]
        return not self._out

    # -- from the child (on the loop)

    def _readable(self) -> None:
        try:
            chunk = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError as exc:
            self._died(exc)
            return
        if not chunk:
            self._died(None)
            return
        buf = self._in
        buf += chunk
        at, head = 0, FROM_CHILD.size
        try:
            while len(buf) - at >= head:
                status, job, n, width, size, seconds = FROM_CHILD.unpack_from(buf, at)
                if len(buf) - at - head < size:
                    break
                payload = buf[at + head : at + head + size]  # a copy: buf shrinks below
                at += head + size
                done = self._jobs.pop(job, None)
                if done is None:
                    continue
                if status == OK:
                    rows = np.frombuffer(payload, dtype=np.float64).reshape(n, width)
                    done(list(rows), seconds)
                else:
                    done(pickle.loads(payload), seconds if status == MIXED else None)
        finally:  # what was handed on is gone from the buffer, whatever a callback raised
            del buf[:at]

    def _died(self, exc: BaseException | None) -> None:
        if not self.alive:
            return
        self.alive = False
        self._detach()
        try:  # the socket closes as the child exits: its exit code follows at once
            code = self.proc.wait(0.5)
        except subprocess.TimeoutExpired:
            code = None
        why = f"exit code {code}" if code is not None else str(exc or "connection closed")
        self.failure = why
        log.error("the forward-pass process failed (%s); its batches run in-process", why)
        error = ForwardProcessDied(f"the forward-pass process failed ({why})")
        jobs, self._jobs = self._jobs, {}
        for done in jobs.values():
            done(error, None)

    def _detach(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        with contextlib.suppress(Exception):
            self.loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        """Stop the child (it exits when the socket closes); unanswered batches get
        :class:`asyncio.CancelledError`."""
        self.alive = False
        self._detach()
        self.sock.close()
        jobs, self._jobs = self._jobs, {}
        for done in jobs.values():
            done(asyncio.CancelledError(), None)
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(2)


class ForwardProcesses:
    """A server's forward-pass processes, one per event loop: each started on first use,
    and started again after it failed — at most `RESTARTS` times in `RESTART_WINDOW_S`;
    one that keeps failing stays down (its loop's forward passes then run in-process)."""

    def __init__(self, *, threads: int = 1) -> None:
        self.threads = threads  # intra-op threads of the children's sessions
        self._by_loop: dict[asyncio.AbstractEventLoop, ForwardProcess] = {}
        self._restarts: deque[float] = deque()  # when failed processes were replaced
        self._last_failure: str | None = None  # why the last replaced one failed

    def on(self, loop: asyncio.AbstractEventLoop) -> ForwardProcess:
        """`loop`'s process — alive, unless it failed too often lately."""
        proc = self._by_loop.get(loop)
        if proc is not None and proc.failure is not None and self._may_restart():
            self._last_failure = proc.failure
            log.warning("starting the forward-pass process again (it failed: %s)", proc.failure)
            proc.close()
            proc = None
        if proc is None:
            proc = self._by_loop[loop] = ForwardProcess(loop, threads=self.threads)
        return proc

    def _may_restart(self) -> bool:
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > RESTART_WINDOW_S:
            self._restarts.popleft()
        if len(self._restarts) >= RESTARTS:
            return False
        self._restarts.append(now)
        return True

    def alive(self) -> list[ForwardProcess]:
        return [p for p in self._by_loop.values() if p.alive]

    def describe(self) -> str:
        """For /readyz: each process's state, and the last restart's cause."""
        states = [p.describe() for p in self._by_loop.values()]
        if not states:
            return "starts with the first ONNX batch"
        if self._last_failure is not None:
            lately = len(self._restarts)
            states.append(f"restarted {lately}× lately, last after {self._last_failure}")
        return "; ".join(states)

    def close(self) -> None:
        for proc in self._by_loop.values():
            proc.close()
        self._by_loop.clear()


# ------------------------------------------------------------------ the child


def _forecast(entry: Any, x: np.ndarray) -> np.ndarray:
    """What ``predict_batch`` computes on the ONNX path, for windows `x` (n, steps, feats)."""
    if isinstance(entry, NotRunHere):  # the model's session could not be opened here
        raise entry
    predictor, scaler, target = entry
    return np.ascontiguousarray(scaler.around(predictor, x, target), dtype=np.float64)


def _portable(error: BaseException) -> BaseException:
    """`error` itself if it survives pickling, else a RuntimeError of its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _answer(entry: Any, x: np.ndarray, job: int) -> bytes:
    started = time.perf_counter()
    try:
        y = _forecast(entry, x)
    except Exception as exc:
        if len(x) == 1 or isinstance(exc, NotRunHere):
            data = pickle.dumps(_portable(exc))
            return FROM_CHILD.pack(FAILED, job, 1, 0, len(data), 0.0) + data
        rows: list[Any] = []  # one bad window fails only its own request
        for row in x:
            try:
                rows.append(_forecast(entry, row[None])[0])
            except Exception as row_exc:
                rows.append(_portable(row_exc))
        data = pickle.dumps(rows)
        seconds = time.perf_counter() - started
        return FROM_CHILD.pack(MIXED, job, len(x), 0, len(data), seconds) + data
    seconds = time.perf_counter() - started
    n, width = y.shape
    return FROM_CHILD.pack(OK, job, n, width, y.nbytes, seconds) + y.tobytes()


def _open(payload: bytes | bytearray, threads: int = 1) -> Any:
    from tsloom.forecast.onnx_runtime import OnnxPredictor

    try:
        data, scaler, target = pickle.loads(payload)
        return OnnxPredictor(data, threads=threads), scaler, target
    except Exception as exc:  # its jobs go back, to run in-process
        return NotRunHere(f"the forward-pass process could not open the model: {exc}")


def serve_forever(sock: socket.socket, threads: int = 1) -> None:
    """The child's loop: read whole records, run them, write answers (in batches of
    about FLUSH_AFTER_S of work) until the server closes the socket. `threads`: each
    ONNX Runtime session's intra-op threads."""
    models: dict[int, Any] = {}
    buf = bytearray()
    head = TO_CHILD.size
    while chunk := sock.recv(1 << 20):
        buf += chunk
        out = bytearray()
        at = 0
        flushed = time.perf_counter()
        while len(buf) - at >= head:
            kind, ident, mid, n, steps, feats, size = TO_CHILD.unpack_from(buf, at)
            if len(buf) - at - head < size:
                break
            payload = buf[at + head : at + head + size]  # a copy: buf shrinks below
            at += head + size
            if kind == REGISTER:
                models[ident] = _open(payload, threads)
            elif kind == FORGET:
                models.pop(ident, None)
            elif kind == JOB:
                entry = models.get(mid) or NotRunHere(f"model {mid} is not loaded here")
                x = np.frombuffer(payload, dtype=np.float64).reshape(n, steps, feats)
                out += _answer(entry, x, ident)
                if (now := time.perf_counter()) - flushed >= FLUSH_AFTER_S:
                    sock.sendall(out)
                    out.clear()
                    flushed = now
        del buf[:at]
        if out:
            sock.sendall(out)


def main(fd: int, threads: int = 1) -> None:
    """The child's entry point: serve on the inherited socket `fd` until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which stops us
    with socket.socket(fileno=fd) as channel:
        channel.setblocking(True)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            serve_forever(channel, threads)


if __name__ == "__main__":
    # run from the module imported under its own name, so that what the child pickles
    # (NotRunHere) unpickles in the server as the same class
    from tsloom.serve.forward_process import main as run

    run(int(sys.argv[1]), int(sys.argv[2]))
