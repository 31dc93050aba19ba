"""What ``vitzoo linprobe`` and ``vitzoo knn`` share: their parser, the encoder (a checkpoint's or a seeded
random one), and the cached features of both splits."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

import torch

from vitzoo.checkpoint import atomic_write_text
from vitzoo.config import RunConfig
from vitzoo.config import build_parser as config_parser
from vitzoo.data import build_dataset, build_eval_transform, build_loader, check_split_data
from vitzoo.engine import dist
from vitzoo.engine.build import model_kwargs
from vitzoo.engine.seeding import seed_everything
from vitzoo.errors import UserError
from vitzoo.inference.evaluate import describe_preprocessing, eval_data_config, eval_precision, load_for_eval
from vitzoo.models import create_model
from vitzoo.probe.features import Features, FeatureSpec, FrozenEncoder, extract_features, feature_spec


def probe_parser(prog: str, doc: str):
    p = config_parser(prog=prog, description=doc.split("\n\n")[0] + " Give the encoder with --pretrained "
                      "CKPT ('' = randomly initialised); any config key can be given as --KEY VALUE.")
    g = p.add_argument_group("output")
    g.add_argument("--json", dest="json_out", default=None, metavar="FILE",
                   help="also write the metrics, feature and probe settings and the encoder used to FILE")
    return p


@dataclass
class ProbeInputs:
    """What both probes start from: cached features of both splits and where they came from."""

    train: Features
    val: Features
    classes: list[str]
    spec: FeatureSpec
    encoder: dict  # checkpoint, arch, random_init
    data_config: dict
    seconds: float  # spent encoding

    def describe(self) -> dict:
        """The JSON fields both commands write besides their metrics."""
        return {"num_train": len(self.train), "num_val": len(self.val), "num_classes": len(self.classes),
                "class_names": self.classes,
                "feature": {**self.spec.to_dict(), "dim": int(self.train.x.shape[1])},
                "encoder": self.encoder, "preprocessing": self.data_config,
                "seconds_encoding": round(self.seconds, 2)}


def check_inputs(cfg: RunConfig, command: str) -> None:
    """Fail at once, before weights load or processes start: no encoder named, a missing data folder."""
    if not cfg.pretrained and "pretrained" not in cfg.explicit:
        raise UserError(f"vitzoo {command} needs the encoder: --pretrained CKPT (or --pretrained '' for a "
                        f"randomly initialised {cfg.model}, the baseline to compare with)")
    check_split_data(cfg, "train")
    check_split_data(cfg, "val")


def load_encoder(cfg: RunConfig, device: torch.device) -> tuple[torch.nn.Module, dict, dict]:
    """(model, checkpoint meta, encoder description): the checkpoint's model, or a seeded random one."""
    if cfg.pretrained:
        model, meta = load_for_eval(cfg, cfg.use_ema_for_eval, device)
        return model, meta, {"checkpoint": str(cfg.pretrained), "arch": meta.get("arch") or model.arch,
                             "random_init": False}
    seed_everything(cfg.seed)  # the same baseline on every run and every process
    model = create_model(cfg.model, **model_kwargs(cfg)).to(device).eval()
    if dist.is_main():
        print(f"note: --pretrained '': probing a randomly initialised {cfg.model} (seed {cfg.seed}), the "
              "baseline for a pre-trained encoder", file=sys.stderr)
    return model, {}, {"checkpoint": "", "arch": model.arch, "random_init": True, "seed": cfg.seed}


def probe_inputs(cfg: RunConfig, device: torch.device, world: int) -> ProbeInputs:
    """Load the encoder, cut it at ``probe_block`` and encode the train and val splits once."""
    model, meta, encoder = load_encoder(cfg, device)
    # masked image modeling trains the patch tokens only (its class token gets no loss): probe their mean,
    # as BEiT's linear probe does
    pool = "mean" if cfg.probe_pool == "auto" and meta.get("task") == "pretrain" else cfg.probe_pool
    spec = feature_spec(model, cfg.probe_block, pool)
    data_config, origin = eval_data_config(cfg, meta, model)
    if dist.is_main():
        print(f"preprocessing: {describe_preprocessing(data_config)} ({origin}); eval transform for both "
              f"splits\nfeature: {spec.describe()}", file=sys.stderr)
    precision = eval_precision(cfg, model, device, world)
    frozen = FrozenEncoder(precision.cast_model(model), spec)
    transform = build_eval_transform(data_config)  # no augmentation: each image has one feature
    train_ds = build_dataset(cfg, "train", transform=transform)
    val_ds = build_dataset(cfg, "val", transform=transform, classes=train_ds.classes)
    start = time.perf_counter()
    splits = []
    for name, ds in (("train", train_ds), ("val", val_ds)):
        # the "val" loader: fixed order, every image once (no shuffle, no dropped last batch)
        loader = build_loader(cfg, ds, "val", distributed=world > 1)
        splits.append(extract_features(frozen, loader, device, precision=precision, desc=f"encoding {name}"))
    return ProbeInputs(splits[0], splits[1], [str(c) for c in train_ds.classes], spec, encoder,
                       dict(data_config), time.perf_counter() - start)


def write_json(path: str, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
