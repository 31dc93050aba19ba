"""Every foreign checkpoint layout, read into vitzoo's key names; and models built from files.

One module per source layout, each with ``NAME``, ``detect(obj, path)`` and ``read(obj, path, use_ema)``
returning :class:`Weights` (the state dict in vitzoo's names, plus the config fields the file implies):

- ``native.py``  vitzoo checkpoints (``.pt`` / ``.pth`` / ``.safetensors`` with ``meta``);
- ``npz.py``     Google ViT ``.npz`` (``ViT-B_16.npz``; Flax names and kernel layouts);
- ``t2t.py``     official T2T-ViT ``.pth.tar`` (``state_dict_ema``, ``module.``; implies qk_scale);
- ``beit.py``    unilm BEiT ``.pth`` (derived ``relative_position_index`` buffers dropped);
- ``timm.py``    DeiT / timm ``.pth`` (``{"model": ...}``, train-script wrappers, bare state dicts);
- ``mindspore_ckpt.py``  the MindSpore model zoo seeds' ``.ckpt`` (protobuf; read and written);
- ``pdparams.py``  PaddleViT DeiT ``.pdparams`` (pickles read by an arrays-only unpickler; read and written);
- ``hf.py``      Hugging Face ``transformers`` folders (ViT, DeiT, BEiT), ``timm_hub.py`` timm's hub folders
  (``hub.py``: the folder and weight-file reading both share).

Written back out (``vitzoo convert CKPT DIR --to hf|timm``): ``to_hf.py`` (the transformers folder, the
reader's key tables inverted), ``to_timm.py`` (timm's hub folder), both through ``hub_out.py`` (atomic
folder writes) with the card of ``model_card.py`` (README.md generated from the checkpoint's meta).

``layouts.py`` holds the ordered list ``LAYOUTS`` that :func:`detect` walks and ``WRITERS``, the layouts
written back; ``adapt.py`` fits a state dict to a built model (head width, image size, shared BEiT table);
``detect.py`` reads the registered model a state dict is off its names and shapes (for files that record
none); ``options.py`` holds the one rule for a model built from a file (registry defaults < the file's
options < the caller's arguments; a conflicting named architecture refused); ``load.py`` builds and loads
models by it; ``checkpoint.py`` writes any of them as a vitzoo checkpoint (or a foreign one). Adding a format is one new module, one entry in ``LAYOUTS`` and its test.
"""
from __future__ import annotations

from vitzoo.models.convert.adapt import adapt_state_dict
from vitzoo.models.convert.checkpoint import convert_checkpoint
from vitzoo.models.convert.layouts import LAYOUTS, WRITERS, detect, read_weights, writer_for
from vitzoo.models.convert.load import create_model, load_model, load_pretrained
from vitzoo.models.convert.weights import Weights, unwrap_state_dict

__all__ = ["LAYOUTS", "WRITERS", "Weights", "adapt_state_dict", "convert_checkpoint", "create_model", "detect",
           "load_model", "load_pretrained", "read_weights", "unwrap_state_dict",
           "writer_for"]
