"""Sharing a registry: blob remotes (``blobs``), the ``git`` binary (``gitcmd``), ``push``,
``pull``, the Git ``hooks`` and promote-on-merge for ``ci``.

The whole package sits below ``ModelRegistry``: the facade builds one
:class:`~uniflow._repo.Repository` and hands it (or the part a function needs) to every
module here, ``hooks`` and ``ci`` included; none of them imports the facade. Inside the
package, ``hooks`` and ``ci`` are the top layer (docs/design.md, "Module layout").
"""
