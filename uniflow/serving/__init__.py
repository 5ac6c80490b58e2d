"""Handing a registered version to a serving system (docs/deploy.md).

* :mod:`uniflow.serving.kserve`: the ``uniflow://<git-url>#<model>@<stage-or-version>`` URI
  a KServe ``ClusterStorageContainer`` passes, and the storage initializer that writes the
  verified files of the version it names into ``DEST_DIR``;
* :mod:`uniflow.serving.triton`: a version written into a Triton model repository
  (``<repo>/<name>/<n>/model.onnx`` or ``model.pt``, and ``<repo>/<name>/config.pbtxt``).

Both read a registry by Git URL through ``ModelRegistry(url)`` (:mod:`uniflow.sharing.remote`):
the bytes they write are the verified bytes ``uniflow get`` writes.
"""
