"""Work over every APIService spread across reactor turns, so that a thousand of them never stall requests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

Item = TypeVar("Item")
Result = TypeVar("Result")


async def in_batches(clock: IReactorTime, items: Iterable[Item], size: int,
                     each: Callable[[Item], Result]) -> list[Result]:
    """Call `each` on every item, `size` of them per reactor turn, and return the results in order."""
    results = []
    for position, item in enumerate(items):
        if position and position % size == 0:
            await deferLater(clock, 0, lambda: None)
        results.append(each(item))
    return results
