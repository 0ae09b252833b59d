"""What every benchmark script shares: a description of the machine, and writing its own
section of docs/benchmarks.md without touching the others."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    """CPU model, cores, memory and Python version, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {sys.version.split()[0]}"


def write_section(marker: str, section: str, doc: Path = DOC) -> Path:
    """Replace the section that starts with `marker` (a `## ` heading) up to the next
    `## ` heading, or append it; the file is re-read first so concurrent scripts' sections
    survive."""
    if not doc.exists():
        doc.write_text("# Benchmarks\n\nEach section is written by the command it names.\n")
    text = doc.read_text()
    if marker in text:
        head, _, rest = text.partition(marker)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
        text = head + section.rstrip("\n") + "\n" + ("\n" + tail if tail else "")
    else:
        text = text.rstrip() + "\n\n" + section.rstrip("\n") + "\n"
    doc.write_text(text)
    return doc
