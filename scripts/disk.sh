# Sourced by the setup scripts. A full disk otherwise surfaces deep inside pip as "OSError: [Errno 28]" after
# minutes of downloads and leaves a half-installed venv behind; check first and say what to free.
require_free_gib() {  # DIR GIB WHAT
  local dir="$1" need="$2" what="$3" free_kib
  mkdir -p "$dir"
  free_kib=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
  if (( free_kib < need * 1024 * 1024 )); then
    echo "setup: $what needs about ${need} GiB free under $dir; only $((free_kib / 1024 / 1024)) GiB is." \
         "Free disk space (old run dirs, ~/.cache/pip, /tmp) or put it elsewhere, then run this again." >&2
    exit 1
  fi
}
