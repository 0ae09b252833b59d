"""Server settings (:class:`ServeConfig`): cache size, preload list, body limit, API keys,
batching and overload bounds. Build one in code, or from ``TSLOOM_SERVE_*`` variables
with :meth:`ServeConfig.from_env`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal

from tsloom.errors import ConfigError

_HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ServeConfig:
    """How the server behaves.

    - `cache_size`: models resident at once (least recently used leaves first).
    - `preload`: refs (or aliases such as ``<iid>/<target>/production``) loaded at start.
    - `max_body_bytes`: request bodies above this get 413.
    - `api_key_hashes`: SHA-256 hex digests of accepted bearer tokens (see
      :func:`tsloom.serve.auth.hash_key`); with none, write/admin endpoints refuse every
      request (401) — there is no unauthenticated write.
    - `read_requires_key`: whether GET endpoints and predictions need a key as well.
    - `max_batch_size`, `max_wait_ms`: dynamic batching per model — a batch closes when it
      holds this many requests or after this wait.
    - `max_queue`: requests waiting per model beyond which new ones get 429 at once.
    - `max_queue_total`: predictions outstanding (queued or being computed) across all
      models beyond which new ones get 429 at once, with ``Retry-After`` — the bound that
      holds however many models are resident (``max_queue`` alone allows
      ``max_queue`` × models).
    - `workers`: inference threads.
    - `inline_ms`: a batch whose forward pass is expected to take at most this long runs on
      the event loop, saving the hand-off to an inference thread (worth ~10–20% throughput
      with many small models); batches closed in the same turn run together, half of them
      on a partner thread meanwhile. 0, the default, keeps all inference off the event loop.
    - `alias_ttl_s`: how long a resolved stage alias (``…/production``) is reused.
    - `runtime`: ``torch`` (default) or ``onnx`` — export each model to ONNX when it loads
      and predict through ONNX Runtime on CPU (needs the ``onnx`` extra; a model that
      cannot be exported falls back to torch with a logged warning).
    - `onnx_threads`: intra-op threads of each ONNX Runtime session.
    - `forward_process`: with runtime ``onnx``, run the forward passes in a child process
      of their own (default), where they never hold the server's GIL — with requests
      spread over many models about a quarter more requests/s on 2 cores; false runs
      them on the server's inference threads (and `inline_ms`) as runtime ``torch`` does.
    - `switch_interval_ms`: the interpreter's thread switch interval while the server runs
      (0: leave Python's 5 ms). An inference thread that finishes a batch waits at most
      this long for the GIL while the event loop is busy; 0.5 lets big batches run off the
      loop while it parses the next requests.
    """

    cache_size: int = 16
    preload: tuple[str, ...] = ()
    max_body_bytes: int = 4 * 1024 * 1024
    api_key_hashes: tuple[str, ...] = ()
    read_requires_key: bool = False
    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 256
    max_queue_total: int = 1024
    workers: int = 2
    inline_ms: float = 0.0
    alias_ttl_s: float = 2.0
    runtime: Literal["torch", "onnx"] = "torch"
    onnx_threads: int = 1
    forward_process: bool = True
    switch_interval_ms: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "preload", tuple(self.preload))
        hashes = tuple(h.strip().lower() for h in self.api_key_hashes)
        bad = [h for h in hashes if not _HASH.match(h)]
        if bad:
            raise ConfigError(
                f"{len(bad)} API key hash(es) are not 64-character SHA-256 hex digests",
                hint="store hashes, not keys: `python -c 'from tsloom.serve import hash_key; "
                'print(hash_key("KEY"))\'`',
            )
        object.__setattr__(self, "api_key_hashes", hashes)
        runtime = str(self.runtime).strip().lower()
        if runtime not in ("torch", "onnx"):
            raise ConfigError(
                f"serve setting runtime must be 'torch' or 'onnx', got {self.runtime!r}"
            )
        object.__setattr__(self, "runtime", runtime)
        positive = (
            "cache_size",
            "max_body_bytes",
            "max_batch_size",
            "max_queue",
            "max_queue_total",
            "workers",
        )
        for name in (*positive, "onnx_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"serve setting {name} must be at least 1")
        if min(self.max_wait_ms, self.alias_ttl_s, self.inline_ms, self.switch_interval_ms) < 0:
            raise ConfigError(
                "serve settings max_wait_ms, alias_ttl_s, inline_ms and switch_interval_ms "
                "must not be negative"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ServeConfig:
        """``TSLOOM_SERVE_CACHE_SIZE``, ``TSLOOM_SERVE_PRELOAD`` (comma separated),
        ``TSLOOM_SERVE_API_KEY_HASHES`` (comma separated), ``TSLOOM_SERVE_READ_REQUIRES_KEY``
        (1/true/yes), ``TSLOOM_SERVE_RUNTIME`` (torch/onnx) and so on, one per field;
        `overrides` win."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"TSLOOM_SERVE_{f.name.upper()}")
            if raw is None:
                continue
            default = f.default
            try:
                if isinstance(default, bool):
                    values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, float):
                    values[f.name] = float(raw)
                elif isinstance(default, str):
                    values[f.name] = raw.strip()
                else:
                    values[f.name] = tuple(p.strip() for p in raw.split(",") if p.strip())
            except ValueError as exc:
                raise ConfigError(f"TSLOOM_SERVE_{f.name.upper()}={raw!r}: {exc}") from exc
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
