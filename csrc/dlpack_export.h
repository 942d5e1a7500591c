// Minimal DLPack (v0.8 ABI, github.com/dmlc/dlpack, "dltensor" PyCapsule protocol) structures to
// hand a device buffer to torch.from_dlpack without linking libtorch. Only what we produce:
// a C-contiguous uint8 tensor on a CUDA device.
#pragma once

#include <cstdint>

namespace eva_fast {
namespace dl {

enum DeviceType : int32_t { kDLCPU = 1, kDLCUDA = 2 };
enum DataTypeCode : uint8_t { kDLInt = 0, kDLUInt = 1, kDLFloat = 2 };

struct Device {
  int32_t device_type;
  int32_t device_id;
};
struct DataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct Tensor {
  void* data;
  Device device;
  int32_t ndim;
  DataType dtype;
  int64_t* shape;
  int64_t* strides;  // null = C-contiguous
  uint64_t byte_offset;
};
struct ManagedTensor {
  Tensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(ManagedTensor* self);
};

}  // namespace dl
}  // namespace eva_fast
