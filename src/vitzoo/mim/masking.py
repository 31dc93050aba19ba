"""BEiT's blockwise masking (Bao et al., arXiv:2106.08254, Algorithm 1).

Masked positions come in rectangular blocks rather than scattered patches: a block of random area
(``min_patches`` up to what is left to mask) and random aspect ratio (log-uniform in
[``min_aspect``, 1 / ``min_aspect``]) is placed at random; blocks are added until about ``num_masked``
patches are masked. Blocks make the task harder than independent patches, whose neighbours give the
answer away by interpolation. The draws follow unilm's ``masking_generator.py`` one for one (python's
``random``), so a seeded state gives the same mask as the authors' code (benchmarks/parity_beit_pretrain.py);
the sample's seeded augmentation (``vitzoo.data.seeded_augmentation``) makes it reproducible across workers.
"""
from __future__ import annotations

import logging
import math
import random

import torch

from vitzoo.errors import UserError

log = logging.getLogger("vitzoo")


class BlockMaskGenerator:
    """``__call__() -> (h, w) bool tensor``, True = masked."""

    def __init__(self, grid: tuple[int, int], num_masked: int, min_patches: int = 16,
                 max_patches: int | None = None, min_aspect: float = 0.3):
        self.height, self.width = grid
        self.num_masked = num_masked
        self.min_patches = min_patches
        self.max_patches = num_masked if max_patches is None else max_patches
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    @classmethod
    def from_ratio(cls, grid: tuple[int, int], ratio: float, min_patches: int, max_patches: int | None,
                   min_aspect: float) -> BlockMaskGenerator:
        """The generator a config asks for, refused where it could never mask a patch: a block must stay
        smaller than the grid both ways (unilm's rule), so BEiT's 16-patch blocks fit a 14x14 grid but not
        the 4x4 of a 32 px input with 8 px patches, and every mask would come out empty."""
        gen = cls(grid, round(ratio * grid[0] * grid[1]), min_patches, max_patches, min_aspect)
        where = f"a {grid[0]}x{grid[1]} grid of patches"
        if gen.num_masked < 1:
            raise UserError(f"mask_ratio {ratio} masks no patch of {where}; raise mask_ratio")
        masked = gen.average_masked()
        if masked == 0:
            raise UserError(f"min_mask_patches {min_patches}: every mask drawn for {where} comes out empty (a "
                            f"block must be smaller than the grid both ways); use min_mask_patches <= "
                            f"{(grid[0] - 1) * (grid[1] - 1)}, or a larger input_size")
        if masked < 0.5 * gen.num_masked:
            log.warning("masking: blocks of >= %d patches on %s mask %.1f patches per image on average, not the "
                        "%d mask_ratio %.2f asks for; a smaller min_mask_patches fits more (BEiT: 16 on 14x14)",
                        min_patches, where, masked, gen.num_masked, ratio)
        return gen

    def average_masked(self, draws: int = 200) -> float:
        """Patches a mask holds on average, from ``draws`` masks drawn without moving python's ``random``
        (the run's seeded stream stays what it was)."""
        state = random.getstate()
        try:
            random.seed(0)
            return sum(int(self().sum()) for _ in range(draws)) / draws
        finally:
            random.setstate(state)

    def __call__(self) -> torch.Tensor:
        mask = torch.zeros(self.height, self.width, dtype=torch.bool)
        count = 0
        while count < self.num_masked:
            added = self._add_block(mask, min(self.num_masked - count, self.max_patches))
            if added == 0:  # no block fits any more (small grids): stop short, as unilm does
                break
            count += added
        return mask

    def _add_block(self, mask: torch.Tensor, max_new: int) -> int:
        """Try (10 times) to place one block adding 1..max_new masked patches; return how many it added."""
        for _ in range(10):
            area = random.uniform(self.min_patches, max_new)
            aspect = math.exp(random.uniform(*self.log_aspect))
            h = round(math.sqrt(area * aspect))
            w = round(math.sqrt(area / aspect))
            if w >= self.width or h >= self.height:
                continue
            top = random.randint(0, self.height - h)
            left = random.randint(0, self.width - w)
            window = mask[top:top + h, left:left + w]
            new = h * w - int(window.sum())
            if 0 < new <= max_new:
                window.fill_(True)
                return new
        return 0
