#!/usr/bin/env bash
# Prepare, on this (networked, CPU) machine, what an air-gapped GPU machine needs to build and test
# eva_fast: CUDA 13 + torch + Python 3.12 + cmake + pybind11 there, but no FFmpeg dev libraries and
# no PyPI. Output: ./gpu_carry/ (git-ignored), to copy next to the repository on the GPU machine.
#
#   gpu_carry/ffmpeg/        minimal shared FFmpeg built from Debian's FFmpeg source (the release this
#                            machine runs, 5.1.x): libavformat/libavcodec/libavutil/libswscale,
#                            decoders h264, hevc, vp8, vp9 + AV1 through libdav1d (its .so is copied
#                            in), demuxers mov/mp4, matroska/webm, ivf and raw h264/hevc, bitstream
#                            filters h264/hevc_mp4toannexb, plus the ffmpeg/ffprobe programs the
#                            reference tests call (rawvideo/ppm/framemd5 output, select/format/scale
#                            filters). env.sh puts its lib/ on LD_LIBRARY_PATH.
#                            With CARRY_TEST_ENCODERS=1 (default) also what the test suite and the
#                            bench use to *generate* videos: lavfi sources, libx264 (its .so copied
#                            in) and aac encoders, mp4/m4a muxers. That makes the build GPL (test
#                            tooling only; eva_fast links the same libraries either way). Set
#                            CARRY_TEST_ENCODERS=0 for an LGPL decode-only build (tests that
#                            generate videos then fail).
#   gpu_carry/ffmpeg/include/ffnvcodec/   the NVIDIA codec loader headers (MIT, libffmpeg-nvenc-dev)
#   gpu_carry/wheels/        Python 3.12 manylinux wheels of the build/test deps the GPU image may lack
#                            (scikit-build-core, pytest, hypothesis, opencv-python-headless, and the
#                            PyNvVideoCodec bench peer); skipped with SKIP_WHEELS=1.
#   gpu_carry/env.sh         source it on the GPU machine: PATH, PKG_CONFIG_PATH, EVA_FAST_FFNVCODEC_INCLUDE.
#
# On the GPU machine (see README, "GPU cluster"):
#   source gpu_carry/env.sh
#   python -m venv --system-site-packages .venv && .venv/bin/pip install --no-index -f gpu_carry/wheels \
#       scikit-build-core pytest hypothesis opencv-python-headless
#   EVA_FAST_CUDA=ON .venv/bin/pip install --no-build-isolation --no-index -e .
#   EVA_FAST_FAIL_WITHOUT_CUDA=1 .venv/bin/python -m pytest -q -m cuda
#
# Env: FFMPEG_VERSION (default: this machine's libavcodec package version, e.g. 5.1.9),
#      FFMPEG_TARBALL (use a local .orig.tar.xz instead of downloading), JOBS (make -j, default 2),
#      SKIP_WHEELS=1, DRY_RUN=1 (fetch + configure only, no build).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/gpu_carry
WORK=$OUT/.work
JOBS=${JOBS:-2}
mkdir -p "$WORK" "$OUT/ffmpeg" "$OUT/wheels"

ver=${FFMPEG_VERSION:-$(dpkg-query -W -f='${Version}' libavcodec59 2>/dev/null | sed -E 's/^[0-9]+://; s/-.*//')}
ver=${ver:-5.1.9}
echo "[carry] FFmpeg $ver -> $OUT/ffmpeg"

need=()
command -v nasm >/dev/null || need+=(nasm)          # x86 SIMD: CPU fallback decoding at full speed
[ -f /usr/include/dav1d/dav1d.h ] || need+=(libdav1d-dev)
ENC=${CARRY_TEST_ENCODERS:-1}
[ "$ENC" != 1 ] || [ -f /usr/include/x264.h ] || need+=(libx264-dev)
[ -f /usr/include/ffnvcodec/dynlink_loader.h ] || need+=(libffmpeg-nvenc-dev)
command -v make >/dev/null || need+=(make)
if ((${#need[@]})); then
  echo "[carry] installing build prerequisites: ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

tarball=${FFMPEG_TARBALL:-$WORK/ffmpeg_${ver}.orig.tar.xz}
if [ ! -f "$tarball" ]; then
  for pool in debian-security/pool/updates/main debian/pool/main; do
    url="http://deb.debian.org/$pool/f/ffmpeg/ffmpeg_${ver}.orig.tar.xz"
    echo "[carry] fetching $url"
    curl -fsSL --retry 2 -o "$tarball.part" "$url" && mv "$tarball.part" "$tarball" && break || rm -f "$tarball.part"
  done
fi
[ -f "$tarball" ] || { echo "[carry] cannot get the FFmpeg $ver source; set FFMPEG_TARBALL" >&2; exit 1; }
src=$WORK/ffmpeg-$ver
[ -d "$src" ] || tar -C "$WORK" -xf "$tarball"

extra=()
if [ "$ENC" = 1 ]; then
  extra=(--enable-gpl --enable-libx264 --enable-avdevice --enable-swresample --enable-indev=lavfi
         --enable-encoder=libx264,aac --enable-muxer=mp4,mov,ipod,matroska
         --enable-filter=testsrc,testsrc2,sine,concat,setsar,abuffer,abuffersink,aformat,aresample,anull
         --enable-decoder=aac,pcm_s16le)
fi
cd "$src"
./configure --prefix="$OUT/ffmpeg" --enable-shared --disable-static --enable-pic \
  --disable-everything --disable-autodetect --disable-doc --disable-network --disable-debug \
  --disable-avdevice --disable-postproc --disable-swresample --enable-avfilter \
  --enable-ffmpeg --enable-ffprobe --disable-ffplay \
  --enable-libdav1d \
  --enable-decoder=h264,hevc,vp8,vp9,libdav1d,mpeg4,mjpeg,rawvideo \
  --enable-parser=h264,hevc,vp8,vp9,av1,mpeg4video \
  --enable-demuxer=mov,matroska,ivf,h264,hevc,rawvideo,image2 \
  --enable-bsf=h264_mp4toannexb,hevc_mp4toannexb,vp9_superframe_split,av1_frame_split,extract_extradata \
  --enable-protocol=file,pipe \
  --enable-muxer=rawvideo,framemd5,image2pipe,image2,null \
  --enable-encoder=rawvideo,ppm,wrapped_avframe \
  --enable-filter=buffer,buffersink,select,format,scale,null,copy,setpts,transpose,hflip,vflip,rotate,fps,trim \
  "${extra[@]}" > "$WORK/configure.log"
echo "[carry] configured ($(grep -c . "$WORK/configure.log") lines in $WORK/configure.log)"
if [ "${DRY_RUN:-0}" = 1 ]; then
  echo "[carry] DRY_RUN=1: stopping after configure"
  exit 0
fi
make -j"$JOBS" >"$WORK/make.log" 2>&1
make install >>"$WORK/make.log" 2>&1
cp -a /usr/lib/x86_64-linux-gnu/libdav1d.so* "$OUT/ffmpeg/lib/"
[ "$ENC" != 1 ] || cp -a /usr/lib/x86_64-linux-gnu/libx264.so* "$OUT/ffmpeg/lib/"
mkdir -p "$OUT/ffmpeg/include"
cp -a /usr/include/ffnvcodec "$OUT/ffmpeg/include/"
rm -rf "$OUT/ffmpeg/share"
cd "$ROOT"

cat > "$OUT/env.sh" <<ENV
# source me on the GPU machine (paths relative to this file)
_carry=\$(cd "\$(dirname "\${BASH_SOURCE[0]}")" && pwd)
export PATH="\$_carry/ffmpeg/bin:\$PATH"
export PKG_CONFIG_PATH="\$_carry/ffmpeg/lib/pkgconfig\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}"
export EVA_FAST_FFNVCODEC_INCLUDE="\$_carry/ffmpeg/include"
export LD_LIBRARY_PATH="\$_carry/ffmpeg/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
# pkg-config files hold the absolute build prefix: make them relocatable.
sed -i "s|$OUT/ffmpeg|\${pcfiledir}/../..|g; s|^prefix=.*|prefix=\${pcfiledir}/../..|" "$OUT"/ffmpeg/lib/pkgconfig/*.pc

if [ "${SKIP_WHEELS:-0}" != 1 ]; then
  echo "[carry] downloading Python 3.12 wheels"
  python3 -m pip download -q -d "$OUT/wheels" --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    "scikit-build-core>=0.10" "pybind11>=2.12" "pytest>=8" "hypothesis>=6" "opencv-python-headless>=4.8" \
    pathspec packaging || echo "[carry] WARNING: some wheels could not be downloaded"
  python3 -m pip download -q -d "$OUT/wheels" --only-binary=:all: --no-deps --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 pynvvideocodec ||
    echo "[carry] WARNING: PyNvVideoCodec wheel not downloaded (the bench skips that peer)"
fi
du -sh "$OUT/ffmpeg" "$OUT/wheels" 2>/dev/null || true
"$OUT/ffmpeg/bin/ffmpeg" -hide_banner -decoders 2>/dev/null | grep -E " (h264|hevc|vp9|libdav1d) " || true
echo "[carry] done: copy $OUT to the GPU machine (next to the repository) and follow README 'GPU cluster'"
