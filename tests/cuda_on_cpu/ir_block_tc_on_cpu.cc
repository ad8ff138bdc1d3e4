// The CUDA kernel ir_block_tc, compiled as C++ for the CPU device (cpu_device.h) against the
// stand-in CUDA headers in include/.
#include "backends/cuda/kernels/ir_block_tc.cu"
