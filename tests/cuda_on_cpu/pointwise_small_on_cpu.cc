// The CUDA kernel pointwise_small, compiled as C++ for the CPU device (cpu_device.h) against the
// stand-in CUDA headers in include/.
#include "backends/cuda/kernels/pointwise_small.cu"
