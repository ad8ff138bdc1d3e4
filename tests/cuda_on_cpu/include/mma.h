// Stand-in for CUDA's WMMA header when kernels run on the CPU (cuda_runtime.h beside it). As on
// the GPU, a fragment is spread over the warp's 32 threads, each holding 8 of a 16x16 tile's
// elements (float16 values as floats); the layout is the stand-in's own, as the GPU's is the
// implementation's: thread l holds elements 8l to 8l + 7 in row-major order. mma_sync is warp-wide
// (the device gathers the tiles, multiplies and hands each thread its part). Only the 16x16x16
// float16 shapes with float accumulators exist.
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
  static constexpr int num_elements = M * N / 32;
  float x[num_elements];  // this thread's elements of the tile
};

// This thread's elements of a 16x16 tile, in row-major order: 8 from the first.
inline unsigned FirstElementOfThread() { return lipsync::cuda_on_cpu::LaneId() * 8; }

template <typename Use, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, __half, Layout>& f, const __half* p, unsigned ld) {
  lipsync::cuda_on_cpu::NoteWmmaAccess(std::is_same_v<Use, matrix_a> ? 'a' : 'b', p, ld,
                                       std::is_same_v<Layout, row_major>);
  const unsigned first = FirstElementOfThread();
  for (unsigned i = 0; i < 8; ++i) {
    const unsigned r = (first + i) / 16, c = (first + i) % 16;
    // A row-major tile is read by rows; a column-major one holds element (r, c) at c * ld + r.
    f.x[i] = __half2float(std::is_same_v<Layout, row_major> ? p[r * ld + c] : p[c * ld + r]);
  }
}

inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) {
  for (float& e : f.x) e = v;
}

inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
                     const fragment<matrix_a, 16, 16, 16, __half, row_major>& a,
                     const fragment<matrix_b, 16, 16, 16, __half, col_major>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  lipsync::cuda_on_cpu::WmmaProduct(d.x, a.x, b.x, c.x);
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ld, layout_t layout) {
  lipsync::cuda_on_cpu::NoteWmmaAccess('c', p, ld, layout == mem_row_major);
  const unsigned first = FirstElementOfThread();
  for (unsigned i = 0; i < 8; ++i) {
    const unsigned r = (first + i) / 16, c = (first + i) % 16;
    (layout == mem_row_major ? p[r * ld + c] : p[c * ld + r]) = f.x[i];
  }
}

}  // namespace nvcuda::wmma
