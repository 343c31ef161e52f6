/* cpu_backend.h: the fp32 CPU backend, the reference every other backend is
 * tested against. Weights are converted to fp32 at load; matmuls run on a
 * thread pool. */
#ifndef MM_ENGINE_CPU_BACKEND_H
#define MM_ENGINE_CPU_BACKEND_H

#include "base/status.h"
#include "engine/backend.h"

/* n_threads: 0 = all online CPUs. The result is owned by the caller and
 * freed with b->ops->destroy(b->ctx). */
enum mm_status mm_cpu_backend_create(int n_threads, struct mm_backend *b, struct mm_err *err);

#endif
