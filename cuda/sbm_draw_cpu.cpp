// The SBM sampler's endpoint draws on the CPU (graphattn/structure/sbm.py: sample_fastrg).
//
// Every draw takes one node of one example, with probability proportional to its mass in one
// row of a normalized cumulative table: inverse transform, bounded by Chen and Asau's guide
// table (1974) and finished by a binary search between the guide's bounds. The PyTorch path of
// sbm.py (`_draw`) runs the same steps as whole-tensor gathers, one pass per search level over
// all draws; here each draw runs them in turn, and the draws of one block pair are consecutive
// and read one row segment of the table (an example's nodes), so it stays in cache. Given the
// same uniforms both paths return the same nodes (tests/structure/test_sbm.py checks equality).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>

#include "edge_attention_checks.h"

namespace graphattn {
namespace {

// a * b rounded on its own, as torch's separate multiply and add round it: a fused
// multiply-add (which -march=native may contract `a * b + c` into) would move draws that land
// within an ulp of a table entry to the neighbouring node.
inline double product(double a, double b) {
  volatile double p = a * b;
  return p;
}

// An int64 vector on table's device (check_index), of numel entries.
void check_index_of(const at::Tensor& t, const char* name, const at::Tensor& table, int64_t numel) {
  check_index(t, name, table);
  TORCH_CHECK(t.numel() == numel, "sbm_draw: ", name, " must have ", numel, " entries, got ", t.numel());
}

// Node per draw, for the draws of block pair p at offsets[p] .. offsets[p + 1] - 1: block pair
// p reads table row `row[p]` (entries row * (n + 1) .. row * (n + 1) + n) over the nodes of
// example `example[p]` (ptr[x] .. ptr[x + 1] - 1); u holds one uniform in [0, 1) per draw.
at::Tensor sbm_draw_cpu(const at::Tensor& table, const at::Tensor& guide, const at::Tensor& offsets,
                        const at::Tensor& row, const at::Tensor& example, const at::Tensor& ptr, const at::Tensor& u,
                        int64_t n) {
  TORCH_CHECK(n >= 1, "sbm_draw: n must be >= 1, got ", n);
  TORCH_CHECK(table.device().is_cpu() && table.scalar_type() == at::kDouble && table.dim() == 1 &&
                  table.is_contiguous() && table.numel() % (n + 1) == 0,
              "sbm_draw: table must be a contiguous CPU float64 vector of rows of n + 1 = ", n + 1,
              " entries, got ", table.scalar_type(), " of shape ", table.sizes());
  check_index_of(guide, "guide", table, table.numel());
  check_index(row, "row", table);
  const int64_t pairs = row.numel();
  check_index_of(offsets, "offsets", table, pairs + 1);
  check_index_of(example, "example", table, pairs);
  check_index(ptr, "ptr", table);
  TORCH_CHECK(ptr.numel() >= 1, "sbm_draw: ptr must have at least one entry");
  TORCH_CHECK(u.device().is_cpu() && u.scalar_type() == at::kDouble && u.dim() == 1 && u.is_contiguous(),
              "sbm_draw: u must be a contiguous CPU float64 vector, got ", u.scalar_type(), " of shape ", u.sizes());
  const int64_t rows = table.numel() / (n + 1), examples = ptr.numel() - 1;
  const double* t = table.data_ptr<double>();
  const int64_t* g = guide.data_ptr<int64_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t* r = row.data_ptr<int64_t>();
  const int64_t* x = example.data_ptr<int64_t>();
  const int64_t* p = ptr.data_ptr<int64_t>();
  const double* uu = u.data_ptr<double>();
  // O(pairs + examples) checks, so no index below leaves its tensor.
  TORCH_CHECK(p[0] >= 0 && p[examples] <= n, "sbm_draw: ptr must lie in [0, n = ", n, "]");
  for (int64_t b = 0; b < examples; ++b) TORCH_CHECK(p[b] <= p[b + 1], "sbm_draw: ptr must be non-decreasing");
  TORCH_CHECK(off[0] == 0 && off[pairs] == u.numel(), "sbm_draw: offsets must run from 0 to u's ", u.numel(),
              " draws");
  for (int64_t q = 0; q < pairs; ++q) {
    TORCH_CHECK(off[q] <= off[q + 1], "sbm_draw: offsets must be non-decreasing");
    TORCH_CHECK(r[q] >= 0 && r[q] < rows, "sbm_draw: row must lie in [0, ", rows, "), got ", r[q]);
    TORCH_CHECK(x[q] >= 0 && x[q] < examples, "sbm_draw: example must lie in [0, ", examples, "), got ", x[q]);
    TORCH_CHECK(off[q] == off[q + 1] || p[x[q]] < p[x[q] + 1], "sbm_draw: block pair ", q,
                " has draws in an example without nodes");
  }
  TORCH_CHECK(guide.numel() == 0 || (*std::min_element(g, g + guide.numel()) >= 0 &&
                                     *std::max_element(g, g + guide.numel()) < table.numel()),
              "sbm_draw: guide entries must index the table");

  at::Tensor out = at::empty({u.numel()}, offsets.options());
  int64_t* o = out.data_ptr<int64_t>();
  at::parallel_for(0, pairs, 64, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t base = r[q] * (n + 1), first = base + p[x[q]], last = base + p[x[q] + 1];
      const double start = t[first], span = t[last] - start;
      for (int64_t e = off[q]; e < off[q + 1]; ++e) {
        const double f = product(uu[e], span) + start;
        const int64_t cell = std::clamp<int64_t>(static_cast<int64_t>(product(f, static_cast<double>(n))), 0, n - 1);
        int64_t hi = std::min(g[base + cell + 1], last - 1);
        int64_t lo = std::min(std::max(g[base + cell], first), hi);
        while (hi > lo) {  // the largest i in [lo, hi] with t[i] <= f
          const int64_t mid = (lo + hi + 1) / 2;
          if (t[mid] <= f) {
            lo = mid;
          } else {
            hi = mid - 1;
          }
        }
        o[e] = lo - base;
      }
    }
  });
  return out;
}

// The draw tables of memberships x [N, H, k] (float or double, >= 0): per row r = h * k + a,
// entries r * (N + 1) + i = (x_0 + ... + x_{i-1}) / total_r (running sums in double, the last
// entry exactly 1), the guide (entry t of a row: the table index of the node whose interval
// holds t / N; the last one the row's last node) and the totals [H * k]. The same values as
// `_draw_table` in sbm.py (sequential sums, one division, one rounded product per cell).
std::tuple<at::Tensor, at::Tensor, at::Tensor> sbm_table_cpu(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3 && x.is_contiguous() &&
                  (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
              "sbm_table: x must be a contiguous CPU float32 / float64 tensor [N, H, k], got ", x.scalar_type(),
              " of shape ", x.sizes());
  const int64_t n = x.size(0), rows = x.size(1) * x.size(2), width = n + 1;
  TORCH_CHECK(n >= 1, "sbm_table: x must have at least one node");
  at::Tensor table = at::empty({rows * width}, x.options().dtype(at::kDouble));
  at::Tensor guide = at::empty({rows * width}, x.options().dtype(at::kLong));
  at::Tensor total = at::empty({rows}, x.options().dtype(at::kDouble));
  double* t = table.data_ptr<double>();
  int64_t* g = guide.data_ptr<int64_t>();
  double* tot = total.data_ptr<double>();
  bool valid = true;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sbm_table", [&] {
    const scalar_t* xs = x.data_ptr<scalar_t>();
    for (int64_t e = 0; e < n * rows; ++e) valid &= xs[e] >= 0 && xs[e] <= std::numeric_limits<scalar_t>::max();
    if (!valid) return;
    // Tiles of rows: node i's entries of a tile are adjacent in x, so each line of x is read once.
    at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) t[r * width] = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const scalar_t* xi = xs + i * rows;
        for (int64_t r = r0; r < r1; ++r) t[r * width + i + 1] = t[r * width + i] + static_cast<double>(xi[r]);
      }
      for (int64_t r = r0; r < r1; ++r) {
        double* row = t + r * width;
        int64_t* grow = g + r * width;
        tot[r] = row[n];
        const double scale = std::max(row[n], 1e-300);
        for (int64_t i = 0; i < n; ++i) row[i] /= scale;
        row[n] = 1.0;
        // Node i owns the cells ceil(N F_i) .. ceil(N F_{i+1}) - 1; F is non-decreasing from 0 to 1.
        int64_t cell = 0;
        for (int64_t i = 0; i < n; ++i) {
          const int64_t next = i + 1 == n ? n : std::min<int64_t>(static_cast<int64_t>(std::ceil(row[i + 1] * n)), n);
          for (; cell < next; ++cell) grow[cell] = r * width + i;
        }
        grow[n] = r * width + n - 1;
      }
    });
  });
  TORCH_CHECK(valid, "sbm_table: memberships must be finite and >= 0");
  return {table, guide, total};
}

}  // namespace

TORCH_LIBRARY_IMPL(graphattn, CPU, m) {
  m.impl("sbm_draw", &sbm_draw_cpu);
  m.impl("sbm_table", &sbm_table_cpu);
}

}  // namespace graphattn
