"""BEiT pre-training parity: vitzoo's masked-image-modeling model vs unilm's ``modeling_pretrain.py``.

Checked outside CI (unilm's code is not ours to ship): point ``--unilm`` at a checkout's ``beit/`` folder
(``modeling_pretrain.py``, ``modeling_finetune.py``, ``masking_generator.py``). Both models get the same
weights (the key names are the same), the same images, the same block mask from unilm's own
``MaskingGenerator`` and our ``BlockMaskGenerator`` drawn from one seeded ``random`` state (checked equal),
and the same visual-token labels; the script prints the largest logit difference and both losses.

    python benchmarks/parity_beit_pretrain.py --unilm /path/to/unilm/beit [--size base|tiny]
"""
from __future__ import annotations

import argparse
import random
import sys

import numpy as np
import torch
import torch.nn.functional as F

from vitzoo.mim.masking import BlockMaskGenerator
from vitzoo.models.beit_mim import build_mim_model

SIZES = {"base": {"img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12},
         "tiny": {"img_size": 64, "patch_size": 8, "embed_dim": 96, "depth": 4, "num_heads": 3}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--unilm", required=True, help="unilm's beit/ folder")
    p.add_argument("--size", choices=sorted(SIZES), default="base")
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args()
    sys.path.insert(0, args.unilm)
    if not hasattr(np, "int"):  # unilm's MaskingGenerator uses np.int (removed in numpy 1.24)
        np.int = int
    import masking_generator
    import modeling_pretrain

    size = SIZES[args.size]
    grid = size["img_size"] // size["patch_size"]
    num_mask = round(0.4 * grid * grid)
    torch.manual_seed(0)
    ours = build_mim_model("beit_base_patch16_224", 8192, layer_scale_init_value=0.1, drop_path_rate=0.0, **size).eval()
    ref = modeling_pretrain.VisionTransformerForMaskedImageModeling(
        vocab_size=8192, mlp_ratio=4, qkv_bias=True, norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6),
        init_values=0.1, use_abs_pos_emb=False, use_shared_rel_pos_bias=True, **size).eval()
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("relative_position_index")]
    assert not missing and not unexpected, (missing, unexpected)

    masks_ref, masks_ours = [], []
    for i in range(args.batch):
        random.seed(i)
        masks_ref.append(torch.from_numpy(masking_generator.MaskingGenerator(
            grid, num_mask, min_num_patches=16 if grid >= 8 else 4)().astype(bool)))
        random.seed(i)
        masks_ours.append(BlockMaskGenerator((grid, grid), num_mask, 16 if grid >= 8 else 4)())
    same_masks = all(torch.equal(a, b) for a, b in zip(masks_ref, masks_ours))
    mask = torch.stack(masks_ours).flatten(1)  # (B, N)
    images = torch.randn(args.batch, 3, size["img_size"], size["img_size"])
    labels = torch.randint(0, 8192, (int(mask.sum()),))
    with torch.no_grad():
        out_ours, out_ref = ours(images, mask), ref(images, bool_masked_pos=mask)
    loss_ours, loss_ref = F.cross_entropy(out_ours, labels), F.cross_entropy(out_ref, labels)
    print(f"size {args.size}: masks equal {same_masks} ({int(mask.sum())} masked of {mask.numel()}); "
          f"max |logit diff| {(out_ours - out_ref).abs().max().item():.3g}; loss ours {loss_ours.item():.7f} "
          f"unilm {loss_ref.item():.7f} (diff {abs(loss_ours - loss_ref).item():.3g})")
    return 0 if same_masks and torch.allclose(out_ours, out_ref, atol=1e-5) else 1


if __name__ == "__main__":
    sys.exit(main())
