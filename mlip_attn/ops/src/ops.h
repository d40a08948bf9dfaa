/* mlip_attn compiled torch ops: the C interface of the cross-process sum hook.
 *
 * The ops (registered with the dispatcher under the namespace `mlip_attn`, see ops.cpp):
 *   painn_message_orders(phi, features[], geometry[], rho, weight, receivers, senders, first,
 *       chunk) -> (ds, d[]): PaiNN's message over edge chunks for any list of equivariant
 *       orders (vectors, rank-2 tensors), with a recomputing backward
 *       (mlip_attn/nn/painn_message.py has the maths and the shapes);
 *   allreduce_sum(x) -> x summed over all processes: the hook below when one is set (the LAMMPS
 *       pair style sets an MPI_Allreduce on its communicator around each call of a global model
 *       on several ranks), else the identity. Its backward is allreduce_sum of the gradient;
 *   sums_across_processes() -> bool: whether such a hook is set (the structure is split).
 *
 * This header includes nothing from torch or LAMMPS: the LAMMPS side of the plugin passes its
 * MPI callback through it.
 */
#ifndef MLIP_ATTN_OPS_H
#define MLIP_ATTN_OPS_H

#include <cstdint>

extern "C" {
// Sums `count` values at `data` (float64 if is_double, else float32) in place over all
// processes; returns 0 on success.
typedef int (*mlip_attn_allreduce_fn)(void *data, int64_t count, int is_double, void *context);

// Install (fn != nullptr) or remove (fn == nullptr) the hook used by mlip_attn::allreduce_sum.
void mlip_attn_set_allreduce(mlip_attn_allreduce_fn fn, void *context);

// Number of hook calls since the process started (diagnostics and tests).
int64_t mlip_attn_allreduce_calls();
}

#endif
