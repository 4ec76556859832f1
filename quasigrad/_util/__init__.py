"""Low-level helpers shared by every layer: argument checks (:mod:`.validate`), atomic files
(:mod:`.files`), tables and summary statistics (:mod:`.tables`).

Nothing here imports from elsewhere in quasigrad; everything else may import from here.
"""
