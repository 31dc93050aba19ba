# Shared argument parsing of the seed-shaped wrappers: CONFIG [--OPTION VALUE ...] [--checkpoint C] [--extra ...].
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
