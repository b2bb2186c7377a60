// The per-edge math of edge attention, written once for the CPU and the CUDA launchers.
//
//   s_e   = scale * <q_i, k_j> + bias_e                       (score)
//   p_e   = exp(s_e - lse_i),  lse_i = log sum_e exp(s_e)      (streaming softmax)
//   out_i = sum_e gate_e * p_e * v_j
// The forward saves lse_i as two numbers, lse_i rounded and lse_lo_i its rounding error, so the
// backward's p_e is exact to the precision of T even when every score of a row is large (a row
// masked out by a bias of -1e9: rounded, lse is off by up to 32 there in float32, p by e^32).
//
// Backward (FlashAttention's recipe on graphs), with dO_i the gradient of out_i:
//   dp_e    = <dO_i, v_j>
//   delta_i = <dO_i, out_i> = sum_e p_e * gate_e * dp_e         (exact, since out_i = sum gate p v)
//   ds_e    = p_e * (gate_e * dp_e - delta_i)                  (= grad of bias_e)
//   grad_q_i = scale * sum_e ds_e k_j,   grad_k_j = scale * sum_e ds_e q_i
//   grad_v_j = sum_e gate_e p_e dO_i,    grad_gate_e = p_e * dp_e
// A gradient of lse (when a caller uses it) enters as delta_i - grad_lse_i, since d lse_i / d s_e = p_e.
//
// Per-edge key / value terms (optional; kappa = edge_key [E, H, D], nu = edge_value [E, H, Dv]):
// edge e = (j -> i) has key k_j + kappa_e and value v_j + nu_e, read in place (k[col] and v[col] are
// never gathered). Everything above holds with k_j and v_j replaced by these sums:
//   s_e  = scale * <q_i, k_j + kappa_e> + bias_e,   out_i = sum_e gate_e p_e (v_j + nu_e)
//   dp_e = <dO_i, v_j + nu_e>,                      grad_q_i = scale * sum_e ds_e (k_j + kappa_e)
// and, since s_e depends on kappa_e only through <q_i, kappa_e> and out_i on nu_e only through
// gate_e p_e nu_e, each edge's own gradients come from its destination row (no atomics):
//   grad_kappa_e = scale * ds_e * q_i      (the term of grad_k_j that comes from edge e)
//   grad_nu_e    = gate_e * p_e * dO_i     (the term of grad_v_j that comes from edge e)
// When one tensor is passed as both kappa and nu, its gradient is the sum of the two.
//
// Empty-row rule: a destination with no in-edges (or only -inf scores) gets out = 0 and lse = -inf,
// never NaN. Every function that meets a -inf says how it avoids -inf - (-inf).
//
// Functions that only use +, -, * and ga_exp are templates over the value type V, so the CPU
// launcher can instantiate them with a SIMD vector type (it supplies ga_exp for that type).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define GA_HD __host__ __device__ __forceinline__
#else
#define GA_HD inline
#endif

namespace graphattn {
namespace math {

// HUGE_VAL is +inf as a plain constant (std::numeric_limits is host-only constexpr under nvcc).
template <typename T>
GA_HD T neg_inf() {
  return -static_cast<T>(HUGE_VAL);
}

GA_HD float ga_exp(float x) {
  return ::expf(x);
}
GA_HD double ga_exp(double x) {
  return ::exp(x);
}
GA_HD float ga_log(float x) {
  return ::logf(x);
}
GA_HD double ga_log(double x) {
  return ::log(x);
}

// ---------------------------------------------------------------- index preconditions
// What the launchers require of the index tensors they read memory with. The CPU launcher checks
// them over the whole tensor before its kernels run (an error naming the first bad entry); the CUDA
// kernels assert them where they read each index (a device-side assert, as PyTorch's own index ops).

// x in [0, bound): one unsigned compare (a negative x wraps past any bound).
GA_HD bool index_ok(int64_t x, int64_t bound) {
  return static_cast<uint64_t>(x) < static_cast<uint64_t>(bound);
}

// Offsets ptr[i] = lo, ptr[i + 1] = hi of row i of n, into `total` items: the rows together run
// non-decreasing from 0 to total when every row passes.
GA_HD bool offsets_ok(int64_t i, int64_t n, int64_t lo, int64_t hi, int64_t total) {
  return 0 <= lo && lo <= hi && hi <= total && (i != 0 || lo == 0) && (i != n - 1 || hi == total);
}

// ---------------------------------------------------------------- forward

// s_e = scale * <q_i, k_j> (+ bias_e).
template <typename V>
GA_HD V score(V dot, V scale) {
  return dot * scale;
}
template <typename V>
GA_HD V score(V dot, V scale, V bias) {
  return dot * scale + bias;
}

// Running max m and running sum l = sum_e exp(s_e - m) of one (row, head).
template <typename T>
struct SoftmaxState {
  T m;
  T l;
};

template <typename T>
GA_HD SoftmaxState<T> softmax_init() {
  return {neg_inf<T>(), T(0)};
}

// Folds a block of scores whose max is m_blk into the state (one edge: m_blk = s_e).
// Returns false when every score seen so far is -inf: nothing to add (empty-row rule), state kept.
// Otherwise sets alpha, the factor that rescales everything accumulated so far to the new max,
// and updates m and l; the caller then adds edge_weight(s, st.m) of the block's edges to l.
// NaN is not empty: a NaN (or +inf) score makes a NaN weight, so l and the row's output turn NaN
// as torch.softmax's would (a NaN state stays NaN: NaN * alpha is NaN, alpha = 0 included).
template <typename T>
GA_HD bool softmax_rescale(SoftmaxState<T>& st, T m_blk, T& alpha) {
  const T m_new = st.m > m_blk ? st.m : m_blk;
  if (m_new == neg_inf<T>()) {
    alpha = T(1);
    return false;
  }
  // st.m may be -inf (first finite block): the factor is exp(-inf - finite) = 0, which wipes the
  // (empty) old state; it is set without calling exp, as is 1 for an unchanged max (exp(0) = 1).
  alpha = st.m == m_new ? T(1) : (st.m > neg_inf<T>() ? ga_exp(st.m - m_new) : T(0));
  st.l = st.l * alpha;
  st.m = m_new;
  return true;
}

// exp(s_e - m), the unnormalized weight of an edge under the current max m (finite).
// s_e = -inf (masked edge) gives exactly 0.
template <typename V>
GA_HD V edge_weight(V s, V m) {
  return ga_exp(s - m);
}

// Merges state b into a (segments of one row computed apart); alpha_a / alpha_b rescale their
// accumulators. Both empty: the factors are 0 (their accumulators are 0 anyway), no -inf - -inf.
template <typename T>
GA_HD void softmax_merge(SoftmaxState<T>& a, const SoftmaxState<T>& b, T& alpha_a, T& alpha_b) {
  const T m_new = a.m > b.m ? a.m : b.m;
  if (m_new == neg_inf<T>()) {
    alpha_a = T(0);
    alpha_b = T(0);
    return;
  }
  alpha_a = ga_exp(a.m - m_new);
  alpha_b = ga_exp(b.m - m_new);
  a.l = a.l * alpha_a + b.l * alpha_b;
  a.m = m_new;
}

// lse = m + log(l), with lse_lo the rounding error of that sum (Knuth's TwoSum, exact without
// fast-math: lse + lse_lo = m + log(l) exactly), and 1 / l to normalize the accumulator. Empty
// rule: l == 0 (no finite score) gives lse = -inf and a factor 0, so out = 0 rather than 0 / 0. A
// NaN l (a NaN or +inf score) gives NaN for both. lse_lo is 0 in those two cases.
template <typename T>
GA_HD void softmax_finalize(const SoftmaxState<T>& st, T& lse, T& lse_lo, T& inv_l) {
  lse_lo = T(0);
  if (st.l > T(0)) {
    const T log_l = ga_log(st.l);
    lse = st.m + log_l;
    const T m_part = lse - log_l, l_part = lse - m_part;  // what of each addend the sum kept
    lse_lo = (st.m - m_part) + (log_l - l_part);
    inv_l = T(1) / st.l;
  } else if (st.l != st.l) {
    lse = st.l;
    inv_l = st.l;
  } else {
    lse = neg_inf<T>();
    inv_l = T(0);
  }
}

// ---------------------------------------------------------------- backward

// The shift (hi, lo) that turns a score into its probability: the saved (lse, lse_lo). Rows with
// lse = -inf hold only s = -inf edges: shift by 0 so exp(-inf - 0) = 0 instead of
// exp(-inf - (-inf)) = NaN. A NaN lse stays NaN, so every probability of its row is NaN, as the
// reference's.
template <typename T>
struct Shift {
  T hi, lo;
};
template <typename T>
GA_HD Shift<T> prob_shift(T lse, T lse_lo) {
  return lse == neg_inf<T>() ? Shift<T>{T(0), T(0)} : Shift<T>{lse, lse_lo};
}

// p_e = exp(s_e - lse_i), recomputed from the saved lse (never stored by the forward) as
// exp((s_e - hi) - lo): s_e - hi is exact when the two are within a factor of 2 (Sterbenz), so
// p_e keeps T's precision however large the row's scores are.
template <typename V>
GA_HD V edge_prob(V s, V shift_hi, V shift_lo) {
  return ga_exp((s - shift_hi) - shift_lo);
}

// delta_i = <dO_i, out_i>, minus the gradient of lse_i when the caller used lse.
template <typename T>
GA_HD T row_delta(T dout_dot_out, T grad_lse) {
  return dout_dot_out - grad_lse;
}

// ds_e = p_e * (gate_e * dp_e - delta_i): gradient of the score (and of bias_e).
template <typename V>
GA_HD V grad_score(V p, V gated_dp, V delta) {
  return p * (gated_dp - delta);
}

// gate_e * dp_e, dp_e = <dO_i, v_j>.
template <typename V>
GA_HD V gated_dp(V dp, V gate) {
  return dp * gate;
}

// Weight of v_j's gradient on dO_i: gate_e * p_e (also the forward's effective weight).
template <typename V>
GA_HD V value_weight(V p, V gate) {
  return p * gate;
}

// grad_gate_e = p_e * dp_e.
template <typename V>
GA_HD V grad_gate(V p, V dp) {
  return p * dp;
}

// d s_e / d <q_i, k_j> = scale: the factor ds_e gets in grad_q and grad_k.
template <typename V>
GA_HD V grad_dot(V ds, V scale) {
  return ds * scale;
}

// ---------------------------------------------------------------- per-edge key / value terms

// The key (value) of edge e: the source's k_j (v_j) plus the edge's kappa_e (nu_e), one element.
template <typename V>
GA_HD V edge_term(V node, V edge) {
  return node + edge;
}

// grad_kappa_e = scale * ds_e * q_i, one element; dsk = grad_dot(ds_e, scale).
template <typename V>
GA_HD V grad_edge_key(V dsk, V q) {
  return dsk * q;
}

// grad_nu_e = gate_e * p_e * dO_i, one element; pg = value_weight(p_e, gate_e).
template <typename V>
GA_HD V grad_edge_value(V pg, V dout) {
  return pg * dout;
}

}  // namespace math
}  // namespace graphattn
