"""Teacher-output stores: memory-mapped arrays addressed by ``(sample index, augmentation view)``.

:mod:`kdlab.store.format` defines the directory format (arrays, manifest, checksums, atomic
publication). :mod:`kdlab.teachers.cache_build` fills a store from a teacher (:func:`build_cache`) and
:mod:`kdlab.teachers.cached` reads it back as a teacher (:class:`~kdlab.teachers.cached.CachedTeacher`).
"""
from kdlab.store.format import MANIFEST, ArraySpec, Store, StoreWriter, read_manifest, verify_store

__all__ = ["MANIFEST", "ArraySpec", "Store", "StoreWriter", "read_manifest", "verify_store"]
