// pybind11 bindings: the one native module, eva_fast._C. Frames cross as NumPy arrays that own
// the decoder's buffer (no copy); the GIL is released while decoding.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <thread>

#include "decoder.h"
#include "ffmpeg_log.h"
#include "resize.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libswscale/swscale.h>
}

namespace py = pybind11;
using namespace eva_fast;

#ifndef EVA_FAST_WITH_CUDA
#define EVA_FAST_WITH_CUDA 0
#endif
#ifndef EVA_FAST_VERSION
#define EVA_FAST_VERSION "0.0.0"
#endif

namespace {

ResizeFilter parse_filter(const std::string& f) {
  if (f == "cubic") return ResizeFilter::kCubic;
  if (f == "antialias") return ResizeFilter::kAntialias;
  throw std::invalid_argument("resample filter must be 'cubic' or 'antialias', got '" + f + "'");
}

SelectMode parse_mode(const std::string& m) {
  if (m == "nearest") return SelectMode::kNearest;
  if (m == "played_at") return SelectMode::kPlayedAt;
  throw std::invalid_argument("mode must be 'nearest' or 'played_at', got '" + m + "'");
}

py::dict info_dict(const VideoInfo& in) {
  py::dict d;
  d["path"] = in.path;
  d["container"] = in.container;
  d["codec"] = in.codec;
  d["codec_long_name"] = in.codec_long_name;
  d["profile"] = in.profile;
  d["pixel_format"] = in.pixel_format;
  d["bit_depth"] = in.bit_depth;
  d["color_space"] = in.color_space;
  d["color_range"] = in.color_range;
  d["stream_index"] = in.stream_index;
  d["video_stream_indices"] = in.video_stream_indices;
  d["width"] = in.width;
  d["height"] = in.height;
  d["coded_width"] = in.coded_width;
  d["coded_height"] = in.coded_height;
  d["rotation_deg"] = in.rotation_deg;
  d["duration_s"] = in.duration_s;
  d["average_fps"] = in.average_fps;
  d["r_fps"] = in.r_fps;
  d["num_frames"] = in.num_frames;
  d["num_frames_estimated"] = in.num_frames_estimated;
  d["is_vfr"] = in.is_vfr;
  d["start_pts_s"] = in.start_pts_s;
  d["start_pts"] = in.start_pts;
  d["time_base"] = py::make_tuple(in.tb_num, in.tb_den);
  d["keyframe_pts_s"] = in.keyframe_pts_s;
  d["keyframes_from_index"] = in.keyframes_from_index;
  return d;
}

py::dict stats_dict(const DecodeStats& s) {
  py::dict d;
  d["decoded_frames"] = s.decoded_frames;
  d["packets_sent"] = s.packets_sent;
  d["skip_nonref_packets"] = s.skip_nonref_packets;
  d["seeks"] = s.seeks;
  d["decode_errors"] = s.decode_errors;
  d["decode_ms"] = s.decode_ms;
  d["convert_ms"] = s.convert_ms;
  return d;
}

template <typename T>
py::array_t<T> to_array(const std::vector<T>& v) {
  py::array_t<T> a(static_cast<py::ssize_t>(v.size()));
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
  return a;
}

py::array_t<uint8_t> own_frames(std::unique_ptr<uint8_t[]> buf, int64_t T, int H, int W) {
  uint8_t* raw = buf.release();
  py::capsule owner(raw, [](void* p) { delete[] static_cast<uint8_t*>(p); });
  return py::array_t<uint8_t>({static_cast<py::ssize_t>(T), static_cast<py::ssize_t>(H),
                               static_cast<py::ssize_t>(W), static_cast<py::ssize_t>(3)},
                              raw, owner);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "eva_fast native core: FFmpeg demux/decode, keyframe-aware seek, colour conversion and resize";
  install_ffmpeg_log_callback();

  static py::exception<DecodeError> video_error(m, "VideoError", PyExc_RuntimeError);
  static py::exception<DecodeError> unsupported_error(m, "UnsupportedCodecError", video_error.ptr());
  static py::exception<DecodeError> corrupt_error(m, "CorruptVideoError", video_error.ptr());
  static py::exception<DecodeError> invalid_file_error(m, "NotAVideoError", video_error.ptr());
  static py::exception<DecodeError> no_stream_error(m, "NoVideoStreamError", video_error.ptr());
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const DecodeError& e) {
      switch (e.kind) {
        case DecodeError::Kind::kNotFound:
          PyErr_SetString(PyExc_FileNotFoundError, e.what());
          return;
        case DecodeError::Kind::kInvalidArgument:
          PyErr_SetString(PyExc_ValueError, e.what());
          return;
        case DecodeError::Kind::kUnsupportedCodec:
          PyErr_SetString(unsupported_error.ptr(), e.what());
          return;
        case DecodeError::Kind::kCorrupt:
          PyErr_SetString(corrupt_error.ptr(), e.what());
          return;
        case DecodeError::Kind::kNoVideoStream:
          PyErr_SetString(no_stream_error.ptr(), e.what());
          return;
        case DecodeError::Kind::kInvalidFile:
          PyErr_SetString(invalid_file_error.ptr(), e.what());
          return;
      }
    }
  });

  py::class_<VideoDecoder>(m, "VideoDecoder")
      .def(py::init<const std::string&, int, int>(), py::arg("path"), py::arg("stream_index") = -1,
           py::arg("threads") = 0, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("info", [](const VideoDecoder& d) { return info_dict(d.info()); })
      .def(
          "decode",
          [](VideoDecoder& d, const std::vector<double>& times_s, const std::string& mode, int width, int height,
             const std::string& filter) {
            SelectMode sm = parse_mode(mode);
            ResizeFilter rf = parse_filter(filter);
            DecodeResult r;
            {
              py::gil_scoped_release release;
              r = d.decode(times_s, sm, width, height, rf);
            }
            py::dict out;
            out["frames"] = own_frames(std::move(r.frames), r.T, r.H, r.W);
            out["pts"] = to_array(r.pts);
            out["pts_s"] = to_array(r.pts_s);
            std::vector<bool> corrupt(r.corrupt.begin(), r.corrupt.end());
            std::vector<bool> key(r.keyframe.begin(), r.keyframe.end());
            out["corrupt"] = py::array(py::cast(corrupt)).attr("astype")("bool");
            out["keyframe"] = py::array(py::cast(key)).attr("astype")("bool");
            out["stats"] = stats_dict(r.stats);
            return out;
          },
          py::arg("times_s"), py::arg("mode") = "nearest", py::arg("width") = 0, py::arg("height") = 0,
          py::arg("filter") = "cubic")
      .def("scan_frames",
           [](VideoDecoder& d) {
             std::vector<double> pts;
             std::vector<uint8_t> key;
             {
               py::gil_scoped_release release;
               d.scan_frames(&pts, &key);
             }
             std::vector<bool> k(key.begin(), key.end());
             return py::make_tuple(to_array(pts), py::array(py::cast(k)).attr("astype")("bool"));
           })
      .def_property_readonly("total_stats", [](const VideoDecoder& d) { return stats_dict(d.total_stats()); })
      .def_property("skip_nonref", &VideoDecoder::skip_nonref, &VideoDecoder::set_skip_nonref,
                    "Let the decoder drop non-reference frames far from every target (identical output).");

  m.def(
      "resize_rgb",
      [](py::array_t<uint8_t, py::array::c_style | py::array::forcecast> img, int height, int width,
         const std::string& filter) {
        if (img.ndim() != 3 || img.shape(2) != 3) {
          throw std::invalid_argument("resize_rgb expects a uint8 array of shape [H, W, 3], got ndim=" +
                                      std::to_string(img.ndim()));
        }
        if (height <= 0 || width <= 0) {
          throw std::invalid_argument("output size must be positive, got " + std::to_string(height) + "x" +
                                      std::to_string(width));
        }
        ResizeFilter rf = parse_filter(filter);
        const int sh = static_cast<int>(img.shape(0)), sw = static_cast<int>(img.shape(1));
        py::array_t<uint8_t> out({static_cast<py::ssize_t>(height), static_cast<py::ssize_t>(width),
                                  static_cast<py::ssize_t>(3)});
        const uint8_t* src = img.data();
        uint8_t* dst = out.mutable_data();
        {
          py::gil_scoped_release release;
          RgbResizer r(sw, sh, width, height, rf);
          r.run(src, sw * 3, dst, width * 3);
        }
        return out;
      },
      py::arg("image"), py::arg("height"), py::arg("width"), py::arg("filter") = "cubic",
      "Resize an RGB24 image [H, W, 3] uint8 with the decoder's resampler ('cubic' or 'antialias').");

  m.def("_set_resize_simd", &set_resize_simd, py::arg("enabled"),
        "Testing switch: allow (True) or forbid (False) the AVX2 horizontal resize pass. Returns the "
        "previous setting. Both paths compute identical integers.");
  m.def("_resize_simd_available", &resize_simd_available, "Whether this CPU has AVX2.");

  m.def("build_info", []() {
    py::dict d;
    d["version"] = EVA_FAST_VERSION;
    d["ffmpeg_version"] = ffmpeg_version_string();
    d["libavcodec"] = LIBAVCODEC_IDENT;
    d["libavformat"] = LIBAVFORMAT_IDENT;
    d["libswscale"] = LIBSWSCALE_IDENT;
#if defined(__clang__)
    d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    d["compiler"] = std::string("gcc ") + __VERSION__;
#else
    d["compiler"] = "unknown";
#endif
    d["cuda"] = static_cast<bool>(EVA_FAST_WITH_CUDA);
#ifdef EVA_FAST_CUDA_ARCHS
    d["cuda_archs"] = EVA_FAST_CUDA_ARCHS;
#else
    d["cuda_archs"] = "";
#endif
    d["hardware_threads"] = std::thread::hardware_concurrency();
    return d;
  });
  m.def("set_ffmpeg_log_level", &set_ffmpeg_print_level, py::arg("level"),
        "Print FFmpeg messages at or below this AV_LOG_* level to stderr (-8 quiet, 16 error, 24 warning, 32 info).");
}
