// CUDA launcher of edge attention: launch structure only; the math is in edge_attention_math.h.
//
// One warp per (destination row, head) in the forward and the destination pass of the backward,
// one warp per (source row, head) in the source pass. Lane l holds elements l, l + 32, ... of the
// q / k / v rows (up to 8 per lane: head dims <= 256); dot products are reduced with warp
// shuffles. fp16 / bf16 / fp32 / fp64 inputs, accumulation in fp32 (fp64 for fp64). No atomics:
// every output row is written by one warp, so results are deterministic. Optional per-edge key /
// value terms are read at the edge's own row next to k_j / v_j; their gradients are written by the
// destination pass (one warp per destination row owns its edges).
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
#include <type_traits>

#include "edge_attention_checks.h"
#include "edge_attention_math.h"

namespace graphattn {
namespace {

using namespace math;

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;
constexpr unsigned kFull = 0xffffffffu;

// Sum over the warp, then lane 0's value to every lane: the butterfly leaves bitwise different
// sums on different lanes, and every lane must take the same softmax branch.
template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) x += __shfl_xor_sync(kFull, x, o);
  return __shfl_sync(kFull, x, 0);
}

// Element d of the key (value) of an edge: row[d], plus edge[d] when the op has per-edge terms.
template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t key_at(const scalar_t* __restrict__ row, const scalar_t* __restrict__ edge,
                                        int64_t d) {
  const acc_t x = static_cast<acc_t>(row[d]);
  return edge ? edge_term(x, static_cast<acc_t>(edge[d])) : x;
}

// <a, row[0 .. n) (+ edge[0 .. n))> for a row held by the warp (a[t] is element lane + 32 t);
// edge may be null.
template <int VPL, typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t warp_dot(const acc_t* a, const scalar_t* __restrict__ row,
                                          const scalar_t* __restrict__ edge, int64_t n, int lane) {
  acc_t part = 0;
#pragma unroll
  for (int t = 0; t < VPL; ++t) {
    const int64_t d = lane + kWarp * t;
    if (d < n) part += a[t] * key_at<acc_t>(row, edge, d);
  }
  return warp_sum(part);
}

template <int VPL, typename acc_t, typename scalar_t>
__device__ __forceinline__ void warp_load(acc_t* a, const scalar_t* __restrict__ row, int64_t n, int lane) {
#pragma unroll
  for (int t = 0; t < VPL; ++t) {
    const int64_t d = lane + kWarp * t;
    a[t] = d < n ? static_cast<acc_t>(row[d]) : acc_t(0);
  }
}

template <int VPL, typename acc_t, typename scalar_t>
__device__ __forceinline__ void warp_store(scalar_t* __restrict__ row, const acc_t* a, int64_t n, int lane) {
#pragma unroll
  for (int t = 0; t < VPL; ++t) {
    const int64_t d = lane + kWarp * t;
    if (d < n) row[d] = static_cast<scalar_t>(a[t]);
  }
}

// a = a * alpha + w * (row (+ edge)); edge may be null.
template <int VPL, typename acc_t, typename scalar_t>
__device__ __forceinline__ void warp_axpby(acc_t* a, acc_t alpha, acc_t w, const scalar_t* __restrict__ row,
                                           const scalar_t* __restrict__ edge, int64_t n, int lane) {
#pragma unroll
  for (int t = 0; t < VPL; ++t) {
    const int64_t d = lane + kWarp * t;
    if (d < n) a[t] = a[t] * alpha + w * key_at<acc_t>(row, edge, d);
  }
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
  const acc_t *lse_in, *grad_lse;
  scalar_t *o, *dq, *dk, *dv;
  scalar_t *gek, *gev;  // their gradients; null when not asked for
  acc_t *lse, *ds, *pg, *dgate;
  int64_t n, H, D, Dv;
  acc_t scale;
};

template <typename scalar_t, typename acc_t, int VPL>
__global__ void fwd_kernel(const Args<scalar_t, acc_t> a) {
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (w >= a.n * a.H) return;  // w is uniform over the warp: whole warps leave
  const int64_t i = w / a.H, h = w % a.H;
  acc_t qv[VPL], acc[VPL];
  warp_load<VPL>(qv, a.q + w * a.D, a.D, lane);
#pragma unroll
  for (int t = 0; t < VPL; ++t) acc[t] = 0;
  SoftmaxState<acc_t> st = softmax_init<acc_t>();
  for (int64_t e = a.rowptr[i]; e < a.rowptr[i + 1]; ++e) {
    const int64_t j = a.col[e];
    const acc_t dot = warp_dot<VPL>(qv, a.k + (j * a.H + h) * a.D, edge_row(a.ek, e, a.H, h, a.D), a.D, lane);
    const acc_t s = a.bias ? score(dot, a.scale, static_cast<acc_t>(a.bias[e * a.H + h])) : score(dot, a.scale);
    acc_t alpha;
    if (!softmax_rescale(st, s, alpha)) continue;
    const acc_t p = edge_weight(s, st.m);
    st.l += p;
    const acc_t wv = a.gate ? value_weight(p, static_cast<acc_t>(a.gate[e * a.H + h])) : p;
    warp_axpby<VPL>(acc, alpha, wv, a.v + (j * a.H + h) * a.Dv, edge_row(a.ev, e, a.H, h, a.Dv), a.Dv, lane);
  }
  acc_t lse, inv;
  softmax_finalize(st, lse, inv);
#pragma unroll
  for (int t = 0; t < VPL; ++t) acc[t] *= inv;
  warp_store<VPL>(a.o + w * a.Dv, acc, a.Dv, lane);
  if (lane == 0) a.lse[w] = lse;
}

template <typename scalar_t, typename acc_t, int VPL>
__global__ void bwd_dst_kernel(const Args<scalar_t, acc_t> a) {
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (w >= a.n * a.H) return;
  const int64_t i = w / a.H, h = w % a.H;
  acc_t qv[VPL], ov[VPL], gq[VPL];
  warp_load<VPL>(qv, a.q + w * a.D, a.D, lane);
  warp_load<VPL>(ov, a.dout + w * a.Dv, a.Dv, lane);
#pragma unroll
  for (int t = 0; t < VPL; ++t) gq[t] = 0;
  const scalar_t* no_edge = nullptr;
  const acc_t delta =
      row_delta(warp_dot<VPL>(ov, a.out + w * a.Dv, no_edge, a.Dv, lane), a.grad_lse ? a.grad_lse[w] : acc_t(0));
  const acc_t shift = prob_shift(a.lse_in[w]);
  for (int64_t e = a.rowptr[i]; e < a.rowptr[i + 1]; ++e) {
    const int64_t j = a.col[e];
    const scalar_t* kp = a.k + (j * a.H + h) * a.D;
    const scalar_t* ekp = edge_row(a.ek, e, a.H, h, a.D);
    const acc_t dot = warp_dot<VPL>(qv, kp, ekp, a.D, lane);
    const acc_t dp = warp_dot<VPL>(ov, a.v + (j * a.H + h) * a.Dv, edge_row(a.ev, e, a.H, h, a.Dv), a.Dv, lane);
    const acc_t s = a.bias ? score(dot, a.scale, static_cast<acc_t>(a.bias[e * a.H + h])) : score(dot, a.scale);
    const acc_t p = edge_prob(s, shift);
    const acc_t g = a.gate ? static_cast<acc_t>(a.gate[e * a.H + h]) : acc_t(1);
    const acc_t ds = grad_score(p, a.gate ? gated_dp(dp, g) : dp, delta);
    const acc_t pg = a.gate ? value_weight(p, g) : p;
    if (lane == 0) {
      a.ds[e * a.H + h] = ds;
      a.pg[e * a.H + h] = pg;
      if (a.dgate) a.dgate[e * a.H + h] = grad_gate(p, dp);
    }
    const acc_t dsk = grad_dot(ds, a.scale);
    warp_axpby<VPL>(gq, acc_t(1), dsk, kp, ekp, a.D, lane);
    if (scalar_t* gek = edge_row(a.gek, e, a.H, h, a.D)) {
      acc_t x[VPL];
#pragma unroll
      for (int t = 0; t < VPL; ++t) x[t] = grad_edge_key(dsk, qv[t]);
      warp_store<VPL>(gek, x, a.D, lane);
    }
    if (scalar_t* gev = edge_row(a.gev, e, a.H, h, a.Dv)) {
      acc_t x[VPL];
#pragma unroll
      for (int t = 0; t < VPL; ++t) x[t] = grad_edge_value(pg, ov[t]);
      warp_store<VPL>(gev, x, a.Dv, lane);
    }
  }
  warp_store<VPL>(a.dq + w * a.D, gq, a.D, lane);
}

template <typename scalar_t, typename acc_t, int VPL>
__global__ void bwd_src_kernel(const Args<scalar_t, acc_t> a) {
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (w >= a.n * a.H) return;
  const int64_t j = w / a.H, h = w % a.H;
  acc_t gk[VPL], gv[VPL];
#pragma unroll
  for (int t = 0; t < VPL; ++t) gk[t] = gv[t] = 0;
  for (int64_t t = a.colptr[j]; t < a.colptr[j + 1]; ++t) {
    const int64_t e = a.perm[t], i = a.row[t];
    const scalar_t* no_edge = nullptr;
    warp_axpby<VPL>(gk, acc_t(1), grad_dot(a.ds[e * a.H + h], a.scale), a.q + (i * a.H + h) * a.D, no_edge, a.D,
                    lane);
    warp_axpby<VPL>(gv, acc_t(1), a.pg[e * a.H + h], a.dout + (i * a.H + h) * a.Dv, no_edge, a.Dv, lane);
  }
  warp_store<VPL>(a.dk + w * a.D, gk, a.D, lane);
  warp_store<VPL>(a.dv + w * a.Dv, gv, a.Dv, lane);
}

template <int N>
using Int = std::integral_constant<int, N>;

// Calls f(Int<VPL>) with the smallest VPL such that 32 * VPL >= max(D, Dv).
template <typename F>
void with_vpl(int64_t D, int64_t Dv, const F& f) {
  const int64_t m = D > Dv ? D : Dv;
  TORCH_CHECK(m <= 8 * kWarp, "the CUDA kernels support head dims up to ", 8 * kWarp, ", got ", m);
  if (m <= kWarp) {
    f(Int<1>{});
  } else if (m <= 2 * kWarp) {
    f(Int<2>{});
  } else if (m <= 4 * kWarp) {
    f(Int<4>{});
  } else {
    f(Int<8>{});
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

std::tuple<at::Tensor, at::Tensor> edge_attention_fwd_cuda(const at::Tensor& q, const at::Tensor& k,
                                                           const at::Tensor& v, const at::Tensor& rowptr,
                                                           const at::Tensor& col, const at::Tensor& colptr,
                                                           const at::Tensor& row, const at::Tensor& perm,
                                                           const std::optional<at::Tensor>& bias,
                                                           const std::optional<at::Tensor>& gate,
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
    a.n = sz.n_dst;
    a.H = sz.heads;
    a.D = sz.d;
    a.Dv = sz.dv;
    a.scale = static_cast<acc_t>(scale);
    with_vpl(sz.d, sz.dv, [&](auto vpl) {
      launch(fwd_kernel<scalar_t, acc_t, decltype(vpl)::value>, a, sz.n_dst * sz.heads);
    });
  });
  return {out, lse};
}

BackwardResult edge_attention_bwd_cuda(const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse,
                                       const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const at::Tensor& out, const at::Tensor& lse, const at::Tensor& rowptr,
                                       const at::Tensor& col, const at::Tensor& colptr, const at::Tensor& row,
                                       const at::Tensor& perm, const std::optional<at::Tensor>& bias,
                                       const std::optional<at::Tensor>& gate,
                                       const std::optional<at::Tensor>& edge_key,
                                       const std::optional<at::Tensor>& edge_value, double scale, bool need_kv,
                                       bool need_bias, bool need_gate, bool need_edge_key, bool need_edge_value) {
  TORCH_CHECK(q.is_cuda(), "edge_attention_bwd (CUDA kernel) got q on ", q.device());
  const Sizes sz = check_backward(grad_out, grad_lse, q, k, v, out, lse, rowptr, col, colptr, row, perm, bias, gate,
                                  edge_key, edge_value, need_kv, need_bias, need_gate, need_edge_key,
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
    a.grad_lse = grad_lse ? grad_lse->const_data_ptr<acc_t>() : nullptr;
    a.dq = dq.mutable_data_ptr<scalar_t>();
    a.ds = ds.mutable_data_ptr<acc_t>();
    a.pg = pg.mutable_data_ptr<acc_t>();
    a.dgate = need_gate ? dgate.mutable_data_ptr<acc_t>() : nullptr;
    a.H = H;
    a.D = sz.d;
    a.Dv = sz.dv;
    a.scale = static_cast<acc_t>(scale);
    with_vpl(sz.d, sz.dv, [&](auto vpl) {
      constexpr int VPL = decltype(vpl)::value;
      a.n = sz.n_dst;
      launch(bwd_dst_kernel<scalar_t, acc_t, VPL>, a, sz.n_dst * H);
      if (need_kv) {
        // Same stream: the source pass reads ds / pg after the destination pass wrote them.
        a.colptr = colptr.const_data_ptr<int64_t>();
        a.row = row.const_data_ptr<int64_t>();
        a.perm = perm.const_data_ptr<int64_t>();
        a.dk = dk.mutable_data_ptr<scalar_t>();
        a.dv = dv.mutable_data_ptr<scalar_t>();
        a.n = sz.n_src;
        launch(bwd_src_kernel<scalar_t, acc_t, VPL>, a, sz.n_src * H);
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
