// Schemas of the native ops (namespace graphattn). Kernels register per dispatch key in
// edge_attention_cpu.cpp, edge_attention_cuda.cu and sbm_draw_cpu.cpp; fake kernels and
// autograd live in graphattn/ops/native.py.
#include <torch/library.h>

TORCH_LIBRARY(graphattn, m) {
  // (out [N_dst, H, Dv], lse [N_dst, H], lse_lo [N_dst, H]); lse is float32 for half inputs,
  // lse_lo its rounding error (the backward's probabilities need both; edge_attention_math.h).
  // colptr/row/perm (the graph's transpose) are not read by the forward: they travel to the
  // backward with the saved inputs; pass empty tensors when no gradient is needed. edge_key [E, H, D] / edge_value
  // [E, H, Dv] are added to the key / value of each edge (they may be the same tensor).
  m.def(
      "edge_attention_fwd(Tensor q, Tensor k, Tensor v, Tensor rowptr, Tensor col, Tensor colptr, Tensor row, "
      "Tensor perm, Tensor? bias, Tensor? gate, Tensor? edge_key, Tensor? edge_value, float scale) "
      "-> (Tensor, Tensor, Tensor)");
  // (grad_q, grad_k, grad_v, grad_bias, grad_gate, grad_edge_key, grad_edge_value); a gradient not
  // asked for is an empty tensor.
  m.def(
      "edge_attention_bwd(Tensor grad_out, Tensor? grad_lse, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
      "Tensor lse_lo, Tensor rowptr, Tensor col, Tensor colptr, Tensor row, Tensor perm, Tensor? bias, Tensor? gate, "
      "Tensor? edge_key, Tensor? edge_value, float scale, bool need_kv, bool need_bias, bool need_gate, "
      "bool need_edge_key, bool need_edge_value) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The SBM sampler's endpoint draws (CPU; graphattn/structure/sbm.py, cuda/sbm_draw_cpu.cpp): one
  // node per uniform u[e], from table row row[p] over example example[p]'s nodes, for the draws
  // offsets[p] .. offsets[p + 1] - 1 of block pair p.
  m.def(
      "sbm_draw(Tensor table, Tensor guide, Tensor offsets, Tensor row, Tensor example, Tensor ptr, Tensor u, "
      "int n) -> Tensor");
  // Its tables (CPU): (table, guide, total) of memberships x [N, H, k], as sbm.py's _draw_table.
  m.def("sbm_table(Tensor x) -> (Tensor, Tensor, Tensor)");
  // Unmaps the CPU kernels' cached output buffers; returns the bytes given back.
  m.def("empty_cpu_cache() -> int");
}
