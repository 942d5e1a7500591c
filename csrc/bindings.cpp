// pybind11 bindings: the one native module, eva_fast._C. Frames cross as NumPy arrays that own
// the decoder's buffer (no copy); the GIL is released while decoding.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdio>
#include <cstring>
#include <thread>

#include "decoder.h"
#include "dlpack_export.h"
#include "gop_runs.h"
#include "nal_ref.h"
#include "nvdec.h"
#include "ffmpeg_log.h"
#include "resize.h"
#include "yuv444.h"

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

// Typed result of VideoDecoder.decode (the _C.pyi stub documents it).
struct DecodeOutput {
  py::object frames;  // NumPy uint8 [T, H, W, 3] (CPU) or a DLPack capsule (NVDEC)
  py::array_t<int64_t> pts;
  py::array_t<double> pts_s;
  py::array corrupt;
  py::array keyframe;
  DecodeStats stats;
};

py::array bool_array(const std::vector<uint8_t>& v) {
  py::array_t<bool> a(static_cast<py::ssize_t>(v.size()));
  bool* d = a.mutable_data();
  for (size_t i = 0; i < v.size(); ++i) d[i] = v[i] != 0;
  return a;
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

// DLPack capsule owning a device [T, H, W, 3] uint8 buffer; freeing it (torch frees the tensor, or
// the capsule is dropped unconsumed) releases the buffer stream-ordered on its producing stream.
struct DeviceFramesCtx {
  DeviceFrames frames;
  int64_t shape[4];
};

void delete_managed(dl::ManagedTensor* m) {
  auto* c = static_cast<DeviceFramesCtx*>(m->manager_ctx);
  // A deleter cannot raise: a failure is counted (_C.device_free_errors()) and printed.
  const std::string err = free_device_frames(c->frames);
  if (!err.empty()) std::fprintf(stderr, "[eva_fast] %s\n", err.c_str());
  delete c;
  delete m;
}

py::capsule device_frames_capsule(const DeviceFrames& f) {
  auto* c = new DeviceFramesCtx{f, {f.T, f.H, f.W, 3}};
  auto* m = new dl::ManagedTensor{};
  m->dl_tensor.data = f.data;
  m->dl_tensor.device = {dl::kDLCUDA, f.device};
  m->dl_tensor.ndim = 4;
  m->dl_tensor.dtype = {dl::kDLUInt, 8, 1};
  m->dl_tensor.shape = c->shape;
  m->dl_tensor.strides = nullptr;
  m->dl_tensor.byte_offset = 0;
  m->manager_ctx = c;
  m->deleter = &delete_managed;
  return py::capsule(m, "dltensor", [](PyObject* cap) {
    // Called when the capsule dies; a consumer renames it "used_dltensor" and owns the tensor.
    if (PyCapsule_IsValid(cap, "dltensor")) {
      auto* mt = static_cast<dl::ManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
      if (mt && mt->deleter) mt->deleter(mt);
    }
  });
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

  py::class_<VideoInfo>(m, "VideoInfo", "Stream metadata from the container header and index (no decoding).")
      .def_readonly("path", &VideoInfo::path)
      .def_readonly("container", &VideoInfo::container)
      .def_readonly("codec", &VideoInfo::codec)
      .def_readonly("codec_long_name", &VideoInfo::codec_long_name)
      .def_readonly("profile", &VideoInfo::profile)
      .def_readonly("pixel_format", &VideoInfo::pixel_format)
      .def_readonly("bit_depth", &VideoInfo::bit_depth)
      .def_readonly("color_space", &VideoInfo::color_space)
      .def_readonly("color_range", &VideoInfo::color_range)
      .def_readonly("stream_index", &VideoInfo::stream_index)
      .def_readonly("video_stream_indices", &VideoInfo::video_stream_indices)
      .def_readonly("width", &VideoInfo::width)
      .def_readonly("height", &VideoInfo::height)
      .def_readonly("coded_width", &VideoInfo::coded_width)
      .def_readonly("coded_height", &VideoInfo::coded_height)
      .def_readonly("rotation_deg", &VideoInfo::rotation_deg)
      .def_readonly("duration_s", &VideoInfo::duration_s)
      .def_readonly("average_fps", &VideoInfo::average_fps)
      .def_readonly("r_fps", &VideoInfo::r_fps)
      .def_readonly("num_frames", &VideoInfo::num_frames)
      .def_readonly("num_frames_estimated", &VideoInfo::num_frames_estimated)
      .def_readonly("is_vfr", &VideoInfo::is_vfr)
      .def_readonly("start_pts_s", &VideoInfo::start_pts_s)
      .def_readonly("start_pts", &VideoInfo::start_pts)
      .def_property_readonly("time_base", [](const VideoInfo& i) { return py::make_tuple(i.tb_num, i.tb_den); })
      .def_readonly("keyframe_pts_s", &VideoInfo::keyframe_pts_s)
      .def_readonly("keyframes_from_index", &VideoInfo::keyframes_from_index)
      .def("__repr__", [](const VideoInfo& i) {
        return "VideoInfo('" + i.path + "', " + i.codec + " " + std::to_string(i.width) + "x" +
               std::to_string(i.height) + ", " + std::to_string(i.num_frames) + " frames)";
      });

  py::class_<DecodeStats>(m, "DecodeStats", "Decoder work of one call (or summed since open).")
      .def_readonly("decoded_frames", &DecodeStats::decoded_frames)
      .def_readonly("packets_sent", &DecodeStats::packets_sent)
      .def_readonly("seeks", &DecodeStats::seeks)
      .def_readonly("decode_errors", &DecodeStats::decode_errors)
      .def_readonly("skip_nonref_packets", &DecodeStats::skip_nonref_packets)
      .def_readonly("keyframe_backoffs", &DecodeStats::keyframe_backoffs)
      .def_readonly("decode_ms", &DecodeStats::decode_ms)
      .def_readonly("convert_ms", &DecodeStats::convert_ms)
      .def_readonly("gop_workers", &DecodeStats::gop_workers)
      .def_readonly("worker_failures", &DecodeStats::worker_failures)
      .def("__repr__", [](const DecodeStats& s) {
        return "DecodeStats(decoded_frames=" + std::to_string(s.decoded_frames) + ", seeks=" +
               std::to_string(s.seeks) + ", decode_errors=" + std::to_string(s.decode_errors) + ")";
      });

  py::class_<DecodeOutput>(m, "DecodeOutput", "Frames decoded for a list of times, in the order given.")
      .def_readonly("frames", &DecodeOutput::frames)
      .def_readonly("pts", &DecodeOutput::pts)
      .def_readonly("pts_s", &DecodeOutput::pts_s)
      .def_readonly("corrupt", &DecodeOutput::corrupt)
      .def_readonly("keyframe", &DecodeOutput::keyframe)
      .def_readonly("stats", &DecodeOutput::stats);

  py::class_<VideoDecoder>(m, "VideoDecoder")
      .def(py::init<const std::string&, int, int, int>(), py::arg("path"), py::arg("stream_index") = -1,
           py::arg("threads") = 0, py::arg("cuda_device") = -1, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("backend", [](const VideoDecoder& d) { return std::string(d.backend()); })
      .def_property_readonly("fallback_reason", [](const VideoDecoder& d) { return d.fallback_reason(); })
      .def_property_readonly("info", [](const VideoDecoder& d) { return d.info(); },
                             py::return_value_policy::copy)
      .def(
          "decode",
          [](VideoDecoder& d, const std::vector<double>& times_s, const std::string& mode, int height, int width,
             const std::string& filter, uintptr_t cuda_stream) {
            SelectMode sm = parse_mode(mode);
            ResizeFilter rf = parse_filter(filter);
            DecodeResult r;
            {
              py::gil_scoped_release release;
              r = d.decode(times_s, sm, height, width, rf, reinterpret_cast<void*>(cuda_stream));
            }
            DecodeOutput out;
            if (std::string(d.backend()) == "nvdec") {
              out.frames = device_frames_capsule(r.device_frames);
            } else {
              out.frames = own_frames(std::move(r.frames), r.T, r.H, r.W);
            }
            out.pts = to_array(r.pts);
            out.pts_s = to_array(r.pts_s);
            out.corrupt = bool_array(r.corrupt);
            out.keyframe = bool_array(r.keyframe);
            out.stats = r.stats;
            return out;
          },
          py::arg("times_s"), py::arg("mode") = "nearest", py::kw_only(), py::arg("height") = 0, py::arg("width") = 0,
          py::arg("filter") = "cubic", py::arg("cuda_stream") = 0,
          "Decode the frame for each time (seconds from the first frame). height/width (keyword-only): output "
          "size as displayed (0, 0 = native; each at most MAX_SIDE). Returns a DecodeOutput. NVDEC backend: 'frames' is a DLPack capsule of a "
          "CUDA uint8 [T, H, W, 3] tensor whose work is enqueued on cuda_stream (a CUstream handle, e.g. "
          "torch.cuda.current_stream().cuda_stream; 0 = the legacy default stream); CPU backend: a NumPy array.")
      .def(
          "decode_yuv",
          [](VideoDecoder& d, const std::vector<double>& times_s, const std::string& mode) {
            SelectMode sm = parse_mode(mode);
            std::vector<std::string> planes;
            {
              py::gil_scoped_release release;
              planes = d.decode_yuv(times_s, sm);
            }
            py::list out;
            for (auto& p : planes) out.append(py::bytes(p));
            return out;
          },
          py::arg("times_s"), py::arg("mode") = "nearest",
          "Test hook: each chosen frame's decoded planes (FFmpeg planar layout, the bytes framemd5 hashes).")
      .def("scan_frames",
           [](VideoDecoder& d) {
             std::vector<double> pts;
             std::vector<uint8_t> key;
             {
               py::gil_scoped_release release;
               d.scan_frames(&pts, &key);
             }
             return py::make_tuple(to_array(pts), bool_array(key));
           },
           "Demux-only scan: (pts_s float64 [N] sorted, seconds from the first frame; keyframe bool [N]).")
      .def_property_readonly("total_stats", [](const VideoDecoder& d) { return d.total_stats(); })
      .def_property_readonly("unclean_keyframes_s", &VideoDecoder::unclean_keyframes_s,
                             "Keyframes (seconds from the first frame) found not to be clean starts: decoding "
                             "from one concealed frames that a decode from an earlier keyframe reconstructed. "
                             "Shared by every decoder of the same file in this process.")
      .def_property("skip_nonref", &VideoDecoder::skip_nonref, &VideoDecoder::set_skip_nonref,
                    "Let the decoder drop non-reference frames far from every target (identical output).")
      .def_property("workers", &VideoDecoder::workers, &VideoDecoder::set_workers,
                    "Most decoders that share one request (GOP-parallel decoding; 1 = never split; 1..64).");

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
  m.def("_set_yuv444_fast", &set_yuv444_fast, py::arg("enabled"),
        "Test hook: allow (default) or forbid the AVX2 yuv444p -> RGB24 converter (forbidden: swscale converts). "
        "Returns the previous value.");
  m.def("_yuv444_fast_available", &yuv444_fast_available, py::arg("colorspace"), py::arg("full_range"),
        "Whether the yuv444p converter is used for this swscale matrix (SWS_CS_*) and range here.");
  m.def("_yuv444_mismatches_exhaustive", &yuv444_mismatches_exhaustive, py::arg("colorspace"),
        py::arg("full_range"), py::call_guard<py::gil_scoped_release>(),
        "Test hook: bytes that differ between the yuv444p converter and swscale over all 2^24 (Y, U, V).");
  m.def(
      "cuda_yuv420_to_rgb",
      [](uintptr_t y, uintptr_t uv, int y_pitch, int uv_pitch, int height, int width, int bit_depth,
         int bytes_per_sample, int matrix_id, bool full_range, uintptr_t out, int out_h, int out_w,
         const std::string& filter, int rotation_deg, uintptr_t stream) {
        if (width <= 0 || height <= 0 || out_w <= 0 || out_h <= 0) {
          throw std::invalid_argument("sizes (height, width) must be positive, got src (" + std::to_string(height) +
                                      ", " + std::to_string(width) + "), out (" + std::to_string(out_h) + ", " +
                                      std::to_string(out_w) + ")");
        }
        if (bytes_per_sample != 1 && bytes_per_sample != 2) {
          throw std::invalid_argument("bytes_per_sample must be 1 or 2, got " + std::to_string(bytes_per_sample));
        }
        if (bit_depth < 8 || bit_depth > 8 * bytes_per_sample) {
          throw std::invalid_argument("bit_depth " + std::to_string(bit_depth) + " does not fit " +
                                      std::to_string(bytes_per_sample) + "-byte samples");
        }
        if (rotation_deg != 0 && rotation_deg != 90 && rotation_deg != 180 && rotation_deg != 270) {
          throw std::invalid_argument("rotation_deg must be 0, 90, 180 or 270, got " + std::to_string(rotation_deg));
        }
        ResizeFilter rf = parse_filter(filter);
        py::gil_scoped_release release;
        convert_yuv420_on_device(reinterpret_cast<const void*>(y), reinterpret_cast<const void*>(uv), y_pitch, uv_pitch,
                                 height, width, bit_depth, bytes_per_sample, matrix_id, full_range,
                                 reinterpret_cast<void*>(out), out_h, out_w, rf, rotation_deg,
                                 reinterpret_cast<void*>(stream));
      },
      py::arg("y"), py::arg("uv"), py::kw_only(), py::arg("y_pitch"), py::arg("uv_pitch"), py::arg("height"), py::arg("width"),
      py::arg("bit_depth"), py::arg("bytes_per_sample"), py::arg("matrix_id"), py::arg("full_range"), py::arg("out"),
      py::arg("out_h"), py::arg("out_w"), py::arg("filter") = "cubic", py::arg("rotation_deg") = 0,
      py::arg("stream") = 0,
      "Run the CUDA colour-convert + resize kernel on 4:2:0 planes in device memory (raw pointers, e.g. "
      "tensor.data_ptr()); writes uint8 [out_h, out_w, 3] at out, enqueued on stream. Test/diagnostic entry.");
  m.def(
      "cuda_kernel_emulate",
      [](py::array y, py::array uv, int bit_depth, int matrix_id, bool full_range, int out_h, int out_w,
         const std::string& filter, int rotation_deg) {
        const int bps = static_cast<int>(y.itemsize());
        if (y.ndim() != 2 || uv.ndim() != 3 || uv.shape(2) != 2 || uv.itemsize() != bps || (bps != 1 && bps != 2) ||
            !(y.flags() & py::array::c_style) || !(uv.flags() & py::array::c_style)) {
          throw std::invalid_argument("expected C-contiguous y [H, W] and uv [H/2, W/2, 2] of uint8 or uint16");
        }
        const int h = static_cast<int>(y.shape(0)), w = static_cast<int>(y.shape(1));
        if (uv.shape(0) != (h + 1) / 2 || uv.shape(1) != (w + 1) / 2 || out_h <= 0 || out_w <= 0) {
          throw std::invalid_argument("uv must be [(H+1)/2, (W+1)/2, 2] and the output size positive");
        }
        if (rotation_deg != 0 && rotation_deg != 90 && rotation_deg != 180 && rotation_deg != 270) {
          throw std::invalid_argument("rotation_deg must be 0, 90, 180 or 270, got " + std::to_string(rotation_deg));
        }
        ResizeFilter rf = parse_filter(filter);
        py::array_t<uint8_t> out({static_cast<py::ssize_t>(out_h), static_cast<py::ssize_t>(out_w), static_cast<py::ssize_t>(3)});
        emulate_kernel_on_host(y.data(), uv.data(), w * bps, static_cast<int>(uv.shape(1)) * 2 * bps, h, w, bit_depth, bps,
                               matrix_id, full_range, out.mutable_data(), out_h, out_w, rf, rotation_deg);
        return out;
      },
      py::arg("y"), py::arg("uv"), py::kw_only(), py::arg("bit_depth"), py::arg("matrix_id"), py::arg("full_range"), py::arg("out_h"),
      py::arg("out_w"), py::arg("filter") = "cubic", py::arg("rotation_deg") = 0,
      "Run the CUDA colour-convert + resize kernel's per-thread code serially on the CPU (NV12: uint8 planes; "
      "P016: uint16 planes with samples in the high bits). For tests without a GPU; CUDA builds only.");
  m.def(
      "nvdec_matrix_id",
      [](const std::string& codec, int container_matrix, int signal_matrix) {
        const AVCodecDescriptor* d = avcodec_descriptor_get_by_name(codec.c_str());
        if (!d) throw py::value_error("unknown codec name '" + codec + "' (FFmpeg's names: h264, hevc, vp9, ...)");
        return eva_fast::nvdec_matrix_id(d->id, container_matrix, signal_matrix);
      },
      py::arg("codec"), py::arg("container_matrix"), py::arg("signal_matrix"),
      "The colour matrix (H.273 / AVColorSpace id) the NVDEC path converts with: the container's / "
      "libavcodec's when specified, else NVDEC's video_signal_description for codecs whose headers carry "
      "H.273 ids there (h264, hevc, mpeg2video), else unspecified (swscale's default, as the CPU path).");
  m.def("cuda_color_route", &cuda_color_route, py::arg("matrix_id"), py::arg("full_range"), py::arg("bit_depth"),
        py::arg("height"),
        "The CUDA kernel's colour route for pictures of this matrix (H.273 id), range, bit depth and height: "
        "'swscale_int' (bit-identical to the CPU path's swscale), 'float_nearest' or 'float_vinterp'. CUDA builds only.");
  m.def(
      "device_free_errors",
      []() {
        std::string last;
        const int64_t n = device_free_errors(&last);
        return py::make_tuple(n, last);
      },
      "(count, last message) of device frame buffers whose stream-ordered free failed since the process started "
      "(DLPack deleters cannot raise; each failure is also printed to stderr).");
  m.def(
      "_free_device_frames",
      [](uintptr_t data, int device, uintptr_t stream) {
        DeviceFrames f;
        f.data = reinterpret_cast<void*>(data);
        f.device = device;
        f.stream = reinterpret_cast<void*>(stream);
        f.T = 1;
        py::gil_scoped_release release;
        return free_device_frames(f);
      },
      py::arg("data"), py::arg("device"), py::arg("stream") = 0,
      "Test hook: free_device_frames on a raw device pointer; returns '' or the error it reported.");
  m.attr("MAX_SIDE") = kMaxSide;
  m.def("default_gop_workers", []() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); },
        "Default GOP-run decoders of a CPU request: the machine's hardware threads.");
  m.def("default_gpu_workers", &nvdec_default_workers, py::arg("cuda_device"),
        "Default NVDEC decoders of one request on that GPU: its NVDEC engines by model (1 without NVDEC).");
  m.def("_gpu_workers_for_name", &gpu_workers_for_name, py::arg("name"),
        "The NVDEC-engine table behind default_gpu_workers, by the driver's GPU name.");
  m.def("cuda_device_name", &cuda_device_name, py::arg("cuda_device"), "The driver's name of a GPU ('' without one).");
  m.def("open_decoders", &StreamDecoder::live,
        "Stream decoders alive in the process (readers' main decoders and their GOP-run decoders).");
  m.def("_fail_next_gop_runs", &fail_next_gop_runs, py::arg("n"),
        "Test hook: the next n GOP runs fail after half of their targets (as a lost NVDEC session); the "
        "request's main decoder redoes each.");
  m.def(
      "_split_gop_runs",
      [](const std::vector<int64_t>& target_pts, const std::vector<int64_t>& keyframes, int64_t frame_dur,
         int max_runs) {
        std::vector<Target> t(target_pts.size());
        for (size_t i = 0; i < t.size(); ++i) t[i] = Target{target_pts[i], static_cast<int64_t>(i)};
        std::sort(t.begin(), t.end());
        std::vector<int64_t> keys(keyframes);
        std::sort(keys.begin(), keys.end());
        const GopWork w = gop_work(t, keys, frame_dur);
        py::list runs;
        for (const auto& run : split_gop_runs(t, w, max_runs)) {
          py::list slots;
          for (const Target& x : run) slots.append(x.slot);
          runs.append(slots);
        }
        return runs;
      },
      py::arg("target_pts"), py::arg("keyframes"), py::arg("frame_dur"), py::arg("max_runs"),
      "Test hook: the GOP runs VideoDecoder would decode in parallel for these target pts (positions in "
      "target_pts, per run, in pts order); [] = one decoder.");
  m.def(
      "_nonref_packets",
      [](const std::string& path, int stream_index) {
        std::vector<std::pair<int64_t, bool>> r;
        {
          py::gil_scoped_release release;
          r = classify_packets(path, stream_index);
        }
        std::vector<int64_t> pts;
        std::vector<uint8_t> disposable;
        for (auto& x : r) {
          pts.push_back(x.first);
          disposable.push_back(x.second ? 1 : 0);
        }
        return py::make_tuple(to_array(pts), bool_array(disposable));
      },
      py::arg("path"), py::arg("stream_index") = -1,
      "Test hook: every packet's pts (stream time base, demux order) and whether the NVDEC device may leave "
      "it out as a non-reference picture (H.264 / HEVC, after the Annex B filter; nal_ref.h).");
  py::class_<WorkerBudget>(m, "_WorkerBudget", "Test hook: the fair-share rule of GOP-run decoders per device.")
      .def(py::init<int>(), py::arg("budget"))
      .def("acquire", &WorkerBudget::acquire, py::arg("want"))
      .def("release", &WorkerBudget::release, py::arg("granted"))
      .def_property_readonly("budget", &WorkerBudget::budget)
      .def_property_readonly("in_use", &WorkerBudget::in_use)
      .def_property_readonly("requests", &WorkerBudget::requests);

  m.def("nvdec_sessions", []() {
    py::dict d;
    d["cached"] = nvdec_cached_sessions();
    d["created"] = nvdec_sessions_created();
    return d;
  }, "NVDEC decoder sessions: idle ones cached for reuse, and how many were ever created.");

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
#ifdef EVA_FAST_CUDA_VERSION
    d["cuda_version"] = EVA_FAST_CUDA_VERSION;
    d["nvdec"] = "runtime-loaded (libcuda.so.1, libnvcuvid.so.1 via ffnvcodec loader)";
#else
    d["cuda_version"] = "";
    d["nvdec"] = "not built (EVA_FAST_CUDA=OFF or no nvcc)";
#endif
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
