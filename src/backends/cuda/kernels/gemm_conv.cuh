// Convolutions with groups == 1 as one matrix product: out[M, Cout] = A[M, K] * W[Cout, K]^T,
// M = batch * oh * ow output pixels, K = kh * kw * Cin. For a 1x1 stride-1 convolution A is the
// NHWC input itself; otherwise A is gathered from the input on the fly (implicit im2col, zero
// outside the image). The epilogue adds the bias and the optional residual, applies the
// activation and stores T.
//
// half: tensor cores (WMMA 16x16x16, float accumulation). float: a CUDA-core kernel with float
// accumulation, so float results stay within float rounding of the exact sum (no TF32).
#pragma once

#include "backends/cuda/kernels/conv_types.cuh"

namespace lipsync::cuda {

// Needs geometry.groups == 1. Returns the launch error, if any.
template <typename T>
cudaError_t LaunchGemmConv(const ConvGeometry& geometry, const ConvTensors<T>& tensors, Act act,
                           cudaStream_t stream);

}  // namespace lipsync::cuda
