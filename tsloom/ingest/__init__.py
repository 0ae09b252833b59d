"""Ingestion: any source's frame → checked, normalised rows → lake → catalog.

The checks live in `tsloom.ingest.normalize`, the single write path in
`tsloom.ingest.writer`.
"""

from tsloom.ingest.writer import IngestResult, ingest_frame

__all__ = ["IngestResult", "ingest_frame"]
