"""The AMML runtime's engine: graphs with join and split, back-pressure, failures, stopping,
and process mode giving what thread mode gives."""

from __future__ import annotations

import _thread
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import polars as pl
import pytest

from tsloom.amml.base import Component, Ingress
from tsloom.amml.errors import AmmlError
from tsloom.amml.runtime import run_program

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def frame(n: int, every: timedelta = timedelta(minutes=1), col: str = "v", seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "ts": pl.datetime_range(T0, T0 + every * (n - 1), every, eager=True, time_zone="UTC"),
            col: rng.normal(0, 1, n),
        }
    )


class Feed(Ingress):
    """Test ingress (standing in for `normalsource`): yields FRAMES[col] in batch_size slices;
    with rows=0 it streams batches until stopped."""

    name = "normalsource"
    supported = frozenset({"col", "rows", "batch_size"})
    FRAMES: ClassVar[dict[str, pl.DataFrame]] = {}
    produced: ClassVar[list[int]] = []

    @property
    def streaming(self) -> bool:
        return self.args.get("rows") == 0

    def batches(self) -> Iterator[pl.DataFrame]:
        size = self.args.get("batch_size") or 10
        if self.streaming:
            i = 0
            while not self.ctx.stop.is_set():
                yield frame(size, seed=i).with_columns(pl.col("ts") + timedelta(hours=i))
                i += 1
                time.sleep(0.005)
            return
        data = self.FRAMES[self.args["col"]]
        for offset in range(0, data.height, size):
            Feed.produced.append(offset)
            yield data.slice(offset, size)


class SlowPrint(Component):
    """Test egress: records how far the producer ran ahead of it."""

    name = "print"
    supported = frozenset({"limit", "every"})
    lags: ClassVar[list[int]] = []
    closed: ClassVar[list[str]] = []

    def process(self, batch: pl.DataFrame, port: int = 0):
        SlowPrint.lags.append(len(Feed.produced) - (len(SlowPrint.lags) + 1))
        time.sleep(0.02)
        return (batch,)

    def close(self) -> None:
        SlowPrint.closed.append(self.inst.name)


def run(text: str, settings, **kw):
    comps = {"normalsource": Feed, **kw.pop("components", {})}
    return run_program(text, settings=settings, components=comps, **kw)


def test_split_and_join_graph(tsloom_home) -> None:
    Feed.FRAMES = {"a": frame(200), "b": frame(40, timedelta(minutes=5), col="w", seed=1)}
    text = """raw = normalsource col=a batch_size=17
other = normalsource col=b batch_size=9
raw | split hi lo cond=v > 0
hi | print
lo | print
j = join raw other tolerance="5min"
j | print
"""
    result = run(text, tsloom_home)
    assert result.status == "finished"
    hi, lo, joined = result.results
    a = Feed.FRAMES["a"]
    assert hi.height + lo.height == 200
    assert (hi["v"] > 0).all() and (lo["v"] <= 0).all()
    expected = a.join_asof(
        Feed.FRAMES["b"], on="ts", strategy="backward", tolerance=timedelta(minutes=5)
    )
    assert joined.sort("ts").equals(expected)
    by_name = {(s.index, s.name): s for s in result.stats}
    split = by_name[(2, "split")]
    assert split.rows_in == 200 and split.rows_out == 200


def test_back_pressure_bounds_the_producer(tsloom_home) -> None:
    Feed.FRAMES = {"a": frame(400)}
    Feed.produced, SlowPrint.lags = [], []
    result = run(
        "normalsource col=a batch_size=10 | print",
        tsloom_home,
        queue_size=2,
        components={"print": SlowPrint},
    )
    assert len(SlowPrint.lags) == 40
    # at most the queue (2), the batch the producer holds while blocked, and one in flight
    assert max(SlowPrint.lags) <= 2 + 2
    assert result.results[0].height == 400


def test_failing_callback_stops_the_flow_and_names_it(tsloom_home, tmp_path: Path) -> None:
    Feed.FRAMES = {"a": frame(100).with_columns(pl.lit("x").alias("name"))}
    SlowPrint.closed = []
    text = "normalsource col=a\n  | filter cond=name / 2 > 1\n  | print"
    with pytest.raises(AmmlError, match=r"filter: .*str") as err:
        run(text, tsloom_home, components={"print": SlowPrint})
    assert (err.value.line, err.value.column) == (2, 5)
    assert "^^^^^^" in str(err.value)
    assert SlowPrint.closed == ["print"]  # the others were closed


def test_sink_to_unwritable_path_fails_with_position(tsloom_home, tmp_path: Path) -> None:
    Feed.FRAMES = {"a": frame(10)}
    blocker = tmp_path / "file"
    blocker.write_text("")
    text = f'normalsource col=a | sink to=csv path="{blocker}/out.csv"'
    with pytest.raises(AmmlError, match="sink: cannot write") as err:
        run(text, tsloom_home)
    assert (err.value.line, err.value.column) == (1, 22)


def test_unknown_column_in_callback(tsloom_home) -> None:
    Feed.FRAMES = {"a": frame(10)}
    with pytest.raises(AmmlError, match="unknown column `vv`") as err:
        run("normalsource col=a | assign y=vv*2 | print", tsloom_home)
    assert err.value.column == 22 and "did you mean `v`" in (err.value.hint or "")


def test_stop_event_stops_a_streaming_source_and_flushes(tsloom_home, tmp_path: Path) -> None:
    out = tmp_path / "stream.csv"
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    result = run(
        f'normalsource col=a rows=0 | minmax_scaler fit_rows=50 | sink to=csv path="{out}"',
        tsloom_home,
        stop=stop,
    )
    assert result.status == "stopped"
    written = pl.read_csv(out)
    sink = result.stats[-1]
    assert sink.name == "sink" and written.height == sink.rows_in > 50
    assert not (tmp_path / "stream.csv.part").exists()


def test_ctrl_c_stops_cleanly(tsloom_home, tmp_path: Path) -> None:
    out = tmp_path / "interrupted.csv"
    threading.Timer(0.4, _thread.interrupt_main).start()
    result = run(f'normalsource col=a rows=0 | sink to=csv path="{out}"', tsloom_home)
    assert result.status == "stopped"
    assert pl.read_csv(out).height == result.stats[-1].rows_in > 0


def test_streaming_scaler_fits_on_first_rows(tsloom_home) -> None:
    stop = threading.Event()
    seen: list[pl.DataFrame] = []

    class Stopper(SlowPrint):
        def process(self, batch, port=0):
            seen.append(batch)
            if len(seen) >= 8:
                stop.set()
            return (batch,)

    result = run(
        "normalsource col=a rows=0 batch_size=10 | minmax_scaler fit_rows=30 | print",
        tsloom_home,
        stop=stop,
        components={"print": Stopper},
    )
    assert result.status == "stopped"
    first = pl.concat(seen[:3])
    assert first["v"].min() == 0.0 and first["v"].max() == 1.0
    # later batches are scaled with the first 30 rows' min/max, not refitted
    assert pl.concat(seen).height == sum(s.height for s in seen) >= 80


def test_process_mode_matches_thread_mode(tsloom_home, ett_dir: Path) -> None:
    path = ett_dir / "ETTh1.csv"
    text = f"""raw = csv path="{path}" ts="date" batch_size=2000
raw | filter cond=OT > 10 | minmax_scaler | assign y=OT*2 | minmax_inverse | split a b cond=y > 1
a | print limit=1
b | select cols=[OT, y] | print limit=1
"""
    threads = run_program(text, settings=tsloom_home)
    procs = run_program(text, settings=tsloom_home, mode="process")
    assert threads.status == procs.status == "finished"
    assert len(threads.results) == len(procs.results) == 2
    for a, b in zip(threads.results, procs.results, strict=True):
        assert a.sort(a.columns[0]).equals(b.sort(b.columns[0]))
    assert [s.rows_out for s in threads.stats] == [s.rows_out for s in procs.stats]
