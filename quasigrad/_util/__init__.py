"""Low-level helpers shared by every layer: argument checks (`validate`), atomic files
(`files`), tables and summary statistics (`tables`), the registry mechanism (`registry`).

Nothing here imports from elsewhere in quasigrad; everything else may import from here.
"""
