"""A zarr memory store that records the keys zarr reads, to test that reads stay local."""

from __future__ import annotations

from zarr.storage import MemoryStore


class CountingStore(MemoryStore):
    """A memory store that records the keys zarr reads (metadata and chunks)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.keys_read: list[str] = []

    async def get(self, key, prototype=None, byte_range=None):
        self.keys_read.append(key)
        return await super().get(key, prototype, byte_range)
