"""An ordered set with O(1) insert/remove next to any member, safe to mutate while iterating."""

from __future__ import annotations

from typing import Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")


class _Link(Generic[T]):
    __slots__ = ("value", "prev", "next", "erased")

    def __init__(self, value: T | None):
        self.value = value
        self.prev: _Link[T] = self
        self.next: _Link[T] = self
        self.erased = False


class LinkedSet(Generic[T]):
    """Doubly linked list of unique members. Iteration skips members removed meanwhile and
    visits members inserted after the current position, so rewrites can run inside the loop."""

    def __init__(self, items: Iterable[T] = ()):
        self._root: _Link[T] = _Link(None)
        self._links: dict[int, _Link[T]] = {}
        for item in items:
            self.append(item)

    def __len__(self) -> int:
        return len(self._links)

    def __contains__(self, item: object) -> bool:
        return id(item) in self._links

    def __iter__(self) -> Iterator[T]:
        link = self._root.next
        while link is not self._root:
            if not link.erased:
                yield link.value  # type: ignore[misc]
            link = link.next

    def __reversed__(self) -> Iterator[T]:
        link = self._root.prev
        while link is not self._root:
            if not link.erased:
                yield link.value  # type: ignore[misc]
            link = link.prev

    def __getitem__(self, index: int) -> T:
        if index < 0:
            index += len(self)
        for position, item in enumerate(self):
            if position == index:
                return item
        raise IndexError(index)

    def _insert_after_link(self, anchor: _Link[T], item: T) -> None:
        if id(item) in self._links:
            raise ValueError(f"{item!r} is already in the list")
        link = _Link(item)
        link.prev, link.next = anchor, anchor.next
        anchor.next.prev = link
        anchor.next = link
        self._links[id(item)] = link

    def append(self, item: T) -> None:
        self._insert_after_link(self._root.prev, item)

    def insert_after(self, anchor: T, items: Iterable[T]) -> None:
        link = self._links[id(anchor)]
        for item in items:
            self._insert_after_link(link, item)
            link = self._links[id(item)]

    def insert_before(self, anchor: T, items: Iterable[T]) -> None:
        link = self._links[id(anchor)].prev
        for item in items:
            self._insert_after_link(link, item)
            link = self._links[id(item)]

    def remove(self, item: T) -> None:
        """Unlink `item`; an iterator standing on it still finds the next member."""
        link = self._links.pop(id(item))
        link.prev.next = link.next
        link.next.prev = link.prev
        link.erased = True

    def index_map(self) -> dict[int, int]:
        """Position of each member, keyed by id()."""
        return {id(item): position for position, item in enumerate(self)}

    def reorder(self, items: list[T]) -> None:
        """Replace the order with `items`, which must hold exactly the current members."""
        if len(items) != len(self) or any(id(item) not in self._links for item in items):
            raise ValueError("reorder needs exactly the current members")
        self._root = _Link(None)
        self._links = {}
        for item in items:
            self.append(item)
