"""Storage: chunks on a file system (the content-addressed store, the chunk pipeline, reading
a user's files, pins, crash-safe writes). Never imports Git or anything in ``_records``.

Empty on purpose: importing ``uniflow._storage.store`` must not import its siblings.
"""
