"""WebDataset tar shards: :mod:`read` (local shards, labeled or not), :mod:`stream` (URLs) and
:mod:`write` (``vitzoo make-dataset shards``).

Importing this package does nothing; import its modules."""
