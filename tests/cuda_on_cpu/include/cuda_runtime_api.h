// Stand-in for the CUDA runtime API header when kernels run on the CPU: the same as
// cuda_runtime.h beside it.
#pragma once

#include "cuda_runtime.h"
