"""Config: the seeds' YAML blocks load as written, aliases, CLI precedence, errors, dump round-trip.

The three seed blocks below are copied verbatim from the "Script Parameters" sections of
/work/shared/seeds/000 (DeiT), 001 (T2T-ViT) and 002 (BEiT).
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from vitzoo.config import (
    RunConfig,
    build_parser,
    config_from_dict,
    dump_config,
    load_config,
    parse_args,
    read_yaml,
    schema,
)
from vitzoo.engine.build import model_kwargs
from vitzoo.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

# fmt: off
DEIT_SEED = """\
# ===== Model ===== #
model: deit_base_patch16_224

finetune: ''
exclude_epoch_state: false

# ===== Dataset ===== #
data_path: /imagenet/

train_dir: train
val_dir: validation_preprocess
num_classes: 1000
input_size: 224
no_dataset_sink_mode: false


# ===== Base training config ===== #
amp_level: O2
lr: 0.0005
min_lr: 1.0e-05
batch_size: 64
epochs: 300
model_ema: false


# ===== Network training config ===== #
clip_grad: null
clip_grad_norm: 5.0
bce_loss: false

momentum: 0.9
num_workers: 10
opt: adamw
opt_eps: 1.0e-08
unscale_lr: false
use_clip_grad_norm: false
warmup_epochs: 5
warmup_lr: 1.0e-06
weight_decay: 0.05
patience_epochs: 10
start_epoch: 0
sched: cosine_lr
decay_epochs: 30
decay_rate: 0.1
is_dynamic_loss_scale: 1
loss_scale: 1024
cooldown_epochs: 10


# ===== Hardware setup ===== #
device_id: 0
device_num: 1
device_target: GPU


# ===== Augments ===== #
smoothing: 0.1
eval_crop_ratio: 0.875
aa: rand-m9-mstd0.5-inc1
beta:
- 0.9
- 0.999
recount: 1
remode: pixel
reprob: 0.25
resplit: false
color_jitter: 0.3
cutmix: 1.0
cutmix_minmax: null
mixup: 0.8
mixup_mode: batch
mixup_off_epoch: 0
mixup_prob: 1.0
mixup_switch_prob: 0.5
interpolation: bicubic




# ===== EMA ===== #
model_ema_decay: 0.99996

# ===== Distilation ===== #

distillation_alpha: 0.5
distillation_tau: 1.0
distillation_type: none
teacher_model: regnety_160
teacher_path: ''


# ===== Artifacts setup ===== #
keep_checkpoint_max: 10
output_dir: ./
ckpt_keep_num: 10
ckpt_save_every_sec: 3600
ckpt_save_every_step: 0
collect_input_data: false
summary_loss_collect_freq: 1
print_loss_every: 20

"""

T2T_SEED = """\
# ===== Dataset ===== #
dataset: ImageNet
data_url: /data/imagenet/ILSVRC/Data/CLS-LOC/
train_dir: train
val_dir: validation_preprocess
train_num_samples: -1
val_num_samples: -1

# ===== Augmentations ==== #
auto_augment: rand-m9-mstd0.5-inc1
aa_interpolation: bilinear
re_mode: pixel
re_prob: 0.25
re_count: 1
cutmix: 1.0
mixup: 0.8
mixup_prob: 1.0
mixup_mode: batch
mixup_off_epoch: 0.0
switch_prob: 0.5
label_smoothing: 0.1
min_crop: 0.08
crop_pct: 0.9

# ===== Optimizer ======== #
optimizer: adamw
beta: [ 0.9, 0.999 ]
eps: 1.0e-8
base_lr: 0.001
min_lr: 1.0e-5
lr_scheduler: cosine_lr
lr_adjust: 30
lr_gamma: 0.97
momentum: 0.9
weight_decay: 0.05


# ===== Network training config ===== #
epochs: 300
batch_size: 100
is_dynamic_loss_scale: True
loss_scale: 1024
num_parallel_workers: 8
start_epoch: 0
warmup_length: 2
warmup_lr: 0.000007
# Gradient clipping
use_clip_grad_norm: True
clip_grad_norm: 1.0
# Load pretrained setup
exclude_epoch_state: True
seed: 0
# EMA
with_ema: False
ema_decay: 0.9999

pynative_mode: False
dataset_sink_mode: True

# ==== Model arguments ==== #
arch: t2t_vit_19
amp_level: O0
file_format: MINDIR
pretrained: ''
image_size: 224
num_classes: 1000
drop: 0.0
drop_block: 0.0
drop_path: 0.1
disable_approximate_gelu: False

# ===== Hardware setup ===== #
device_id: 0
device_num: 1
device_target: GPU

# ===== Callbacks setup ===== #
summary_root_dir: /experiments/summary_dir/
ckpt_root_dir: /experiments/checkpoints/
best_ckpt_root_dir: /experiments/best_checkpoints/
logs_root_dir: /experiments/logs/
ckpt_keep_num: 10
best_ckpt_num: 5
ckpt_save_every_step: 0
ckpt_save_every_seconds: 1800
print_loss_every: 100
summary_loss_collect_freq: 20
model_postfix: 0
collect_input_data: False
dump_graph: False
"""

BEIT_SEED = """\
# ===== Dataset ===== #
dataset: ImageNet
data_url: /data/imagenet/ILSVRC/Data/CLS-LOC/
train_dir: train
val_dir: validation_preprocess
train_num_samples: -1
val_num_samples: -1
imagenet_default_mean_and_std: False

# ===== Augmentations ==== #
auto_augment: rand-m9-mstd0.5-inc1
aa_interpolation: bicubic
re_mode: pixel
re_prob: 0.25
re_count: 1
cutmix: 1.0
mixup: 0.8
mixup_prob: 1.0
mixup_mode: batch
mixup_off_epoch: 0.0
switch_prob: 0.5
label_smoothing: 0.1
min_crop: 0.08
crop_pct: 0.9

# ===== Optimizer ======== #
optimizer: adamw
beta: [ 0.9, 0.999 ]
eps: 1.0e-8
base_lr: 2.0e-3  # 2e-3, 3e-3, 4e-3, 5e-3  # Increased if layer decay is used
min_lr: 1.0e-6
lr_scheduler: cosine_lr
lr_adjust: 30
lr_gamma: 0.97
momentum: 0.9
weight_decay: 0.05
layer_decay: 0.9


# ===== Network training config ===== #
epochs: 100
batch_size: 64
is_dynamic_loss_scale: True
loss_scale: 1024
num_parallel_workers: 8
start_epoch: 0
warmup_length: 20
warmup_lr: 0.000007
# Gradient clipping
use_clip_grad_norm: False
clip_grad_norm: 1.0
# Load pretrained setup
exclude_epoch_state: True
seed: 0
# EMA
with_ema: False
ema_decay: 0.9999

pynative_mode: False
dataset_sink_mode: True

# ==== Model arguments ==== #
arch: beit_base_patch16_224
amp_level: O0
file_format: ONNX
pretrained: ''
image_size: 224
num_classes: 1000
drop: 0.0
drop_block: 0.0
drop_path: 0.1  # Stochasitc depth
disable_approximate_gelu: False
use_pytorch_maxpool: False
layer_scale_init_value: 0.1  # 0.1 for base, 1e-5 for large. set 0 to disable layer scale
rel_pos_bias: True
abs_pos_emb: False


# ===== Hardware setup ===== #
device_id: 0
device_num: 1
device_target: GPU

# ===== Callbacks setup ===== #
summary_root_dir: /experiments/summary_dir/
ckpt_root_dir: /experiments/checkpoints/
best_ckpt_root_dir: /experiments/best_checkpoints/
logs_root_dir: /experiments/logs/
ckpt_keep_num: 10
best_ckpt_num: 5
ckpt_save_every_step: 0
ckpt_save_every_seconds: 1800
print_loss_every: 100
summary_loss_collect_freq: 20
model_postfix: 0
collect_input_data: False
dump_graph: False
"""
# fmt: on


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture(params=["DEIT_SEED", "T2T_SEED", "BEIT_SEED"])
def seed_yaml(request, tmp_path):
    return request.param, _write(tmp_path, globals()[request.param])


def test_seed_blocks_load(seed_yaml):
    _, path = seed_yaml
    cfg = load_config(path, [])
    raw = read_yaml(path)
    assert cfg.model == raw.get("model", raw.get("arch"))
    assert cfg.lr == float(raw.get("lr", raw.get("base_lr")))
    assert cfg.batch_size == raw["batch_size"] and cfg.epochs == raw["epochs"]
    assert cfg.sched == "cosine"  # the seeds' cosine_lr
    assert cfg.device == "cuda"  # device_target: GPU
    assert cfg.dataset == "folder"  # ImageNet (or absent) -> ImageFolder reader
    assert cfg.opt_betas == [0.9, 0.999]
    assert cfg.num_classes == 1000 and cfg.input_size == 224
    assert any(n.startswith("device_id:") and "no effect" in n for n in cfg.notes)
    json.dumps(cfg.to_dict())


def test_seed_aliases_resolve(tmp_path):
    t2t = load_config(_write(tmp_path, T2T_SEED), [])
    # T2T dialect -> canonical names, values as written in the seed
    assert (t2t.model, t2t.opt, t2t.lr, t2t.min_lr) == ("t2t_vit_19", "adamw", 0.001, 1e-5)
    assert (t2t.data_path, t2t.warmup_epochs, t2t.warmup_lr) == ("/data/imagenet/ILSVRC/Data/CLS-LOC/", 2, 7e-6)
    assert (t2t.smoothing, t2t.aa, t2t.reprob, t2t.remode, t2t.recount) == (0.1, "rand-m9-mstd0.5-inc1", 0.25,
                                                                             "pixel", 1)
    assert (t2t.mixup_switch_prob, t2t.crop_pct, t2t.num_workers) == (0.5, 0.9, 8)
    assert (t2t.opt_eps, t2t.decay_epochs, t2t.decay_rate) == (1e-8, 30, 0.97)
    assert (t2t.model_ema, t2t.model_ema_decay, t2t.ckpt_keep_num) == (False, 0.9999, 10)
    assert t2t.ckpt_save_every_seconds == 1800 and t2t.exclude_epoch_state is True
    assert t2t.clip_grad == 1.0 == t2t.clip_value  # use_clip_grad_norm: True + clip_grad_norm: 1.0
    # MindSpore keys with a meaning: graph mode -> compile; approximate GELU unless disabled
    assert t2t.compile is True and t2t.gelu_approximate is True
    assert t2t.log_dir == "/experiments/logs/" and t2t.ckpt_dir == "/experiments/checkpoints/"
    assert t2t.summary_dir == "/experiments/summary_dir/" and t2t.best_ckpt_dir == "/experiments/best_checkpoints/"

    beit = load_config(_write(tmp_path, BEIT_SEED), [])
    assert (beit.model, beit.layer_decay, beit.layer_scale_init_value) == ("beit_base_patch16_224", 0.9, 0.1)
    assert (beit.rel_pos_bias, beit.abs_pos_emb, beit.imagenet_default_mean_and_std) == (True, False, False)
    assert beit.lr == 2e-3 and beit.clip_value is None  # use_clip_grad_norm: False

    deit = load_config(_write(tmp_path, DEIT_SEED), [])
    assert (deit.pretrained, deit.crop_pct, deit.ckpt_keep_num) == ("", 0.875, 10)  # finetune, eval_crop_ratio
    assert (deit.ckpt_save_every_seconds, deit.amp_level, deit.is_dynamic_loss_scale) == (3600, "O2", True)
    assert deit.clip_value is None  # clip_grad: null and use_clip_grad_norm: false
    assert deit.compile is False and deit.gelu_approximate is False  # keys absent: defaults


def test_cli_overrides_yaml_overrides_default(tmp_path):
    path = _write(tmp_path, "batch_size: 16\nlr: 0.002\nepochs: 7\n")
    cfg = load_config(path, ["--batch_size", "8", "--base_lr", "3e-3"])
    default = RunConfig()
    assert cfg.batch_size == 8  # CLI over YAML
    assert cfg.lr == 3e-3  # CLI alias spelling over YAML canonical
    assert cfg.epochs == 7  # YAML over default
    assert cfg.weight_decay == default.weight_decay  # default
    # parse_args: same thing through the public entry point, --config given on the command line
    cfg2, ns = parse_args(["--config", path, "--epochs", "9", "--dry-run"])
    assert (cfg2.epochs, cfg2.batch_size, ns.dry_run) == (9, 16, True)


def test_cli_spellings_and_types():
    cfg = load_config(None, ["--batch-size", "8", "--amp-level", "o0", "--model_ema", "--pin_mem", "no",
                             "--opt_betas", "0.8", "0.99", "--cutmix_minmax", "[0.2,0.8]",
                             "--model_overrides", "{patch_size: 4, depth: 4}", "--lr=1e-3",
                             "--label-smoothing", "0", "--device_target", "CPU", "--pynative_mode", "true"])
    assert (cfg.batch_size, cfg.amp_level, cfg.model_ema, cfg.pin_mem) == (8, "O0", True, False)
    assert cfg.opt_betas == [0.8, 0.99] and cfg.cutmix_minmax == [0.2, 0.8]
    assert cfg.model_overrides == {"patch_size": 4, "depth": 4}
    assert (cfg.lr, cfg.smoothing, cfg.device, cfg.compile) == (1e-3, 0.0, "cpu", False)
    assert load_config(None, ["--opt_betas", "[0.7, 0.9]"]).opt_betas == [0.7, 0.9]
    assert load_config(None, ["--model_overrides", '{"patch_size":4,"depth":2}']).model_overrides == {
        "patch_size": 4, "depth": 2}  # JSON without spaces (PyYAML alone would read one key 'patch_size:4')
    for text, expected in [("true", True), ("1", True), ("yes", True), ("False", False), ("0", False)]:
        assert load_config(None, ["--repeated_aug", text]).repeated_aug is expected


def test_pyyaml_exponent_quirk(tmp_path):
    # PyYAML reads 5e-4 (no dot) as the string '5e-4'; the config coerces it to a float
    path = _write(tmp_path, "lr: 5e-4\nweight_decay: 1e-8\nmixup_off_epoch: 0.0\nis_dynamic_loss_scale: 1\n")
    assert read_yaml(path)["lr"] == "5e-4"
    cfg = load_config(path, [])
    assert cfg.lr == 5e-4 and isinstance(cfg.lr, float) and cfg.weight_decay == 1e-8
    assert cfg.mixup_off_epoch == 0 and isinstance(cfg.mixup_off_epoch, int)
    assert cfg.is_dynamic_loss_scale is True


def test_unknown_key_names_closest(tmp_path):
    with pytest.raises(UserError, match=r"unknown config key 'batch_sise'.*batch_size"):
        load_config(_write(tmp_path, "batch_sise: 3\n"), [])
    with pytest.raises(UserError, match=r"'--warmup_epoch'.*--warmup_epochs"):
        load_config(None, ["--warmup_epoch", "3"])


@pytest.mark.parametrize("text, key, expected", [
    ("batch_size: abc\n", "batch_size", "an integer"),
    ("batch_size: 2.5\n", "batch_size", "an integer"),
    ("lr: fast\n", "lr", "a number"),
    ("model_ema: maybe\n", "model_ema", "a boolean"),
    ("opt_betas: 0.9\n", "opt_betas", "a list of numbers"),
    ("model_overrides: [1, 2]\n", "model_overrides", "a mapping"),
    ("pynative_mode: sometimes\n", "pynative_mode", "a boolean"),
])
def test_wrong_type_names_key_and_type(tmp_path, text, key, expected):
    with pytest.raises(UserError, match=rf"'{key}'.*expected {expected}"):
        load_config(_write(tmp_path, text), [])


@pytest.mark.parametrize("args, match", [
    (["--sched", "cosin"], r"'sched'.*not one of.*cosine"),
    (["--mixup_mode", "pairs"], r"'mixup_mode'.*pair"),
    (["--dataset", "svhn"], r"'dataset'.*folder, cifar10, cifar100"),
    (["--distillation_type", "hard", "--teacher_model", ""], r"needs a teacher"),
    (["--reprob", "1.5"], r"'reprob' \(command line\) must be in \[0, 1\]"),
    (["--start_epoch", "5", "--epochs", "3"], r"start_epoch"),
    (["--device_target", "TPU"], r"GPU, CPU, Ascend"),
    (["--batch_size"], r"expected one argument"),
    (["--model_overrides", "{depth:2}"], r"'depth:2' reads as one key.*space after the colon: \{depth: 2\}"),
])
def test_validation_errors(args, match):
    with pytest.raises(UserError, match=match):
        load_config(None, args)


def test_conflicting_aliases_in_one_file(tmp_path):
    assert load_config(_write(tmp_path, "keep_checkpoint_max: 3\nckpt_keep_num: 3\n"), []).ckpt_keep_num == 3
    with pytest.raises(UserError, match=r"'lr'.*'base_lr'.*different"):
        load_config(_write(tmp_path, "lr: 0.1\nbase_lr: 0.2\n"), [])


def test_normalised_values():
    cfg = load_config(None, ["--dataset", "ImageNet", "--sched", "cosine_annealing", "--opt", "Momentum",
                             "--aa", "", "--layer_decay", "1.0", "--amp_dtype", "bfloat16"])
    assert (cfg.dataset, cfg.sched, cfg.opt, cfg.aa, cfg.layer_decay, cfg.amp_dtype) == (
        "folder", "cosine", "momentum", "none", None, "bf16")
    assert load_config(None, ["--dataset", "CIFAR10"]).dataset == "cifar10"
    assert load_config(None, ["--lr_scheduler", "multistep_lr"]).sched == "step"


def test_no_effect_notes(tmp_path):
    cfg = load_config(_write(tmp_path, "device_num: 8\ndump_graph: true\nfile_format: ONNX\n"),
                      ["--device_id", "3"])
    keys = sorted(n.split(":")[0] for n in cfg.notes)
    assert keys == ["device_id", "device_num", "dump_graph", "file_format"]
    assert all("no effect" in n for n in cfg.notes)
    assert "device_num" not in cfg.to_dict() and "notes" not in cfg.to_dict()


def test_derived_helpers():
    cfg = load_config(None, ["--lr", "5e-4", "--batch_size", "64", "--update_freq", "2"])
    assert cfg.global_batch(8) == 64 * 8 * 2
    assert cfg.scaled_lr(8) == pytest.approx(5e-4 * 64 * 8 * 2 / 512)  # DeiT: lr x global batch / 512
    assert load_config(None, ["--unscale_lr", "true"]).scaled_lr(8) == RunConfig().lr
    assert load_config(None, ["--clip_grad", "2", "--use_clip_grad_norm", "1"]).clip_value == 2.0
    assert load_config(None, []).clip_value is None
    kw = load_config(None, ["--image_size", "32", "--drop_path", "0.2", "--model_overrides", "{depth: 2}",
                            "--rel_pos_bias", "false"])
    kw = model_kwargs(kw)
    assert kw["img_size"] == 32 and kw["drop_path_rate"] == 0.2 and kw["depth"] == 2
    assert kw["use_rel_pos_bias"] is False


def test_dump_round_trip(seed_yaml, tmp_path):
    _, path = seed_yaml
    cfg = load_config(path, ["--model_overrides", "{depth: 2, embed_dim: 48}", "--cutmix_minmax", "0.3 0.7"])
    text = dump_config(cfg)
    assert all(f"\n{f.name}:" in text for f in schema())  # every key printed
    again = load_config(_write(tmp_path, text, "dump.yaml"), [])
    assert again.to_dict() == cfg.to_dict()
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))).to_dict() == cfg.to_dict()


def test_from_dict_tolerates_unknown_keys():
    d = RunConfig().to_dict() | {"future_key": 1}
    cfg = config_from_dict(d)
    assert cfg.to_dict() == RunConfig().to_dict() and "future_key" in cfg.notes[0]
    with pytest.raises(UserError):
        config_from_dict(d, strict=True)


def test_help_lists_every_key_by_section():
    text = build_parser("vitzoo train").format_help()
    for f in schema():
        assert f"--{f.name} " in text, f.name
    for title in ("Model:", "Optimizer and schedule:", "Distillation (DeiT):", "MindSpore seed keys"):
        assert title in text
    flat = " ".join(text.split())
    assert "[default: 0.0005; alias: base_lr, lr_init]" in flat
    assert "--dry-run" in flat or "--dry_run" in flat
    assert "--base_lr" not in flat  # aliases are accepted but not listed twice


def test_bad_yaml_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"), [])
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(_write(tmp_path, "lr: [0.1\n"), [])
    with pytest.raises(UserError, match="mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"), [])


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(str(path), [])
    json.dumps(cfg.to_dict())
    text = path.read_text()
    assert text.startswith("#") and "Run" in text and "Reaches" in text  # header: command + result
    stem = path.stem
    if stem.startswith("deit"):
        assert cfg.model == stem and cfg.distillation_type == ("hard" if "distilled" in stem else "none")
        assert cfg.input_size == int(stem[-3:])
    if "distilled" in stem:
        assert cfg.teacher_model == "regnety_160" and cfg.teacher_path
    if stem.startswith("beit_large"):
        assert cfg.layer_scale_init_value == 1e-5 and (cfg.layer_decay == 0.75 or stem.endswith("_pt"))
    if stem.endswith("patch16_224_pt"):  # pre-training: the paper's masking and the DALL-E tokenizer's 112 px view
        assert (cfg.mim_target, cfg.second_input_size, cfg.min_mask_patches) == ("dall-e", 112, 16)
    if stem == "vit_base_patch16_224_cifar10":
        assert (cfg.dataset, cfg.opt, cfg.lr, cfg.batch_size, cfg.sched, cfg.epochs) == (
            "cifar10", "momentum", 0.013, 32, "cosine", 60)
        assert (cfg.weight_decay, cfg.input_size, cfg.num_classes) == (1e-4, 224, 10)
    if stem == "demo_shapes":
        assert cfg.input_size == 32 and cfg.model_overrides["patch_size"] == 4 and cfg.amp_level == "O0"


def test_shipped_configs_cover_the_seed_recipes():
    names = {p.stem for p in (ROOT / "configs").glob("*.yaml")}
    for size in ("tiny", "small", "base"):
        assert f"deit_{size}_patch16_224" in names and f"deit_{size}_distilled_patch16_224" in names
    assert {"deit_base_patch16_384", "deit_base_distilled_patch16_384", "t2t_vit_19", "t2t_vit_t_14",
            "beit_base_patch16_224_ft1k", "beit_base_patch16_384_pt22k_ft1k", "beit_large_patch16_224_ft1k",
            "vit_base_patch16_224_cifar10", "demo_shapes"} <= names


@pytest.mark.parametrize("script", sorted((ROOT / "scripts").glob("*.sh")), ids=lambda p: p.name)
def test_scripts_bash_syntax_and_usage(script, tmp_path):
    bash = shutil.which("bash")
    assert bash
    assert subprocess.run([bash, "-n", str(script)], capture_output=True, check=False).returncode == 0
    bad = subprocess.run([bash, str(script)], capture_output=True, text=True, check=False)  # no arguments: usage, exit 1
    assert bad.returncode == 1 and "bash scripts/" in bad.stderr
