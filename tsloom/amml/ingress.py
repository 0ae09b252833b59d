"""AMML's ingress components: where a workflow's batches come from.

* `source id=NAME` resolves a lake dataset: the exact name when it exists; otherwise the
  datasets whose table part (after the dot) equals NAME, or, if none does, starts with NAME.
  One candidate is used; none or several is an error that lists the candidates.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from tsloom.amml.base import Component, Ingress
from tsloom.amml.errors import AmmlRuntimeError
from tsloom.config import Settings


def resolve_dataset(name: str, settings: Settings) -> str:
    """The lake dataset `source id=name` means (see the module docstring for the rule)."""
    from tsloom.catalog import Catalog
    from tsloom.errors import TsloomError

    names = Catalog(settings).names()
    if name in names:
        return name
    tables = {n: n.partition(".")[2] for n in names}
    found = [n for n, t in tables.items() if t == name] or [
        n for n, t in tables.items() if t.startswith(name)
    ]
    if len(found) == 1:
        return found[0]
    if not found:
        raise TsloomError(
            f"no lake dataset matches {name!r}",
            hint=f"datasets: {', '.join(names)}" if names else "ingest one first",
        )
    raise TsloomError(
        f"{name!r} is ambiguous: it matches {', '.join(found)}",
        hint="give the full database.table name",
    )


class Source(Ingress):
    name = "source"
    supported = frozenset({"id", "start", "end", "cols", "batch_size"})

    def batches(self) -> Iterator[pl.DataFrame]:
        from tsloom.catalog import Catalog
        from tsloom.errors import TsloomError
        from tsloom.lake import read_dataset

        settings = self.ctx.settings
        try:
            dataset = resolve_dataset(self.args["id"], settings)
            if Catalog(settings).get(dataset).keys:
                raise self.fail(
                    f"dataset {dataset} has key columns; the runtime reads unkeyed datasets only"
                )
            out = read_dataset(
                dataset,
                start=self.args.get("start"),
                end=self.args.get("end"),
                columns=self.args.get("cols"),
                settings=settings,
            )
        except AmmlRuntimeError:
            raise
        except TsloomError as exc:
            raise self.fail(exc.message, exc.hint) from exc
        if out.is_empty():
            raise self.fail(f"dataset {dataset} has no rows in the range asked for")
        self.ctx.datasets.append(dataset)
        size = self.args.get("batch_size") or out.height
        for offset in range(0, out.height, size):
            if self.ctx.stop.is_set():
                return
            yield out.slice(offset, size)


COMPONENTS: list[type[Component]] = [Source]
