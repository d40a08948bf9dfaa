/* Euclidean fast attention (mlip_attn/attention/efa.py) as fused CPU loops: the two costly
 * parts of the block, without the tensors ATen operations pass between them.
 *
 * 1. The Lebedev form's rotation (ERoPE on the grid): for atom n, grid direction u_g (weight
 *    s_g) and channel pair (a, b) = x[n, c, 2k : 2k + 2],
 *        θ = ω_k (u_g · r_n),   out[n, g, c, 2k] = s_g (a cos θ − b sin θ),
 *                               out[n, g, c, 2k+1] = s_g (a sin θ + b cos θ),
 *    computed per atom with cos/sin of the K angles in registers (no (N, G, K) angle, cos and
 *    sin tensors, no stack/cat), and its first derivatives g_x (N, C, D), g_r (N, 3).
 * 2. The switched (separable, physics 2) exact form: for atoms m, n of one structure with
 *    r = |r_m − r_n| < r_max (n = m included),
 *        A_mn = S(r) Σ_k sinc(ω_k r) Σ_c Σ_t q[m, c, 2k+t] k[n, c, 2k+t],   y_m = Σ_n A_mn v_n,
 *    S the C² switch from r_max/2 to r_max (mlip_attn/nn/switching.py); r_max ≤ 0: every pair
 *    of the structure and S = 1 (the unswitched exact form). Atoms go in tiles of 16 along a
 *    Morton curve; a row atom meets a column tile whose box comes within r_max with the tile's
 *    atoms in the vector lanes (PairTiles), so the loops vectorise over partners and nothing
 *    per pair is stored: O(N) memory (and the shares' column sums, one slot per share and
 *    column tile it reaches), O(pairs·(C·D + V)) time; the N×N×K tensors of the ATen
 *    form are never formed. Each pair of different tiles is visited once, and the partner's
 *    terms go into per-share column sums (PairSchedule); first derivatives g_q, g_k, g_v, g_r.
 *
 * The rotations work on a range of atoms [begin, end) and write only those atoms' rows; the
 * pair loops on a share of the row tiles (PairSchedule). Layouts row-major and contiguous.
 * Angles, sinc and switch values are computed in float64 for either T. No torch in here
 * (-O3, AVX2 / AVX-512 clones chosen at run time).
 */
#ifndef MLIP_ATTN_EFA_KERNELS_H
#define MLIP_ATTN_EFA_KERNELS_H

#include <cstdint>
#include <vector>

namespace mlip_attn_efa {

// ω_k = ω_0 + k Δ for all k (to 1e-12 relative): cos/sin of the K angles by the
// angle-addition recursion from one cos/sin pair each (else one std::sin/cos per angle)
struct Frequencies {
  std::vector<double> omega, inverse;   // inverse: 1/ω_k (0 for ω_k = 0)
  bool arithmetic = false;
  // ω_0 = 0 (physics 1) or ω_0 = Δ (physics 2): one sincos per angle set
  enum class Start { other, zero, step } start = Start::other;
  explicit Frequencies(std::vector<double> w);
};

template <typename T> struct Rotation {
  const T *x = nullptr;          // (N, C, D)
  const T *centred = nullptr;    // (N, 3) Å
  const double *dirs = nullptr;  // (G, 3)
  const double *scale = nullptr; // (G,)
  const Frequencies *freq = nullptr;  // K = D / 2
  int64_t G = 0, C = 0, D = 0;
};

// out (N, G·C·D) rows [begin, end)
template <typename T> void rotate_forward(const Rotation<T> &rot, int64_t begin, int64_t end,
                                          T *out);
// grad (N, G·C·D) -> g_x (N, C, D), g_centred (N, 3): rows [begin, end), each nullptr if not
// wanted (written, not summed into)
template <typename T> void rotate_backward(const Rotation<T> &rot, int64_t begin, int64_t end,
                                           const T *grad, T *g_x, T *g_centred);

// The Lebedev form's grid sums with the rotation fused into them (efa_ops.cpp, efa_grid_*):
// atom n's rotated features R_n (P = 2·C·K·G) in the layout [c][t][k][g], t = 0, 1 the two
// halves of channel pair k, (a, b) = x[n, c, 2k : 2k + 2]:
//     R_n[c][0][k][g] = s_g (a cos θ − b sin θ),   R_n[c][1][k][g] = s_g (a sin θ + b cos θ),
//     θ = ω_k (u_g · r_n),
// a permutation of efa_rotate's [g][c][2k + t]; the sums S = Σ_n R_nᵀ v_n and the products
// R_n S take only this layout (S is internal to the ops and the sum across processes). The
// loops run over the grid directions (vectorised), with cos/sin in float64 from a branch-free
// polynomial (one per direction, and the angle-addition recursion over arithmetic ω_k). The
// inputs are efa_rotate's (Rotation).
// R of atoms [begin, end) into out ((end − begin), P): out's first row is atom begin's
template <typename T> void grid_rotate(const Rotation<T> &grid, int64_t begin, int64_t end, T *out);
// grad ((end − begin), P) of those rows -> g_x (N, C, D), g_centred (N, 3): their rows [begin,
// end) written, each nullptr if not wanted; rows, if not nullptr: R as grid_rotate's out, from
// the same cos/sin (a backward needs both)
template <typename T> void grid_rotate_backward(const Rotation<T> &grid, int64_t begin, int64_t end,
                                                const T *grad, T *g_x, T *g_centred, T *rows);

template <typename T> struct Pairs {
  const T *q = nullptr, *k = nullptr;    // (N, C·D)
  const T *val = nullptr;                // (N, V)
  const T *positions = nullptr;          // (N, 3) Å
  const int64_t *batch = nullptr;        // (N,), any order
  const Frequencies *freq = nullptr;     // K = D / 2
  double r_max = 0.0;                    // ≤ 0: no switch, every pair of a structure
  int64_t C = 0, D = 0, V = 0;
};

// The pair loops' plan: atoms sorted by structure and along a Morton curve into tiles of
// kPairLanes (the lanes of the loops), each row tile with the column tiles of its structure
// whose bounding boxes come within r_max (all of them for r_max ≤ 0), and the tiles'
// positions and features transposed to [channel][lane] (zero in padding lanes). O(N) memory
// (the tile pairs, O(tiles²) to find, are the only list).
//
// Row tile I takes the tile pairs (I, J ≥ I). Its own tile's pairs (J = I) are visited from
// both ends; a pair of different tiles (J > I) once, from row i, which writes row i and adds
// the partner j's terms into column sums [channel][lane] of tile J. The row tiles are dealt
// into shares (runs of about equal work, one per thread); a share has its own column sums, a
// slot per column tile it reaches, so shares run in parallel; add_column_sums adds the slots
// into the outputs once all shares are done. Memory O(N + slots · width).
constexpr int64_t kPairLanes = 16;
struct TileGeometry {
  int64_t count = 0;
  std::vector<int64_t> atoms;         // (count · kPairLanes), −1 in padding lanes
  std::vector<int64_t> start, nbr;    // CSR: row tile I's column tiles nbr[start[I] : start[I + 1]]
};
// the tiles and their pairs within r_max (also the ATen form's pair list, efa_ops.cpp)
template <typename T> TileGeometry pair_tile_geometry(const T *positions, const int64_t *batch,
                                                      int64_t N, int64_t B, double r_max);
struct PairSchedule {
  std::vector<int64_t> share_start;   // share s: row tiles [share_start[s], share_start[s + 1])
  std::vector<int64_t> slot;          // per tile pair n (as nbr): the column sums' slot of its
                                      // column tile in its row tile's share; −1 for J ≤ I
  std::vector<int64_t> share_slot_start;   // share s: slots [share_slot_start[s], … [s + 1])
  int64_t slots = 0;
  std::vector<int64_t> tile_slot_start, tile_slots;   // CSR: tile J's slots
};
template <typename T> struct PairTiles : TileGeometry, PairSchedule {
  std::vector<T> x, q, k, v, g;       // per tile (3 | C·D | C·D | V | V) × kPairLanes; v and g
                                      // (g_y) only for a backward
  std::vector<T> v_rows, g_rows;      // per tile kPairLanes × V, row-major: v_rows for a
                                      // forward, g_rows (g_y) for a backward
};
// g_y (N, V) for a backward, else nullptr; at most `shares` shares (≥ 1, ≤ the tiles), fewer
// where the column sums would take more than max_slots slots (one share takes any number)
template <typename T> PairTiles<T> plan_pair_tiles(const Pairs<T> &p, int64_t N, int64_t B,
                                                   const T *g_y, int64_t shares,
                                                   int64_t max_slots);

// share s of y (N, V): the rows of its row tiles' atoms written, the partners' terms into
// columns (slots, V, kPairLanes), shared by all shares, each share zeroing and filling its own
// slots
template <typename T> void pairs_forward(const Pairs<T> &p, const PairTiles<T> &tiles,
                                         int64_t share, T *y, T *columns);
// share s of g_y (N, V) -> g_q, g_k (N, C·D), g_val (N, V), g_positions (N, 3): the rows of its
// row tiles' atoms written, each nullptr if not wanted (the plan made with g_y); the partners'
// terms into columns (slots, W, kPairLanes), [g_q | g_k | g_val] of the wanted ones only
// (W = C·D·(g_q? + g_k?) + V·g_val?), and column_positions (slots, 3, kPairLanes) if g_pos,
// each share zeroing and filling its own slots
template <typename T> void pairs_backward(const Pairs<T> &p, const PairTiles<T> &tiles,
                                          int64_t share, const T *g_y, T *g_q, T *g_k,
                                          T *g_val, T *g_pos, T *columns,
                                          double *column_positions);
// out (N, width) += the column sums: channels [offset, offset + width) of sums (slots, stride,
// kPairLanes), for the atoms of tiles [begin, end)
template <typename T, typename S> void add_column_sums(const PairTiles<T> &tiles, const S *sums,
                                                       int64_t stride, int64_t offset,
                                                       int64_t width, int64_t begin,
                                                       int64_t end, T *out);

}    // namespace mlip_attn_efa

#endif
