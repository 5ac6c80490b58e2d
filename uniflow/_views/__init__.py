"""Views: rendering only (notebook ``_repr_html_``, inline SVG charts, model cards as
sanitised HTML). Imports nothing of the registry but the error tree.

Empty on purpose: importing one module must not import its siblings.
"""
