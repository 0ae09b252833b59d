"""ETTh1 univariate forecasting, the literature's protocol, for every tsloom method.

    .venv/bin/python benchmarks/ett.py --quick                # smoke test, < 3 min on 2 cores
    .venv/bin/python benchmarks/ett.py                        # everything (long; resumable)
    .venv/bin/python benchmarks/ett.py --methods dlinear vanilla --horizons 24 168
    .venv/bin/python benchmarks/ett.py --report-only          # rewrite the doc from results
    .venv/bin/python benchmarks/ett.py --no-subtract-last --methods vanilla  # plain LSTM

Protocol (as in the Informer, DLinear and PatchTST code): target OT alone; rows 0–8639
train, 8640–11519 validation, 11520–14399 test (12/4/4 months of 30 days); validation and
test slices start one lookback before their boundary; a z-score fitted on the training
rows only; windows sliding one step; MSE and MAE on the z-scored scale over every test
window (no dropped last batch).

Training is `tsloom.forecast.training.train_model` on rows [0, 11520) with split=0.75
(boundary exactly 8640; early stopping on the validation windows); the test windows are
made from the z-scored rows [11520 - lookback, 14400) and scored with `predict_scaled`.
With a cap on training windows (`--max-train-windows N`, or the defaults below) each
epoch sees a fresh random N of them (`train_model(..., max_windows_per_epoch=N)`).

The five LSTMs run with `subtract_last` on by default (NLinear's normalisation: each
window minus its last value goes into the network and the target's last value is added
back to the forecast); seasonal naive and DLinear run without it. `--subtract-last` /
`--no-subtract-last` set it for every trained method. It is part of each result's
setting, and results with and without it are kept apart (resume, tables).

Every finished (method, horizon, subtract_last) is appended to benchmarks/.work/ett.jsonl
(git-ignored) as soon as it ends, so an interrupted run resumes where it stopped (a cell
counts as done only if its whole setting matches), and the
"## ETTh1 forecasting" section of docs/benchmarks.md is regenerated from what exists.
`--quick` writes to benchmarks/.work/ett-quick.jsonl and never touches the doc.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from _common import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TSLOOM_ETTH1", ROOT.parent / "shared" / "data" / "ett" / "ETTh1.csv"))
WORK = ROOT / "benchmarks" / ".work"
DOC = ROOT / "docs" / "benchmarks.md"
MARKER = "## ETTh1 forecasting"

TRAIN_END, VALID_END, TEST_END = 12 * 30 * 24, 16 * 30 * 24, 20 * 30 * 24  # 8640 11520 14400
HORIZONS = (24, 48, 96, 168, 192, 336, 720)
RUN_ORDER = (24, 168, 720, 48, 96, 192, 336)  # the Informer horizons first
METHODS = (
    "seasonal_naive",
    "dlinear",
    "vanilla",
    "stacked",
    "bidirectional",
    "cnn_lstm",
    "conv_lstm",
)
LSTMS = ("vanilla", "stacked", "bidirectional", "cnn_lstm", "conv_lstm")
LABELS = {
    "seasonal_naive": "seasonal naive",
    "dlinear": "DLinear",
    "vanilla": "vanilla LSTM",
    "stacked": "stacked LSTM",
    "bidirectional": "bidirectional LSTM",
    "cnn_lstm": "CNN-LSTM",
    "conv_lstm": "ConvLSTM",
}

# Published ETTh1 univariate MSE / MAE. Informer: Zhou et al., AAAI 2021, Table 1 (LSTMa,
# DeepAR and ARIMA are that table's baselines). DLinear / NLinear: Zeng et al., AAAI 2023,
# Table 9 (univariate, lookback 336). Only the figures below are shown; "—" elsewhere.
PUBLISHED: dict[str, dict[int, tuple[float, float]]] = {
    "Informer (paper)": {24: (0.098, 0.247), 168: (0.183, 0.346), 720: (0.269, 0.435)},
    "LSTMa (Informer paper)": {24: (0.114, 0.272), 168: (0.236, 0.392), 720: (0.683, 0.768)},
    "DeepAR (Informer paper)": {24: (0.107, 0.280)},
    "ARIMA (Informer paper)": {24: (0.108, 0.284)},
    "DLinear (paper)": {96: (0.056, 0.180), 720: (0.189, 0.359)},
    "NLinear (paper)": {96: (0.053, 0.177), 720: (0.080, 0.226)},
}


@dataclass(frozen=True)
class Setting:
    """How one method is trained at one horizon (everything a result depends on)."""

    lookback: int
    hidden_size: int = 64
    layers: int = 2
    dropout: float = 0.0
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 10
    patience: int = 3
    max_train_windows: int | None = None
    subtract_last: bool = False
    seed: int = 0


def default_setting(method: str, horizon: int) -> Setting:
    """The documented choices of the full run.

    - seasonal naive: repeats the last day (24 steps) of a 96-step window; nothing trains.
    - DLinear: lookback 336 and batch 32 as in its paper; lr 5e-4, up to 30 epochs,
      patience 5 (no learning-rate decay here; of lr 5e-3 (the paper's script), 1e-3 and
      5e-4, 5e-4 gave the lowest validation MSE at every horizon).
    - LSTMs: lookback 96 (four days) up to horizon 168, 168 (one week) beyond; hidden 64,
      2 layers (vanilla: 1), lr 1e-3, batch 64, up to 10 epochs, patience 3. ConvLSTM and
      the bidirectional LSTM (the slow ones on CPU) see 4,000 random training windows an
      epoch. All five with subtract_last (window minus its last value in, last value back
      out).
    """
    if method == "seasonal_naive":
        return Setting(lookback=96, epochs=1, patience=1)
    if method == "dlinear":
        return Setting(lookback=336, learning_rate=5e-4, batch_size=32, epochs=30, patience=5)
    lookback = 96 if horizon <= 168 else 168
    cap = 4000 if method in ("bidirectional", "conv_lstm") else None
    return Setting(lookback=lookback, max_train_windows=cap, subtract_last=True)


def quick_setting(method: str, horizon: int) -> Setting:
    """--quick: small and short, only to prove the whole path works end to end."""
    if method == "seasonal_naive":
        return Setting(lookback=96, epochs=1, patience=1)
    if method == "dlinear":
        return Setting(lookback=336, learning_rate=5e-4, batch_size=32, epochs=2, patience=1)
    return Setting(
        lookback=96,
        hidden_size=32,
        epochs=2,
        patience=1,
        max_train_windows=2000,
        subtract_last=True,
    )


QUICK_METHODS = METHODS
QUICK_HORIZONS = (24, 168)


# ----------------------------------------------------------------------------- running


def load_ot(path: Path = DATA) -> np.ndarray:
    import polars as pl

    if not path.exists():
        sys.exit(f"ETTh1 not found at {path} (set TSLOOM_ETTH1 to its path)")
    ot = pl.read_csv(path, columns=["OT"]).get_column("OT").to_numpy().astype(np.float64)
    if len(ot) < TEST_END:
        sys.exit(f"{path} has {len(ot)} rows; the protocol needs {TEST_END}")
    return ot[:TEST_END].reshape(-1, 1)


def make_params(method: str, horizon: int, s: Setting):
    from tsloom.forecast.params import LearningParams

    return LearningParams(
        target="OT",
        features=("OT",),
        input_width=f"{s.lookback}h",
        output_width=f"{horizon}h",
        freq="1h",
        method=method,
        split=TRAIN_END / VALID_END,  # 0.75: boundary round(11520 * 0.75) = 8640 exactly
        output="step",
        scaler="zscore",
        hidden_size=s.hidden_size,
        layers=1 if method == "vanilla" else s.layers,
        dropout=s.dropout,
        subtract_last=s.subtract_last,
        learning_rate=s.learning_rate,
        batch_size=s.batch_size,
        epochs=s.epochs,
        patience=s.patience,
        seed=s.seed,
        device="cpu",
    )


def run_one(values: np.ndarray, method: str, horizon: int, s: Setting, *, verbose: bool) -> dict:
    import torch

    from tsloom.forecast.metrics import regression_metrics
    from tsloom.forecast.training import train_model
    from tsloom.forecast.windows import make_windows

    params = make_params(method, horizon, s)

    def on_epoch(row: dict) -> None:
        if verbose:
            print(
                f"    epoch {row['epoch']:>2}: train RMSE {row['train_rmse']:.4f}  "
                f"val RMSE {row['val_rmse']:.4f}  ({row['seconds']:.1f} s)",
                flush=True,
            )

    cap = s.max_train_windows if method != "seasonal_naive" else None
    result = train_model(values[:VALID_END], params, on_epoch=on_epoch, max_windows_per_epoch=cap)
    assert result.boundary == TRAIN_END, result.boundary

    tick = time.perf_counter()
    scaled = result.scaler.transform(values[VALID_END - s.lookback : TEST_END])
    test = make_windows(scaled, input_steps=s.lookback, output_steps=horizon, target_index=0)
    assert len(test) == TEST_END - VALID_END - horizon + 1, len(test)
    with torch.no_grad():
        pred = result.predict_scaled(test.x)
    test_m = regression_metrics(test.y, pred)
    eval_s = time.perf_counter() - tick
    return {
        "method": method,
        "horizon": horizon,
        "setting": asdict(s),
        "param_id": params.param_id,
        "test_mse": test_m["mse"],
        "test_mae": test_m["mae"],
        "val_mse": result.metrics["mse_scaled"],
        "val_mae": result.metrics["mae_scaled"],
        "n_train": result.n_train,
        "n_valid": result.n_valid,
        "n_test": len(test),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 2),
        "test_seconds": round(eval_s, 2),
        "threads": torch.get_num_threads(),
        "machine": machine(),
        "torch": torch.__version__,
        "date": f"{datetime.now(UTC):%Y-%m-%d}",
        "history": result.history,
    }


# ---------------------------------------------------------------------------- results


def read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by an interrupted write
                continue
    return rows


Key = tuple[str, int, bool]


def key(row: dict) -> Key:
    """(method, horizon, subtract_last): results differing in subtract_last never mix."""
    return row["method"], int(row["horizon"]), bool(row["setting"].get("subtract_last", False))


def latest(rows: list[dict]) -> dict[Key, dict]:
    """The most recent result per (method, horizon, subtract_last)."""
    return {key(row): row for row in rows}


def default_subtract_last(method: str) -> bool:
    return method in LSTMS


def main_view(results: dict[Key, dict]) -> dict[tuple[str, int], dict]:
    """Per (method, horizon), the result with that method's default subtract_last."""
    return {(m, h): r for (m, h, sl), r in results.items() if sl == default_subtract_last(m)}


def plain_lstm_view(results: dict[Key, dict]) -> dict[tuple[str, int], dict]:
    """The LSTM results without subtract_last (the earlier runs)."""
    return {(m, h): r for (m, h, sl), r in results.items() if m in LSTMS and not sl}


def _cell(pair: tuple[float, float] | None, bold: bool = False) -> str:
    if pair is None:
        return "—"
    text = f"{pair[0]:.3f} / {pair[1]:.3f}"
    return f"**{text}**" if bold else text


def print_table(results: dict[tuple[str, int], dict], methods, horizons) -> None:
    print(f"\n{'method':<20}" + "".join(f"{h:>16}" for h in horizons))
    for m in methods:
        cells = []
        for h in horizons:
            r = results.get((m, h))
            cells.append(f"{r['test_mse']:.3f}/{r['test_mae']:.3f}" if r else "—")
        print(f"{LABELS[m]:<20}" + "".join(f"{c:>16}" for c in cells))
    for name, pub in PUBLISHED.items():
        cells = [f"{pub[h][0]:.3f}/{pub[h][1]:.3f}" if h in pub else "—" for h in horizons]
        print(f"{name[:20]:<20}" + "".join(f"{c:>16}" for c in cells))
    print("(MSE/MAE on the z-scored OT over every test window)")


def aims(results: dict[tuple[str, int], dict]) -> list[str]:
    """One line per aim and horizon: met, NOT met, or not run yet."""
    lines = []
    lstma, informer = PUBLISHED["LSTMa (Informer paper)"], PUBLISHED["Informer (paper)"]
    for h in sorted(lstma):
        parts = []
        for m in LSTMS:
            r = results.get((m, h))
            if r is None:
                parts.append(f"{LABELS[m]} not run")
            else:
                ok = r["test_mse"] <= lstma[h][0]
                parts.append(f"{LABELS[m]} {r['test_mse']:.3f} {'✓' if ok else '✗'}")
        done = [results[(m, h)] for m in LSTMS if (m, h) in results]
        verdict = (
            "not run"
            if not done
            else "met"
            if len(done) == len(LSTMS) and all(r["test_mse"] <= lstma[h][0] for r in done)
            else "NOT met"
            if any(r["test_mse"] > lstma[h][0] for r in done)
            else "so far met (incomplete)"
        )
        lines.append(
            f"- every LSTM variant ≤ LSTMa's {lstma[h][0]:.3f} at {h}: **{verdict}** "
            f"({'; '.join(parts)})"
        )
    others = []
    for h in HORIZONS:
        done = {m: results[(m, h)] for m in METHODS if (m, h) in results}
        if not done:
            (others if h not in informer else lines).append(
                f"{h}: not run"
                if h not in informer
                else f"- best method below Informer at {h}: not run"
            )
            continue
        best = min(done, key=lambda m: done[m]["test_mse"])
        mse = done[best]["test_mse"]
        if h not in informer:
            others.append(f"{h}: {LABELS[best]} {mse:.3f}")
        else:
            ok = mse < informer[h][0]
            lines.append(
                f"- best method below Informer's {informer[h][0]:.3f} at {h}: "
                f"**{'met' if ok else 'NOT met'}** ({LABELS[best]} {mse:.3f})"
            )
    if others:
        lines.append(
            "- no published Informer figure to compare at the other horizons; best there: "
            + "; ".join(others)
        )
    return lines


def shift_note() -> str:
    """Why level matters on this split: where validation and test sit in training z-units."""
    try:
        ot = load_ot(DATA)[:, 0]
    except SystemExit:
        return ""
    z = (ot - ot[:TRAIN_END].mean()) / ot[:TRAIN_END].std()
    val, test = z[TRAIN_END:VALID_END], z[VALID_END:TEST_END]
    return (
        "Level shift on this split: in training z-units the validation "
        f"rows have mean {val.mean():+.2f} (std {val.std():.2f}) but the test rows mean "
        f"{test.mean():+.2f} (std {test.std():.2f}), so a forecaster must carry the recent "
        "level forward rather than revert towards the training mean. Seasonal naive and "
        "DLinear read the level straight from the window; a plain LSTM must learn it "
        "through its dense head, and early stopping on the validation period (near the "
        "training mean) does not punish reverting to it. With `subtract_last` the LSTMs "
        "see each window relative to its last value and add that value back, so the level "
        "is carried forward by construction (compare the two LSTM tables)."
    )


def section(rows: list[dict]) -> str:
    every = latest(rows)
    results = main_view(every)
    plain = plain_lstm_view(every)
    lines = [
        MARKER,
        "",
        "`.venv/bin/python benchmarks/ett.py --threads 1` (resumable; "
        "`--report-only` rewrites this section from `benchmarks/.work/ett.jsonl`).",
        "",
    ]
    if rows:
        dates = sorted({r["date"] for r in rows})
        machines = sorted({r["machine"] for r in rows})
        threads = sorted({r["threads"] for r in rows})
        torch_v = sorted({r["torch"] for r in rows})
        lines += [
            f"Run {' – '.join([dates[0], dates[-1]] if len(dates) > 1 else dates)} on "
            f"{'; '.join(machines)}; PyTorch {', '.join(torch_v)} on the CPU with "
            f"{', '.join(map(str, threads))} thread(s) (the machine was shared with other "
            "work, so the seconds are indicative).",
            "",
        ]
    lines += [
        "Protocol as in the Informer, DLinear and PatchTST code: univariate (OT only); rows "
        "0–8639 train, 8640–11519 validation, 11520–14399 test, the validation and test "
        "slices starting one lookback before their boundary; z-score fitted on the training "
        "rows only; windows sliding one step; early stopping on validation MSE; **MSE / MAE "
        "on the z-scored scale over every test window** (2,880 − horizon + 1 of them, no "
        "dropped batch). Training is `train_model` on rows 0–11519 with `split=0.75`; the "
        "test windows come from the z-scored rows 11520 − lookback … 14399.",
        "",
        "MSE / MAE (lower is better; ours in bold where best at that horizon). The LSTM "
        "rows are with `subtract_last` (NLinear's last-value normalisation, the default "
        "here); seasonal naive and DLinear run without it:",
        "",
        "| model | " + " | ".join(str(h) for h in HORIZONS) + " |",
        "| --- |" + " --- |" * len(HORIZONS),
    ]
    best = {}
    for h in HORIZONS:
        done = [results[(m, h)]["test_mse"] for m in METHODS if (m, h) in results]
        best[h] = min(done) if done else None
    for m in METHODS:
        cells = []
        for h in HORIZONS:
            r = results.get((m, h))
            pair = (r["test_mse"], r["test_mae"]) if r else None
            cells.append(_cell(pair, bold=bool(r) and r["test_mse"] == best[h]))
        lines.append(f"| tsloom {LABELS[m]} | " + " | ".join(cells) + " |")
    for name, pub in PUBLISHED.items():
        lines.append(f"| {name} | " + " | ".join(_cell(pub.get(h)) for h in HORIZONS) + " |")
    if plain:
        lines += [
            "",
            "The same LSTMs without `subtract_last` (earlier runs, otherwise the same "
            "settings; `--no-subtract-last`), MSE / MAE:",
            "",
            "| model | " + " | ".join(str(h) for h in HORIZONS) + " |",
            "| --- |" + " --- |" * len(HORIZONS),
        ]
        for m in LSTMS:
            cells = []
            for h in HORIZONS:
                r = plain.get((m, h))
                cells.append(_cell((r["test_mse"], r["test_mae"]) if r else None))
            lines.append(f"| tsloom {LABELS[m]}, no subtract_last | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Published figures: Informer (Zhou et al., AAAI 2021, Table 1, ETTh1 univariate; "
        "LSTMa, DeepAR and ARIMA are its baselines) and DLinear / NLinear (Zeng et al., "
        "AAAI 2023, Table 9, univariate). Only the figures quoted in issue 4 are shown; "
        "“—” means no published figure is quoted here.",
        "",
        "Aims (LSTM rows with `subtract_last`):",
        "",
        *aims(results),
        "",
        shift_note(),
        "",
        "Settings and cost per run (lookback L, hidden size H, layers, learning rate, batch, "
        "max epochs / patience, training windows per epoch, subtract_last; then per "
        "horizon the training "
        "seconds and `best epoch/epochs run`):",
        "",
        "| method | L | H | layers | lr | batch | epochs/patience | windows/epoch | "
        "subtract last | " + " | ".join(f"{h}" for h in HORIZONS) + " |",
        "| --- " * (9 + len(HORIZONS)) + "|",
    ]
    for m in METHODS:
        here = [results[(m, h)] for h in HORIZONS if (m, h) in results]
        if not here:
            s = asdict(default_setting(m, 168))
            looks = "/".join(dict.fromkeys(str(default_setting(m, h).lookback) for h in HORIZONS))
        else:
            s = here[0]["setting"]
            looks = "/".join(dict.fromkeys(str(r["setting"]["lookback"]) for r in here))
        layers = 1 if m == "vanilla" else s["layers"]
        if m == "seasonal_naive":
            knobs = [looks, "—", "—", "—", "—", "—", "—", "—"]
        else:
            knobs = [
                looks,
                str(s["hidden_size"]) if m != "dlinear" else "—",
                str(layers) if m != "dlinear" else "—",
                f"{s['learning_rate']:g}",
                str(s["batch_size"]),
                f"{s['epochs']}/{s['patience']}",
                f"{s['max_train_windows']:,}" if s["max_train_windows"] else "all",
                "yes" if s.get("subtract_last") else "no",
            ]
        cells = []
        for h in HORIZONS:
            r = results.get((m, h))
            if r is None:
                cells.append("—")
            elif m == "seasonal_naive":
                cells.append(f"{r['train_seconds']:.1f} s")
            else:
                sec = r["train_seconds"]
                sec_s = f"{sec:.1f}" if sec < 10 else f"{sec:.0f}"
                cells.append(f"{sec_s} s ({r['best_epoch']}/{r['epochs_run']})")
        lines.append(f"| {LABELS[m]} | " + " | ".join(knobs + cells) + " |")
    lines += [
        "",
        "Lookbacks: the LSTMs read 96 steps (four days) up to horizon 168 and 168 (a week) "
        "beyond; DLinear reads 336 as in its paper; seasonal naive repeats the last day. "
        "Where several lookbacks are listed they are in horizon order. DLinear's learning "
        "rate 5e-4 was chosen on validation MSE over 5e-3 (the paper's script, which also "
        "halves the rate every epoch) and 1e-3. The LSTM settings were not tuned beyond a "
        "few single-seed checks of the vanilla LSTM at horizon 168 (lookback 168, batch 32, "
        "lr 3e-3, hidden 128, all without subtract_last: test MSE 0.28–0.36). Each epoch's "
        "training windows are drawn by `train_model(..., max_windows_per_epoch=...)`.",
        "",
    ]
    missing = [(m, h) for h in HORIZONS for m in METHODS if (m, h) not in results]
    if missing:
        by_h: dict[int, list[str]] = {}
        for m, h in missing:
            by_h.setdefault(h, []).append(m)
        lines.append(
            f"**Missing:** {len(missing)} of {len(METHODS) * len(HORIZONS)} cells were not "
            "run in the time available:"
        )
        lines.append("")
        for h, ms in by_h.items():
            names = ", ".join(LABELS[m] for m in ms)
            lines.append(f"- horizon {h}: {names}")
        need_m = [m for m in METHODS if any(m in ms for ms in by_h.values())]
        lines += [
            "",
            "(LSTM cells here mean with `subtract_last`.) Fill them (finished cells are "
            "skipped) with `.venv/bin/python benchmarks/ett.py --threads 1 --methods "
            f"{' '.join(need_m)} --horizons {' '.join(map(str, by_h))}` "
            "(or plain `.venv/bin/python benchmarks/ett.py --threads 1`), then "
            "`.venv/bin/python benchmarks/ett.py --report-only`.",
            "",
        ]
    else:
        total = sum(r["train_seconds"] for r in results.values())
        lines.append(f"All cells were run ({total / 60:.0f} min of training in all).")
        lines.append("")
    return "\n".join(lines)


def write_doc(rows: list[dict]) -> None:
    print(f"recorded in {write_section(MARKER, section(rows), DOC)}")


# ------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: every method at horizons 24 and 168 with hidden 32, "
        "2 epochs (patience 1) and 2,000 random training windows an epoch",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        metavar="METHOD",
        help=f"subset of {', '.join(METHODS)}",
    )
    parser.add_argument(
        "--horizons",
        nargs="+",
        type=int,
        metavar="H",
        help=f"subset of {', '.join(map(str, HORIZONS))} (any positive int)",
    )
    parser.add_argument("--lookback", type=int, help="override every method's lookback")
    parser.add_argument("--epochs", type=int, help="override max epochs")
    parser.add_argument("--patience", type=int, help="override early-stopping patience")
    parser.add_argument("--hidden", type=int, help="override the LSTMs' hidden size")
    parser.add_argument("--lr", type=float, help="override the learning rate")
    parser.add_argument("--batch-size", type=int, help="override the batch size")
    parser.add_argument("--dropout", type=float, help="override the LSTMs' dropout")
    parser.add_argument(
        "--max-train-windows",
        type=int,
        help="random training windows per epoch (0 = all); overrides defaults",
    )
    parser.add_argument(
        "--subtract-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NLinear-style last-value normalisation for every trained method "
        "(default: on for the five LSTMs, off for DLinear; never for seasonal naive)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--stop-after",
        type=float,
        metavar="MIN",
        help="start no new cell after MIN minutes of wall time (the doc then lists "
        "what is missing)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads (1 is faster when the 2 cores are shared)",
    )
    parser.add_argument("--results", type=Path, help="JSON-lines results file")
    parser.add_argument("--rerun", action="store_true", help="run cells that already have results")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing; rewrite the doc section from the results file",
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    results_path = args.results or WORK / ("ett-quick.jsonl" if args.quick else "ett.jsonl")
    methods = args.methods or (QUICK_METHODS if args.quick else METHODS)
    horizons = args.horizons or (QUICK_HORIZONS if args.quick else RUN_ORDER)
    write = not (args.no_write or args.quick)

    if args.report_only:
        rows = read_results(results_path)
        print_table(main_view(latest(rows)), METHODS, HORIZONS)
        if write:
            write_doc(rows)
        return

    import torch

    torch.set_num_threads(args.threads)
    values = load_ot(DATA)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    have = latest(read_results(results_path))
    started = time.perf_counter()
    # Priority: every method at one horizon before the next horizon.
    stopped = False
    for h in horizons:
        for m in methods:
            s = (quick_setting if args.quick else default_setting)(m, h)
            over = {
                "lookback": args.lookback,
                "epochs": args.epochs,
                "patience": args.patience,
                "hidden_size": args.hidden if m in LSTMS else None,
                "learning_rate": args.lr,
                "batch_size": args.batch_size,
                "dropout": args.dropout if m in LSTMS else None,
                "seed": args.seed,
            }
            s = replace(s, **{k: v for k, v in over.items() if v is not None})
            if args.max_train_windows is not None:
                s = replace(s, max_train_windows=args.max_train_windows or None)
            if args.subtract_last is not None and m != "seasonal_naive":
                s = replace(s, subtract_last=args.subtract_last)
            old = have.get((m, h, s.subtract_last))
            if old and {**asdict(s), **old["setting"]} == asdict(s) and not args.rerun:
                print(f"{LABELS[m]} @ {h}: done already ({old['test_mse']:.4f}), skipped")
                continue
            if args.stop_after and time.perf_counter() - started > args.stop_after * 60:
                stopped = True
                break
            print(f"{LABELS[m]} @ {h}: lookback {s.lookback} …", flush=True)
            row = run_one(values, m, h, s, verbose=not args.quiet)
            with results_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            have[key(row)] = row
            print(
                f"{LABELS[m]} @ {h}: test MSE {row['test_mse']:.4f}  MAE {row['test_mae']:.4f}  "
                f"(val MSE {row['val_mse']:.4f}; best epoch {row['best_epoch']}/"
                f"{row['epochs_run']}; {row['train_seconds']:.1f} s)",
                flush=True,
            )
        if stopped:
            print(f"\n--stop-after {args.stop_after:g} min reached: no new cells started")
            break
    print(f"\ntotal {time.perf_counter() - started:.0f} s; results in {results_path}")
    rows = read_results(results_path)
    print_table(
        main_view(latest(rows)),
        methods if args.quick else METHODS,
        horizons if args.quick else HORIZONS,
    )
    if write:
        write_doc(rows)


if __name__ == "__main__":
    main()
