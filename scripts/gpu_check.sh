#!/usr/bin/env bash
# The GPU check: every CUDA path of eva_fast built, tested and measured in one run, on a GPU machine
# that has no FFmpeg and no package index (README, "Running the GPU check").
#
#   bash scripts/gpu_check.sh --out DIR     # on the GPU machine, from the repository root, gpu_carry/ present
#   bash scripts/gpu_check.sh --dry-run     # here: checks the carry, the steps, the sizes; prints the command
#
# Steps (the STEPS table below), each under its own `timeout`, inside one wall-clock budget
# (--budget-s, default 450 s; the whole run stays under 8 minutes). A step that fails or runs out of
# time is recorded and the next one runs; a step whose prerequisite failed is skipped with the reason.
# DIR/machine.json is rewritten after every step, and every bench step appends its rows as it
# measures them, so a run that is cut short still returns what it finished. Files in DIR (flat, at
# most 8, since only 8 come back from the GPU machine):
#   machine.json    the machine (nvidia-smi, driver, torch/Triton/CUDA, libcuda/libnvcuvid load,
#                   image packages), the source digest, eva_fast's build info and the carried imports,
#                   and every step's status, rc, wall time and (on failure) log tail
#   log.txt         every step's output
#   pytest.xml      JUnit XML of `EVA_FAST_FAIL_WITHOUT_CUDA=1 pytest -m cuda`
#   decode.jsonl    bench rows: eva_fast (CPU), eva_fast_cuda, PyNvVideoCodec, torchcodec CUDA
#   pack.jsonl      Triton packer GB/s against a device-to-device copy of the same bytes
#   rollout.jsonl   a GRPO step's rollouts (2 questions x 8 episodes) on a random Qwen2.5-VL-7B-shaped model
#                   in bf16 with NVDEC frames: batched turns vs batch 1 (seconds, episodes/s, tokens/s,
#                   decoding step ms), static KV cache and compiled step, frame-work share, cache saving
#   soak.jsonl      1,000 mixed select_frames(device="cuda") requests: GPU memory and RSS every 100
#   limits.jsonl    the decode limits (ffmpeg -hwaccel cuda 1 and 4 sessions, ffmpeg -threads N on the CPU)
#                   and eva_fast's calls (cuda, cpu) and 1/2/4/8 readers at once as fractions of them
# Turn DIR into committed rows and the README's GPU table: python scripts/gpu_results.py DIR.
#
# Options: --out DIR (default out/gpu_check), --only a,b / --skip a,b (step names), --budget-s N,
#   --carry DIR (default gpu_carry), --list (print the steps), --dry-run [--no-carry],
#   --cpu (run the steps' CPU forms on a machine without a GPU: no CUDA asserted, small counts; how
#   the step wiring is tested here).
# Env: GPU_CHECK_PYTHON (default python3; with --cpu, .venv/bin/python when present),
#   GPU_CHECK_SITE (where carried wheels and the eva_fast build are installed, default build/gpu_site),
#   GPU_CHECK_STEPS_FILE (a bash file sourced after the table: replaces STEPS / step functions; tests).
#
# Adding a step (later issues: training step, rollout bench): one row in STEPS and one function
# step_<name> (optionally dry_<name>, which --dry-run calls to check the commands it needs exist).
# The function runs from the repository root with $OUT, $CARRY, $PY, $MODE (gpu|cpu),
# $STEP_TIMEOUT_S (the seconds it was given) exported; it writes at most the files named in its row
# into $OUT, appending and flushing as it goes; a non-zero exit marks it failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SELF=$ROOT/scripts/gpu_check.sh

# ------------------------------------------------------------------------------------------ steps
#      name     timeout_s  needs   writes (in DIR, besides machine.json and log.txt)
STEPS=(
  "machine  30         -       -"
  "build    200        -       -"
  "pytest   150        build   pytest.xml"
  "bench    150        build   decode.jsonl"
  "rollout  90         build   rollout.jsonl"
  "limits   150        build   limits.jsonl"
  "pack     60         build   pack.jsonl"
  "soak     100        build   soak.jsonl"
)
# Order: what the open issues measure first (rollout: #22, limits: #24), then what earlier runs
# measured already (pack once, soak twice), so a run the budget cuts short loses the repeats.
MAX_RESULT_FILES=8    # what comes back from the GPU machine
MAX_CARRY_MIB=56      # gpu_carry/; the working tree travels too (64 MiB in all)
MAX_TRAVEL_MIB=64
MAX_WALL_S=480        # the issue's bound for the whole run

step_machine() {
  "$PY" scripts/gpu_probe.py machine --out "$OUT" --carry "$CARRY"
}
dry_machine() { need_file scripts/gpu_probe.py && "$PY" scripts/gpu_probe.py digest >/dev/null; }

step_build() {
  # The image's own Python and packages; carried wheels and eva_fast go into $SITE (on PYTHONPATH).
  mkdir -p "$SITE"
  local wheels=()   # the carried wheels this interpreter can install (one that cannot is reported, not fatal)
  mapfile -t wheels < <("$PY" - "$CARRY"/wheels/*.whl <<'PY'
import sys
from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename

tags = set(sys_tags())
for w in sys.argv[1:]:
    if w.endswith(".whl") and parse_wheel_filename(w.rsplit("/", 1)[-1])[3] & tags:
        print(w)
    elif w.endswith(".whl"):
        print(f"[build] {w}: not installable with this Python, skipped", file=sys.stderr)
PY
)
  if ((${#wheels[@]})); then
    "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --upgrade \
      --target "$SITE" "${wheels[@]}" || return 1
  fi
  if ! command -v pkg-config >/dev/null; then            # CMake's FindPkgConfig needs one
    [ -x "$SITE/pkgconf/.bin/pkgconf" ] || chmod +x "$SITE/pkgconf/.bin/pkgconf" 2>/dev/null
    mkdir -p "$SITE/.bin" && ln -sf "$SITE/pkgconf/.bin/pkgconf" "$SITE/.bin/pkg-config"
    echo "[build] no pkg-config on the machine: using the carried pkgconf"
  fi
  local cuda=ON
  [ "$MODE" = gpu ] || cuda=${EVA_FAST_CUDA:-AUTO}
  echo "[build] eva_fast with EVA_FAST_CUDA=$cuda, $(nproc) jobs, FFmpeg $(pkg-config --modversion libavcodec 2>&1)," \
       "nvcc $(command -v nvcc || echo none)"
  EVA_FAST_CUDA=$cuda CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$PY" -m pip install --disable-pip-version-check \
    --no-index --no-deps --no-build-isolation --no-compile --upgrade --target "$SITE" \
    --config-settings=build-dir="$SITE-build" . || return 1
  "$PY" scripts/gpu_probe.py imports --out "$OUT" || return 1
  "$PY" -c "
import eva_fast, os, sys
f, site = eva_fast.__file__, os.environ['SITE']
sys.exit(0 if f.startswith(site) else f'eva_fast imports from {f}, not from this build in {site} (another install shadows it)')"
  if [ "$MODE" = gpu ]; then
    "$PY" -c "import eva_fast, sys; sys.exit(0 if eva_fast.build_info()['cuda'] else 'built without CUDA')"
  fi
}
dry_build() {
  need_file pyproject.toml && need_file CMakeLists.txt && need_module pip || return 1
  [ "$NO_CARRY" = 1 ] && return 0   # the carried FFmpeg is checked with the carry
  need_file "$CARRY/ffmpeg/lib/pkgconfig/libavcodec.pc" && need_file "$CARRY/ffmpeg/include/ffnvcodec/dynlink_loader.h" || return 1
  command -v pkg-config >/dev/null || return 0   # the GPU run falls back to the carried pkgconf
  local inc
  inc=$(PKG_CONFIG_LIBDIR="$CARRY/ffmpeg/lib/pkgconfig" pkg-config --variable=includedir libavcodec) &&
    [ "$(realpath "$inc")" = "$(realpath "$CARRY/ffmpeg/include")" ] ||
    { echo "carried libavcodec.pc does not resolve inside $CARRY (includedir: ${inc:-?})"; return 1; }
  PKG_CONFIG_LIBDIR="$CARRY/ffmpeg/lib/pkgconfig" pkg-config --exists libavformat libavcodec libavutil libswscale ||
    { echo "carried .pc files incomplete"; return 1; }
}

step_pytest() {
  local args=(-m cuda -v -p no:cacheprovider --junitxml "$OUT/pytest.xml" -o junit_suite_name=gpu_check)
  "$PY" -c "import pytest_timeout" 2>/dev/null && args+=(--timeout 120)
  if [ "$MODE" = gpu ]; then
    EVA_FAST_FAIL_WITHOUT_CUDA=1 "$PY" -m pytest "${args[@]}" tests
  else
    "$PY" -m pytest "${args[@]}" tests/video/test_nvdec.py   # CPU form: the cuda tests collect and skip
  fi
}
dry_pytest() { need_module pytest && grep -rlq "mark.cuda" tests; }

export BENCH_SYSTEMS=eva_fast,eva_fast_cuda,pynvvideocodec,torchcodec_cuda
step_bench() {
  local args=(--systems "$BENCH_SYSTEMS" --results-dir "$OUT" --results-file decode.jsonl
              --cache-dir "$ROOT/build/bench_cache")
  [ -d "$CARRY/shared/media" ] && args+=(--media-dir "$CARRY/shared/media")
  [ "$MODE" = gpu ] || args+=(--no-long --workloads detail --repeats 1)
  "$PY" -m eva_fast.bench.run "${args[@]}"
}
dry_bench() {
  need_file bench/run.py && need_file bench/_systems.py || return 1
  local s
  for s in ${BENCH_SYSTEMS//,/ }; do
    grep -q "name = \"$s\"" bench/_systems.py || { echo "bench system $s is not in bench/_systems.py"; return 1; }
  done
  need_entry_point eva_fast.bench.run
}

step_pack() {
  if [ "$MODE" = gpu ]; then
    "$PY" -m eva_fast.bench.bench_pack --skip-cpu --frames 32 256 --sizes 364x644 728x1288 --reps 5 \
      --out "$OUT/pack.jsonl"
  else
    "$PY" -m eva_fast.bench.bench_pack --skip-gpu --frames 2 --sizes 56x84 --reps 1 --out "$OUT/pack.jsonl"
  fi
}
dry_pack() { need_file bench/bench_pack.py && need_entry_point eva_fast.bench.bench_pack; }

step_rollout() {
  # batched turns (2 questions x 8 episodes, one generate per tick) first, then batch 1 (1 episode per
  # question: a full batch-1 group does not fit the step), then the static KV cache and the compiled
  # decoding step on the batched path if the measured times say they fit, each checked against the
  # batched tokens. Rows are appended as each mode finishes; --max-s is a deadline counted from the
  # bench's start (model build and warm-up included): at it the bench stops, 10 s before the step's
  # timeout, keeping the rows written (exit 0 once batched and batch1 are in, else 3)
  local max_s=$(( STEP_TIMEOUT_S > 30 ? STEP_TIMEOUT_S - 10 : STEP_TIMEOUT_S / 2 ))
  if [ "$MODE" = gpu ]; then
    "$PY" -m eva_fast.bench.bench_rollout --device cuda --model-size 7b --decode-device cuda --questions 2 \
      --generations 8 --batch1-generations 1 --reps 1 --modes batched,batch1,batched-static,batched-compiled \
      --max-s "$max_s" --videos tests/data/bigbuckbunny.mp4 tests/data/nasa_13013.mp4 --out "$OUT/rollout.jsonl"
  else
    "$PY" -m eva_fast.bench.bench_rollout --questions 1 --generations 2 --batch1-generations 1 --reps 1 \
      --modes batched,batch1 --max-s "$max_s" --videos tests/data/nasa_13013.mp4 --out "$OUT/rollout.jsonl"
  fi
}
dry_rollout() { need_file bench/bench_rollout.py && need_file tests/_tiny_qwen.py && need_entry_point eva_fast.bench.bench_rollout; }

step_soak() {
  local max_s=$(( STEP_TIMEOUT_S > 30 ? STEP_TIMEOUT_S - 20 : STEP_TIMEOUT_S / 2 ))  # leave time for the summary
  if [ "$MODE" = gpu ]; then
    "$PY" -m eva_fast.bench.bench_gpu_soak --device cuda --requests 1000 --every 100 --max-s "$max_s" \
      --data-dir tests/data --out "$OUT/soak.jsonl"
  else
    "$PY" -m eva_fast.bench.bench_gpu_soak --device cpu --requests 30 --every 10 --max-s "$max_s" \
      --data-dir tests/data --out "$OUT/soak.jsonl"
  fi
}
dry_soak() { need_file bench/bench_gpu_soak.py && need_entry_point eva_fast.bench.bench_gpu_soak; }

step_limits() {
  # NVDEC engine limit (carried ffmpeg -hwaccel cuda, 1 and 4 sessions), CPU limit (ffmpeg -threads
  # $(nproc)), eva_fast's dense/survey/snap calls on cuda and cpu as fractions of them, 1-8 readers at
  # once; then (#24) survey256 with 1/2/4/default NVDEC decoders per request, the paper's survey on a
  # 110-minute 720p video (5 s GOPs; exact and keyframe_snap, cuda and cpu), survey256 with 4/8/16 CPU
  # decoders per request; the summary row's goals. Rows are flushed as made: a cut keeps what ran.
  if [ "$MODE" = gpu ]; then
    local media=()
    [ -d "$CARRY/shared/media" ] && media=(--media-dir "$CARRY/shared/media")
    "$PY" -m eva_fast.bench.bench_limits --device cuda "${media[@]}" --cache-dir "$ROOT/build/bench_cache" \
      --gpu-workers 1 2 4 0 --gop-workers 4 8 16 --anchor-minutes 110 --out "$OUT/limits.jsonl"
  else
    "$PY" -m eva_fast.bench.bench_limits --device cpu --video tests/data/nasa_13013.mp4 --gop-workers 1 2 \
      --out "$OUT/limits.jsonl"
  fi
}
dry_limits() { need_file bench/bench_limits.py && need_entry_point eva_fast.bench.bench_limits; }

# ------------------------------------------------------------------------------------------ helpers
need_file() { [ -e "$1" ] || { echo "missing: $1"; return 1; }; }
need_module() { "$PY" -c "import $1" 2>/dev/null || { echo "$PY cannot import $1"; return 1; }; }
# A Python entry point a step runs: queued here, checked by --dry-run in one process (`MOD --help`
# must exit 0 where eva_fast is importable; elsewhere the file check of the caller is all).
need_entry_point() { echo "$1" >> "$DRY_ENTRY_POINTS"; }
now_s() { date +%s; }
log() { echo "[gpu_check] $*" | tee -a "$LOG"; }

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$SELF"; }

OUT=$ROOT/out/gpu_check
CARRY=$ROOT/gpu_carry
BUDGET_S=450
MODE=gpu
DRY=0
NO_CARRY=0
ONLY=""
SKIP=""
LIST=0
while (($#)); do
  case $1 in
    --out|--carry|--budget-s|--only|--skip)
      (($# >= 2)) || { echo "gpu_check.sh: $1 needs a value" >&2; exit 2; } ;;&
    --out) OUT=$2; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    --carry) CARRY=$2; shift 2 ;;
    --budget-s) BUDGET_S=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --skip) SKIP=$2; shift 2 ;;
    --cpu) MODE=cpu; shift ;;
    --dry-run) DRY=1; shift ;;
    --no-carry) NO_CARRY=1; shift ;;
    --list) LIST=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $BUDGET_S =~ ^[0-9]+$ ]] || { echo "--budget-s must be a whole number of seconds, got '$BUDGET_S'" >&2; exit 2; }
if [ -n "${GPU_CHECK_STEPS_FILE:-}" ]; then
  # shellcheck disable=SC1090
  source "$GPU_CHECK_STEPS_FILE"
fi
[ "$DRY" = 1 ] || mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" 2>/dev/null && pwd || echo "$OUT")
CARRY=$(cd "$CARRY" 2>/dev/null && pwd || echo "$CARRY")
SITE=${GPU_CHECK_SITE:-$ROOT/build/gpu_site}
PY=${GPU_CHECK_PYTHON:-python3}
if [ -z "${GPU_CHECK_PYTHON:-}" ] && { [ "$MODE" = cpu ] || [ "$DRY" = 1 ]; } && [ -x "$ROOT/.venv/bin/python" ]; then
  PY=$ROOT/.venv/bin/python
fi

# Parse the table once: names, timeouts, needs, writes.
NAMES=(); declare -A T_OF NEEDS_OF WRITES_OF
for row in "${STEPS[@]}"; do
  read -r n t d w <<<"$row"
  NAMES+=("$n"); T_OF[$n]=$t; NEEDS_OF[$n]=$d; WRITES_OF[$n]=$w
done
selected() {
  local n=$1
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$n,"* ]]; then return 1; fi
  if [ -n "$SKIP" ] && [[ ",$SKIP," == *",$n,"* ]]; then return 1; fi
  return 0
}
for list in "$ONLY" "$SKIP"; do
  for n in ${list//,/ }; do
    [ -n "${T_OF[$n]:-}" ] || { echo "gpu_check.sh: unknown step '$n'; steps: ${NAMES[*]}" >&2; exit 2; }
  done
done
if [ "$LIST" = 1 ]; then
  printf '%-10s %9s  %-8s %s\n' step timeout_s needs writes
  for n in "${NAMES[@]}"; do printf '%-10s %9s  %-8s %s\n' "$n" "${T_OF[$n]}" "${NEEDS_OF[$n]}" "${WRITES_OF[$n]}"; done
  exit 0
fi

# ------------------------------------------------------------------------------------------ dry run
dry_run() {
  local fails=0
  DRY_ENTRY_POINTS=$(mktemp); export DRY_ENTRY_POINTS
  trap 'rm -f "$DRY_ENTRY_POINTS"' RETURN
  ok() { printf '  [ok]   %s\n' "$*"; }
  bad() { printf '  [FAIL] %s\n' "$*"; fails=$((fails + 1)); }
  skip() { printf '  [skip] %s\n' "$*"; }
  echo "gpu_check dry run ($ROOT, python $PY)"
  echo "steps:"
  local files=2 total_t=0 seen=" "
  for n in "${NAMES[@]}"; do
    local t=${T_OF[$n]} d=${NEEDS_OF[$n]} w=${WRITES_OF[$n]}
    total_t=$((total_t + t))
    [ "$w" = - ] || files=$((files + $(tr ',' '\n' <<<"$w" | grep -c .)))
    if ! declare -F "step_$n" >/dev/null; then bad "$n: no function step_$n"; continue; fi
    if [ "$d" != - ] && [[ "$seen" != *" $d "* ]]; then bad "$n: needs '$d', which is not an earlier step"; continue; fi
    if declare -F "dry_$n" >/dev/null; then
      local msg
      if msg=$(cd "$ROOT" && "dry_$n" 2>&1); then ok "$n (timeout ${t}s, writes $w): commands present"
      else bad "$n: ${msg:-dry_$n failed}"; fi
    else
      ok "$n (timeout ${t}s, writes $w): step_$n defined (no dry_$n check)"
    fi
    seen+="$n "
  done
  if [ -s "$DRY_ENTRY_POINTS" ]; then
    local eps msg
    eps=$(sort -u "$DRY_ENTRY_POINTS" | tr '\n' ' ')
    if ! "$PY" -c "import eva_fast._C" 2>/dev/null; then
      skip "python entry points ($eps): eva_fast is not importable with $PY, files checked only"
    elif msg=$("$PY" - $eps 2>&1 <<'PY'
import contextlib, io, runpy, sys
bad = []
for mod in sys.argv[1:]:
    sys.argv = [mod, "--help"]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            runpy.run_module(mod, run_name="__main__")
    except SystemExit as e:
        if e.code not in (0, None):
            bad.append(f"{mod} --help exited {e.code}")
    except Exception as e:  # noqa: BLE001
        bad.append(f"{mod}: {type(e).__name__}: {e}")
    else:
        bad.append(f"{mod} --help did not exit")
sys.exit("; ".join(bad) if bad else 0)
PY
    ); then ok "python entry points answer --help: $eps"
    else bad "python entry points: $msg"; fi
  fi
  for tool in timeout tee date nproc; do command -v "$tool" >/dev/null || bad "tool $tool missing (coreutils)"; done
  if ((files <= MAX_RESULT_FILES)); then ok "result files: $files (limit $MAX_RESULT_FILES)"; else bad "result files: $files > $MAX_RESULT_FILES"; fi
  if ((BUDGET_S <= MAX_WALL_S - 20)); then ok "wall budget ${BUDGET_S}s (steps' timeouts sum to ${total_t}s; each step gets min(its timeout, what is left))"
  else bad "wall budget ${BUDGET_S}s leaves no margin under ${MAX_WALL_S}s"; fi

  echo "carry ($CARRY):"
  local carry_b=0
  [ ! -L "$ROOT/gpu_carry" ] || bad "$ROOT/gpu_carry is a symlink: the device tool sends it as a link; copy the folder"
  if [ "$NO_CARRY" = 1 ]; then
    skip "carry checks skipped (--no-carry)"
  elif [ ! -d "$CARRY" ]; then
    bad "no carry at $CARRY: build it with 'bash scripts/gpu_carry.sh' (or point --carry at one)"
  else
    carry_b=$(du -sb "$CARRY" | cut -f1)   # all of it travels
    local carry_mib
    carry_mib=$(awk -v b="$carry_b" 'BEGIN {printf "%.1f", b / 1048576}')
    if ((carry_b <= MAX_CARRY_MIB * 1048576)); then ok "size ${carry_mib} MiB (limit $MAX_CARRY_MIB)"
    else bad "size ${carry_mib} MiB > $MAX_CARRY_MIB MiB"; fi
    for part in ffmpeg wheels shared; do
      [ -d "$CARRY/$part" ] && printf '         %-8s %6.1f MiB\n' "$part" "$(du -sb "$CARRY/$part" | awk '{print $1 / 1048576}')"
    done
    local extra
    extra=$(cd "$CARRY" && ls -A | grep -vx -e env.sh -e ffmpeg -e wheels -e shared | tr '\n' ' ')
    [ -z "$extra" ] || bad "unexpected entries in the carry (they would travel too): $extra"
    local f missing=()
    for f in env.sh ffmpeg/bin/ffmpeg ffmpeg/bin/ffprobe ffmpeg/lib/libavcodec.so.59 ffmpeg/lib/libavformat.so.59 \
             ffmpeg/lib/libavutil.so.57 ffmpeg/lib/libswscale.so.6 ffmpeg/lib/libdav1d.so.6 \
             ffmpeg/include/ffnvcodec/dynlink_loader.h ffmpeg/lib/pkgconfig/libavcodec.pc; do
      [ -e "$CARRY/$f" ] || missing+=("$f")
    done
    if ((${#missing[@]})); then bad "missing: ${missing[*]}"; else ok "FFmpeg: libraries, programs, ffnvcodec headers, pkg-config files"; fi
    if grep -q "$ROOT\|/gpu_carry/ffmpeg" "$CARRY"/ffmpeg/lib/pkgconfig/*.pc 2>/dev/null; then
      bad ".pc files hold an absolute build path (not relocatable)"
    fi
    local decoders
    decoders=$(LD_LIBRARY_PATH="$CARRY/ffmpeg/lib" "$CARRY/ffmpeg/bin/ffmpeg" -hide_banner -decoders 2>/dev/null |
               awk '$2 ~ /^(h264|hevc|vp9|libdav1d)$/ {print $2}' | tr '\n' ' ')
    if [ "$(wc -w <<<"$decoders")" = 4 ]; then ok "carried ffmpeg runs here; decoders: $decoders"
    else bad "carried ffmpeg does not run or lacks decoders (got: '$decoders')"; fi
    local glibc
    glibc=$(find "$CARRY/ffmpeg" -type f \( -name '*.so*' -o -path '*/bin/*' \) -exec objdump -T {} + 2>/dev/null |
            grep -o 'GLIBC_[0-9.]*' | sort -t. -k2,2n -u | tail -1)
    ok "FFmpeg binaries need ${glibc:-GLIBC_?} (machine.json records the GPU image's glibc)"
    local image_pkgs whl name bad_whl=() names=()
    image_pkgs=$(grep -v '^#' scripts/gpu_image_packages.txt)
    for whl in "$CARRY"/wheels/*.whl; do
      [ -f "$whl" ] || continue
      name=$(basename "$whl" | cut -d- -f1 | tr 'A-Z_' 'a-z-')
      names+=("$name")
      grep -qx "$name" <<<"$image_pkgs" && bad_whl+=("$name")
    done
    if ((${#bad_whl[@]})); then bad "wheels for packages the image already has: ${bad_whl[*]}"
    else ok "wheels (${#names[@]}): ${names[*]:-none} (none the image has)"; fi
    [[ " ${names[*]} " == *" pynvvideocodec "* ]] || skip "no PyNvVideoCodec wheel: the bench records that peer as skipped"
    local media_missing=()
    for f in cockatoo_yuv420.mp4 cockatoo_1080p_h264.mp4 bigbuckbunny.mp4; do
      [ -f "$CARRY/shared/media/$f" ] || media_missing+=("$f")
    done
    if ((${#media_missing[@]})); then bad "media missing: ${media_missing[*]} (the bench suite's clips)"
    else ok "media: $(ls "$CARRY/shared/media" | grep -vc -e refs -e SOURCES) clips + $(ls "$CARRY/shared/media/refs/framemd5" 2>/dev/null | wc -l) framemd5 references"; fi
  fi

  echo "what travels:"
  if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    local tree_b
    tree_b=$(git -C "$ROOT" ls-files -co --exclude-standard -z | (cd "$ROOT" && xargs -0 -r stat -c %s 2>/dev/null) |
             awk '{s += $1} END {print s + 0}')
    local sum_b=$((tree_b + carry_b))
    local line
    line=$(awk -v t="$tree_b" -v c="$carry_b" 'BEGIN {printf "tree %.1f MiB + carry %.1f MiB = %.1f MiB", t / 1048576, c / 1048576, (t + c) / 1048576}')
    if ((sum_b <= MAX_TRAVEL_MIB * 1048576)); then ok "$line (limit $MAX_TRAVEL_MIB)"; else bad "$line > $MAX_TRAVEL_MIB MiB"; fi
  else
    skip "not a git checkout: tree size not checked"
  fi

  echo
  if ((fails)); then
    echo "dry run: $fails check(s) FAILED"
    return 1
  fi
  cat <<EOF
dry run: all checks passed. On the GPU machine (device tool), from the lead's checkout with
gpu_carry/ copied into it (a real folder: a symlink travels only as a link):

  run(command="bash scripts/gpu_check.sh --out \$OUT", carry=["gpu_carry"], timeout_s=540)

It finishes in under $((BUDGET_S / 60 + 1)) minutes (budget ${BUDGET_S}s) and returns, in \$OUT:
machine.json, log.txt$(for n in "${NAMES[@]}"; do [ "${WRITES_OF[$n]}" = - ] || printf ', %s' "${WRITES_OF[$n]//,/, }"; done).
Then, here: python scripts/gpu_results.py <the returned folder>
EOF
}

if [ "$DRY" = 1 ]; then
  dry_run
  exit $?
fi

# ------------------------------------------------------------------------------------------ run
LOG=$OUT/log.txt
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
T0=$(now_s)
log "start $(date -u +%FT%TZ) mode $MODE, budget ${BUDGET_S}s, out $OUT, carry $CARRY, python $PY"

# Environment every step sees.
if [ -f "$CARRY/env.sh" ]; then
  # shellcheck disable=SC1091
  source "$CARRY/env.sh"
else
  log "no $CARRY/env.sh: the build uses whatever FFmpeg pkg-config finds"
fi
if ! command -v nvcc >/dev/null; then   # CMake's check_language(CUDA) looks on PATH
  for c in /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc \
           $("$PY" -c "import site; print(' '.join(site.getsitepackages()))" 2>/dev/null | tr ' ' '\n' | sed 's|$|/nvidia/*/bin/nvcc|'); do
    # shellcheck disable=SC2086
    for n in $c; do [ -x "$n" ] && { export PATH=$(dirname "$n"):$PATH; log "nvcc not on PATH; using $n"; break 2; }; done
  done
fi
export PATH=$SITE/.bin:$PATH
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export OUT CARRY PY MODE SITE ROOT
# The GPU tests look for the larger clips in ../shared/media (beside the checkout); give them the carried ones.
if [ "$MODE" = gpu ] && [ ! -e "$ROOT/../shared" ] && [ -d "$CARRY/shared" ]; then
  ln -s "$CARRY/shared" "$ROOT/../shared" && log "linked $ROOT/../shared -> $CARRY/shared"
fi
for f in $(declare -F | awk '{print $3}'); do export -f "$f"; done

declare -A STATUS
record() {  # name status rc wall timeout reason
  local n=$1 st=$2 rc=$3 wall=$4 t=$5 reason=${6:-}
  STATUS[$n]=$st
  local files=()
  if [ "${WRITES_OF[$n]}" != - ]; then
    for f in ${WRITES_OF[$n]//,/ }; do [ -e "$OUT/$f" ] && files+=("$f"); done
  fi
  log "step $n: $st (rc $rc, ${wall}s of ${t}s)${reason:+ - $reason}"
  "$PY" scripts/gpu_probe.py step --out "$OUT" --name "$n" --status "$st" ${rc:+--rc "$rc"} \
    ${wall:+--wall-s "$wall"} ${t:+--timeout-s "$t"} ${reason:+--reason "$reason"} --log "$WORK/$n.log" \
    --files "${files[@]}" >/dev/null 2>>"$LOG" || log "could not record step $n in machine.json (see above)"
}

for n in "${NAMES[@]}"; do
  selected "$n" || continue
  t=${T_OF[$n]}
  d=${NEEDS_OF[$n]}
  if [ "$d" != - ] && [ -n "${STATUS[$d]:-}" ] && [ "${STATUS[$d]}" != ok ]; then
    record "$n" skipped "" "" "$t" "needs $d, which ${STATUS[$d]}"
    continue
  fi
  left=$((BUDGET_S - ($(now_s) - T0)))
  if ((left < 10)); then
    record "$n" skipped "" "" "$t" "no time left in the ${BUDGET_S}s budget"
    continue
  fi
  ((t > left)) && t=$left
  log "=== step $n (timeout ${t}s, ${left}s of the budget left) ==="
  s0=$(date +%s.%N)
  STEP_TIMEOUT_S=$t timeout -k 10 "$t" bash -c "step_$n" 2>&1 | tee -a "$LOG" "$WORK/$n.log"
  rc=${PIPESTATUS[0]}
  wall=$(awk -v a="$s0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  if [ "$rc" = 0 ]; then st=ok; elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then st=timeout; else st=failed; fi
  record "$n" "$st" "$rc" "$wall" "$t" "$([ "$st" = timeout ] && echo "killed after ${t}s")"
done

# Summary, and the result-file limit (only MAX_RESULT_FILES come back).
rm -f "$OUT"/*.tmp
log "done in $(($(now_s) - T0))s"
printf '%-10s %-8s\n' step status | tee -a "$LOG"
fails=0
for n in "${NAMES[@]}"; do
  selected "$n" || continue
  printf '%-10s %-8s\n' "$n" "${STATUS[$n]:-?}" | tee -a "$LOG"
  [ "${STATUS[$n]:-}" = ok ] || fails=$((fails + 1))
done
nfiles=$(find "$OUT" -type f | wc -l)
if ((nfiles > MAX_RESULT_FILES)); then
  log "WARNING: $nfiles files in $OUT; only $MAX_RESULT_FILES come back from the GPU machine: $(cd "$OUT" && find . -type f | tr '\n' ' ')"
  fails=$((fails + 1))
fi
exit $((fails > 0))
