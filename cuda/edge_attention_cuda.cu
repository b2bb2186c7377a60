// CUDA launcher of edge attention: launch structure only; the math is in edge_attention_math.h.
//
// One warp per (destination row, head) in the forward and the destination pass of the backward,
// one warp per (source row, head) in the source pass. The warp is cut into P = 32 / G lane groups
// of G lanes; lane l of a group holds the slice [8 l, 8 l + 8) of a row (16-byte loads where the
// slice is whole and aligned), so G = 8 lanes cover a head dim of 64. The groups take the row's
// edges in turn (edge e goes to group (e - start) mod P), so P edges are in flight at once and a
// dot product costs log2(G) shuffles instead of a whole-warp reduction per edge. In the forward
// each group keeps its own streaming softmax; the P states are merged at the end with the same
// softmax_merge the CPU launcher uses for split rows. Accumulation in fp32 (fp64 for fp64). No
// atomics: every output row is written by one warp, in a fixed order, so results are
// deterministic. Optional per-edge key / value terms are read at the edge's own row next to k_j /
// v_j; their gradients are written by the destination pass (one warp per destination row owns
// its edges).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "edge_attention_checks.h"
#include "edge_attention_math.h"

namespace graphattn {
namespace {

using namespace math;

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;
constexpr int kSlice = 8;  // elements of a row per lane: head dims up to 32 * 8 = 256
constexpr unsigned kFull = 0xffffffffu;

// Blocks per multiprocessor the kernels are compiled for: 8 (<= 64 registers a thread, 32 warps) for
// 16- and 32-bit inputs, measured faster than the compiler's own choice of ~80 registers (24 warps)
// on an H200 (window N = 65536, K = 64, D = 64: forward 1.43 -> 1.15 ms, forward + backward 3.9 ->
// 3.5 ms); 4 for float64, whose slices need twice the registers and would spill.
template <typename scalar_t>
constexpr int kMinBlocks = sizeof(scalar_t) <= 4 ? 8 : 4;

// Sum over the G lanes of each group (aligned segments of the warp); every lane of the warp calls
// it. Then the group's first lane's value to the whole group, so every lane of a group provably
// takes the same softmax branch.
template <int G, typename T>
__device__ __forceinline__ T group_sum(T x) {
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) x += __shfl_xor_sync(kFull, x, o);
  if constexpr (G > 1) x = __shfl_sync(kFull, x, 0, G);
  return x;
}

// Sum of the same lane over the P groups (the partial gradients of the edge streams); group 0's
// lanes hold the totals.
template <int G, typename T>
__device__ __forceinline__ T across_groups_sum(T x) {
#pragma unroll
  for (int o = G; o < kWarp; o <<= 1) x += __shfl_xor_sync(kFull, x, o);
  return x;
}

// Whether row[d0 .. d0 + kSlice) is inside [0, n) and 16-byte aligned: then it moves as 16-byte words.
template <typename scalar_t>
__device__ __forceinline__ bool whole_words(const scalar_t* p, int64_t d0, int64_t n) {
  constexpr int kPer = 16 / sizeof(scalar_t);
  return kSlice % kPer == 0 && d0 + kSlice <= n && reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

// x[t] = row[d0 + t] as acc_t, 0 past n.
template <typename acc_t, typename scalar_t>
__device__ __forceinline__ void load_slice(acc_t* x, const scalar_t* __restrict__ row, int64_t d0, int64_t n) {
  constexpr int kPer = 16 / sizeof(scalar_t);
  const scalar_t* p = row + d0;
  if constexpr (kSlice % kPer == 0) {
    if (whole_words(p, d0, n)) {
#pragma unroll
      for (int c = 0; c < kSlice / kPer; ++c) {
        const uint4 word = reinterpret_cast<const uint4*>(p)[c];
        scalar_t s[kPer];
        std::memcpy(s, &word, sizeof(word));
#pragma unroll
        for (int u = 0; u < kPer; ++u) x[c * kPer + u] = static_cast<acc_t>(s[u]);
      }
      return;
    }
  }
#pragma unroll
  for (int t = 0; t < kSlice; ++t) x[t] = d0 + t < n ? static_cast<acc_t>(p[t]) : acc_t(0);
}

// row[d0 + t] = x[t] for d0 + t < n.
template <typename acc_t, typename scalar_t>
__device__ __forceinline__ void store_slice(scalar_t* __restrict__ row, const acc_t* x, int64_t d0, int64_t n) {
  constexpr int kPer = 16 / sizeof(scalar_t);
  scalar_t* p = row + d0;
  if constexpr (kSlice % kPer == 0) {
    if (whole_words(p, d0, n)) {
#pragma unroll
      for (int c = 0; c < kSlice / kPer; ++c) {
        scalar_t s[kPer];
#pragma unroll
        for (int u = 0; u < kPer; ++u) s[u] = static_cast<scalar_t>(x[c * kPer + u]);
        uint4 word;
        std::memcpy(&word, s, sizeof(word));
        reinterpret_cast<uint4*>(p)[c] = word;
      }
      return;
    }
  }
#pragma unroll
  for (int t = 0; t < kSlice; ++t) {
    if (d0 + t < n) p[t] = static_cast<scalar_t>(x[t]);
  }
}

// The slice of the key (value) of an edge: node row (+ the edge's own row when the op has per-edge
// terms; edge may be null).
template <typename acc_t, typename scalar_t>
__device__ __forceinline__ void load_key(acc_t* x, const scalar_t* __restrict__ row,
                                         const scalar_t* __restrict__ edge, int64_t d0, int64_t n) {
  load_slice(x, row, d0, n);
  if (edge) {
    acc_t y[kSlice];
    load_slice(y, edge, d0, n);
#pragma unroll
    for (int t = 0; t < kSlice; ++t) x[t] = edge_term(x[t], y[t]);
  }
}

template <typename acc_t>
__device__ __forceinline__ acc_t slice_dot(const acc_t* a, const acc_t* b) {
  acc_t s = 0;
#pragma unroll
  for (int t = 0; t < kSlice; ++t) s += a[t] * b[t];
  return s;
}

// Row e, head h of an [E, H, n] per-edge tensor (null stays null).
template <typename T>
__device__ __forceinline__ T* edge_row(T* base, int64_t e, int64_t H, int64_t h, int64_t n) {
  return base ? base + (e * H + h) * n : nullptr;
}

template <typename scalar_t, typename acc_t>
struct Args {
  const scalar_t *q, *k, *v, *dout, *out, *bias, *gate;
  const scalar_t *ek, *ev;  // edge_key [E, H, D], edge_value [E, H, Dv]; null when absent
  const int64_t *rowptr, *col, *colptr, *row, *perm;
  const acc_t *lse_in, *lse_lo_in, *grad_lse;
  scalar_t *o, *dq, *dk, *dv;
  scalar_t *gek, *gev;  // their gradients; null when not asked for
  acc_t *lse, *lse_lo, *ds, *pg, *dgate;
  int64_t n, H, D, Dv;  // n: the rows the kernel walks (N_dst, or N_src for the source pass)
  int64_t n_dst, n_src, E;  // the bounds of the index values (device asserts)
  acc_t scale;
};

// The warp's (row, head) index w = row * H + head, its row and head, the lane's group and the
// first element of the lane's slice. w is uniform over the warp, so `w >= rows * H` sends whole
// warps home.
struct Lane {
  int64_t w, row, head;
  int group;
  int64_t d0;
};

template <int G>
__device__ __forceinline__ Lane lane_of(int64_t H) {
  const int lane = threadIdx.x % kWarp;
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  return {w, w / H, w % H, lane / G, static_cast<int64_t>(lane % G) * kSlice};
}

template <typename scalar_t, typename acc_t, int G>
__global__ void __launch_bounds__(kWarpsPerBlock * kWarp, kMinBlocks<scalar_t>)
    fwd_kernel(const Args<scalar_t, acc_t> a) {
  constexpr int P = kWarp / G;
  const Lane ln = lane_of<G>(a.H);
  if (ln.w >= a.n * a.H) return;
  const int64_t i = ln.row, h = ln.head, start = a.rowptr[i], end = a.rowptr[i + 1];
  CUDA_KERNEL_ASSERT_MSG(offsets_ok(i, a.n, start, end, a.E), "rowptr must be non-decreasing from 0 to E");
  acc_t qv[kSlice], acc[kSlice], x[kSlice];
  load_slice(qv, a.q + ln.w * a.D, ln.d0, a.D);
#pragma unroll
  for (int t = 0; t < kSlice; ++t) acc[t] = 0;
  SoftmaxState<acc_t> st = softmax_init<acc_t>();
  for (int64_t base = start; base < end; base += P) {  // uniform over the warp
    const int64_t e = base + ln.group;
    const bool live = e < end;
    int64_t j = 0;
    acc_t part = 0;
    if (live) {
      j = a.col[e];
      CUDA_KERNEL_ASSERT_MSG(index_ok(j, a.n_src), "col must lie in [0, N_src)");
      load_key(x, a.k + (j * a.H + h) * a.D, edge_row(a.ek, e, a.H, h, a.D), ln.d0, a.D);
      part = slice_dot(qv, x);
    }
    const acc_t dot = group_sum<G>(part);
    if (!live) continue;
    const acc_t s = a.bias ? score(dot, a.scale, static_cast<acc_t>(a.bias[e * a.H + h])) : score(dot, a.scale);
    acc_t alpha;
    if (!softmax_rescale(st, s, alpha)) continue;
    const acc_t p = edge_weight(s, st.m);
    st.l += p;
    const acc_t wv = a.gate ? value_weight(p, static_cast<acc_t>(a.gate[e * a.H + h])) : p;
    load_key(x, a.v + (j * a.H + h) * a.Dv, edge_row(a.ev, e, a.H, h, a.Dv), ln.d0, a.Dv);
#pragma unroll
    for (int t = 0; t < kSlice; ++t) acc[t] = acc[t] * alpha + wv * x[t];
  }
  // Merge the groups' softmax states and accumulators (butterfly): group 0 ends with the row's.
#pragma unroll
  for (int o = G; o < kWarp; o <<= 1) {
    const SoftmaxState<acc_t> other{__shfl_xor_sync(kFull, st.m, o), __shfl_xor_sync(kFull, st.l, o)};
    acc_t alpha_self, alpha_other;
    softmax_merge(st, other, alpha_self, alpha_other);
#pragma unroll
    for (int t = 0; t < kSlice; ++t) acc[t] = acc[t] * alpha_self + __shfl_xor_sync(kFull, acc[t], o) * alpha_other;
  }
  acc_t lse, lse_lo, inv;
  softmax_finalize(st, lse, lse_lo, inv);
  if (ln.group != 0) return;
#pragma unroll
  for (int t = 0; t < kSlice; ++t) acc[t] *= inv;
  store_slice(a.o + ln.w * a.Dv, acc, ln.d0, a.Dv);
  if (ln.d0 == 0) {
    a.lse[ln.w] = lse;
    a.lse_lo[ln.w] = lse_lo;
  }
}

template <typename scalar_t, typename acc_t, int G>
__global__ void __launch_bounds__(kWarpsPerBlock * kWarp, kMinBlocks<scalar_t>)
    bwd_dst_kernel(const Args<scalar_t, acc_t> a) {
  constexpr int P = kWarp / G;
  const Lane ln = lane_of<G>(a.H);
  if (ln.w >= a.n * a.H) return;
  const int64_t i = ln.row, h = ln.head, start = a.rowptr[i], end = a.rowptr[i + 1];
  CUDA_KERNEL_ASSERT_MSG(offsets_ok(i, a.n, start, end, a.E), "rowptr must be non-decreasing from 0 to E");
  acc_t qv[kSlice], ov[kSlice], gq[kSlice], kx[kSlice], vx[kSlice];
  load_slice(qv, a.q + ln.w * a.D, ln.d0, a.D);
  load_slice(ov, a.dout + ln.w * a.Dv, ln.d0, a.Dv);
  load_slice(vx, a.out + ln.w * a.Dv, ln.d0, a.Dv);
#pragma unroll
  for (int t = 0; t < kSlice; ++t) gq[t] = 0;
  const acc_t delta = row_delta(group_sum<G>(slice_dot(ov, vx)), a.grad_lse ? a.grad_lse[ln.w] : acc_t(0));
  const Shift<acc_t> shift = prob_shift(a.lse_in[ln.w], a.lse_lo_in[ln.w]);
  for (int64_t base = start; base < end; base += P) {  // uniform over the warp
    const int64_t e = base + ln.group;
    const bool live = e < end;
    acc_t dot_part = 0, dp_part = 0;
    if (live) {
      const int64_t j = a.col[e];
      CUDA_KERNEL_ASSERT_MSG(index_ok(j, a.n_src), "col must lie in [0, N_src)");
      load_key(kx, a.k + (j * a.H + h) * a.D, edge_row(a.ek, e, a.H, h, a.D), ln.d0, a.D);
      load_key(vx, a.v + (j * a.H + h) * a.Dv, edge_row(a.ev, e, a.H, h, a.Dv), ln.d0, a.Dv);
      dot_part = slice_dot(qv, kx);
      dp_part = slice_dot(ov, vx);
    }
    const acc_t dot = group_sum<G>(dot_part);
    const acc_t dp = group_sum<G>(dp_part);
    if (!live) continue;
    const acc_t s = a.bias ? score(dot, a.scale, static_cast<acc_t>(a.bias[e * a.H + h])) : score(dot, a.scale);
    const acc_t p = edge_prob(s, shift.hi, shift.lo);
    const acc_t g = a.gate ? static_cast<acc_t>(a.gate[e * a.H + h]) : acc_t(1);
    const acc_t ds = grad_score(p, a.gate ? gated_dp(dp, g) : dp, delta);
    const acc_t pg = a.gate ? value_weight(p, g) : p;
    if (ln.d0 == 0) {
      a.ds[e * a.H + h] = ds;
      a.pg[e * a.H + h] = pg;
      if (a.dgate) a.dgate[e * a.H + h] = grad_gate(p, dp);
    }
    const acc_t dsk = grad_dot(ds, a.scale);
#pragma unroll
    for (int t = 0; t < kSlice; ++t) gq[t] += dsk * kx[t];
    if (scalar_t* gek = edge_row(a.gek, e, a.H, h, a.D)) {
#pragma unroll
      for (int t = 0; t < kSlice; ++t) kx[t] = grad_edge_key(dsk, qv[t]);
      store_slice(gek, kx, ln.d0, a.D);
    }
    if (scalar_t* gev = edge_row(a.gev, e, a.H, h, a.Dv)) {
#pragma unroll
      for (int t = 0; t < kSlice; ++t) vx[t] = grad_edge_value(pg, ov[t]);
      store_slice(gev, vx, ln.d0, a.Dv);
    }
  }
#pragma unroll
  for (int t = 0; t < kSlice; ++t) gq[t] = across_groups_sum<G>(gq[t]);
  if (ln.group == 0) store_slice(a.dq + ln.w * a.D, gq, ln.d0, a.D);
}

template <typename scalar_t, typename acc_t, int G>
__global__ void __launch_bounds__(kWarpsPerBlock * kWarp, kMinBlocks<scalar_t>)
    bwd_src_kernel(const Args<scalar_t, acc_t> a) {
  constexpr int P = kWarp / G;
  const Lane ln = lane_of<G>(a.H);
  if (ln.w >= a.n * a.H) return;
  const int64_t j = ln.row, h = ln.head;
  acc_t gk[kSlice], gv[kSlice], x[kSlice];
#pragma unroll
  for (int t = 0; t < kSlice; ++t) gk[t] = gv[t] = 0;
  const int64_t start = a.colptr[j], end = a.colptr[j + 1];
  CUDA_KERNEL_ASSERT_MSG(offsets_ok(j, a.n, start, end, a.E), "colptr must be non-decreasing from 0 to E");
  // No shuffle inside: each group walks its own share of the source's edges.
  for (int64_t t = start + ln.group; t < end; t += P) {
    const int64_t e = a.perm[t], i = a.row[t];
    CUDA_KERNEL_ASSERT_MSG(index_ok(e, a.E), "perm must lie in [0, E)");
    CUDA_KERNEL_ASSERT_MSG(index_ok(i, a.n_dst), "row must lie in [0, N_dst)");
    const acc_t dsk = grad_dot(a.ds[e * a.H + h], a.scale), pg = a.pg[e * a.H + h];
    load_slice(x, a.q + (i * a.H + h) * a.D, ln.d0, a.D);
#pragma unroll
    for (int u = 0; u < kSlice; ++u) gk[u] += dsk * x[u];
    load_slice(x, a.dout + (i * a.H + h) * a.Dv, ln.d0, a.Dv);
#pragma unroll
    for (int u = 0; u < kSlice; ++u) gv[u] += pg * x[u];
  }
#pragma unroll
  for (int u = 0; u < kSlice; ++u) {
    gk[u] = across_groups_sum<G>(gk[u]);
    gv[u] = across_groups_sum<G>(gv[u]);
  }
  if (ln.group != 0) return;
  store_slice(a.dk + ln.w * a.D, gk, ln.d0, a.D);
  store_slice(a.dv + ln.w * a.Dv, gv, ln.d0, a.Dv);
}

template <int N>
using Int = std::integral_constant<int, N>;

// Calls f(Int<G>) with the smallest group size G (lanes per edge) such that G * kSlice >= max(D, Dv).
template <typename F>
void with_group(int64_t D, int64_t Dv, const F& f) {
  const int64_t m = D > Dv ? D : Dv;
  TORCH_CHECK(m <= kSlice * kWarp, "the CUDA kernels support head dims up to ", kSlice * kWarp, ", got ", m);
  if (m <= kSlice) {
    f(Int<1>{});
  } else if (m <= 2 * kSlice) {
    f(Int<2>{});
  } else if (m <= 4 * kSlice) {
    f(Int<4>{});
  } else if (m <= 8 * kSlice) {
    f(Int<8>{});
  } else if (m <= 16 * kSlice) {
    f(Int<16>{});
  } else {
    f(Int<32>{});
  }
}

template <typename K, typename A>
void launch(K kernel, const A& args, int64_t warps) {
  if (warps == 0) return;
  const int64_t threads = kWarpsPerBlock * kWarp;
  const int64_t blocks = (warps * kWarp + threads - 1) / threads;
  TORCH_CHECK(blocks < (int64_t(1) << 31), "too many rows x heads for one CUDA grid: ", warps);
  kernel<<<static_cast<unsigned>(blocks), static_cast<unsigned>(threads), 0, c10::cuda::getCurrentCUDAStream()>>>(args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
const scalar_t* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t ? t->const_data_ptr<scalar_t>() : nullptr;
}

ForwardResult edge_attention_fwd_cuda(const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, const at::Tensor& rowptr,
                                      const at::Tensor& col, const at::Tensor& colptr,
                                      const at::Tensor& row, const at::Tensor& perm,
                                      const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& gate,
                                      const std::optional<at::Tensor>& edge_key,
                                      const std::optional<at::Tensor>& edge_value, double scale) {
  (void)colptr;
  (void)row;
  (void)perm;
  TORCH_CHECK(q.is_cuda(), "edge_attention_fwd (CUDA kernel) got q on ", q.device());
  const Sizes sz = check_forward(q, k, v, rowptr, col, bias, gate, edge_key, edge_value);
  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor out = at::empty({sz.n_dst, sz.heads, sz.dv}, q.options());
  at::Tensor lse = at::empty({sz.n_dst, sz.heads}, q.options().dtype(at::toOpMathType(q.scalar_type())));
  at::Tensor lse_lo = at::empty_like(lse);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "edge_attention_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    Args<scalar_t, acc_t> a{};
    a.q = q.const_data_ptr<scalar_t>();
    a.k = k.const_data_ptr<scalar_t>();
    a.v = v.const_data_ptr<scalar_t>();
    a.bias = ptr_or_null<scalar_t>(bias);
    a.gate = ptr_or_null<scalar_t>(gate);
    a.ek = ptr_or_null<scalar_t>(edge_key);
    a.ev = ptr_or_null<scalar_t>(edge_value);
    a.rowptr = rowptr.const_data_ptr<int64_t>();
    a.col = col.const_data_ptr<int64_t>();
    a.o = out.mutable_data_ptr<scalar_t>();
    a.lse = lse.mutable_data_ptr<acc_t>();
    a.lse_lo = lse_lo.mutable_data_ptr<acc_t>();
    a.n = sz.n_dst;
    a.H = sz.heads;
    a.D = sz.d;
    a.Dv = sz.dv;
    a.n_dst = sz.n_dst;
    a.n_src = sz.n_src;
    a.E = sz.edges;
    a.scale = static_cast<acc_t>(scale);
    with_group(sz.d, sz.dv, [&](auto group) {
      launch(fwd_kernel<scalar_t, acc_t, decltype(group)::value>, a, sz.n_dst * sz.heads);
    });
  });
  return {out, lse, lse_lo};
}

BackwardResult edge_attention_bwd_cuda(const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse,
                                       const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const at::Tensor& out, const at::Tensor& lse, const at::Tensor& lse_lo,
                                       const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& colptr,
                                       const at::Tensor& row, const at::Tensor& perm,
                                       const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& gate,
                                       const std::optional<at::Tensor>& edge_key,
                                       const std::optional<at::Tensor>& edge_value, double scale, bool need_kv,
                                       bool need_bias, bool need_gate, bool need_edge_key, bool need_edge_value) {
  TORCH_CHECK(q.is_cuda(), "edge_attention_bwd (CUDA kernel) got q on ", q.device());
  const Sizes sz = check_backward(grad_out, grad_lse, q, k, v, out, lse, lse_lo, rowptr, col, colptr, row, perm, bias,
                                  gate, edge_key, edge_value, need_kv, need_bias, need_gate, need_edge_key,
                                  need_edge_value);
  const c10::cuda::CUDAGuard guard(q.device());
  const auto acc_type = at::toOpMathType(q.scalar_type());
  const int64_t E = sz.edges, H = sz.heads;
  at::Tensor dq = at::empty_like(q);
  at::Tensor dk = need_kv ? at::empty_like(k) : at::empty({0}, q.options());
  at::Tensor dv = need_kv ? at::empty_like(v) : at::empty({0}, q.options());
  at::Tensor ds = at::empty({E, H}, q.options().dtype(acc_type));
  at::Tensor pg = at::empty({E, H}, q.options().dtype(acc_type));
  at::Tensor dgate = need_gate ? at::empty({E, H}, q.options().dtype(acc_type)) : at::Tensor();
  at::Tensor dek = need_edge_key ? at::empty({E, H, sz.d}, q.options()) : no_grad_tensor(q);
  at::Tensor dev = need_edge_value ? at::empty({E, H, sz.dv}, q.options()) : no_grad_tensor(q);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "edge_attention_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    Args<scalar_t, acc_t> a{};
    a.q = q.const_data_ptr<scalar_t>();
    a.k = k.const_data_ptr<scalar_t>();
    a.v = v.const_data_ptr<scalar_t>();
    a.dout = grad_out.const_data_ptr<scalar_t>();
    a.out = out.const_data_ptr<scalar_t>();
    a.bias = ptr_or_null<scalar_t>(bias);
    a.gate = ptr_or_null<scalar_t>(gate);
    a.ek = ptr_or_null<scalar_t>(edge_key);
    a.ev = ptr_or_null<scalar_t>(edge_value);
    a.gek = need_edge_key ? dek.mutable_data_ptr<scalar_t>() : nullptr;
    a.gev = need_edge_value ? dev.mutable_data_ptr<scalar_t>() : nullptr;
    a.rowptr = rowptr.const_data_ptr<int64_t>();
    a.col = col.const_data_ptr<int64_t>();
    a.lse_in = lse.const_data_ptr<acc_t>();
    a.lse_lo_in = lse_lo.const_data_ptr<acc_t>();
    a.grad_lse = grad_lse ? grad_lse->const_data_ptr<acc_t>() : nullptr;
    a.dq = dq.mutable_data_ptr<scalar_t>();
    a.ds = ds.mutable_data_ptr<acc_t>();
    a.pg = pg.mutable_data_ptr<acc_t>();
    a.dgate = need_gate ? dgate.mutable_data_ptr<acc_t>() : nullptr;
    a.H = H;
    a.D = sz.d;
    a.Dv = sz.dv;
    a.n_dst = sz.n_dst;
    a.n_src = sz.n_src;
    a.E = E;
    a.scale = static_cast<acc_t>(scale);
    with_group(sz.d, sz.dv, [&](auto group) {
      constexpr int G = decltype(group)::value;
      a.n = sz.n_dst;
      launch(bwd_dst_kernel<scalar_t, acc_t, G>, a, sz.n_dst * H);
      if (need_kv) {
        // Same stream: the source pass reads ds / pg after the destination pass wrote them.
        a.colptr = colptr.const_data_ptr<int64_t>();
        a.row = row.const_data_ptr<int64_t>();
        a.perm = perm.const_data_ptr<int64_t>();
        a.dk = dk.mutable_data_ptr<scalar_t>();
        a.dv = dv.mutable_data_ptr<scalar_t>();
        a.n = sz.n_src;
        launch(bwd_src_kernel<scalar_t, acc_t, G>, a, sz.n_src * H);
      }
    });
  });
  return backward_outputs(q, dq, dk, dv, ds, dgate, dek, dev, need_bias, need_gate);
}

}  // namespace

TORCH_LIBRARY_IMPL(graphattn, CUDA, m) {
  m.impl("edge_attention_fwd", &edge_attention_fwd_cuda);
  m.impl("edge_attention_bwd", &edge_attention_bwd_cuda);
}

}  // namespace graphattn
