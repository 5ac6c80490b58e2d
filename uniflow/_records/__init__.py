"""Records: what a registry is in Git (refs, tags, manifests, lifecycles, config, the
listing index and the derived cache). ``git`` is the only dulwich user; ``refs``, ``refscan``
and ``paths`` read ref names and files without any Git library (shell completion uses them).

Empty on purpose: importing one module must not import its siblings.
"""
