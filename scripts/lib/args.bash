# Shared argument parsing of the seed-shaped wrappers: CONFIG [--OPTION VALUE ...] [--checkpoint C] [--extra ...],
# and the GPU / config checks they make before starting anything.
# Sourced by the scripts; each defines `usage` and `option NAME VALUE` (return 0 when it knows NAME).
# Sets CONFIG, CHECKPOINT and the EXTRA array (everything after --extra, passed through to vitzoo).
parse_seed_args() {
  [ $# -ge 1 ] || usage
  CONFIG=$1; shift
  case "$CONFIG" in -h|--help) usage ;; esac
  [ -f "$CONFIG" ] || { echo "config file not found: $CONFIG" >&2; usage; }
  CHECKPOINT=""; EXTRA=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --checkpoint) [ $# -ge 2 ] || usage; CHECKPOINT=$2; shift 2 ;;
      --extra) shift; EXTRA=("$@"); break ;;
      --*) [ $# -ge 2 ] || { echo "missing value for $1" >&2; usage; }
           option "$1" "$2" || { echo "unknown argument: $1" >&2; usage; }; shift 2 ;;
      *) echo "unknown argument: $1" >&2; usage ;;
    esac
  done
}

# The number of GPUs nvidia-smi lists (0 without nvidia-smi or without a driver).
gpu_count() { (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true; }

# One process on GPU $1, or on the CPU when there is none; says which ($2: what runs, e.g. "evaluating").
use_one_gpu() {
  local gpus; gpus=$(gpu_count)
  if [ "$gpus" -eq 0 ]; then
    echo "no GPU found (nvidia-smi lists none): $2 on the CPU" >&2
    return 0
  fi
  [ "$1" -lt "$gpus" ] || { echo "--device $1: only $gpus GPU(s) found (ids 0 to $((gpus - 1)))" >&2; exit 1; }
  export CUDA_VISIBLE_DEVICES=$1
  echo "$2 on GPU $1" >&2
}

# `vitzoo train --check` in one process before torchrun starts several: a wrong key, path or output
# folder is then one line, once (not one per process followed by torchrun's ChildFailedError report).
check_train_args() { "${PYTHON:-python}" -m vitzoo train --check "$@" >/dev/null; }
