"""Teacher-output stores: memory-mapped arrays addressed by ``(sample index, augmentation view)``.

:mod:`kdlab.store.format` defines the directory format (arrays, manifest, checksums, atomic
publication). :mod:`kdlab.teachers.cached` fills a store from a teacher (:func:`build_cache`) and
reads it back as a teacher (:class:`~kdlab.teachers.cached.CachedTeacher`).
"""
from kdlab.store.format import MANIFEST, ArraySpec, Store, StoreWriter, read_manifest, verify_store

__all__ = ["MANIFEST", "ArraySpec", "Store", "StoreWriter", "read_manifest", "verify_store"]
