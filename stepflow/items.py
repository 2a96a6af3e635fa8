"""Sets of item keys done by a step, compact for integer keys."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

ItemKey = int | str

#: Integer keys are stored in chunks of this many bits (8 KiB a chunk).
CHUNK_BITS = 65536
CHUNK_BYTES = CHUNK_BITS // 8


class ItemSet:
    """Done item keys: non-negative integers in a bitmap (one bit each),
    anything else as text in a set. ``key in items`` is O(1)."""

    __slots__ = ("_bits", "_count", "_strings")

    def __init__(self, keys: Iterable[ItemKey] = ()) -> None:
        self._bits = bytearray()
        self._strings: set[str] = set()
        self._count = 0
        self.update(keys)

    @staticmethod
    def normalize(key: object) -> ItemKey:
        """Integers (not bools) stay integers when >= 0; everything else becomes text."""
        if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
            return key
        return str(key)

    def add(self, key: ItemKey) -> bool:
        """Add one key; False when it was already there."""
        if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
            i, bit = key >> 3, 1 << (key & 7)
            if i >= len(self._bits):
                self._bits.extend(bytes(max(i + 1 - len(self._bits), len(self._bits))))
            if self._bits[i] & bit:
                return False
            self._bits[i] |= bit
        else:
            key = str(key)
            if key in self._strings:
                return False
            self._strings.add(key)
        self._count += 1
        return True

    def update(self, keys: Iterable[ItemKey]) -> None:
        for k in keys:
            self.add(k)

    def discard(self, key: ItemKey) -> bool:
        if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
            i, bit = key >> 3, 1 << (key & 7)
            if i >= len(self._bits) or not self._bits[i] & bit:
                return False
            self._bits[i] &= ~bit & 0xFF
        else:
            if str(key) not in self._strings:
                return False
            self._strings.discard(str(key))
        self._count -= 1
        return True

    def or_chunk(self, chunk_no: int, data: bytes) -> None:
        """Merge a stored chunk of the integer bitmap (chunk n covers keys n*CHUNK_BITS..)."""
        start = chunk_no * CHUNK_BYTES
        end = start + len(data)
        if end > len(self._bits):
            self._bits.extend(bytes(end - len(self._bits)))
        before = int.from_bytes(self._bits[start:end], "little")
        merged = before | int.from_bytes(data, "little")
        self._bits[start:end] = merged.to_bytes(len(data), "little")
        self._count += merged.bit_count() - before.bit_count()

    def chunk_bytes(self, chunk_no: int) -> bytes:
        """The stored form of one chunk of the integer bitmap (CHUNK_BYTES long)."""
        start = chunk_no * CHUNK_BYTES
        data = bytes(self._bits[start : start + CHUNK_BYTES])
        return data + bytes(CHUNK_BYTES - len(data))

    def __contains__(self, key: object) -> bool:
        if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
            i = key >> 3
            return i < len(self._bits) and bool(self._bits[i] >> (key & 7) & 1)
        return str(key) in self._strings

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[ItemKey]:
        for i, byte in enumerate(self._bits):
            if byte:
                for b in range(8):
                    if byte >> b & 1:
                        yield i * 8 + b
        yield from sorted(self._strings)

    def first_missing_from(self, start: int) -> int:
        """The smallest integer key >= start that is not in the set (skips full bytes fast)."""
        n = start
        bits = self._bits
        while n >> 3 < len(bits):
            i = n >> 3
            if n & 7 == 0:
                j = i
                while j < len(bits) and bits[j] == 0xFF:
                    j += 1
                if j > i:
                    n = j * 8
                    continue
            if not bits[i] >> (n & 7) & 1:
                return n
            n += 1
        return n


def chunks_of(keys: Iterable[int]) -> dict[int, bytes]:
    """Group integer keys into bitmap chunks {chunk_no: bytes}, for storage."""
    out: dict[int, bytearray] = {}
    for k in keys:
        chunk, offset = divmod(k, CHUNK_BITS)
        buf = out.get(chunk)
        if buf is None:
            buf = out[chunk] = bytearray(CHUNK_BYTES)
        buf[offset >> 3] |= 1 << (offset & 7)
    return {c: bytes(b) for c, b in out.items()}
