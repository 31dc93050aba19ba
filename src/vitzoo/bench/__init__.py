"""Side-by-side throughput against timm (``vitzoo bench``, ``benchmarks/``): :mod:`measure` runs the rows,
:mod:`report` shows them."""
