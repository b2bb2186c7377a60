// Preconditions of the native ops, shared by the CPU and CUDA launchers. Python validates user
// input first (graphattn/ops/_checks.py); these checks keep a direct torch.ops call from crashing.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <optional>
#include <tuple>

#include <cstdint>

namespace graphattn {

struct Sizes {
  int64_t n_dst, n_src, heads, d, dv, edges;
};

inline void check_index(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.scalar_type() == at::kLong, name, " must be int64, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.is_contiguous(), name, " must be a contiguous 1-D tensor, got shape ", t.sizes());
  TORCH_CHECK(t.device() == like.device(), name, " must be on ", like.device(), ", got ", t.device());
}

inline void check_node(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.dim() == 3, name, " must be [N, H, D], got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must have dtype ", like.scalar_type(), ", got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous (call .contiguous())");
  TORCH_CHECK(t.device() == like.device(), name, " must be on ", like.device(), ", got ", t.device());
}

inline void check_edge(const std::optional<at::Tensor>& t, const char* name, const at::Tensor& like,
                       int64_t edges, int64_t heads) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->scalar_type() == like.scalar_type(), name, " must have dtype ", like.scalar_type(), ", got ",
              t->scalar_type());
  TORCH_CHECK(t->dim() == 2 && t->size(0) == edges && t->size(1) == heads, name, " must be [E, H] = [", edges, ", ",
              heads, "], got ", t->sizes());
  TORCH_CHECK(t->is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t->device() == like.device(), name, " must be on ", like.device(), ", got ", t->device());
}

// A per-edge feature tensor [E, H, dim] (edge_key: dim = D, edge_value: dim = Dv).
inline void check_edge_features(const std::optional<at::Tensor>& t, const char* name, const at::Tensor& like,
                                int64_t edges, int64_t heads, int64_t dim) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->scalar_type() == like.scalar_type(), name, " must have dtype ", like.scalar_type(), ", got ",
              t->scalar_type());
  TORCH_CHECK(t->dim() == 3 && t->size(0) == edges && t->size(1) == heads && t->size(2) == dim, name,
              " must be [E, H, ", dim, "] = [", edges, ", ", heads, ", ", dim, "], got ", t->sizes());
  TORCH_CHECK(t->is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t->device() == like.device(), name, " must be on ", like.device(), ", got ", t->device());
}

// Checks q, k, v, the CSR and the optional per-edge tensors; returns the sizes.
inline Sizes check_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& rowptr,
                           const at::Tensor& col, const std::optional<at::Tensor>& bias,
                           const std::optional<at::Tensor>& gate, const std::optional<at::Tensor>& edge_key,
                           const std::optional<at::Tensor>& edge_value) {
  const auto dt = q.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
              "q must be float16/bfloat16/float32/float64, got ", dt);
  check_node(q, "q", q);
  check_node(k, "k", q);
  check_node(v, "v", q);
  check_index(rowptr, "rowptr", q);
  check_index(col, "col", q);
  Sizes s{q.size(0), k.size(0), q.size(1), q.size(2), v.size(2), col.size(0)};
  TORCH_CHECK(rowptr.size(0) == s.n_dst + 1, "rowptr must have N_dst + 1 = ", s.n_dst + 1, " entries, got ",
              rowptr.size(0));
  TORCH_CHECK(k.size(1) == s.heads && v.size(1) == s.heads, "q, k, v must have the same heads, got ", q.sizes(), ", ",
              k.sizes(), ", ", v.sizes());
  TORCH_CHECK(k.size(2) == s.d, "k must have the head dim of q (", s.d, "), got ", k.sizes());
  TORCH_CHECK(v.size(0) == s.n_src, "v must have N_src = ", s.n_src, " rows like k, got ", v.sizes());
  check_edge(bias, "bias", q, s.edges, s.heads);
  check_edge(gate, "gate", q, s.edges, s.heads);
  check_edge_features(edge_key, "edge_key", q, s.edges, s.heads, s.d);
  check_edge_features(edge_value, "edge_value", q, s.edges, s.heads, s.dv);
  return s;
}

inline void check_transpose(const Sizes& s, const at::Tensor& colptr, const at::Tensor& row, const at::Tensor& perm,
                            const at::Tensor& like) {
  check_index(colptr, "colptr", like);
  check_index(row, "row", like);
  check_index(perm, "perm", like);
  TORCH_CHECK(colptr.size(0) == s.n_src + 1, "colptr must have N_src + 1 = ", s.n_src + 1,
              " entries (pass graph.transpose), got ", colptr.size(0));
  TORCH_CHECK(row.size(0) == s.edges && perm.size(0) == s.edges, "row and perm must have E = ", s.edges,
              " entries, got ", row.size(0), " and ", perm.size(0));
}

// Checks the backward's inputs (the forward's, plus grad_out, out, lse, lse_lo, grad_lse, the
// transpose).
inline Sizes check_backward(const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                            const at::Tensor& lse_lo,
                            const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& colptr,
                            const at::Tensor& row, const at::Tensor& perm, const std::optional<at::Tensor>& bias,
                            const std::optional<at::Tensor>& gate, const std::optional<at::Tensor>& edge_key,
                            const std::optional<at::Tensor>& edge_value, bool need_kv, bool need_bias, bool need_gate,
                            bool need_edge_key, bool need_edge_value) {
  const Sizes sz = check_forward(q, k, v, rowptr, col, bias, gate, edge_key, edge_value);
  check_node(grad_out, "grad_out", q);
  check_node(out, "out", q);
  TORCH_CHECK(grad_out.sizes() == out.sizes() && out.size(0) == sz.n_dst && out.size(1) == sz.heads &&
                  out.size(2) == sz.dv,
              "grad_out and out must be [N_dst, H, Dv] = [", sz.n_dst, ", ", sz.heads, ", ", sz.dv, "], got ",
              grad_out.sizes(), " and ", out.sizes());
  const auto acc_type = at::toOpMathType(q.scalar_type());
  for (const at::Tensor* t : {&lse, &lse_lo, grad_lse ? &*grad_lse : &lse}) {
    TORCH_CHECK(t->scalar_type() == acc_type && t->is_contiguous() && t->dim() == 2 && t->size(0) == sz.n_dst &&
                    t->size(1) == sz.heads,
                "lse, lse_lo and grad_lse must be contiguous ", acc_type, " [N_dst, H], got ", t->scalar_type(), " ",
                t->sizes());
    TORCH_CHECK(t->device() == q.device(), "lse, lse_lo and grad_lse must be on ", q.device(), ", got ",
                t->device());
  }
  TORCH_CHECK(!need_bias || bias, "need_bias requires bias");
  TORCH_CHECK(!need_gate || gate, "need_gate requires gate");
  TORCH_CHECK(!need_edge_key || edge_key, "need_edge_key requires edge_key");
  TORCH_CHECK(!need_edge_value || edge_value, "need_edge_value requires edge_value");
  if (need_kv) check_transpose(sz, colptr, row, perm, q);
  return sz;
}

// (out, lse, lse_lo): see edge_attention_math.h for lse_lo.
using ForwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using BackwardResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// A gradient that was not asked for: an empty tensor.
inline at::Tensor no_grad_tensor(const at::Tensor& q) {
  return at::empty({0}, q.options());
}

// The backward's results, shared by both launchers: bias and gate gradients were accumulated in
// the op-math type and come back in q's dtype; the edge_key / edge_value gradients (written once
// per element, in q's dtype) and the rest pass through; a gradient not asked for is empty.
inline BackwardResult backward_outputs(const at::Tensor& q, const at::Tensor& dq, const at::Tensor& dk,
                                       const at::Tensor& dv, const at::Tensor& ds, const at::Tensor& dgate,
                                       const at::Tensor& dedge_key, const at::Tensor& dedge_value, bool need_bias,
                                       bool need_gate) {
  const auto dt = q.scalar_type();
  auto in_dtype = [&](const at::Tensor& t, bool need) {
    return need ? (t.scalar_type() == dt ? t : t.to(dt)) : no_grad_tensor(q);
  };
  return {dq, dk, dv, in_dtype(ds, need_bias), in_dtype(dgate, need_gate), dedge_key, dedge_value};
}

}  // namespace graphattn
