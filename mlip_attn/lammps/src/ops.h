/* mlip_attn compiled torch ops: the C interface of the cross-process sum hook.
 *
 * The ops (registered with the dispatcher under the namespace `mlip_attn`, see ops.cpp):
 *   painn_message(phi, v, rho, unit, weight, receivers, senders, first, chunk) -> (ds, dv)
 *       PaiNN's l <= 1 message over edge chunks, with a recomputing backward
 *       (mlip_attn/nn/painn_message.py has the maths and the shapes);
 *   allreduce_sum(x) -> x summed over all processes: the hook below when one is set (the LAMMPS
 *       pair style sets an MPI_Allreduce on its communicator around each model call), else the
 *       identity. Its backward is allreduce_sum of the gradient.
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
