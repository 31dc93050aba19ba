"""Tokenizers trained by ``vitzoo train-tokenizer``: conv encoder -> discrete bottleneck -> conv decoder.

Two bottlenecks (``tokenizer_type``):

- ``vqvae`` (van den Oord et al., arXiv:1711.00937): the encoder's vector at each grid cell is replaced by
  its nearest code. The quantiser is ``VectorQuantize`` from the maintained ``vector-quantize-pytorch``
  package with EMA codebook updates (arXiv:1711.00937 appendix A.1; steadier than a learned codebook),
  k-means initialisation on the first batch and dead-code replacement (codes used < 2 times in the EMA
  window are re-seeded from the batch; Dhariwal et al., Jukebox, arXiv:2005.00341 sec. 3.2). Both exist
  because on small data a randomly initialised codebook collapses to a handful of codes, which would make
  BEiT's prediction target nearly constant. Codes are 32-dimensional: low-dimensional lookup keeps more
  codes in use (Yu et al., ViT-VQGAN, arXiv:2110.04627 sec. 3.2). ``logits`` are negative squared
  distances to the codes, so ``tokenize`` (their argmax) is the quantiser's own choice.
- ``dvae`` (DALL-E, Ramesh et al., arXiv:2102.12092 sec. 2.1): the encoder gives logits over the
  vocabulary; training feeds the decoder a Gumbel-softmax relaxed one-hot (temperature annealed towards
  1/16) times a code matrix, plus a KL term to the uniform prior; tokens are the argmax, as DALL-E's.

Grid: three stride-2 stages, downsampling 8 as DALL-E's, so a 112 px tokenizer view gives the 14 x 14
grid of a 224 px ViT with 16 px patches. Images enter in [0, 1]; the module maps them to [-1, 1] itself.
The saved file is one ``.safetensors`` whose header holds the architecture (:class:`TokenizerSpec`), so
:func:`load_trained_tokenizer` rebuilds it from the file alone and never executes anything from it.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vitzoo.checkpoint import read_file
from vitzoo.checkpoint.files import write_safetensors
from vitzoo.errors import UserError
from vitzoo.tokenizers.base import VisualTokenizer

FORMAT = "vitzoo-tokenizer"
FORMAT_VERSION = 1
TOKENIZER_TYPES = ("vqvae", "dvae")
COMMITMENT_WEIGHT = 0.25  # beta of arXiv:1711.00937 eq. 3 ("results did not vary for 0.1 to 2.0")
EMA_DECAY = 0.9  # codebook EMA; 0.99 (the paper's) is too slow for a few hundred updates on small data
DEAD_CODE_THRESHOLD = 2  # EMA usage under which a code is re-seeded (vector-quantize-pytorch's example)
KL_WEIGHT = 1e-3  # dvae: KL(q || uniform) per cell against per-pixel MSE; see tokenizers/task.py


@dataclass(frozen=True)
class TokenizerSpec:
    """What the file's header records; enough to rebuild the module with nothing else."""

    type: str = "vqvae"
    codebook_size: int = 1024
    width: int = 64  # channels of the first stage; stages have width, 2 width, 4 width
    downsample: int = 8
    image_size: int = 112  # the size it was trained at (any multiple of downsample works)
    code_dim: int = 32  # vqvae: dimension of the codes; dvae: of the code matrix rows

    def __post_init__(self) -> None:
        stages = math.log2(self.downsample)
        if self.type not in TOKENIZER_TYPES or stages != int(stages) or stages < 1:
            raise UserError(f"bad tokenizer spec: {self}")

    @classmethod
    def from_meta(cls, meta: dict, path: str) -> TokenizerSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in meta["spec"].items() if k in names})
        except (KeyError, TypeError, AttributeError):
            raise UserError(f"{path}: tokenizer header has no valid architecture (spec)") from None


class ResBlock(nn.Module):
    """ReLU, 3x3 conv, ReLU, 1x1 conv, added to the input (arXiv:1711.00937 sec. 4.1)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _widths(spec: TokenizerSpec) -> list[int]:
    return [spec.width * 2 ** i for i in range(int(math.log2(spec.downsample)))]  # e.g. [64, 128, 256]


def build_encoder(spec: TokenizerSpec, out_ch: int) -> nn.Sequential:
    """(B, 3, H, W) -> (B, out_ch, H / ds, W / ds): a stem, then per stage a residual block and a
    stride-2 4x4 conv to the next width."""
    w = _widths(spec)
    layers: list[nn.Module] = [nn.Conv2d(3, w[0], 3, padding=1)]
    for i, ch in enumerate(w):
        layers += [ResBlock(ch), nn.Conv2d(ch, w[min(i + 1, len(w) - 1)], 4, stride=2, padding=1)]
    layers += [ResBlock(w[-1]), nn.ReLU(), nn.Conv2d(w[-1], out_ch, 1)]
    return nn.Sequential(*layers)


def build_decoder(spec: TokenizerSpec, in_ch: int) -> nn.Sequential:
    """(B, in_ch, h, w) -> (B, 3, h x ds, w x ds), the encoder mirrored; nearest upsampling + 3x3 conv
    (no transposed-conv checkerboard; Odena et al., Distill 2016)."""
    w = _widths(spec)[::-1]  # e.g. [256, 128, 64]
    layers: list[nn.Module] = [nn.Conv2d(in_ch, w[0], 3, padding=1), ResBlock(w[0])]
    for i, ch in enumerate(w):
        nxt = w[min(i + 1, len(w) - 1)]
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, nxt, 3, padding=1), ResBlock(nxt)]
    layers += [nn.ReLU(), nn.Conv2d(w[-1], 3, 3, padding=1)]
    return nn.Sequential(*layers)


class StepOutput(NamedTuple):
    """What one training forward gives: the reconstruction in [0, 1] space (unclamped), the quantiser's
    loss (commitment or weighted KL), the token ids (B, h, w)."""

    recon: torch.Tensor
    aux_loss: torch.Tensor
    ids: torch.Tensor


class TrainedTokenizer(VisualTokenizer):
    """Encoder + quantiser (``logits`` / ``tokenize``) and decoder (``decode``) of a train-tokenizer run."""

    def __init__(self, spec: TokenizerSpec) -> None:
        super().__init__()
        self.spec, self.vocab_size, self.downsample = spec, spec.codebook_size, spec.downsample
        if spec.type == "vqvae":
            # imported here: the package (einx, sympy) takes ~1.6 s to import, and every vitzoo command
            # imports this module through vitzoo.create_tokenizer
            from vector_quantize_pytorch import VectorQuantize

            self.encoder = build_encoder(spec, spec.code_dim)
            self.quantizer = VectorQuantize(
                dim=spec.code_dim, codebook_size=spec.codebook_size, decay=EMA_DECAY, kmeans_init=True,
                threshold_ema_dead_code=DEAD_CODE_THRESHOLD, commitment_weight=COMMITMENT_WEIGHT,
                accept_image_fmap=True, sync_codebook=False)
        else:
            self.encoder = build_encoder(spec, spec.codebook_size)
            # DALL-E's decoder starts with a 1x1 conv from the one-hot vocabulary: this matrix
            self.codes = nn.Parameter(torch.randn(spec.codebook_size, spec.code_dim) / math.sqrt(spec.code_dim))
        self.decoder = build_decoder(spec, spec.code_dim)

    def codebook(self) -> torch.Tensor:
        """(vocab, code_dim): the vector each token id stands for."""
        return self.quantizer.codebook if self.spec.type == "vqvae" else self.codes

    def _check(self, images: torch.Tensor) -> None:
        ds = self.downsample
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] % ds or images.shape[-2] % ds:
            raise UserError(f"tokenizer input must be (B, 3, H, W) with H and W multiples of {ds}, got "
                            f"{tuple(images.shape)}")

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        self._check(images)
        z = self.encoder(images * 2.0 - 1.0)  # (B, D or vocab, h, w)
        if self.spec.type == "dvae":
            return z
        codes = self.codebook().to(z.dtype)  # (K, D)
        # -|z - e|^2 = 2 z.e - |e|^2 - |z|^2: the quantiser's nearest code is the argmax
        dots = torch.einsum("bdhw,kd->bkhw", z, codes)
        return 2 * dots - codes.pow(2).sum(-1)[None, :, None, None] - z.pow(2).sum(1, keepdim=True)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        z = self.codebook()[tokens].permute(0, 3, 1, 2)  # (B, h, w, D) -> (B, D, h, w)
        return (self.decoder(z) * 0.5 + 0.5).clamp(0, 1)

    def forward(self, images: torch.Tensor, temperature: float = 1.0) -> StepOutput:
        """The training forward (in train mode the vqvae codebook's EMA moves here); ``forward`` so that DDP
        and torch.compile wrap it. Using the tokenizer is ``tokenize`` / ``logits`` / ``decode``."""
        self._check(images)
        z = self.encoder(images * 2.0 - 1.0)
        if self.spec.type == "vqvae":
            q, ids, commit = self.quantizer(z)  # (B, D, h, w), (B, h, w), scalar
            return StepOutput(self.decoder(q) * 0.5 + 0.5, commit.sum(), ids)
        soft = F.gumbel_softmax(z, tau=temperature, dim=1)  # relaxed one-hot over the vocabulary
        q = torch.einsum("bkhw,kd->bdhw", soft, self.codes)
        # KL(q(y|x) || uniform) per cell = sum q log q + log K (arXiv:2102.12092 eq. 1's prior term)
        logq = F.log_softmax(z, dim=1)
        kl = (logq.exp() * logq).sum(1).mean() + math.log(self.vocab_size)
        return StepOutput(self.decoder(q) * 0.5 + 0.5, KL_WEIGHT * kl, z.argmax(1))


def tokenizer_meta(spec: TokenizerSpec, extra: dict | None = None) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "spec": dataclasses.asdict(spec), **(extra or {})}


def save_trained_tokenizer(path: str | os.PathLike, model: TrainedTokenizer, extra: dict | None = None) -> None:
    """Weights + architecture in one safetensors file, written atomically."""
    write_safetensors(path, model.state_dict(), tokenizer_meta(model.spec, extra))


def load_trained_tokenizer(weights: str | os.PathLike) -> TrainedTokenizer:
    """Rebuild a ``vitzoo train-tokenizer`` file (eval mode); one-line UserError for anything else."""
    path = str(weights)
    if not os.path.isfile(path):
        raise UserError(f"tokenizer file not found: {path}")
    if not path.endswith(".safetensors"):
        raise UserError(f"{path}: not a train-tokenizer file (expected the .safetensors that "
                        "`vitzoo train-tokenizer` writes)")
    obj = read_file(path)
    meta = obj.get("meta") or {}
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: not a train-tokenizer file (no '{FORMAT}' header; for the DALL-E encoder "
                        "use mim_target dall-e)")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"{path}: written by a newer vitzoo (tokenizer format {meta['format_version']}); "
                        "upgrade vitzoo")
    model = TrainedTokenizer(TokenizerSpec.from_meta(meta, path))
    try:
        model.load_state_dict(obj["model"], strict=True)
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not match the architecture in its header "
                        f"({str(e).splitlines()[0]})") from None
    return model.eval()
