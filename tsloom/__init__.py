"""tsloom: fragmented time series to trained, searchable, served models."""

__version__ = "0.1.0"
