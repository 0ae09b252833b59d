"""A bounded, thread-safe LRU cache of loaded models, with coalesced loads, and the
resolution of stage aliases (``<iid>/<target>/production``) with a short TTL."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from tsloom.serve.metrics import Metrics


class ModelCache:
    """Models by ref; at most `capacity` resident, the least recently used leaves first.

    :meth:`get` loads on a miss; concurrent misses for one ref share one load (the others
    wait for it); a failed load is not cached (the next request tries again).
    """

    def __init__(
        self, loader: Callable[[str], Any], capacity: int, metrics: Metrics | None = None
    ) -> None:
        self.loader = loader
        self.capacity = capacity
        self.metrics = metrics
        self._lock = threading.Lock()
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._loading: dict[str, Future] = {}
        self.load_count = 0

    def peek(self, ref: str) -> Any | None:
        """The model if resident (marked as just used), without loading."""
        with self._lock:
            model = self._models.get(ref)
            if model is not None:
                self._models.move_to_end(ref)
                if self.metrics:
                    self.metrics.cache_hits.inc()
            return model

    def get(self, ref: str) -> Any:
        with self._lock:
            model = self._models.get(ref)
            if model is not None:
                self._models.move_to_end(ref)
                if self.metrics:
                    self.metrics.cache_hits.inc()
                return model
            future = self._loading.get(ref)
            owner = future is None
            if owner:
                future = Future()
                self._loading[ref] = future
        if not owner:
            return future.result()
        started = time.perf_counter()
        try:
            model = self.loader(ref)
        except BaseException as exc:
            with self._lock:
                self._loading.pop(ref, None)
            if self.metrics:
                self.metrics.loads.labels("error").inc()
            future.set_exception(exc)
            raise
        with self._lock:
            self.load_count += 1
            self._models[ref] = model
            self._models.move_to_end(ref)
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
                if self.metrics:
                    self.metrics.evictions.inc()
            self._loading.pop(ref, None)
            resident = len(self._models)
        if self.metrics:
            self.metrics.loads.labels("ok").inc()
            self.metrics.load_time.observe(time.perf_counter() - started)
            self.metrics.resident.set(resident)
        future.set_result(model)
        return model

    def evict(self, ref: str) -> bool:
        with self._lock:
            found = self._models.pop(ref, None) is not None
            resident = len(self._models)
        if self.metrics:
            self.metrics.resident.set(resident)
        return found

    def clear(self) -> list[str]:
        with self._lock:
            gone = list(self._models)
            self._models.clear()
        if self.metrics:
            self.metrics.resident.set(0)
        return gone

    def resident(self) -> list[str]:
        """Resident refs, least recently used first."""
        with self._lock:
            return list(self._models)


class TTLCache:
    """A small thread-safe map whose entries expire after `ttl` seconds."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._items: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            if self.clock() - found[0] > self.ttl:
                del self._items[key]
                return None
            return found[1]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = (self.clock(), value)
            if len(self._items) > 4096:  # bounded: drop the oldest half
                for k in sorted(self._items, key=lambda k: self._items[k][0])[:2048]:
                    del self._items[k]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
