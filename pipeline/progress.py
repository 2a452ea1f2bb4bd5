"""Progress bars on stderr (tqdm): the categories of a run with an ETA, and the images of each phase.

Shown only when stderr is a terminal and without --quiet, so logs, pipes and scripts get nothing new
and stdout (the headline lines) is byte for byte the same with or without bars. A run's bars are
module state: the pipeline's loops only wrap their iterables in `track`, which passes them through
untouched when no bars are shown.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from tqdm import tqdm

from datasets.batch import Batch

_overall: tqdm | None = None


def wanted(quiet: bool) -> bool:
    """Bars only for a person watching: stderr is a terminal and --quiet was not given."""
    return not quiet and sys.stderr.isatty()


@contextmanager
def bars(total: int, enabled: bool, unit: str = "category") -> Iterator[None]:
    """The overall bar (`total` categories, or runs for a benchmark) while the block runs."""
    global _overall
    if not enabled:
        yield
        return
    _overall = tqdm(total=total, desc="all", unit=f" {unit}", position=0, file=sys.stderr, dynamic_ncols=True)
    try:
        yield
    finally:
        _overall.close()
        _overall = None


def track(batches: Iterable[Batch], description: str, total: int) -> Iterator[Batch]:
    """Yields the batches; with bars shown, counts their images against `total`."""
    if _overall is None:
        yield from batches
        return
    with tqdm(total=total, desc=description, unit=" img", position=1, leave=False, file=sys.stderr,
              dynamic_ncols=True) as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch))  # once the consumer is done with it
        bar.refresh()  # update() draws at most every 0.1 s: show the phase's full count before it clears


def finished(line: str) -> None:
    """Prints a headline line to stdout (above the bars when shown) and advances the overall bar."""
    if _overall is None:
        print(line, flush=True)
        return
    tqdm.write(line, file=sys.stdout)  # clears the bars, writes the line, redraws them
    sys.stdout.flush()
    _overall.update(1)
