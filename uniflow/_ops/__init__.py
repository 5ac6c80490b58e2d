"""Operations: one module per verb of the registry (register, verify/gc, materialize/export,
partial loads, diff, compare), built on ``_repo``, ``_records`` and ``_storage``.

Empty on purpose: importing one module must not import its siblings.
"""
