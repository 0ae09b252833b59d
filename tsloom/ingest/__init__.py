"""Ingestion: any source's frame → checked, normalised rows → lake → catalog."""

from tsloom.ingest.normalize import Normalized, Where, normalize
from tsloom.ingest.writer import IngestResult, ingest_frame

__all__ = ["IngestResult", "Normalized", "Where", "ingest_frame", "normalize"]
