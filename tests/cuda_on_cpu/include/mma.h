// Stand-in for CUDA's WMMA header when kernels run on the CPU (cuda_runtime.h beside it). The
// fragment layout is the implementation's own on the GPU; here every thread holds the whole
// 16x16 tile (float16 values as floats), so loads, products and stores give what the GPU's do.
// Only the 16x16x16 float16 shapes with float accumulators exist.
#pragma once

#include <type_traits>

#include "cuda_fp16.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  float x[M * N];  // element (r, c) at r * N + c
};

template <typename Use, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, __half, Layout>& f, const __half* p, unsigned ld) {
  for (unsigned r = 0; r < 16; ++r) {
    for (unsigned c = 0; c < 16; ++c) {
      // A row-major tile is read by rows; a column-major one holds element (r, c) at c * ld + r.
      f.x[r * 16 + c] =
          __half2float(std::is_same_v<Layout, row_major> ? p[r * ld + c] : p[c * ld + r]);
    }
  }
}

inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) {
  for (float& e : f.x) e = v;
}

// Warp-wide: the device computes the product once every thread of the warp has arrived with the
// same tiles.
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
                     const fragment<matrix_a, 16, 16, 16, __half, row_major>& a,
                     const fragment<matrix_b, 16, 16, 16, __half, col_major>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  lipsync::cuda_on_cpu::WmmaProduct(d.x, a.x, b.x, c.x);
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ld, layout_t layout) {
  for (unsigned r = 0; r < 16; ++r) {
    for (unsigned c = 0; c < 16; ++c) {
      (layout == mem_row_major ? p[r * ld + c] : p[c * ld + r]) = f.x[r * 16 + c];
    }
  }
}

}  // namespace nvcuda::wmma
