"""The time-series lake: one Delta table per dataset, partitioned year/month/day."""

from tsloom.lake.read import read_dataset
from tsloom.lake.storage import dataset_uri

__all__ = ["dataset_uri", "read_dataset"]
