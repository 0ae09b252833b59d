"""Compare anomaly treatments on one series of a lake dataset (I/O around the pure
`tsloom.prep.treatments.compare_treatments`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tsloom.catalog import Catalog
from tsloom.config import Settings, load_settings
from tsloom.errors import TsloomError
from tsloom.lake import read_dataset
from tsloom.prep.pipeline import CleanConfig, clean_frame
from tsloom.prep.treatments import TreatmentComparison, compare_treatments


def compare_dataset_treatments(
    dataset: str,
    column: str,
    *,
    keys: Mapping[str, Sequence[object]] | None = None,
    detector: str = "iqr",
    lags: int = 24,
    settings: Settings | None = None,
) -> TreatmentComparison:
    """Regularise one series (gaps filled, no anomaly treatment), then score treatments."""
    settings = settings or load_settings()
    info = Catalog(settings).get(dataset)
    frame = read_dataset(dataset, columns=[column], keys=keys, settings=settings)
    if info.keys:
        series = frame.select(info.keys).unique()
        if series.height > 1:
            first = series.sort(info.keys).row(0, named=True)
            # The fewest leading key columns that already single out one series.
            needed = next(
                n
                for n in range(1, len(info.keys) + 1)
                if series.select(info.keys[:n]).n_unique() == series.height
            )
            raise TsloomError(
                f"dataset {dataset} holds {series.height} series; pick one",
                hint="add " + " ".join(f"--key '{k}={first[k]}'" for k in info.keys[:needed]),
            )
    regular = clean_frame(
        frame, keys=info.keys, columns=[column], config=CleanConfig(anomalies="none")
    )
    return compare_treatments(regular.output, column, detector=detector, lags=lags)
