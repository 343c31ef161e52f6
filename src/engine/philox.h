/* philox.h: the counter-based random numbers of the sampler, Philox4x32-10
 * (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11; the
 * Random123 library's known-answer vectors are in the test).
 *
 * Design: a draw is a pure function of (key, counter), so a request's random
 * stream does not depend on the batch it ran in or the backend it ran on. The
 * CUDA sampler kernel carries a device twin of these few lines; the test pins
 * both to the same vectors. */
#ifndef MM_ENGINE_PHILOX_H
#define MM_ENGINE_PHILOX_H

#include <stdint.h>

/* out = Philox4x32 with 10 rounds of ctr under key. */
void mm_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* The sampler's uniform draw in [0, 1): key = {seed low word, seed high
 * word}, counter = {counter, stream, 0, 0}, u = (first output word >> 8) * 2^-24
 * (24 bits: exactly representable as a float). */
float mm_philox_uniform(uint64_t seed, uint32_t counter, uint32_t stream);

#endif
