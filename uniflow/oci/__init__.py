"""Model versions as OCI artifacts in the CNCF ModelPack format (``uniflow oci push/pull``).

``modelpack`` pins the format (media types, annotations, the config and manifest built and
checked); ``ref`` parses ``oci://`` references; ``client`` is the one module that talks to a
registry (through oras-py, with bounded timeouts); ``push`` and ``pull`` are the two verbs.
"""
