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
/* The same on CUDA device `device` (0-based, as CUDA numbers them; MM_ERR_INVALID
 * when there is no such device). The device is current on the calling thread
 * when it returns; load and destroy make it current themselves. Any other
 * thread must call mm_cuda_backend_use before its first op (the CUDA runtime's
 * current device is per thread). */
enum mm_status mm_cuda_backend_create_on(int device, bool fp32, struct mm_backend *b,
                                         struct mm_err *err);
/* Makes b's device current on the calling thread. b must be a CUDA backend. */
void mm_cuda_backend_use(const struct mm_backend *b);
/* CUDA devices present (0 without a driver, a device, or CUDA in the build). */
int mm_cuda_device_count(void);

/* The device's ceilings for `mmmamba bench`: streaming read bandwidth (TB/s,
 * a 4 GiB buffer) and the cuBLASLt bf16 GEMM rate at 8192^3 (TFLOP/s, random
 * data). Uses about 4.5 GB of device memory for the duration of the call. */
enum mm_status mm_cuda_measure(double *read_tbs, double *gemm_tflops, struct mm_err *err);

#endif
