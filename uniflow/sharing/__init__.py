"""Sharing a registry: blob remotes (``blobs``), the ``git`` binary (``gitcmd``), ``push``,
``pull``, the Git ``hooks`` and promote-on-merge for ``ci``.

``blobs``, ``gitcmd``, ``push`` and ``pull`` sit below ``ModelRegistry`` and receive a
:class:`~uniflow._repo.Repository`; ``hooks`` and ``ci`` sit above it and use the registry
like any application does (docs/design.md, "Module layout").
"""
