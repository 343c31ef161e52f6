/* cuda_backend.h: the CUDA backend: weights resident on one GPU, the ops of
 * backend.h as kernels (kernels/) and cuBLASLt GEMMs, in bf16 with fp32
 * accumulation (serving) or all fp32 (the exact mode tests compare with the
 * CPU reference). Built only when configure finds CUDA (MM_HAVE_CUDA). */
#ifndef MM_ENGINE_CUDA_BACKEND_H
#define MM_ENGINE_CUDA_BACKEND_H

#include <stdbool.h>

#include "base/status.h"
#include "engine/backend.h"

/* fp32: float weights and activations instead of bf16. MM_ERR_UNSUPPORTED
 * when there is no CUDA device (or the build has no CUDA). The result is
 * owned by the caller and freed with b->ops->destroy(b->ctx). Every op must
 * then be called from one thread. */
enum mm_status mm_cuda_backend_create(bool fp32, struct mm_backend *b, struct mm_err *err);

/* The device's ceilings for `mmmamba bench`: streaming read bandwidth (TB/s,
 * a 4 GiB buffer) and the cuBLASLt bf16 GEMM rate at 8192^3 (TFLOP/s, random
 * data). Uses about 4.5 GB of device memory for the duration of the call. */
enum mm_status mm_cuda_measure(double *read_tbs, double *gemm_tflops, struct mm_err *err);

#endif
