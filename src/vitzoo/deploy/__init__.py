"""Models outside PyTorch training: write them as files (export.py), run the ONNX ones (onnx_runtime.py).

Both sides agree on what a file records about its model (arch, preprocessing, class names) through
:mod:`vitzoo.deploy.metadata`, which imports neither of them. Importing this package imports nothing.
"""
