"""The data path on the model's device (a GPU): JPEG decoding, Pillow-exact resizing and the DeiT recipe's
augmentations on a batch, as ``decode_on: device`` / ``augment_on: device`` and ``--decode device`` use them.

Importing this package does nothing; import its modules."""
