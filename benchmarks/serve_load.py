"""Serving load: tsloom's server against TorchServe and a plain FastAPI endpoint, with 1, 10
and 100 LSTM models resident.

    .venv/bin/python benchmarks/serve_load.py --setup-torchserve   # once: TorchServe's venv
    .venv/bin/python benchmarks/serve_load.py [--quick] [--levels 1,10,100]
        [--requests 6000] [--rounds 8] [--concurrency 64] [--batch 32] [--wait-ms 2]
        [--inline-ms 1] [--switch-ms 0.5]
        [--workers 1] [--runtime onnx|torch]
        [--systems tsloom,tsloom-threads,tsloom-torch,torchserve,plain]
        [--no-torchserve] [--no-write] [--report-only]

Everything runs on 127.0.0.1. The script
- builds a benchmark home under benchmarks/.work/serve-home (kept and reused): ETTh1
  ingested, one vanilla LSTM trained for one epoch (96 h in, 24 h out, hidden 64,
  subtract_last), then filed 100 times under 100 param ids (seeds), each copy's weights
  nudged by 1e-3 noise so that the 100 models really are different models;
- for each level (number of models) and system, starts the server in its own process,
  checks that its answer for one window equals the registry model's offline forecast,
  then drives it with one load generator (a minimal HTTP/1.1 client on asyncio streams,
  N concurrent keep-alive connections, requests spread round-robin over the level's
  models, the same JSON bodies of 96 hourly readings for every system): a warm-up
  (excluded) then a fixed number of timed requests; throughput = timed requests / wall
  time, latency per request at the client;
- systems: **tsloom** (``tsloom serve``'s app under Uvicorn, every model preloaded, dynamic
  batching per model, ONNX Runtime by default with the forward passes in the server's
  forward-pass process), **tsloom-threads** (the same with the forward passes in-process)
  and **tsloom-torch** (runtime torch), to show what each part gives, **TorchServe** 0.12
  (own venv in benchmarks/.work/torchserve-venv; a TorchScript export of each model plus
  benchmarks/torchserve/lstm_handler.py doing the same scaling; TorchServe's own
  batching with the same batch size; one worker process per model) and **plain
  FastAPI** (benchmarks/serve_apps.py: one forward per request).

Client and servers share this machine's cores (2 here): the client's CPU time is taken
from the server's. Results go to docs/benchmarks.md, section "Serving", and
benchmarks/.work/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import dataclasses
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine, write_section

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
HOME = WORK / "serve-home"
TS_VENV = WORK / "torchserve-venv"
TS_WORK = WORK / "torchserve"
ETTH1 = ROOT.parent / "shared" / "data" / "ett" / "ETTh1.csv"
PYTHON = ROOT / ".venv" / "bin" / "python"

SPEC = {"sources": ["power.etth1"], "freq": "1h", "start": "2016-07-01", "end": "2017-07-01"}
MODEL = {
    "target": "OT",
    "method": "vanilla",
    "input_width": "96h",
    "output_width": "24h",
    "hidden_size": 64,
    "layers": 1,
    "subtract_last": True,
    "epochs": 1,
    "batch_size": 256,
}
MAX_MODELS = 100
BODIES = 251  # distinct request bodies (prime, so they do not line up with the models)


# ------------------------------------------------------------------ the benchmark home


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without TSLOOM_* (the home decides everything), with
    one intra-op thread per process for every system alike, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSLOOM_")}
    env.update(TSLOOM_HOME=str(HOME), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(extra)
    return env


def prepare_home() -> list[str]:
    """The 100 registered refs, made once (about a minute) and reused."""
    marker = HOME / "models.json"
    if marker.exists():
        saved = json.loads(marker.read_text())
        if saved.get("model") == MODEL and len(saved.get("refs", [])) >= MAX_MODELS:
            return saved["refs"]
    shutil.rmtree(HOME, ignore_errors=True)
    HOME.mkdir(parents=True)
    for key in [k for k in os.environ if k.startswith("TSLOOM_")]:
        del os.environ[key]
    os.environ.update(_env())
    import torch

    import tsloom.registry as reg
    from tsloom.config import load_settings
    from tsloom.forecast.job import train_on_integration
    from tsloom.sources.files import ingest_file

    torch.set_num_threads(1)
    settings = load_settings()
    started = time.perf_counter()
    ingest_file(ETTH1, "power.etth1", ts="date", settings=settings)
    run = train_on_integration(SPEC, MODEL, settings=settings)
    print(f"trained the LSTM in {time.perf_counter() - started:.1f} s; registering 100 copies")
    refs = []
    for seed in range(MAX_MODELS):
        net = copy.deepcopy(run.result.model)
        if seed:
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(torch.randn(p.shape, generator=gen) * 1e-3)
        params = run.params.model_copy(update={"seed": seed})
        result = dataclasses.replace(run.result, params=params, model=net)
        refs.append(reg.register(dataclasses.replace(run, params=params, result=result)))
    marker.write_text(json.dumps({"model": MODEL, "refs": refs}, indent=1))
    print(f"home ready in {time.perf_counter() - started:.1f} s")
    return refs


def request_bodies() -> tuple[list[bytes], list[Any]]:
    """`BODIES` JSON bodies of consecutive 96-hour windows after the training range, and
    the same windows as frames (for the offline check)."""
    os.environ.update(_env())
    import polars as pl

    from tsloom.config import load_settings
    from tsloom.integrate import IntegrationSpec, integrate

    spec = IntegrationSpec.from_tables(["power.etth1"], "1h", start="2017-07-01")
    frame = integrate(spec, settings=load_settings()).frame.select("ts", "power.etth1.OT")
    steps = int(MODEL["input_width"].rstrip("h"))
    frames = [frame.slice(i * 7, steps) for i in range(BODIES)]
    bodies = []
    for f in frames:
        rows = f.select(
            pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"), pl.col("power.etth1.OT").alias("OT")
        ).to_dicts()
        bodies.append(json.dumps({"rows": rows}).encode())
    return bodies, frames


def offline(ref: str, frame: Any) -> np.ndarray:
    import tsloom.registry as reg

    model = reg.load(ref)
    return model.predict(frame).get_column(model.params.target).to_numpy()


def forward_costs(ref: str) -> dict[str, list[float]]:
    """Milliseconds of one forward pass of the benchmark's LSTM, of one window and of a
    batch of 32, in PyTorch and in ONNX Runtime, one thread each (as every server runs):
    what batching and the runtime can save, next to what a request costs in all."""
    import torch

    import tsloom.registry as reg
    from tsloom.forecast.onnx_export import OnnxPredictor, export_onnx

    torch.set_num_threads(1)
    net = reg.load(ref).model.eval()
    steps, feats = net.config["input_steps"], net.config["n_features"]
    session = OnnxPredictor(export_onnx(net), threads=1)

    def best_of(run: Any, x: np.ndarray) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(100):
                run(x)
            times.append((time.perf_counter() - started) * 10)  # ms per call
        return min(times)

    def in_torch(x: np.ndarray) -> None:
        with torch.inference_mode():
            net(torch.from_numpy(x))

    out: dict[str, list[float]] = {}
    for name, run in (("torch", in_torch), ("onnx", session)):
        out[name] = [
            round(best_of(run, np.random.rand(n, steps, feats).astype(np.float32)), 3)
            for n in (1, 32)
        ]
    return out


# ------------------------------------------------------------------ processes


def _spin(seconds: float) -> float:
    """Busy work of a fixed amount, about `seconds` long on a free core; its wall time."""
    started = time.perf_counter()
    x = 0
    for i in range(int(seconds * 12_000_000)):
        x += i
    return time.perf_counter() - started


def cpu_capacity() -> float:
    """How many cores' worth of CPU two busy processes get together now: 2.0 on two free
    cores, about 1.0 when the host lets this machine have only one's worth (seen here:
    both processes then run at half speed although the machine shows 2 cores). Every
    server here shares the cores with the load generator, so the ratios depend on it."""
    import multiprocessing

    alone = min(_spin(0.5) for _ in range(2))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        together = pool.map(_spin, [0.5, 0.5, 0.5, 0.5], chunksize=1)
    return round(min(2.0, 2 * alone / (sum(together) / len(together))), 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_stats(pgid: int) -> tuple[float, float]:
    """Resident memory (MiB) and CPU time so far (s) of every live process in the process
    group `pgid` (the server and its workers)."""
    rss = cpu = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields after the name: state ppid pgrp ...; utime stime at 12, 13; rss at 22
        if int(fields[2]) == pgid:
            cpu += (int(fields[11]) + int(fields[12])) / tick
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return rss, cpu


def rss_mib(pgid: int) -> float:
    return group_stats(pgid)[0]


class Server:
    """A server process in its own process group; stopped (the whole group) on exit."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.log = WORK / f"{name}.log"
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_for(self, url: str, ok: Any = None, timeout: float = 300) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            # not listening yet (OSError): ask again shortly
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as r:
                body = r.read()
                if ok is None or ok(body):
                    return body
            time.sleep(0.5)
        raise RuntimeError(
            f"{self.name} not ready after {timeout} s: {self.log.read_text()[-3000:]}"
        )

    def rss(self) -> float:
        return rss_mib(self.proc.pid)

    def cpu(self) -> float:
        return group_stats(self.proc.pid)[1]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        deadline = time.monotonic() + 20  # workers of the group (TorchServe's) go too
        while rss_mib(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()


def http_stack() -> str:
    """Which event loop and HTTP parser Uvicorn picks here (uvicorn[standard] brings the
    fast ones; without them it falls back to asyncio and the pure-Python h11)."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"on {loop} with the {http} HTTP parser for tsloom and plain FastAPI alike"


def uvicorn_cmd(factory: str, port: int) -> list[str]:
    return [
        str(PYTHON),
        "-m",
        "uvicorn",
        f"serve_apps:{factory}",
        "--factory",
        "--app-dir",
        str(BENCH),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def start_tsloom(refs: list[str], args: argparse.Namespace, system: str) -> tuple[Server, str]:
    """`system`: tsloom (runtime `args.runtime`), tsloom-threads (onnx, forward passes
    in-process) or tsloom-torch."""
    port = free_port()
    runtime = {"tsloom": args.runtime, "tsloom-threads": "onnx"}.get(system, "torch")
    in_child = runtime == "onnx" and system != "tsloom-threads"
    extra = {"TSLOOM_SERVE_FORWARD_PROCESS": "1" if in_child else "0"}
    if not in_child:  # forward passes on the server's threads: the settings that suit them
        extra["TSLOOM_SERVE_INLINE_MS"] = str(args.inline_ms)
        extra["TSLOOM_SERVE_SWITCH_INTERVAL_MS"] = str(args.switch_ms)
    env = _env(
        TSLOOM_SERVE_PRELOAD=",".join(refs),
        TSLOOM_SERVE_CACHE_SIZE=str(max(128, len(refs))),
        TSLOOM_SERVE_MAX_BATCH_SIZE=str(args.batch),
        TSLOOM_SERVE_MAX_WAIT_MS=str(args.wait_ms),
        TSLOOM_SERVE_WORKERS=str(args.workers),
        TSLOOM_SERVE_RUNTIME=runtime,
        **extra,
    )
    server = Server(system, uvicorn_cmd("tsloom_app", port), env, ROOT)
    base = f"http://127.0.0.1:{port}"
    server.wait_for(f"{base}/readyz", lambda b: json.loads(b).get("resident") == len(refs))
    return server, base


def start_plain(refs: list[str]) -> tuple[Server, str]:
    port = free_port()
    server = Server("plain", uvicorn_cmd("plain_app", port), _env(BENCH_REFS=",".join(refs)), ROOT)
    base = f"http://127.0.0.1:{port}"
    server.wait_for(f"{base}/openapi.json")
    return server, base


# ------------------------------------------------------------------ TorchServe


def setup_torchserve() -> None:
    """TorchServe's own environment: the CPU build of this project's torch first (so pip
    never pulls a CUDA one), then TorchServe and its archiver."""
    import torch

    version = torch.__version__  # e.g. 2.13.0+cpu
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(TS_VENV)], check=True)
    pip = [str(TS_VENV / "bin" / "pip"), "install", "--quiet"]
    subprocess.run([*pip, f"torch=={version}", "numpy"], check=True)
    subprocess.run([*pip, "torchserve", "torch-model-archiver", "pyyaml"], check=True)


def torchserve_problem() -> str | None:
    """Why TorchServe cannot run here, or None."""
    exe = TS_VENV / "bin" / "torchserve"
    if not exe.exists():
        return (
            f"no TorchServe environment at {TS_VENV}: make it with --setup-torchserve "
            "(a venv with torch (CPU), numpy, torchserve, torch-model-archiver, pyyaml)"
        )
    if shutil.which("java") is None:
        return "no java on PATH (TorchServe's frontend needs Java 17)"
    return None


def build_mars(refs: list[str]) -> Path:
    """One model archive per ref (TorchScript + scaling.json + the handler), made once."""
    import torch

    import tsloom.registry as reg

    store = TS_WORK / "model-store"
    store.mkdir(parents=True, exist_ok=True)
    handler = BENCH / "torchserve" / "lstm_handler.py"
    for i, ref in enumerate(refs):
        mar = store / f"m{i}.mar"
        stamp = store / f"m{i}.ref"
        if mar.exists() and stamp.exists() and stamp.read_text() == ref:
            continue
        model = reg.load(ref)
        p = model.params
        src = TS_WORK / "src" / f"m{i}"
        src.mkdir(parents=True, exist_ok=True)
        example = torch.zeros(1, p.input_steps, len(p.features))
        with torch.no_grad():
            traced = torch.jit.trace(model.model.eval(), example)
        traced.save(str(src / "model.pt"))
        (src / "scaling.json").write_text(
            json.dumps(
                {
                    "columns": [f.rsplit(".", 1)[-1] for f in p.features],
                    "center": list(model.scaler.center),
                    "scale": list(model.scaler.scale),
                    "target_index": p.target_index,
                    "input_steps": p.input_steps,
                    "freq_s": p.freq.total_seconds(),
                    "target": p.target,
                }
            )
        )
        subprocess.run(
            [
                str(TS_VENV / "bin" / "torch-model-archiver"),
                "--model-name",
                f"m{i}",
                "--version",
                "1.0",
                "--serialized-file",
                str(src / "model.pt"),
                "--handler",
                str(handler),
                "--extra-files",
                str(src / "scaling.json"),
                "--export-path",
                str(store),
                "--force",
            ],
            check=True,
            capture_output=True,
        )
        stamp.write_text(ref)
    return store


def start_torchserve(n: int, args: argparse.Namespace) -> tuple[Server, str]:
    store = TS_WORK / "model-store"
    ports = {k: free_port() for k in ("inference_port", "management_port", "metrics_port")}
    template = (BENCH / "torchserve" / "config.properties").read_text()
    config = TS_WORK / "config.properties"
    config.write_text(template.format(model_store=store, **ports))
    run_dir = TS_WORK / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    env = _env(LOG_LOCATION=str(run_dir / "logs"), METRICS_LOCATION=str(run_dir / "logs"))
    env["PATH"] = f"{TS_VENV / 'bin'}:{env.get('PATH', '')}"
    cmd = [
        str(TS_VENV / "bin" / "torchserve"),
        "--start",
        "--foreground",
        "--ncs",
        "--disable-token-auth",
        "--enable-model-api",
        "--ts-config",
        str(config),
        "--model-store",
        str(store),
    ]
    server = Server("torchserve", cmd, env, run_dir)
    base = f"http://127.0.0.1:{ports['inference_port']}"
    mgmt = f"http://127.0.0.1:{ports['management_port']}"
    try:
        server.wait_for(f"{base}/ping", timeout=180)
        for i in range(n):
            query = (
                f"url=m{i}.mar&model_name=m{i}&batch_size={args.batch}"
                f"&max_batch_delay={args.ts_delay_ms}&initial_workers=1&synchronous=true"
            )
            req = urllib.request.Request(f"{mgmt}/models?{query}", method="POST")
            with urllib.request.urlopen(req, timeout=300) as r:
                r.read()
    except BaseException:
        server.stop()
        raise
    return server, base


# ------------------------------------------------------------------ the load generator


@dataclasses.dataclass
class Outcome:
    system: str
    models: int
    requests: int
    seconds: float
    latencies: list[float]
    codes: dict[int, int]
    rss_mib: float = 0.0
    server_cpu_s: float = 0.0  # CPU time the server's processes spent in the timed phase
    client_cpu_s: float = 0.0  # and the load generator's
    mean_batch: float = float("nan")  # tsloom: requests per forward pass
    saved: dict[str, float] = dataclasses.field(default_factory=dict)  # --report-only

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        """The q-th latency percentile in milliseconds."""
        if not self.latencies:
            return self.saved.get(f"p{q:g}_ms", float("nan"))
        return float(np.percentile(self.latencies, q)) * 1000

    @property
    def cpu_ms(self) -> float:
        """Server CPU milliseconds per request: what a request costs the server, whatever
        else ran on the machine meanwhile."""
        return 1000 * self.server_cpu_s / self.requests

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.codes.items() if code != 200)


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol to post a
    prepared body and read the status and body back (Content-Length or chunked): a load
    generator that shares the server's cores should cost as little per request as it can
    (httpx cost about 1 ms of CPU per request here — more than the servers under test)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, head: bytes, body: bytes) -> int:
        for attempt in (0, 1):
            fresh = self.writer is None
            if fresh:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            assert self.reader is not None and self.writer is not None
            try:
                self.writer.write(head + body)
                raw = await self.reader.readuntil(b"\r\n\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionError):
                # the server closed the idle keep-alive connection (Uvicorn after 5 s,
                # while the other systems had their turn): connect again, once
                await self.close()
                if fresh or attempt:
                    raise
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, chunked, close = None, False, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        elif length is not None:
            await self.reader.readexactly(length)
        else:
            await self.reader.read()
            close = True
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def drive(
    targets: dict[str, tuple[list[str], Server]], bodies: list[bytes], args: argparse.Namespace
) -> dict[str, Outcome]:
    """For each system in `targets` (name → its URLs, one per model, and its server): a
    warm-up (every model at least twice, excluded); then `args.rounds` rounds that each
    send every system in turn its share of `args.requests` timed requests, from
    `args.concurrency` keep-alive connections (:class:`Connection`), round-robin over its
    URLs. Interleaving the systems spreads whatever else the machine does over all of
    them alike."""
    from urllib.parse import urlsplit

    share = [args.requests // args.rounds] * args.rounds
    share[-1] += args.requests - sum(share)

    def prepared(urls: list[str]) -> tuple[str, int, list[bytes]]:
        first = urlsplit(urls[0])
        host, port = first.hostname or "127.0.0.1", first.port or 80
        heads = []
        for url in urls:
            path = urlsplit(url).path
            heads.append(
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n".encode()
            )
        return host, port, heads

    async def phase(conns: list[Connection], heads: list[bytes], count: int, offset: int) -> tuple:
        counter = itertools.count(offset)
        stop = offset + count
        latencies: list[float] = []
        codes: Counter = Counter()

        async def worker(conn: Connection) -> None:
            while (i := next(counter)) < stop:
                body = bodies[i % len(bodies)]
                head = heads[i % len(heads)].replace(b"{}", str(len(body)).encode(), 1)
                t0 = time.perf_counter()
                code = await conn.post(head, body)
                latencies.append(time.perf_counter() - t0)
                codes[code] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in conns))
        return time.perf_counter() - started, latencies, codes

    async def main() -> dict[str, Outcome]:
        plan = {name: prepared(urls) for name, (urls, _server) in targets.items()}
        conns = {
            name: [Connection(host, port) for _ in range(args.concurrency)]
            for name, (host, port, _heads) in plan.items()
        }
        out = {
            name: Outcome(name, len(urls), args.requests, 0.0, [], {})
            for name, (urls, _server) in targets.items()
        }
        try:
            for name, (urls, _server) in targets.items():
                await phase(conns[name], plan[name][2], max(args.warmup, 2 * len(urls)), 0)
            done = 0
            for count in share:
                for name, (_urls, server) in targets.items():
                    o = out[name]
                    cpu0, client0 = server.cpu(), time.process_time()
                    seconds, latencies, codes = await phase(conns[name], plan[name][2], count, done)
                    o.server_cpu_s += server.cpu() - cpu0
                    o.client_cpu_s += time.process_time() - client0
                    o.seconds += seconds
                    o.latencies += latencies
                    for code, k in codes.items():
                        o.codes[code] = o.codes.get(code, 0) + k
                done += count
        finally:
            for group in conns.values():
                for c in group:
                    await c.close()
        return out

    return asyncio.run(main())


def mean_batch(base: str) -> float:
    """Requests per forward pass over the server's life, from its Prometheus metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith(("tsloom_batch_size_sum ", "tsloom_batch_size_count ")):
            name, value = line.split()
            values[name] = float(value)
    count = values.get("tsloom_batch_size_count", 0.0)
    return values.get("tsloom_batch_size_sum", 0.0) / count if count else float("nan")


def check(system: str, url: str, body: bytes, expected: np.ndarray) -> float:
    """The server's forecast for one window against the registry model's offline one;
    returns the largest absolute difference (raises when they disagree)."""
    req = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        got = np.array([p["value"] for p in json.loads(r.read())["predictions"]])
    diff = float(np.max(np.abs(got - expected)))
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-5, atol=1e-4):
        raise RuntimeError(f"{system} answers differently from the registry model: {diff}")
    return diff


# ------------------------------------------------------------------ the run


def run_level(
    n: int, refs: list[str], bodies: list[bytes], frames: list[Any], args: argparse.Namespace
) -> list[Outcome]:
    """Start every system with the level's `n` models, check each one's answer, drive them
    (interleaved), stop them."""
    refs = refs[:n]
    expected = offline(refs[-1], frames[0])
    targets: dict[str, tuple[list[str], Server]] = {}
    notes: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for system in args.systems:
            if system == "torchserve" and (args.ts_problem or n > args.ts_max_models):
                continue
            started = time.perf_counter()
            if system.startswith("tsloom"):
                server, base = start_tsloom(refs, args, system)
                urls = [f"{base}/v1/models/{ref}/predict" for ref in refs]
            elif system == "plain":
                server, base = start_plain(refs)
                urls = [f"{base}/predict/{ref}" for ref in refs]
            else:
                try:
                    server, base = start_torchserve(n, args)
                except (RuntimeError, OSError) as exc:
                    args.ts_problem = f"TorchServe did not start: {str(exc)[-800:]}"
                    print(args.ts_problem)
                    continue
                urls = [f"{base}/predictions/m{i}" for i in range(n)]
            stack.enter_context(running(server))
            ready = time.perf_counter() - started
            diff = check(system, urls[-1], bodies[0], expected)
            notes[system] = f"ready in {ready:.0f} s, |diff| vs offline {diff:.1e}"
            targets[system] = (urls, server)
        outcomes = drive(targets, bodies, args)
        for system, (_urls, server) in targets.items():
            outcomes[system].rss_mib = server.rss()
        for system in [s for s in targets if s.startswith("tsloom")]:
            base = targets[system][0][0].split("/v1/", 1)[0]
            outcomes[system].mean_batch = mean_batch(base)
            notes[system] += f", mean batch {outcomes[system].mean_batch:.1f}"
    for o in outcomes.values():
        print(
            f"{n:>3} models  {o.system:<12} {o.rps:8.0f} req/s  p50 {o.pct(50):7.1f} ms"
            f"  p99 {o.pct(99):7.1f} ms  errors {o.errors}  RSS {o.rss_mib:,.0f} MiB  "
            f"server CPU {o.cpu_ms:.2f} ms/req  "
            f"client CPU {1000 * o.client_cpu_s / o.requests:.2f} ms/req  ({notes[o.system]})",
            flush=True,
        )
    return list(outcomes.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer requests)")
    parser.add_argument("--levels", default="1,10,100", help="models resident, comma separated")
    parser.add_argument("--requests", type=int, default=None, help="timed requests per run")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up requests (excluded)")
    parser.add_argument("--concurrency", type=int, default=64, help="client connections")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per level")
    parser.add_argument(
        "--passes", type=int, default=1, help="whole runs over all levels, pooled in the report"
    )
    parser.add_argument("--batch", type=int, default=32, help="max batch (tsloom, TorchServe)")
    parser.add_argument("--wait-ms", type=float, default=2.0, help="tsloom max_wait_ms")
    parser.add_argument(
        "--inline-ms", type=float, default=1.0, help="tsloom inline_ms (0: all off the loop)"
    )
    parser.add_argument("--workers", type=int, default=1, help="tsloom inference threads")
    parser.add_argument(
        "--switch-ms", type=float, default=0.5, help="tsloom switch_interval_ms (0: Python's)"
    )
    parser.add_argument("--runtime", choices=("onnx", "torch"), default="onnx")
    parser.add_argument("--ts-delay-ms", type=int, default=5, help="TorchServe max_batch_delay")
    parser.add_argument(
        "--ts-max-models",
        type=int,
        default=10,
        help="largest level TorchServe runs at (one worker process per model)",
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="which to run, comma separated (tsloom-threads: runtime onnx with the forward "
        "passes in-process; tsloom-torch: runtime torch)",
    )
    parser.add_argument("--no-torchserve", action="store_true")
    parser.add_argument(
        "--setup-torchserve", action="store_true", help=f"(re)make TorchServe's venv at {TS_VENV}"
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the section from benchmarks/.work/serve_load.json without running",
    )
    args = parser.parse_args()
    # Servers run in their own sessions (so each can be stopped with its workers); a
    # SIGTERM (a timeout, a Ctrl-C in another shell) must still stop them, or a leftover
    # one keeps its CPU and skews every later run: unwind through the `finally` blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.report_only:
        saved = json.loads((WORK / "serve_load.json").read_text())
        # runs saved before --inline-ms existed ran with the batcher's then-fixed 2 ms
        args = argparse.Namespace(**{"inline_ms": 2.0, "switch_ms": 0.0, **saved["args"]})
        outcomes = [
            Outcome(
                **{k: v for k, v in o.items() if k in Outcome.__dataclass_fields__},
                latencies=[],
                saved={k: o[k] for k in ("p50_ms", "p99_ms")},
            )
            for o in saved["outcomes"]
        ]
        for o in outcomes:
            o.codes = {int(k): v for k, v in o.codes.items()}  # JSON keys are strings
        text = report(outcomes, args)
        print(text)
        print(f"recorded in {write_section(MARKER, text)}")
        return
    args.requests = args.requests or (800 if args.quick else 6000)
    args.warmup = args.warmup or (200 if args.quick else 600)
    args.rounds = args.rounds or (2 if args.quick else 8)
    chosen = args.systems.split(",")
    args.systems = [x for x in SYSTEMS if x in chosen]
    if args.runtime == "torch" and "tsloom-torch" in args.systems:
        args.systems.remove("tsloom-torch")  # the same as tsloom
    if "torchserve" not in args.systems:
        args.no_torchserve = True
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if max(levels) > MAX_MODELS:
        parser.error(f"at most {MAX_MODELS} models")
    if args.setup_torchserve:
        setup_torchserve()
        return
    args.ts_problem = "skipped (--no-torchserve)" if args.no_torchserve else torchserve_problem()

    WORK.mkdir(parents=True, exist_ok=True)
    refs = prepare_home()
    os.environ.update(_env())
    bodies, frames = request_bodies()
    if not args.ts_problem:
        try:
            build_mars(refs[: min(max(levels), args.ts_max_models)])
        except subprocess.CalledProcessError as exc:
            args.ts_problem = f"torch-model-archiver failed: {exc.stderr.decode()[-500:]}"
    if args.ts_problem:
        print(f"TorchServe: {args.ts_problem}")

    args.forward_ms = forward_costs(refs[0])
    print("one forward pass, ms:", args.forward_ms)
    passes: list[list[Outcome]] = []
    args.load_before = os.getloadavg()[0]
    args.capacity_before = cpu_capacity()
    print(f"CPU capacity: {args.capacity_before} cores' worth for two busy processes")
    for number in range(args.passes):
        if args.passes > 1:
            print(f"pass {number + 1} of {args.passes}", flush=True)
        passes.append([o for n in levels for o in run_level(n, refs, bodies, frames, args)])
    args.load_after = os.getloadavg()[0]
    args.capacity_after = cpu_capacity()
    args.pass_ratios = pass_ratios(passes)
    outcomes = merge(passes)
    (WORK / "serve_load.json").write_text(
        json.dumps(
            {
                "args": {k: v for k, v in vars(args).items()},
                "outcomes": [
                    {
                        **{
                            k: v
                            for k, v in dataclasses.asdict(o).items()
                            if k not in ("latencies", "saved")
                        },
                        "rps": o.rps,
                        "p50_ms": o.pct(50),
                        "p99_ms": o.pct(99),
                    }
                    for o in outcomes
                ],
            },
            indent=1,
            default=str,
        )
    )
    text = report(outcomes, args)
    print(text)
    if not args.no_write:
        print(f"recorded in {write_section(MARKER, text)}")


# ------------------------------------------------------------------ the report


def _forward_text(args: argparse.Namespace) -> str:
    costs = getattr(args, "forward_ms", None)
    if not costs:
        return "one forward pass of one window ≈ 0.25 ms in PyTorch"
    t, o = costs["torch"], costs["onnx"]
    return (
        f"one forward pass, measured in this run on one thread: PyTorch {t[0]:.2f} ms for "
        f"one window and {t[1]:.2f} ms for 32, ONNX Runtime {o[0]:.2f} and {o[1]:.2f} ms"
    )


MARKER = "## Serving"
SYSTEMS = ("tsloom", "tsloom-threads", "tsloom-torch", "torchserve", "plain")
NAMES = {
    "tsloom": "tsloom serve",
    "tsloom-threads": "tsloom serve, runtime onnx, forward passes in-process",
    "tsloom-torch": "tsloom serve, runtime torch",
    "torchserve": "TorchServe 0.12",
    "plain": "plain FastAPI (one forward per request)",
}


def merge(passes: list[list[Outcome]]) -> list[Outcome]:
    """The passes' outcomes pooled per level and system: requests, time and CPU summed,
    latencies together (so req/s is total requests over total time)."""
    pooled: dict[tuple[int, str], Outcome] = {}
    for outcome in (o for run in passes for o in run):
        key = (outcome.models, outcome.system)
        if key not in pooled:
            pooled[key] = dataclasses.replace(
                outcome, latencies=list(outcome.latencies), codes=dict(outcome.codes)
            )
            continue
        p = pooled[key]
        batches = [(x.mean_batch, x.requests) for x in (p, outcome) if x.mean_batch == x.mean_batch]
        if batches:
            p.mean_batch = sum(b * r for b, r in batches) / sum(r for _b, r in batches)
        p.requests += outcome.requests
        p.seconds += outcome.seconds
        p.latencies += outcome.latencies
        p.server_cpu_s += outcome.server_cpu_s
        p.client_cpu_s += outcome.client_cpu_s
        p.rss_mib = max(p.rss_mib, outcome.rss_mib)
        for code, k in outcome.codes.items():
            p.codes[code] = p.codes.get(code, 0) + k
    return list(pooled.values())


def pass_ratios(passes: list[list[Outcome]]) -> dict[str, list[float]]:
    """tsloom's req/s over each other system's, per level, one value per pass."""
    out: dict[str, list[float]] = {}
    for run in passes:
        by = {(o.models, o.system): o for o in run}
        for (n, system), other in sorted(by.items()):
            ours = by.get((n, "tsloom"))
            if system in ("torchserve", "plain") and ours is not None:
                out.setdefault(f"{n}/{system}", []).append(round(ours.rps / other.rps, 2))
    return out


def _ratio(ours: Outcome, other: Outcome | None) -> tuple[str, str]:
    if other is None:
        return "—", "—"
    return f"{ours.rps / other.rps:.2f}×", f"{ours.pct(99):.0f} vs {other.pct(99):.0f} ms"


def report(outcomes: list[Outcome], args: argparse.Namespace) -> str:
    import torch

    by = {(o.models, o.system): o for o in outcomes}
    levels = sorted({o.models for o in outcomes})
    cmd = "`.venv/bin/python benchmarks/serve_load.py" + (" --quick" if args.quick else "")
    if args.levels != "1,10,100":
        cmd += f" --levels {args.levels}"
    if getattr(args, "passes", 1) > 1:
        cmd += f" --passes {args.passes}"
    cmd += "`"
    lines = [
        MARKER,
        "",
        f"{cmd} — {datetime.now(UTC):%Y-%m-%d}, {machine()}; PyTorch {torch.__version__}. "
        "**Client and servers share the same 2 cores**: the load generator's CPU time is "
        "taken from the server under test, so req/s and latencies are figures for the "
        "whole machine; server CPU ms per request is what a request costs the server "
        "whatever else ran.",
        "",
        f"Load: {args.concurrency} concurrent keep-alive connections (a minimal HTTP/1.1 "
        f"client on asyncio streams), {args.requests:,} timed requests per row in "
        f"{args.rounds} rounds interleaved across the systems, after a warm-up of "
        f"{args.warmup:,} per system (excluded); requests go round-robin over the resident "
        "models; each is a JSON body of 96 hourly readings (ts + OT) and each answer 24 "
        "inverse-scaled forecasts with timestamps — every system's answer was checked "
        "against the registry model's offline forecast before its row. Model: a vanilla LSTM "
        f"(hidden 64, 1 layer, subtract_last, 96 h in, 24 h out; {_forward_text(args)}) "
        "filed under 100 param ids with slightly different weights. Every server process "
        "runs one intra-op thread (OMP_NUM_THREADS=1).",
        "",
        f"- tsloom: `tsloom serve`'s app (`create_app` + `ServeConfig.from_env`) under Uvicorn "
        f"without access log, every model preloaded, runtime {args.runtime}, max_batch_size "
        f"{args.batch}, max_wait_ms {args.wait_ms:g}, the forward passes in the server's "
        "forward-pass process (`forward_process`, on by default with runtime onnx). The row "
        "'runtime torch' is the same server running the LSTM in PyTorch, as the other two "
        f"systems do, on its inference threads ({args.workers}) with inline_ms "
        f"{args.inline_ms:g} (batches expected to take ≤ that many ms run on the event loop; "
        "the server's default, 0, keeps all inference off it) and switch_interval_ms "
        f"{args.switch_ms:g} (0: Python's 5 ms); the row 'forward passes in-process' is "
        "runtime onnx with forward_process off and those same settings.",
        f"- TorchServe 0.12: a TorchScript export per model and "
        "benchmarks/torchserve/lstm_handler.py (same parsing, scaling and answer), "
        f"TorchServe's batching with batch_size {args.batch} and max_batch_delay "
        f"{args.ts_delay_ms} ms, one worker process per model, default logging.",
        "- plain FastAPI: benchmarks/serve_apps.py `plain_app` under the same Uvicorn: "
        "pydantic body, numpy window, one forward pass per request on the event loop.",
        "",
        "| models | system | req/s | p50 ms | p99 ms | server CPU ms/req | errors | RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ts_runs = [o for o in outcomes if o.system == "torchserve" and o.rss_mib]
    for n in levels:
        for system in SYSTEMS:
            o = by.get((n, system))
            if o is None:
                if system == "torchserve":
                    why = args.ts_problem or "not run"
                    if not args.ts_problem and ts_runs:
                        big = max(ts_runs, key=lambda o: o.models)
                        each = big.rss_mib / big.models
                        why = (
                            f"not run: one Python worker process per model, ≈ {each:,.0f} MiB "
                            f"each at {big.models} models → ≈ {each * n / 1024:,.0f} GiB"
                        )
                    lines.append(f"| {n} | {NAMES[system]} | — | — | — | — | {why} | — |")
                continue
            name = NAMES[system]
            if system == "tsloom":
                name += f", runtime {args.runtime}"
            if system.startswith("tsloom") and o.mean_batch == o.mean_batch:
                name += f" (mean batch {o.mean_batch:.1f})"
            lines.append(
                f"| {n} | {name} | {o.rps:,.0f} | {o.pct(50):.1f} | {o.pct(99):.1f} "
                f"| {o.cpu_ms:.2f} | {o.errors} | {o.rss_mib:,.0f} |"
            )
    lines += [
        "",
        "tsloom against each: throughput ratio (req/s), p99 tsloom vs the other, server "
        "CPU per request tsloom vs the other:",
        "",
        "| models | vs TorchServe req/s | p99 | CPU/req | vs plain FastAPI req/s | p99 "
        "| CPU/req | aim (≥ 3× req/s at ≤ p99) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in levels:
        ours = by.get((n, "tsloom"))
        if ours is None:
            continue
        cells, aims = [], []
        for name, other in (
            ("TorchServe", by.get((n, "torchserve"))),
            ("plain", by.get((n, "plain"))),
        ):
            if other is None:
                cells += ["—", "—", "—"]
                continue
            cells += [
                f"{ours.rps / other.rps:.2f}×",
                f"{ours.pct(99):.0f} vs {other.pct(99):.0f} ms",
                f"{ours.cpu_ms:.2f} vs {other.cpu_ms:.2f} ms",
            ]
            met = ours.rps >= 3 * other.rps and ours.pct(99) <= other.pct(99)
            aims.append(f"{name}: {'met' if met else 'not met'}")
        lines.append(f"| {n} | {' | '.join(cells)} | {'; '.join(aims)} |")
    spread = getattr(args, "pass_ratios", None) or {}
    if getattr(args, "passes", 1) > 1 and spread:
        names = {"torchserve": "TorchServe", "plain": "plain FastAPI"}
        parts = []
        for key, values in spread.items():
            n, system = key.split("/")
            shown = ", ".join(f"{v:.2f}×" for v in values)
            parts.append(f"{n} model{'s' if n != '1' else ''} vs {names[system]}: {shown}")
        lines += [
            "",
            f"The table pools {args.passes} whole passes over all levels; req/s ratios per "
            f"pass, in order: {'; '.join(parts)}.",
        ]
    clients = [1000 * o.client_cpu_s / o.requests for o in outcomes]

    def cpu_span(system: str) -> str:
        costs = [o.cpu_ms for o in outcomes if o.system == system and o.requests]
        if not costs:
            return "—"
        return f"{min(costs):.2f}–{max(costs):.2f}" if len(costs) > 1 else f"{costs[0]:.2f}"

    load = ""
    if getattr(args, "load_before", None) is not None:
        load = (
            f" The machine's 1-minute load average was {args.load_before:.1f} when the run "
            f"began and {args.load_after:.1f} when it ended."
        )
    if getattr(args, "capacity_before", None) is not None:
        load += (
            " Two busy processes together got "
            f"{args.capacity_before:.1f} cores' worth of CPU when the run began and "
            f"{args.capacity_after:.1f} when it ended (benchmarks/serve_load.py "
            "`cpu_capacity`; 2.0 is two free cores): on about one core's worth, every "
            "system is held by its whole CPU per request, the load generator's included, "
            "and the ratios approach the ratios of those sums."
        )
    if clients:
        lines += [
            "",
            "What limits the ratios on this machine. The load generator spent "
            f"{min(clients):.2f}–{max(clients):.2f} ms of CPU per request on the same 2 "
            "cores (httpx, used before, cost about 1 ms per request — more than the "
            "servers — and held every system to about the same rate, whatever the "
            f"server did).{load} Each Python server has one event loop (tsloom's forward-pass "
            "process is a second process, and its CPU is counted with the server's); "
            f"Uvicorn runs {http_stack()}. Every system decodes the 96-row JSON body, "
            "builds and checks the window, runs the LSTM and writes 24 forecasts; batching "
            "shares only the forward pass. At one model tsloom's batches hold about 32 "
            "requests, so the forward pass costs each request little and what separates the "
            "systems is the request path; at 100 models every batch holds one request and "
            "each pays a whole forward pass, so the ratio falls towards the ratio of request "
            "path plus forward pass. Server CPU per request in this run: tsloom "
            f"{cpu_span('tsloom')}, tsloom with the forward passes in-process "
            f"{cpu_span('tsloom-threads')}, tsloom with runtime torch {cpu_span('tsloom-torch')}, "
            f"plain FastAPI {cpu_span('plain')}, TorchServe {cpu_span('torchserve')} ms. "
            "What makes tsloom's path the lighter one: the common prediction (JSON rows for "
            "a resident model named by its full ref) is served by a fast lane in front of "
            "FastAPI, as plain ASGI — orjson decoding, the window built and checked straight "
            "from the rows (no data frame), the answer written directly — while everything "
            "else (aliases, Arrow IPC, model loads, every error) goes through the FastAPI "
            "app; the decoded rows are freed before the request waits for its batch (held "
            "by every waiting request, they kept the garbage collector's young generation "
            "full); runtime onnx runs the LSTM in ONNX Runtime, in a child process of the "
            "server's own (the forward-pass process): the event loop sends the batches "
            "closed in each of its turns there in one write over a Unix socket and reads "
            "the forecasts back in one read, so the forward passes — at 100 models a whole "
            "one per request — run on the second core without ever holding the server's "
            "GIL (run in-process, on the loop or on a thread, each one held up the loop as it "
            "started and ended); a lone request does "
            "not wait for company that did not come last time; and the objects alive at "
            "start-up are frozen out of the garbage collector's full passes (which took "
            "hundreds of milliseconds with 100 models resident).",
        ]
    if args.ts_problem:
        lines += ["", f"TorchServe: {args.ts_problem}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
