// CPU launcher of edge attention: launch structure only; the math is in edge_attention_math.h.
//
// Work is split by edges, not rows: rows are grouped into chunks of about equal edge count, and a
// row with more than kSegment edges (a hub) is cut into fixed segments whose partial results are
// merged in order, so a hub never serializes a run and results do not depend on the thread count.
//
// Two kernels per pass: a generic one (any dtype, any head dim, one edge at a time, compiler-
// vectorized; also instantiated for D = Dv in {16, 32, 64} so that short rows pay no loop overhead)
// and, for float32 with head dims <= 128, a blocked one written once over a vector-traits type and
// compiled for the widest vectors the build targets (-march): AVX-512 (16 edges per block) or AVX2
// with FMA (8 edges per block), with the query row in registers, one horizontal reduction for the
// block's dot products and one max / rescale per run of blocks. Builds for neither (plain x86-64,
// other CPUs) run the generic kernels for every dtype.
//
// The backward's source pass runs neighbouring sources whose out-lists look alike (sequence
// windows) in groups that load each shared q / dO row once (see "source groups").
//
// Optional per-edge key / value terms (edge_key, edge_value: [E, H, D] / [E, H, Dv], edge-id order)
// are read next to k_j / v_j at the edge's own row; their gradients are written by the destination
// pass, one row per edge, so no pass gathers or scatters per-edge copies of k or v.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "edge_attention_checks.h"
#include "edge_attention_math.h"

namespace graphattn {
namespace {

using namespace math;

// ================================================================ output buffers

// Outputs (out, the gradients) of 1 MiB or more come from a cache of page-aligned mappings, not
// from malloc. Fresh pages cost a fault (and the kernel's zeroing) on first touch, 4 KiB at a time
// unless advised for huge pages, and glibc gives them fresh more often than not at these sizes:
// above 32 MiB it maps every allocation afresh, and below it trims the heap top whenever more
// than twice its mmap threshold is free there, which a backward's freed gradients often are
// (the molecule batch of the benchmark, 22 MB tensors: 0 to 16,000 faults per forward + backward
// from one call to the next; N = 65536: 16,384 per 64 MB output). A freed output's mapping goes
// back to the cache and the next output that fits (no more than twice its size) takes it with its
// pages resident: a training loop or benchmark faults on its first step only. Mappings of 4 MiB
// or more are 2 MiB-aligned and advised for huge pages (as NumPy does). The cache keeps at most
// GRAPHATTN_CPU_CACHE_MB (default 1024) of freed mappings; graphattn::empty_cpu_cache unmaps them
// (graphattn.ops.native.empty_cache()). Linux only; elsewhere outputs are at::empty.
#if defined(__linux__)
class OutputCache {
 public:
  static OutputCache& instance() {
    static OutputCache* cache = new OutputCache();  // never destroyed: tensors may die after exit handlers
    return *cache;
  }

  // A mapping of at least `bytes` (its true size in `cap`), or nullptr if none could be made.
  void* take(size_t bytes, size_t& cap) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      const auto it = free_.lower_bound(bytes);
      if (it != free_.end() && it->first <= 2 * bytes) {
        cap = it->first;
        void* p = it->second;
        free_.erase(it);
        cached_ -= cap;
        return p;
      }
    }
    return map(bytes, cap);
  }

  void give(void* p, size_t cap) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + cap <= limit_) {
        free_.emplace(cap, p);
        cached_ += cap;
        return;
      }
    }
    munmap(p, cap);
  }

  // Unmaps every cached mapping; returns the bytes given back.
  int64_t clear() {
    std::multimap<size_t, void*> freed;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      freed.swap(free_);
      cached_ = 0;
    }
    int64_t bytes = 0;
    for (const auto& [cap, p] : freed) {
      munmap(p, cap);
      bytes += static_cast<int64_t>(cap);
    }
    return bytes;
  }

 private:
  static constexpr size_t kPage = size_t(4) << 10, kHuge = size_t(2) << 20;

  OutputCache() {
    const char* env = std::getenv("GRAPHATTN_CPU_CACHE_MB");
    limit_ = (env && *env ? static_cast<size_t>(std::strtoull(env, nullptr, 10)) : 1024) << 20;
  }

  static void* map(size_t bytes, size_t& cap) {
    const bool huge = bytes >= 2 * kHuge;
    const size_t align = huge ? kHuge : kPage;
    cap = (bytes + align - 1) / align * align;
    const size_t len = cap + (huge ? kHuge : 0);
    void* raw = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    char* const first = static_cast<char*>(raw);
    char* const p = first + (align - reinterpret_cast<uintptr_t>(first) % align) % align;
    if (p > first) munmap(first, p - first);  // keep the aligned `cap` bytes, unmap the rest
    if (first + len > p + cap) munmap(p + cap, first + len - (p + cap));
#if defined(MADV_HUGEPAGE)
    if (huge) madvise(p, cap, MADV_HUGEPAGE);  // advice only: on failure the pages are 4 KiB ones
#endif
    return p;
  }

  std::mutex mutex_;
  std::multimap<size_t, void*> free_;  // cap -> mapping, for best fit
  size_t cached_ = 0, limit_ = 0;
};
#endif

// An uninitialized CPU tensor for an op's output: from OutputCache at 1 MiB or more (on Linux),
// at::empty below (glibc's heap reuses small blocks without faults).
at::Tensor output_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
#if defined(__linux__)
  size_t bytes = at::elementSize(at::typeMetaToScalarType(options.dtype()));
  for (const int64_t s : sizes) bytes *= static_cast<size_t>(s);
  if (bytes >= (size_t(1) << 20)) {
    size_t cap = 0;
    if (void* p = OutputCache::instance().take(bytes, cap)) {
      return at::from_blob(p, sizes, [cap](void* d) { OutputCache::instance().give(d, cap); }, options);
    }
  }
#endif
  return at::empty(sizes, options);
}

int64_t empty_cpu_cache() {
#if defined(__linux__)
  return OutputCache::instance().clear();
#else
  return 0;
#endif
}

// ================================================================ load balance

// Rows with more edges than this are cut into segments of this many edges. A constant (not a
// function of the thread count) so that two runs give bitwise equal results on any machine.
constexpr int64_t kSegment = 2048;

// Most heads the short-row kernels take (their per-head state lives on the stack).
constexpr int64_t kShortHeads = 16;

struct Segment {
  int64_t row, lo, hi;
};

struct Plan {
  std::vector<int64_t> chunk_start;  // chunk c: rows [chunk_start[c], chunk_start[c + 1]), hubs skipped
  std::vector<Segment> segments;     // the pieces of every hub, hub after hub
  std::vector<int64_t> hub_start;    // hub h owns segments [hub_start[h], hub_start[h + 1])
};

inline bool is_hub(const int64_t* ptr, int64_t r) {
  return ptr[r + 1] - ptr[r] > kSegment;
}

Plan make_plan(const int64_t* ptr, int64_t n) {
  Plan p;
  // Cost of a row: its edges plus one (empty rows still write their output).
  int64_t total = 0;
  for (int64_t r = 0; r < n; ++r) total += 1 + (is_hub(ptr, r) ? 0 : ptr[r + 1] - ptr[r]);
  const int64_t target = std::max<int64_t>(total / (8 * std::max(1, at::get_num_threads())), 256);
  p.chunk_start.push_back(0);
  p.hub_start.push_back(0);
  int64_t cost = 0;
  for (int64_t r = 0; r < n; ++r) {
    if (is_hub(ptr, r)) {
      for (int64_t lo = ptr[r]; lo < ptr[r + 1]; lo += kSegment) {
        p.segments.push_back({r, lo, std::min(lo + kSegment, ptr[r + 1])});
      }
      p.hub_start.push_back(static_cast<int64_t>(p.segments.size()));
      cost += 1;
    } else {
      cost += 1 + ptr[r + 1] - ptr[r];
    }
    if (cost >= target) {
      p.chunk_start.push_back(r + 1);
      cost = 0;
    }
  }
  if (p.chunk_start.back() != n) p.chunk_start.push_back(n);
  return p;
}

// Runs body(i) for i in [0, n) on the intra-op threads, handing out indices dynamically: on a
// shared machine a thread that is descheduled does not hold up the others (each index is an
// independent unit of equal cost, and which thread runs it does not change the result).
template <class Body>
void parallel_dynamic(int64_t n, const Body& body) {
  const int threads = static_cast<int>(std::min<int64_t>(at::get_num_threads(), n));
  if (threads <= 1 || at::in_parallel_region()) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) body(i);
}

// Software prefetch of the [H, n] rows a pass streams (the forward's q and out; the destination
// pass's q, dO and out), kPrefetchRows rows ahead of the one being computed. A row's dependency
// chain starts with loading those rows; read once per pass, they come from DRAM or L3, and perf
// attributed ~13% of the forward's and of the destination pass's cycles (Zen 5, window N = 16384,
// K = 64) to the first of those loads. Measured (2 threads, N = 16384 / 65536): forward -5 / -7%,
// destination pass -9 / -10%; 1, 2 and 4 rows ahead alike; prefetching the last neighbour's k / v
// rows too, or the source pass's rows, gained nothing more. A prefetch never faults, so the rows
// past a tensor's end need no check (the address is computed as an integer, not as a pointer past
// the end).
//
// The destination pass also writes ds and gate * p of every edge, [E, H] each, one head at a time:
// each head's stores land 4 bytes apart in lines that are not yet in cache, and until a line
// arrives its stores wait in the store queue. Those lines (a row's span of both arrays) are
// prefetched for writing, kPrefetchRows rows ahead: destination pass 17.2 -> 15.8 ms (window
// N = 16384, K = 64, H = 4, D = 64, Zen 5, 2 threads).
constexpr int64_t kPrefetchRows = 2;

// Elements [begin, end) of base.
template <typename T>
inline void prefetch_span(const T* base, int64_t begin, int64_t end, bool for_write = false) {
  const int64_t size = static_cast<int64_t>(sizeof(T));
  const std::uintptr_t start = reinterpret_cast<std::uintptr_t>(base) + static_cast<std::uintptr_t>(begin * size);
  const int64_t bytes = (end - begin) * size;
  for (int64_t o = 0; o < bytes; o += 64) {
    const void* p = reinterpret_cast<const void*>(start + static_cast<std::uintptr_t>(o));
    if (for_write) {
      __builtin_prefetch(p, 1, 3);
    } else {
      __builtin_prefetch(p, 0, 3);
    }
  }
}

// Row r of a tensor of rows of row_elems elements.
template <typename T>
inline void prefetch_row(const T* base, int64_t r, int64_t row_elems, bool for_write = false) {
  prefetch_span(base, r * row_elems, (r + 1) * row_elems, for_write);
}

// whole(r): every head of a non-hub row, done in one go (heads inside a row: its sources are read
// for all heads while they are in cache). segment(s, seg): one piece of a hub into slot s of a
// scratch buffer. merge(row, first, last): combine the hub's slots [first, last) in order.
template <class Whole, class Seg, class Merge>
void run_balanced(const Plan& p, const int64_t* ptr, const Whole& whole, const Seg& segment, const Merge& merge) {
  parallel_dynamic(static_cast<int64_t>(p.chunk_start.size()) - 1, [&](int64_t c) {
    for (int64_t r = p.chunk_start[c]; r < p.chunk_start[c + 1]; ++r) {
      if (!is_hub(ptr, r)) whole(r);
    }
  });
  parallel_dynamic(static_cast<int64_t>(p.segments.size()), [&](int64_t s) { segment(s, p.segments[s]); });
  parallel_dynamic(static_cast<int64_t>(p.hub_start.size()) - 1, [&](int64_t h) {
    merge(p.segments[p.hub_start[h]].row, p.hub_start[h], p.hub_start[h + 1]);
  });
}

// ================================================================ source groups
//
// The source pass reads, for every out-edge i -> j of a source j, the rows q_i and dO_i of one
// head. Neighbouring sources of a sequence window share most destinations (K = 64: sources j and
// j + 1 share 63 of 64), but one source at a time reads each shared row again, from L2: a head's
// rows lie H * D * 4 bytes apart in [N, H, D] (1 KB for H = 4, D = 64), so they use a quarter of
// L1's sets and are gone by the next source. A group of G consecutive sources whose out-lists look
// alike runs together instead: at least kGroupMinEdges edges each, each list covering at least half
// the range of destinations it spans, first and last destinations within G of each other. Their
// lists are merged by destination once, into steps (a destination and, per member, its edge to it
// or none), and for each head the steps run twice, for grad_k (q rows) and for grad_v (dO rows),
// each row loaded once for all the members that have it. G is the most members whose accumulators
// fit in the vector registers (group_size). Each member adds its own edges in its own order into
// one accumulator, so results depend on the graph only, not on the thread count or the chunking.
//
// Measured (window K = 64, Zen 5, 2 threads; N = 16384 unless said): H = 4, D = 64: source pass
// 12.2 -> 7.6 ms (G = 6; G = 2 and 4 gave 10.7 and 8.8 ms, and two sources in one pass, grad_k and
// grad_v together, 9.2 ms); H = 2, D = 64 (N = 32768): 11.6 -> 10.1; H = 4, D = 48 (G = 8):
// 8.4-10.3 -> 5.8-7.8; N = 8192, H = 4, D = 80 (G = 4), 96 (G = 3), 128 (G = 2): 7.0-7.7 ->
// 4.6-4.9, 8.4-9.0 -> 5.5-5.6, 11.3 -> 8.9. Where a head's rows are short or the heads few, one
// source at a time is as fast or faster (rows stay in L1, or the merge is not paid back): H = 4,
// D = 16: 4.8 -> 6.8 ms; H = 2, D = 32 (N = 32768): 7.3 -> 14.5; H = 1, D = 64 (N = 65536):
// 10.2 -> 14.5; hence kGroupMinVectors and kGroupMinHeads. Sparse lists share little: on a
// 128 x 128 image (H = 4, D = 64) 3 x 3 neighbourhoods (a group's 54 edges in 24 steps) took
// 2.5 -> 3.4 ms, 7 x 7 ones 8.6 -> 8.4 ms; the half-range rule keeps both on the one-source
// kernel, as it does graphs without such neighbours (random, molecules).
constexpr int kMaxGroup = 8;
constexpr int64_t kGroupMinEdges = 4;
constexpr int kGroupMinVectors = 3;
constexpr int64_t kGroupMinHeads = 2;

struct GroupStep {
  int64_t row;              // the destination
  int64_t edge[kMaxGroup];  // per member, the id of its edge to row (perm[t]), or -1 if it has none
};

// Whether sources [j0, j0 + g) run as a group (see above); hubs never do (their segments run apart).
inline bool is_group(const int64_t* colptr, const int64_t* row, int64_t j0, int g, int64_t n_src) {
  if (g < 2 || j0 + g > n_src) return false;
  int64_t first_lo = std::numeric_limits<int64_t>::max(), first_hi = std::numeric_limits<int64_t>::min();
  int64_t last_lo = first_lo, last_hi = first_hi;
  for (int64_t j = j0; j < j0 + g; ++j) {
    const int64_t n = colptr[j + 1] - colptr[j];
    if (is_hub(colptr, j) || n < kGroupMinEdges) return false;
    if (row[colptr[j + 1] - 1] - row[colptr[j]] + 1 > 2 * n) return false;  // sparse list
    first_lo = std::min(first_lo, row[colptr[j]]);
    first_hi = std::max(first_hi, row[colptr[j]]);
    last_lo = std::min(last_lo, row[colptr[j + 1] - 1]);
    last_hi = std::max(last_hi, row[colptr[j + 1] - 1]);
  }
  return first_hi - first_lo <= g && last_hi - last_lo <= g;
}

// The steps of group [j0, j0 + g): the members' out-lists merged by destination. A step takes at
// most one edge of each member (a member's duplicate edges land in consecutive steps), so every
// edge is in exactly one step, in its list's order.
inline void group_steps(const int64_t* colptr, const int64_t* row, const int64_t* perm, int64_t j0, int g,
                        std::vector<GroupStep>& steps) {
  steps.clear();
  int64_t t[kMaxGroup], end[kMaxGroup];
  for (int m = 0; m < g; ++m) {
    t[m] = colptr[j0 + m];
    end[m] = colptr[j0 + m + 1];
  }
  while (true) {
    int64_t next = std::numeric_limits<int64_t>::max();
    for (int m = 0; m < g; ++m) {
      if (t[m] < end[m]) next = std::min(next, row[t[m]]);
    }
    if (next == std::numeric_limits<int64_t>::max()) return;
    GroupStep st;
    st.row = next;
    for (int m = 0; m < g; ++m) st.edge[m] = t[m] < end[m] && row[t[m]] == next ? perm[t[m]++] : -1;
    steps.push_back(st);
  }
}

// ================================================================ kernel arguments

template <typename scalar_t>
struct FwdArgs {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t *q, *k, *v, *bias, *gate;
  const scalar_t *ek, *ev;  // edge_key [E, H, D], edge_value [E, H, Dv]; null when absent
  const int64_t *rowptr, *col;
  int64_t H, D, Dv;
  acc_t scale;
};

template <typename scalar_t>
struct BwdArgs {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t *q, *k, *v, *dout, *out, *bias, *gate;
  const scalar_t *ek, *ev;  // edge_key [E, H, D], edge_value [E, H, Dv]; null when absent
  scalar_t *gek, *gev;      // their gradients (same shapes); null when not asked for
  const int64_t *rowptr, *col, *colptr, *row, *perm;
  const acc_t *lse, *lse_lo, *grad_lse;  // grad_lse may be null (lse unused by the caller)
  acc_t *ds, *pg, *dgate;  // [E, H] each; dgate may be null
  int64_t H, D, Dv;
  acc_t scale;
};

// ================================================================ generic kernels (any dtype)

// Small helpers of the kernels: inlined, so that a compile-time row length reaches their loops.
#define GA_INLINE inline __attribute__((always_inline))

// <x, node + edge> over n elements (edge may be null: <x, node>). `omp simd reduction` lets the
// compiler split the sum into vector lanes (what has no blocked kernel runs these): a
// fixed order for a given n, so results stay deterministic.
template <typename acc_t, typename scalar_t>
GA_INLINE acc_t dot_edge(const scalar_t* x, const scalar_t* node, const scalar_t* edge, int64_t n) {
  acc_t dot = 0;
  if (edge) {
#pragma omp simd reduction(+ : dot)
    for (int64_t d = 0; d < n; ++d) dot += acc_t(x[d]) * edge_term(acc_t(node[d]), acc_t(edge[d]));
  } else {
#pragma omp simd reduction(+ : dot)
    for (int64_t d = 0; d < n; ++d) dot += acc_t(x[d]) * acc_t(node[d]);
  }
  return dot;
}

// acc = acc * alpha + w * (node + edge) over n elements (edge may be null). The accumulator never
// aliases the inputs: `omp simd` says so, and the loop is vectorized without run-time checks.
template <typename acc_t, typename scalar_t>
GA_INLINE void axpby_edge(acc_t* acc, acc_t alpha, acc_t w, const scalar_t* node, const scalar_t* edge, int64_t n) {
  if (edge) {
#pragma omp simd
    for (int64_t d = 0; d < n; ++d) acc[d] = acc[d] * alpha + w * edge_term(acc_t(node[d]), acc_t(edge[d]));
  } else {
#pragma omp simd
    for (int64_t d = 0; d < n; ++d) acc[d] = acc[d] * alpha + w * acc_t(node[d]);
  }
}

// Row e, head h of an [E, H, n] per-edge tensor (null stays null).
template <typename T>
inline T* edge_row(T* base, int64_t e, int64_t H, int64_t h, int64_t n) {
  return base ? base + (e * H + h) * n : nullptr;
}

// The generic kernels take the head dims at run time (DIM = 0) or, for common D == Dv, as the
// compile-time DIM: fixed-length loops are unrolled and vectorized without run-time checks, which
// matters for short rows (molecules: ~2 in-edges per node), where per-edge overhead dominates.

// Streams edges [lo, hi) of row i, head h; leaves the unnormalized accumulator in acc[Dv].
template <typename scalar_t, int64_t DIM = 0, typename acc_t = at::opmath_type<scalar_t>>
SoftmaxState<acc_t> fwd_generic(const FwdArgs<scalar_t>& a, int64_t i, int64_t h, int64_t lo, int64_t hi,
                                acc_t* acc) {
  const int64_t H = a.H, D = DIM > 0 ? DIM : a.D, Dv = DIM > 0 ? DIM : a.Dv;
  std::fill(acc, acc + Dv, acc_t(0));
  SoftmaxState<acc_t> st = softmax_init<acc_t>();
  const scalar_t* qp = a.q + (i * H + h) * D;
  for (int64_t e = lo; e < hi; ++e) {
    const int64_t j = a.col[e];
    const acc_t dot = dot_edge<acc_t>(qp, a.k + (j * H + h) * D, edge_row(a.ek, e, H, h, D), D);
    const acc_t s = a.bias ? score(dot, a.scale, acc_t(a.bias[e * H + h])) : score(dot, a.scale);
    acc_t alpha;
    if (!softmax_rescale(st, s, alpha)) continue;
    const acc_t w = edge_weight(s, st.m);
    st.l += w;
    const acc_t wv = a.gate ? value_weight(w, acc_t(a.gate[e * H + h])) : w;
    axpby_edge(acc, alpha, wv, a.v + (j * H + h) * Dv, edge_row(a.ev, e, H, h, Dv), Dv);
  }
  return st;
}

// Destination pass of the backward over edges [lo, hi) of row i, head h: writes ds, gate * p,
// grad_gate and the edge_key / edge_value gradients of these edges, and leaves
// sum_e grad_dot(ds_e) (k_j + kappa_e) in gq[D].
template <typename scalar_t, int64_t DIM = 0, typename acc_t = at::opmath_type<scalar_t>>
void bwd_dst_generic(const BwdArgs<scalar_t>& a, int64_t i, int64_t h, int64_t lo, int64_t hi, acc_t* gq) {
  const int64_t H = a.H, D = DIM > 0 ? DIM : a.D, Dv = DIM > 0 ? DIM : a.Dv;
  std::fill(gq, gq + D, acc_t(0));
  const scalar_t* qp = a.q + (i * H + h) * D;
  const scalar_t* op = a.dout + (i * H + h) * Dv;
  const Shift<acc_t> shift = prob_shift(a.lse[i * H + h], a.lse_lo[i * H + h]);
  const scalar_t* no_edge = nullptr;
  const acc_t delta = row_delta(dot_edge<acc_t>(op, a.out + (i * H + h) * Dv, no_edge, Dv),
                                a.grad_lse ? a.grad_lse[i * H + h] : acc_t(0));
  for (int64_t e = lo; e < hi; ++e) {
    const int64_t j = a.col[e];
    const scalar_t* kp = a.k + (j * H + h) * D;
    const scalar_t* ekp = edge_row(a.ek, e, H, h, D);
    const acc_t dot = dot_edge<acc_t>(qp, kp, ekp, D);
    const acc_t dp = dot_edge<acc_t>(op, a.v + (j * H + h) * Dv, edge_row(a.ev, e, H, h, Dv), Dv);
    const acc_t s = a.bias ? score(dot, a.scale, acc_t(a.bias[e * H + h])) : score(dot, a.scale);
    const acc_t p = edge_prob(s, shift.hi, shift.lo);
    const acc_t g = a.gate ? acc_t(a.gate[e * H + h]) : acc_t(1);
    const acc_t ds = grad_score(p, a.gate ? gated_dp(dp, g) : dp, delta);
    const acc_t pg = a.gate ? value_weight(p, g) : p;
    a.ds[e * H + h] = ds;
    a.pg[e * H + h] = pg;
    if (a.dgate) a.dgate[e * H + h] = grad_gate(p, dp);
    const acc_t dsk = grad_dot(ds, a.scale);
    axpby_edge(gq, acc_t(1), dsk, kp, ekp, D);
    if (scalar_t* gek = edge_row(a.gek, e, H, h, D)) {
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) gek[d] = static_cast<scalar_t>(grad_edge_key(dsk, acc_t(qp[d])));
    }
    if (scalar_t* gev = edge_row(a.gev, e, H, h, Dv)) {
#pragma omp simd
      for (int64_t d = 0; d < Dv; ++d) gev[d] = static_cast<scalar_t>(grad_edge_value(pg, acc_t(op[d])));
    }
  }
}

// Source pass over the out-edges t in [lo, hi) of source j (transpose order), head h:
// gk[D] = sum grad_dot(ds_e) q_i, gv[Dv] = sum gate_e p_e dO_i.
template <typename scalar_t, int64_t DIM = 0, typename acc_t = at::opmath_type<scalar_t>>
void bwd_src_generic(const BwdArgs<scalar_t>& a, int64_t j, int64_t h, int64_t lo, int64_t hi, acc_t* gk, acc_t* gv) {
  const int64_t H = a.H, D = DIM > 0 ? DIM : a.D, Dv = DIM > 0 ? DIM : a.Dv;
  (void)j;
  std::fill(gk, gk + D, acc_t(0));
  std::fill(gv, gv + Dv, acc_t(0));
  for (int64_t t = lo; t < hi; ++t) {
    const int64_t e = a.perm[t], i = a.row[t];
    const acc_t dsk = grad_dot(a.ds[e * H + h], a.scale);
    const acc_t pg = a.pg[e * H + h];
    const scalar_t* qp = a.q + (i * H + h) * D;
    const scalar_t* op = a.dout + (i * H + h) * Dv;
    const scalar_t* no_edge = nullptr;
    axpby_edge(gk, acc_t(1), dsk, qp, no_edge, D);
    axpby_edge(gv, acc_t(1), pg, op, no_edge, Dv);
  }
}

// ================================================================ blocked kernels (float32, SIMD)
//
// One block is W edges, W the vector width (16 floats on AVX-512, 8 on AVX2): the query row stays
// in registers, one horizontal reduction gives the block's W dot products, one max / rescale per run
// of blocks. The kernels below are written once, as templates over a vector-traits type VT (Avx512
// or Avx2) that holds the instruction set's primitives; Vec<VT> gives the math header's templates
// the +, -, * and ga_exp they use, so the per-edge formulas are still only in edge_attention_math.h.
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define GA_BLOCKED 1
#endif

#ifdef GA_BLOCKED

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Whether a run the vector max called empty (max -inf) holds a NaN score the max dropped; such a
// run poisons the row's sum, as a NaN score does everywhere else (softmax_rescale). Only runs
// without a finite score get here, so the scan costs nothing on ordinary rows.
inline bool has_nan(const float* s, int64_t n) {
  bool nan = false;
  for (int64_t e = 0; e < n; ++e) nan |= s[e] != s[e];
  return nan;
}

#ifdef __AVX512F__
struct Avx512 {
  static constexpr int W = 16;
  // Vector registers the accumulators of one kernel may use (the rest: the query row, loads).
  static constexpr int kAccRegs = 32;
  using reg = __m512;
  using mask = __mmask16;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float f) { return _mm512_set1_ps(f); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg x) { _mm512_storeu_ps(p, x); }
  static reg loadm(const float* p, mask m) { return _mm512_maskz_loadu_ps(m, p); }  // 0 past the mask
  static void storem(float* p, mask m, reg x) { _mm512_mask_storeu_ps(p, m, x); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }   // a * b + c
  static reg fnmadd(reg a, reg b, reg c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a * b
  static reg round(reg x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT); }
  static reg ldexp(reg y, reg n) { return _mm512_scalef_ps(y, n); }  // y * 2^n, n integral
  // y where a > lo, else 0 (a NaN included).
  static reg zero_unless_gt(reg a, reg lo, reg y) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, lo, _CMP_NLE_UQ), y); }
  // Lanes [0, n) of x, the rest from fill (0 <= n <= 16).
  static reg first(int n, reg x, reg fill) { return _mm512_mask_blend_ps(mask((1u << n) - 1), fill, x); }
  // The mask of the last of nv vectors holding a row of n floats (16 * (nv - 1) < n <= 16 * nv).
  static mask tail(int64_t n, int nv) {
    const int64_t rest = n - 16 * (nv - 1);
    return rest >= 16 ? mask(0xFFFF) : mask((1u << rest) - 1);
  }
  static float reduce_max(reg x) { return _mm512_reduce_max_ps(x); }
  static float reduce_add(reg x) { return _mm512_reduce_add_ps(x); }
  // r[t] = sum of the 16 lanes of a[t]: a transpose-and-add tree, 15 adds for 16 dot products.
  static GA_INLINE reg hsum(const reg* a) {
    __m512 b[8], c[4], d[2];
    for (int p = 0; p < 8; ++p) {  // lane-local pairs: x at slots 0, 2 and y at 1, 3 of each 128-bit lane
      b[p] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * p], a[2 * p + 1]), _mm512_unpackhi_ps(a[2 * p], a[2 * p + 1]));
    }
    for (int p = 0; p < 4; ++p) {  // each 128-bit lane now holds 4 edges' partial sums
      const __m512d x = _mm512_castps_pd(b[2 * p]), y = _mm512_castps_pd(b[2 * p + 1]);
      c[p] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    for (int p = 0; p < 2; ++p) {  // fold 128-bit lanes pairwise
      d[p] = _mm512_add_ps(_mm512_shuffle_f32x4(c[2 * p], c[2 * p + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                           _mm512_shuffle_f32x4(c[2 * p], c[2 * p + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    }
    return _mm512_add_ps(_mm512_shuffle_f32x4(d[0], d[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(d[0], d[1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
};
#endif  // __AVX512F__

#if defined(__AVX2__) && defined(__FMA__)
struct Avx2 {
  static constexpr int W = 8;
  static constexpr int kAccRegs = 14;  // 16 ymm registers, 2 left for broadcasts and loads
  using reg = __m256;
  using mask = __m256i;  // all-ones lanes are in
  static reg zero() { return _mm256_setzero_ps(); }
  static reg set1(float f) { return _mm256_set1_ps(f); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg x) { _mm256_storeu_ps(p, x); }
  // Masked-out lanes are neither read (no fault past the row's end) nor written; they load as 0.
  static reg loadm(const float* p, mask m) { return _mm256_maskload_ps(p, m); }
  static void storem(float* p, mask m, reg x) { _mm256_maskstore_ps(p, m, x); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg fnmadd(reg a, reg b, reg c) { return _mm256_fnmadd_ps(a, b, c); }
  static reg round(reg x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // y * 2^n without scalef: n (integral, clamped to +-150, past which the result is 0 or inf anyway)
  // is split into two halves whose powers of two are normal floats, so results down to 2^-149
  // (denormals) and up to overflow come out as scalef gives them (up to one rounding of denormals).
  static reg ldexp(reg y, reg n) {
    const __m256i ni = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(n, set1(-150.f)), set1(150.f)));
    const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const reg p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const reg p2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(y, p1), p2);
  }
  static reg zero_unless_gt(reg a, reg lo, reg y) { return _mm256_and_ps(_mm256_cmp_ps(a, lo, _CMP_NLE_UQ), y); }
  static mask lanes_below(int64_t n) {  // lanes t < n
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static reg first(int n, reg x, reg fill) { return _mm256_blendv_ps(fill, x, _mm256_castsi256_ps(lanes_below(n))); }
  static mask tail(int64_t n, int nv) { return lanes_below(std::min<int64_t>(n - 8 * (nv - 1), 8)); }
  static float reduce_max(reg x) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
  }
  static float reduce_add(reg x) {
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_add_ss(m, _mm_shuffle_ps(m, m, 1)));
  }
  // r[t] = sum of the 8 lanes of a[t]: the same transpose-and-add tree as Avx512::hsum, 7 adds.
  static GA_INLINE reg hsum(const reg* a) {
    __m256 b[4], c[2];
    for (int p = 0; p < 4; ++p) {
      b[p] = _mm256_add_ps(_mm256_unpacklo_ps(a[2 * p], a[2 * p + 1]), _mm256_unpackhi_ps(a[2 * p], a[2 * p + 1]));
    }
    for (int p = 0; p < 2; ++p) {
      const __m256d x = _mm256_castps_pd(b[2 * p]), y = _mm256_castps_pd(b[2 * p + 1]);
      c[p] = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(x, y)), _mm256_castpd_ps(_mm256_unpackhi_pd(x, y)));
    }
    return _mm256_add_ps(_mm256_permute2f128_ps(c[0], c[1], 0x20), _mm256_permute2f128_ps(c[0], c[1], 0x31));
  }
};
#endif  // __AVX2__ && __FMA__

// W float lanes with the operators the math header's templates use (V16 / V8).
template <class VT>
struct Vec {
  typename VT::reg x;
};
template <class VT>
inline Vec<VT> operator+(Vec<VT> a, Vec<VT> b) {
  return {VT::add(a.x, b.x)};
}
template <class VT>
inline Vec<VT> operator-(Vec<VT> a, Vec<VT> b) {
  return {VT::sub(a.x, b.x)};
}
template <class VT>
inline Vec<VT> operator*(Vec<VT> a, Vec<VT> b) {
  return {VT::mul(a.x, b.x)};
}
template <class VT>
inline Vec<VT> splat(float f) {
  return {VT::set1(f)};
}

// exp on W lanes: 2^n * e^r, n = round(x / ln 2), |r| <= ln2 / 2, e^r by Cephes' expf polynomial
// (about 1 ulp). Inputs below -103 (2^-149 is the smallest float), -inf from masked edges
// included, give exactly 0; clamping first keeps -inf out of the range reduction (inf - inf).
// NaN gives NaN, as std::exp: the clamp puts the input second (x86's max returns its second
// operand when either is NaN) and zero_unless_gt keeps unordered lanes.
template <class VT>
inline Vec<VT> ga_exp(Vec<VT> a) {
  using R = typename VT::reg;
  const R lo = VT::set1(-103.f);
  const R x = VT::max(lo, a.x);
  const R n = VT::round(VT::mul(x, VT::set1(1.44269504088896341f)));
  R r = VT::fnmadd(n, VT::set1(0.693359375f), x);  // ln 2 in two parts: exact n * hi
  r = VT::fnmadd(n, VT::set1(-2.12194440e-4f), r);
  R y = VT::set1(1.9875691500e-4f);
  y = VT::fmadd(y, r, VT::set1(1.3981999507e-3f));
  y = VT::fmadd(y, r, VT::set1(8.3334519073e-3f));
  y = VT::fmadd(y, r, VT::set1(4.1665795894e-2f));
  y = VT::fmadd(y, r, VT::set1(1.6666665459e-1f));
  y = VT::fmadd(y, r, VT::set1(5.0000001201e-1f));
  y = VT::fmadd(y, VT::mul(r, r), VT::add(r, VT::set1(1.f)));
  return {VT::zero_unless_gt(a.x, lo, VT::ldexp(y, n))};
}

// Block helpers pass arrays of vectors: inlined (GA_INLINE), they stay in registers; called, they go
// through memory.

// Vector u of NV of a row: full loads, the last one masked (lanes past the row read as 0).
// FULL: the row length is a multiple of W, no mask needed.
template <class VT, int NV, bool FULL>
GA_INLINE typename VT::reg load_row(const float* p, int u, typename VT::mask tail) {
  return !FULL && u == NV - 1 ? VT::loadm(p + VT::W * u, tail) : VT::load(p + VT::W * u);
}
template <class VT, int NV, bool FULL>
GA_INLINE void store_row(float* p, int u, typename VT::mask tail, typename VT::reg x) {
  if (!FULL && u == NV - 1) {
    VT::storem(p + VT::W * u, tail, x);
  } else {
    VT::store(p + VT::W * u, x);
  }
}

// Per-edge [E, H] values of the edges e0 .. e0 + n - 1 of head h, 0 past n.
template <class VT>
GA_INLINE typename VT::reg load_edges(const float* x, int64_t e0, int n, int64_t H, int64_t h, float* buf) {
  for (int t = 0; t < VT::W; ++t) buf[t] = t < n ? x[(e0 + t) * H + h] : 0.f;
  return VT::load(buf);
}

// Writes lanes [0, n) of x to dst[(e0 + t) * H + h].
template <class VT>
GA_INLINE void store_edges(float* dst, typename VT::reg x, int64_t e0, int n, int64_t H, int64_t h, float* buf) {
  VT::store(buf, x);
  for (int t = 0; t < n; ++t) dst[(e0 + t) * H + h] = buf[t];
}

// Vector u of the key (value) row of edge e: the source's row p, plus the edge's own row pe
// (edge_term of the math header) when the op has per-edge terms (EDGE).
template <class VT, int NV, bool FULL, bool EDGE>
GA_INLINE typename VT::reg load_key(const float* p, const float* pe, int u, typename VT::mask tail) {
  if constexpr (EDGE) {
    return edge_term(Vec<VT>{load_row<VT, NV, FULL>(p, u, tail)}, Vec<VT>{load_row<VT, NV, FULL>(pe, u, tail)}).x;
  } else {
    (void)pe;
    return load_row<VT, NV, FULL>(p, u, tail);
  }
}

// The W dot products <x, base[col[e0 + t]] (+ ebase[e0 + t])>, t < W, as one vector (lanes past
// n are garbage; callers mask them). Rows are at row * stride + offset in base and in ebase (the
// per-edge terms, read only when EDGE). x stays in registers; the W partial vectors are reduced at once.
template <class VT, int NV, bool FULL, bool EDGE>
GA_INLINE typename VT::reg block_dots(const typename VT::reg* x, typename VT::mask tail, const float* base,
                                      const float* ebase, const int64_t* col, int64_t e0, int n, int64_t stride,
                                      int64_t offset) {
  typename VT::reg dots[VT::W];
#pragma GCC unroll 16
  for (int t = 0; t < VT::W; ++t) {
    // Lanes past n repeat the last edge (always in bounds; a branch here makes GCC spill dots).
    const int64_t e = e0 + (t < n ? t : n - 1);
    const float* p = base + col[e] * stride + offset;
    const float* pe = EDGE ? ebase + e * stride + offset : nullptr;
    typename VT::reg s = VT::mul(x[0], load_key<VT, NV, FULL, EDGE>(p, pe, 0, tail));
#pragma GCC unroll 16
    for (int u = 1; u < NV; ++u) s = VT::fmadd(x[u], load_key<VT, NV, FULL, EDGE>(p, pe, u, tail), s);
    dots[t] = s;
  }
  return VT::hsum(dots);
}

// block_dots with the per-edge terms when ebase is not null.
template <class VT, int NV, bool FULL>
GA_INLINE typename VT::reg block_dots(const typename VT::reg* x, typename VT::mask tail, const float* base,
                                      const float* ebase, const int64_t* col, int64_t e0, int n, int64_t stride,
                                      int64_t offset) {
  return ebase ? block_dots<VT, NV, FULL, true>(x, tail, base, ebase, col, e0, n, stride, offset)
               : block_dots<VT, NV, FULL, false>(x, tail, base, ebase, col, e0, n, stride, offset);
}

// acc += sum_t w[t] * (base[col[e0 + t]] (+ ebase[e0 + t])), t < n (rows as in block_dots). When the
// registers allow, even and odd edges go to two accumulator sets (two FMA dependency chains of W / 2
// instead of one of W), added at the end.
template <class VT, int NV, bool FULL, bool EDGE>
GA_INLINE void block_axpy(typename VT::reg* acc, typename VT::mask tail, const float* w, const float* base,
                          const float* ebase, const int64_t* col, int64_t e0, int n, int64_t stride, int64_t offset) {
  using R = typename VT::reg;
  auto step = [&](int t, R* x) {
    const float* p = base + col[e0 + t] * stride + offset;
    const float* pe = EDGE ? ebase + (e0 + t) * stride + offset : nullptr;
    const R wt = VT::set1(w[t]);
#pragma GCC unroll 16
    for (int u = 0; u < NV; ++u) x[u] = VT::fmadd(wt, load_key<VT, NV, FULL, EDGE>(p, pe, u, tail), x[u]);
  };
  if constexpr (3 * NV <= VT::kAccRegs) {  // the query row, acc and odd fit
    R odd[NV];
#pragma GCC unroll 16
    for (int u = 0; u < NV; ++u) odd[u] = VT::zero();
    if (n == VT::W) {
#pragma GCC unroll 16
      for (int t = 0; t < VT::W; t += 2) {
        step(t, acc);
        step(t + 1, odd);
      }
    } else {
      int t = 0;
      for (; t + 1 < n; t += 2) {
        step(t, acc);
        step(t + 1, odd);
      }
      if (t < n) step(t, acc);
    }
#pragma GCC unroll 16
    for (int u = 0; u < NV; ++u) acc[u] = VT::add(acc[u], odd[u]);
  } else {  // NV >= 5 independent chains already
    if (n == VT::W) {
#pragma GCC unroll 16
      for (int t = 0; t < VT::W; ++t) step(t, acc);
    } else {
      for (int t = 0; t < n; ++t) step(t, acc);
    }
  }
}

// block_axpy with the per-edge terms when ebase is not null.
template <class VT, int NV, bool FULL>
GA_INLINE void block_axpy(typename VT::reg* acc, typename VT::mask tail, const float* w, const float* base,
                          const float* ebase, const int64_t* col, int64_t e0, int n, int64_t stride, int64_t offset) {
  if (ebase) {
    block_axpy<VT, NV, FULL, true>(acc, tail, w, base, ebase, col, e0, n, stride, offset);
  } else {
    block_axpy<VT, NV, FULL, false>(acc, tail, w, base, ebase, col, e0, n, stride, offset);
  }
}

// Scores of the edges e0 .. e0 + n - 1 (n <= W) of a row, head h, whose query row is in qv:
// scale * <q_i, k_j (+ kappa_e)> (+ bias_e), and -inf on the lanes past n (weight 0).
template <class VT, int NV, bool FULL, class Args>
GA_INLINE typename VT::reg block_scores(const Args& a, const typename VT::reg* qv, typename VT::mask km, int64_t h,
                                        int64_t e0, int n, float* buf) {
  using V = Vec<VT>;
  const V scale = splat<VT>(a.scale);
  V s{block_dots<VT, NV, FULL>(qv, km, a.k, a.ek, a.col, e0, n, a.H * a.D, h * a.D)};
  s = a.bias ? score(s, scale, V{load_edges<VT>(a.bias, e0, n, a.H, h, buf)}) : score(s, scale);
  return VT::first(n, s.x, VT::set1(kNegInf));
}

// Edges scored before one softmax update: the max / exp / sum of a run of blocks is one
// dependency chain instead of one per block, so the dot products of the blocks pipeline freely.
constexpr int64_t kRun = 256;
// The destination pass of the backward runs its three phases on runs of this many edges: the
// third phase re-reads the first one's key rows, which stay in L1 only for short runs (32 edges
// x one head's 256 B for D = 64 = 8 KB). Window N = 16384, K = 64 on Zen 5: 21.0 ms -> 19.0 ms
// (runs of 256 / 32), 16 edges then the same as 32; once the ds and gate * p lines were
// prefetched (kPrefetchRows), 16 edges: 16.6 -> 16.0 ms (medians of 4 and 5 alternating runs).
constexpr int64_t kDstRun = 16;

template <class VT, int NV, bool FULL>
SoftmaxState<float> fwd_blocked(const FwdArgs<float>& a, int64_t i, int64_t h, int64_t lo, int64_t hi,
                                float* acc_out) {
  using R = typename VT::reg;
  using V = Vec<VT>;
  constexpr int W = VT::W;
  const int64_t H = a.H, D = a.D, Dv = a.Dv;
  const auto km = VT::tail(D, NV), vm = VT::tail(Dv, NV);
  R qv[NV], acc[NV];
  const float* qp = a.q + (i * H + h) * D;
#pragma GCC unroll 16
  for (int u = 0; u < NV; ++u) {
    qv[u] = load_row<VT, NV, FULL>(qp, u, km);
    acc[u] = VT::zero();
  }
  SoftmaxState<float> st = softmax_init<float>();
  alignas(64) float sbuf[kRun];
  alignas(64) float buf[W];
  for (int64_t r0 = lo; r0 < hi; r0 += kRun) {
    const int64_t r1 = std::min(hi, r0 + kRun);
    const int blocks = static_cast<int>((r1 - r0 + W - 1) / W);
    R vmax = VT::set1(kNegInf);
    for (int b = 0; b < blocks; ++b) {
      const int64_t e0 = r0 + W * b;
      const int n = static_cast<int>(std::min<int64_t>(W, r1 - e0));
      const R s = block_scores<VT, NV, FULL>(a, qv, km, h, e0, n, buf);
      vmax = VT::max(vmax, s);
      VT::store(sbuf + W * b, s);
    }
    float alpha;
    if (!softmax_rescale(st, VT::reduce_max(vmax), alpha)) {
      if (has_nan(sbuf, int64_t(W) * blocks)) st.l = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    const V m = splat<VT>(st.m);
    R lsum = VT::zero();
    for (int b = 0; b < blocks; ++b) {
      V w = edge_weight(V{VT::load(sbuf + W * b)}, m);
      lsum = VT::add(lsum, w.x);
      if (a.gate) {
        const int64_t e0 = r0 + W * b;
        w = value_weight(w, V{load_edges<VT>(a.gate, e0, static_cast<int>(std::min<int64_t>(W, r1 - e0)), H, h, buf)});
      }
      VT::store(sbuf + W * b, w.x);
    }
    st.l += VT::reduce_add(lsum);
    if (alpha != 1.f) {  // the max moved: rescale what was accumulated
      const R al = VT::set1(alpha);
#pragma GCC unroll 16
      for (int u = 0; u < NV; ++u) acc[u] = VT::mul(acc[u], al);
    }
    for (int b = 0; b < blocks; ++b) {
      const int64_t e0 = r0 + W * b;
      block_axpy<VT, NV, FULL>(acc, vm, sbuf + W * b, a.v, a.ev, a.col, e0,
                               static_cast<int>(std::min<int64_t>(W, r1 - e0)), H * Dv, h * Dv);
    }
  }
#pragma GCC unroll 16
  for (int u = 0; u < NV; ++u) store_row<VT, NV, FULL>(acc_out, u, vm, acc[u]);
  return st;
}

// Rows of 1 to W edges (molecules: ~3 in-edges per node), every head: one block of edges per head,
// and the heads' phases interleaved (the scores of every head, then their softmax, then their
// weighted sums). One head of a short row is a dependency chain of a few hundred cycles (dots,
// horizontal reductions, exp, the sum, the normalization) and little else; run head after head,
// the out-of-order core barely overlaps one head's chain with the next, and a row cost the same
// ~0.2 us per head with 1 edge as with 8. Phase by phase the heads' chains are independent
// neighbours. Per head the operations are fwd_blocked's on one run of edges, followed by the
// normalization the launcher does for the long rows.

template <class VT, int NV, bool FULL>
void fwd_short(const FwdArgs<float>& a, int64_t i, int64_t lo, int64_t hi, float* out, float* lse, float* lse_lo) {
  using R = typename VT::reg;
  using V = Vec<VT>;
  constexpr int W = VT::W;
  const int64_t H = a.H, D = a.D, Dv = a.Dv;
  const int n = static_cast<int>(hi - lo);
  const auto km = VT::tail(D, NV), vm = VT::tail(Dv, NV);
  alignas(64) float w[kShortHeads * W];
  alignas(64) float buf[W];
  SoftmaxState<float> st[kShortHeads];
  for (int64_t h = 0; h < H; ++h) {  // scores (lanes past n: -inf, weight 0)
    R qv[NV];
    const float* qp = a.q + (i * H + h) * D;
#pragma GCC unroll 16
    for (int u = 0; u < NV; ++u) qv[u] = load_row<VT, NV, FULL>(qp, u, km);
    VT::store(w + W * h, block_scores<VT, NV, FULL>(a, qv, km, h, lo, n, buf));
  }
  for (int64_t h = 0; h < H; ++h) {  // softmax weights (gated)
    const V s{VT::load(w + W * h)};
    st[h] = softmax_init<float>();
    float alpha;
    if (!softmax_rescale(st[h], VT::reduce_max(s.x), alpha)) {  // no finite score: empty-row rule
      if (has_nan(w + W * h, W)) st[h].l = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    V wt = edge_weight(s, splat<VT>(st[h].m));
    st[h].l += VT::reduce_add(wt.x);
    if (a.gate) wt = value_weight(wt, V{load_edges<VT>(a.gate, lo, n, H, h, buf)});
    VT::store(w + W * h, wt.x);
  }
  for (int64_t h = 0; h < H; ++h) {  // out = sum of weighted values / l
    R acc[NV];
#pragma GCC unroll 16
    for (int u = 0; u < NV; ++u) acc[u] = VT::zero();
    if (st[h].m != kNegInf) block_axpy<VT, NV, FULL>(acc, vm, w + W * h, a.v, a.ev, a.col, lo, n, H * Dv, h * Dv);
    float inv;
    softmax_finalize(st[h], lse[h], lse_lo[h], inv);
    const R iv = VT::set1(inv);
#pragma GCC unroll 16
    for (int u = 0; u < NV; ++u) store_row<VT, NV, FULL>(out + h * Dv, u, vm, VT::mul(acc[u], iv));
  }
}

// The destination pass of the backward runs three phases per run of edges [r0, r1) of row i,
// head h, each with one row in registers: the scores (q), the probabilities and score gradients
// (dO), then grad_q (its accumulator). Holding q, dO and grad_q at once would need 3 * NV
// registers, which AVX2 does not have for D = 64: the spilled rows would then be re-read from the
// stack for every edge instead of once per run. sbuf holds one value per edge of the run between
// the phases: the score, then grad_dot(ds_e).

// Phase 1: sbuf = the scores (-inf past the run's end within its last block).
template <class VT, int NV, bool FULL>
GA_INLINE void dst_scores(const BwdArgs<float>& a, int64_t i, int64_t h, int64_t r0, int64_t r1, float* sbuf) {
  using R = typename VT::reg;
  constexpr int W = VT::W;
  const auto km = VT::tail(a.D, NV);
  alignas(64) float buf[W];
  R qv[NV];
  const float* qp = a.q + (i * a.H + h) * a.D;
#pragma GCC unroll 16
  for (int u = 0; u < NV; ++u) qv[u] = load_row<VT, NV, FULL>(qp, u, km);
  for (int64_t e0 = r0; e0 < r1; e0 += W) {
    const int n = static_cast<int>(std::min<int64_t>(W, r1 - e0));
    VT::store(sbuf + (e0 - r0), block_scores<VT, NV, FULL>(a, qv, km, h, e0, n, buf));
  }
}

// delta_i = <dO_i, out_i> (- grad_lse_i), once per row and head (a hub: once per segment).
template <class VT, int NV, bool FULL>
GA_INLINE float dst_delta(const BwdArgs<float>& a, int64_t i, int64_t h) {
  const auto vm = VT::tail(a.Dv, NV);
  const float* op = a.dout + (i * a.H + h) * a.Dv;
  const float* outp = a.out + (i * a.H + h) * a.Dv;
  typename VT::reg dot = VT::mul(load_row<VT, NV, FULL>(op, 0, vm), load_row<VT, NV, FULL>(outp, 0, vm));
#pragma GCC unroll 16
  for (int u = 1; u < NV; ++u) {
    dot = VT::fmadd(load_row<VT, NV, FULL>(op, u, vm), load_row<VT, NV, FULL>(outp, u, vm), dot);
  }
  return row_delta(VT::reduce_add(dot), a.grad_lse ? a.grad_lse[i * a.H + h] : 0.f);
}

// Phase 2: p_e, ds_e, gate_e p_e, grad_gate_e, grad_nu_e; sbuf becomes grad_dot(ds_e).
template <class VT, int NV, bool FULL>
GA_INLINE void dst_grads(const BwdArgs<float>& a, int64_t i, int64_t h, int64_t r0, int64_t r1, float delta_i,
                         float* sbuf) {
  using R = typename VT::reg;
  using V = Vec<VT>;
  constexpr int W = VT::W;
  const int64_t H = a.H, Dv = a.Dv;
  const auto vm = VT::tail(Dv, NV);
  const V scale = splat<VT>(a.scale);
  const Shift<float> sh = prob_shift(a.lse[i * H + h], a.lse_lo[i * H + h]);
  const V shift_hi = splat<VT>(sh.hi), shift_lo = splat<VT>(sh.lo);
  alignas(64) float buf[W];
  R ov[NV];
  const float* op = a.dout + (i * H + h) * Dv;
#pragma GCC unroll 16
  for (int u = 0; u < NV; ++u) ov[u] = load_row<VT, NV, FULL>(op, u, vm);
  const V delta = splat<VT>(delta_i);
  for (int64_t e0 = r0; e0 < r1; e0 += W) {
    const int n = static_cast<int>(std::min<int64_t>(W, r1 - e0));
    const V dp{block_dots<VT, NV, FULL>(ov, vm, a.v, a.ev, a.col, e0, n, H * Dv, h * Dv)};
    const V p = edge_prob(V{VT::load(sbuf + (e0 - r0))}, shift_hi, shift_lo);  // 0 on lanes past n
    V ds, pg;
    if (a.gate) {
      const V g{load_edges<VT>(a.gate, e0, n, H, h, buf)};
      ds = grad_score(p, gated_dp(dp, g), delta);
      pg = value_weight(p, g);
    } else {
      ds = grad_score(p, dp, delta);
      pg = p;
    }
    store_edges<VT>(a.pg, pg.x, e0, n, H, h, buf);
    if (a.gev) {  // grad_nu_e = gate_e p_e dO_i, one row per edge (buf still holds gate * p)
      for (int t = 0; t < n; ++t) {
        const V w = splat<VT>(buf[t]);
        float* row = a.gev + ((e0 + t) * H + h) * Dv;
#pragma GCC unroll 16
        for (int u = 0; u < NV; ++u) store_row<VT, NV, FULL>(row, u, vm, grad_edge_value(w, V{ov[u]}).x);
      }
    }
    if (a.dgate) store_edges<VT>(a.dgate, grad_gate(p, dp).x, e0, n, H, h, buf);
    store_edges<VT>(a.ds, ds.x, e0, n, H, h, buf);
    VT::store(sbuf + (e0 - r0), grad_dot(ds, scale).x);
  }
}

// Phase 3: gq_out += grad_dot(ds_e) (k_j + kappa_e); grad_kappa_e = grad_dot(ds_e) q_i, one row per edge.
template <class VT, int NV, bool FULL>
GA_INLINE void dst_grad_q(const BwdArgs<float>& a, int64_t i, int64_t h, int64_t r0, int64_t r1, const float* sbuf,
                          float* gq_out) {
  using R = typename VT::reg;
  using V = Vec<VT>;
  constexpr int W = VT::W;
  const int64_t H = a.H, D = a.D;
  const auto km = VT::tail(D, NV);
  R gq[NV];
#pragma GCC unroll 16
  for (int u = 0; u < NV; ++u) gq[u] = load_row<VT, NV, FULL>(gq_out, u, km);
  for (int64_t e0 = r0; e0 < r1; e0 += W) {
    const int n = static_cast<int>(std::min<int64_t>(W, r1 - e0));
    block_axpy<VT, NV, FULL>(gq, km, sbuf + (e0 - r0), a.k, a.ek, a.col, e0, n, H * D, h * D);
  }
#pragma GCC unroll 16
  for (int u = 0; u < NV; ++u) store_row<VT, NV, FULL>(gq_out, u, km, gq[u]);
  if (a.gek) {
    const float* qp = a.q + (i * H + h) * D;
    for (int64_t e = r0; e < r1; ++e) {
      const V w = splat<VT>(sbuf[e - r0]);
      float* row = a.gek + (e * H + h) * D;
#pragma GCC unroll 16
      for (int u = 0; u < NV; ++u) {
        store_row<VT, NV, FULL>(row, u, km, grad_edge_key(w, V{load_row<VT, NV, FULL>(qp, u, km)}).x);
      }
    }
  }
}

template <class VT, int NV, bool FULL>
void bwd_dst_blocked(const BwdArgs<float>& a, int64_t i, int64_t h, int64_t lo, int64_t hi, float* gq_out) {
  const auto km = VT::tail(a.D, NV);
#pragma GCC unroll 16
  for (int u = 0; u < NV; ++u) store_row<VT, NV, FULL>(gq_out, u, km, VT::zero());
  alignas(64) float sbuf[kDstRun];
  const float delta = dst_delta<VT, NV, FULL>(a, i, h);
  for (int64_t r0 = lo; r0 < hi; r0 += kDstRun) {
    const int64_t r1 = std::min(hi, r0 + kDstRun);
    dst_scores<VT, NV, FULL>(a, i, h, r0, r1, sbuf);
    dst_grads<VT, NV, FULL>(a, i, h, r0, r1, delta, sbuf);
    dst_grad_q<VT, NV, FULL>(a, i, h, r0, r1, sbuf, gq_out);
  }
}

// The destination pass for every head of a row of 1 to W edges, phase by phase across the heads
// (as fwd_short, for the same reason); gq_row is grad_q's row [H, D].
template <class VT, int NV, bool FULL>
void bwd_dst_short(const BwdArgs<float>& a, int64_t i, int64_t lo, int64_t hi, float* gq_row) {
  constexpr int W = VT::W;
  const int64_t H = a.H, D = a.D;
  const auto km = VT::tail(D, NV);
  alignas(64) float sbuf[kShortHeads * W];
  for (int64_t h = 0; h < H; ++h) dst_scores<VT, NV, FULL>(a, i, h, lo, hi, sbuf + W * h);
  for (int64_t h = 0; h < H; ++h) {
    dst_grads<VT, NV, FULL>(a, i, h, lo, hi, dst_delta<VT, NV, FULL>(a, i, h), sbuf + W * h);
  }
  for (int64_t h = 0; h < H; ++h) {
#pragma GCC unroll 16
    for (int u = 0; u < NV; ++u) store_row<VT, NV, FULL>(gq_row + h * D, u, km, VT::zero());
    dst_grad_q<VT, NV, FULL>(a, i, h, lo, hi, sbuf + W * h, gq_row + h * D);
  }
}

// Source pass over the out-edges t in [lo, hi): gk += grad_dot(ds_e) q_i (KEY), gv += gate_e p_e dO_i
// (VALUE). Two accumulator sets (even / odd edges) when the registers allow, summed at the end.
template <class VT, int NV, bool FULL, bool KEY, bool VALUE>
GA_INLINE void src_pass(const BwdArgs<float>& a, int64_t h, int64_t lo, int64_t hi, float* gk_out, float* gv_out) {
  using R = typename VT::reg;
  constexpr int kRows = (KEY ? 1 : 0) + (VALUE ? 1 : 0);
  constexpr bool kTwo = 2 * kRows * NV <= VT::kAccRegs;
  const int64_t H = a.H, D = a.D, Dv = a.Dv;
  const auto km = VT::tail(D, NV), vm = VT::tail(Dv, NV);
  R gk0[NV], gk1[NV], gv0[NV], gv1[NV];
#pragma GCC unroll 16
  for (int u = 0; u < NV; ++u) gk0[u] = gk1[u] = gv0[u] = gv1[u] = VT::zero();
  const float scale = a.scale;
  auto step = [&](int64_t t, R* gk, R* gv) {
    const int64_t e = a.perm[t], i = a.row[t];
    if constexpr (KEY) {
      const R dsk = VT::set1(grad_dot(a.ds[e * H + h], scale));
      const float* qp = a.q + (i * H + h) * D;
#pragma GCC unroll 16
      for (int u = 0; u < NV; ++u) gk[u] = VT::fmadd(dsk, load_row<VT, NV, FULL>(qp, u, km), gk[u]);
    }
    if constexpr (VALUE) {
      const R pg = VT::set1(a.pg[e * H + h]);
      const float* op = a.dout + (i * H + h) * Dv;
#pragma GCC unroll 16
      for (int u = 0; u < NV; ++u) gv[u] = VT::fmadd(pg, load_row<VT, NV, FULL>(op, u, vm), gv[u]);
    }
  };
  int64_t t = lo;
  if constexpr (kTwo) {
    for (; t + 1 < hi; t += 2) {
      step(t, gk0, gv0);
      step(t + 1, gk1, gv1);
    }
  }
  for (; t < hi; ++t) step(t, gk0, gv0);
#pragma GCC unroll 16
  for (int u = 0; u < NV; ++u) {
    if constexpr (KEY) store_row<VT, NV, FULL>(gk_out, u, km, kTwo ? VT::add(gk0[u], gk1[u]) : gk0[u]);
    if constexpr (VALUE) store_row<VT, NV, FULL>(gv_out, u, vm, kTwo ? VT::add(gv0[u], gv1[u]) : gv0[u]);
  }
}

// Members a group of sources has with NV-vector rows: G * NV accumulators, the loaded row's NV
// vectors and a few registers for the broadcast weight and addresses (AVX-512: 6 at D = 64, 2 at
// D = 128). 0 (no group kernel) for rows of fewer than kGroupMinVectors vectors, and for AVX2,
// whose 16 registers hold groups of 2 at most.
template <class VT, int NV>
constexpr int group_size() {
  if (VT::W != 16 || NV < kGroupMinVectors) return 0;
  const int g = std::min(kMaxGroup, (VT::kAccRegs - 4 - NV) / NV);
  return g >= 2 ? g : 0;
}

// One head of a group of G sources (see GroupStep), one gradient: out[m] = sum over member m's
// edges e of w_e x_i, with x = q and w = grad_dot(ds) (KEY), or x = dO and w = gate * p.
template <class VT, int NV, bool FULL, int G, bool KEY>
GA_INLINE void group_pass(const BwdArgs<float>& a, int64_t h, const GroupStep* steps, int64_t n, float* const* out) {
  using R = typename VT::reg;
  const int64_t H = a.H, D = KEY ? a.D : a.Dv;
  const auto tail = VT::tail(D, NV);
  const float* x = KEY ? a.q : a.dout;
  const float* w = KEY ? a.ds : a.pg;
  const float scale = a.scale;
  R acc[G][NV];
#pragma GCC unroll 16
  for (int m = 0; m < G; ++m) {
#pragma GCC unroll 16
    for (int u = 0; u < NV; ++u) acc[m][u] = VT::zero();
  }
  for (int64_t s = 0; s < n; ++s) {
    const GroupStep& st = steps[s];
    const float* xp = x + (st.row * H + h) * D;
    R xv[NV];
#pragma GCC unroll 16
    for (int u = 0; u < NV; ++u) xv[u] = load_row<VT, NV, FULL>(xp, u, tail);
#pragma GCC unroll 16
    for (int m = 0; m < G; ++m) {
      if (st.edge[m] < 0) continue;
      const float we = w[st.edge[m] * H + h];
      const R wv = VT::set1(KEY ? grad_dot(we, scale) : we);
#pragma GCC unroll 16
      for (int u = 0; u < NV; ++u) acc[m][u] = VT::fmadd(wv, xv[u], acc[m][u]);
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < G; ++m) {
#pragma GCC unroll 16
    for (int u = 0; u < NV; ++u) store_row<VT, NV, FULL>(out[m], u, tail, acc[m][u]);
  }
}

// The source pass of one head of a group: gk[m], gv[m] are member m's rows of grad_k, grad_v.
template <class VT, int NV, bool FULL>
void bwd_src_group(const BwdArgs<float>& a, int64_t h, const GroupStep* steps, int64_t n, float* const* gk,
                   float* const* gv) {
  constexpr int G = group_size<VT, NV>();
  if constexpr (G > 0) {
    group_pass<VT, NV, FULL, G, true>(a, h, steps, n, gk);
    group_pass<VT, NV, FULL, G, false>(a, h, steps, n, gv);
  }
}

template <class VT, int NV, bool FULL>
void bwd_src_blocked(const BwdArgs<float>& a, int64_t j, int64_t h, int64_t lo, int64_t hi, float* gk_out,
                     float* gv_out) {
  (void)j;
  if constexpr (2 * NV <= VT::kAccRegs) {  // both rows' accumulators fit: one pass over the edges
    src_pass<VT, NV, FULL, true, true>(a, h, lo, hi, gk_out, gv_out);
  } else {  // one pass per gradient (the edge list is read twice, from cache)
    src_pass<VT, NV, FULL, true, false>(a, h, lo, hi, gk_out, gv_out);
    src_pass<VT, NV, FULL, false, true>(a, h, lo, hi, gk_out, gv_out);
  }
}

#endif  // GA_BLOCKED

// ================================================================ kernel choice

template <typename scalar_t>
struct Kernels {
  using acc_t = at::opmath_type<scalar_t>;
  SoftmaxState<acc_t> (*fwd)(const FwdArgs<scalar_t>&, int64_t, int64_t, int64_t, int64_t, acc_t*);
  void (*dst)(const BwdArgs<scalar_t>&, int64_t, int64_t, int64_t, int64_t, acc_t*);
  void (*src)(const BwdArgs<scalar_t>&, int64_t, int64_t, int64_t, int64_t, acc_t*, acc_t*);
  // Every head of a row with 1 to short_edges edges at once (null: none): the forward's out and
  // lse rows, normalized; the destination pass's grad_q row.
  void (*fwd_short)(const FwdArgs<scalar_t>&, int64_t, int64_t, int64_t, scalar_t*, acc_t*, acc_t*) = nullptr;
  void (*dst_short)(const BwdArgs<scalar_t>&, int64_t, int64_t, int64_t, scalar_t*) = nullptr;
  int64_t short_edges = 0;
  // The source pass of one head of a group of `group` sources (null, 0: none), see GroupStep.
  void (*src_group)(const BwdArgs<scalar_t>&, int64_t, const GroupStep*, int64_t, acc_t* const*,
                    acc_t* const*) = nullptr;
  int group = 0;

  // Whether a row of `edges` edges and `heads` heads runs fwd_short / dst_short.
  bool is_short(int64_t edges, int64_t heads) const {
    return edges >= 1 && edges <= short_edges && heads <= kShortHeads;
  }
};

#ifdef GA_BLOCKED
// The widest vectors the compiler targets; head dims up to 128 run the blocked kernels.
#ifdef __AVX512F__
using Blocked = Avx512;
#else
using Blocked = Avx2;
#endif
constexpr int kMaxNV = 128 / Blocked::W;

template <int NV>
Kernels<float> blocked_kernels(bool full) {
  constexpr int G = group_size<Blocked, NV>();
  if (full) {
    return {fwd_blocked<Blocked, NV, true>, bwd_dst_blocked<Blocked, NV, true>, bwd_src_blocked<Blocked, NV, true>,
            fwd_short<Blocked, NV, true>, bwd_dst_short<Blocked, NV, true>, Blocked::W,
            G ? bwd_src_group<Blocked, NV, true> : nullptr, G};
  }
  return {fwd_blocked<Blocked, NV, false>, bwd_dst_blocked<Blocked, NV, false>, bwd_src_blocked<Blocked, NV, false>,
          fwd_short<Blocked, NV, false>, bwd_dst_short<Blocked, NV, false>, Blocked::W,
          G ? bwd_src_group<Blocked, NV, false> : nullptr, G};
}

// NV in [1, kMaxNV] as a compile-time constant (NV vectors hold a row).
template <int NV = 1>
Kernels<float> blocked_kernels(int nv, bool full) {
  if constexpr (NV < kMaxNV) {
    if (nv != NV) return blocked_kernels<NV + 1>(nv, full);
  }
  return blocked_kernels<NV>(full);
}
#endif  // GA_BLOCKED

// Name of the float32 kernel that runs for these head dims (for tests and benchmark reports).
std::string kernel_name(int64_t D, int64_t Dv) {
#ifdef GA_BLOCKED
  const int64_t nv = (D + Blocked::W - 1) / Blocked::W;
  if (D > 0 && Dv > 0 && nv <= kMaxNV && nv == (Dv + Blocked::W - 1) / Blocked::W) {
    return std::string(Blocked::W == 16 ? "avx512" : "avx2") + "_blocked";
  }
#endif
  (void)D;
  (void)Dv;
  return "generic";
}

// graphattn::cpu_kernel(D, Dv): which float32 kernel this build runs for these head dims.
std::string cpu_kernel(int64_t D, int64_t Dv) {
  return kernel_name(D, Dv);
}

template <typename scalar_t>
Kernels<scalar_t> pick_kernels(int64_t D, int64_t Dv) {
#ifdef GA_BLOCKED
  if constexpr (std::is_same_v<scalar_t, float>) {
    const int64_t nv = (D + Blocked::W - 1) / Blocked::W;
    // One register count for q / k and v rows.
    if (D > 0 && Dv > 0 && nv <= kMaxNV && nv == (Dv + Blocked::W - 1) / Blocked::W) {
      return blocked_kernels(static_cast<int>(nv), D % Blocked::W == 0 && Dv % Blocked::W == 0);
    }
  }
#endif
  if (D == Dv) {
    switch (D) {
#define GA_CASE(DIM) \
  case DIM:          \
    return {fwd_generic<scalar_t, DIM>, bwd_dst_generic<scalar_t, DIM>, bwd_src_generic<scalar_t, DIM>};
      GA_CASE(16)
      GA_CASE(32)
      GA_CASE(64)
#undef GA_CASE
      default: break;
    }
  }
  return {fwd_generic<scalar_t>, bwd_dst_generic<scalar_t>, bwd_src_generic<scalar_t>};
}

// ================================================================ ops

// The index values the kernels read memory with. Python checks a Graph once, when it is built;
// these keep a direct torch.ops call, or a Graph whose tensors were changed in place, from reading
// out of bounds. One parallel pass each (~1% of a forward); the message names the first bad entry.

// The first i in [0, n) with bad(i), or -1: one parallel pass finds whether there is one, and
// only then a serial pass finds the first (so the message names it).
template <class Bad>
int64_t first_bad(int64_t n, const Bad& bad) {
  std::atomic<bool> any{false};
  at::parallel_for(0, n, int64_t(1) << 15, [&](int64_t lo, int64_t hi) {
    bool b = false;
    for (int64_t i = lo; i < hi; ++i) b |= bad(i);
    if (b) any = true;
  });
  if (!any) return -1;
  for (int64_t i = 0; i < n; ++i)
    if (bad(i)) return i;
  return -1;
}

// Offsets `ptr` into `total` items: non-decreasing from 0 to total.
void check_offsets(const at::Tensor& ptr, const char* name, int64_t total) {
  const int64_t* p = ptr.const_data_ptr<int64_t>();
  const int64_t n = ptr.numel() - 1;
  TORCH_CHECK(p[0] == 0 && p[n] == total, name, " must run from 0 to E = ", total, ", got ", name, "[0] = ", p[0],
              " and ", name, "[-1] = ", p[n]);
  const int64_t i = first_bad(n, [p, n, total](int64_t i) { return !offsets_ok(i, n, p[i], p[i + 1], total); });
  TORCH_CHECK(i < 0, name, " must be non-decreasing from 0 to E = ", total, ", but ", name, "[", i, "] = ", p[i],
              " and ", name, "[", i + 1, "] = ", p[i + 1]);
}

// Indices `idx` in [0, bound).
void check_indices(const at::Tensor& idx, const char* name, int64_t bound, const char* bound_name) {
  const int64_t* x = idx.const_data_ptr<int64_t>();
  const int64_t i = first_bad(idx.numel(), [x, bound](int64_t i) { return !index_ok(x[i], bound); });
  TORCH_CHECK(i < 0, name, " must lie in [0, ", bound_name, " = ", bound, "), got ", name, "[", i, "] = ", x[i]);
}

ForwardResult edge_attention_fwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v, const at::Tensor& rowptr,
                                     const at::Tensor& col, const at::Tensor& colptr,
                                     const at::Tensor& row, const at::Tensor& perm,
                                     const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& gate,
                                     const std::optional<at::Tensor>& edge_key,
                                     const std::optional<at::Tensor>& edge_value, double scale) {
  (void)colptr;
  (void)row;
  (void)perm;
  TORCH_CHECK(q.device().is_cpu(), "edge_attention_fwd (CPU kernel) got q on ", q.device());
  const Sizes sz = check_forward(q, k, v, rowptr, col, bias, gate, edge_key, edge_value);
  check_offsets(rowptr, "rowptr", sz.edges);
  check_indices(col, "col", sz.n_src, "N_src");
  const auto acc_type = at::toOpMathType(q.scalar_type());
  at::Tensor out = output_empty({sz.n_dst, sz.heads, sz.dv}, q.options());
  at::Tensor lse = at::empty({sz.n_dst, sz.heads}, q.options().dtype(acc_type));
  at::Tensor lse_lo = at::empty({sz.n_dst, sz.heads}, q.options().dtype(acc_type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "edge_attention_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t H = sz.heads, Dv = sz.dv;
    FwdArgs<scalar_t> a{q.const_data_ptr<scalar_t>(),
                        k.const_data_ptr<scalar_t>(),
                        v.const_data_ptr<scalar_t>(),
                        bias ? bias->const_data_ptr<scalar_t>() : nullptr,
                        gate ? gate->const_data_ptr<scalar_t>() : nullptr,
                        edge_key ? edge_key->const_data_ptr<scalar_t>() : nullptr,
                        edge_value ? edge_value->const_data_ptr<scalar_t>() : nullptr,
                        rowptr.const_data_ptr<int64_t>(),
                        col.const_data_ptr<int64_t>(),
                        H,
                        sz.d,
                        Dv,
                        static_cast<acc_t>(scale)};
    const auto kern = pick_kernels<scalar_t>(sz.d, Dv);
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    acc_t* l = lse.mutable_data_ptr<acc_t>();
    acc_t* l_lo = lse_lo.mutable_data_ptr<acc_t>();
    const int64_t slot = Dv + 2;  // per (segment, head): m, l, accumulator
    const Plan plan = make_plan(a.rowptr, sz.n_dst);
    std::vector<acc_t> scratch(plan.segments.size() * H * slot);

    auto emit = [&](int64_t r, int64_t h, const SoftmaxState<acc_t>& st, const acc_t* acc) {
      acc_t inv;
      softmax_finalize(st, l[r * H + h], l_lo[r * H + h], inv);
      scalar_t* orow = o + (r * H + h) * Dv;
      for (int64_t d = 0; d < Dv; ++d) orow[d] = static_cast<scalar_t>(acc[d] * inv);
    };
    auto whole = [&](int64_t r) {
      const int64_t lo = a.rowptr[r], hi = a.rowptr[r + 1];
      prefetch_row(a.q, r + kPrefetchRows, H * sz.d);
      prefetch_row(o, r + kPrefetchRows, H * Dv, true);
      if (kern.is_short(hi - lo, H)) {
        kern.fwd_short(a, r, lo, hi, o + r * H * Dv, l + r * H, l_lo + r * H);
        return;
      }
      thread_local std::vector<acc_t> acc;
      acc.resize(Dv + 16);
      for (int64_t h = 0; h < H; ++h) emit(r, h, kern.fwd(a, r, h, lo, hi, acc.data()), acc.data());
    };
    auto segment = [&](int64_t s, const Segment& g) {
      for (int64_t h = 0; h < H; ++h) {
        acc_t* x = scratch.data() + (s * H + h) * slot;
        const SoftmaxState<acc_t> st = kern.fwd(a, g.row, h, g.lo, g.hi, x + 2);
        x[0] = st.m;
        x[1] = st.l;
      }
    };
    auto merge = [&](int64_t r, int64_t s0, int64_t s1) {
      std::vector<acc_t> acc(Dv);
      for (int64_t h = 0; h < H; ++h) {
        SoftmaxState<acc_t> st = softmax_init<acc_t>();
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t s = s0; s < s1; ++s) {
          const acc_t* x = scratch.data() + (s * H + h) * slot;
          acc_t alpha_a, alpha_b;
          softmax_merge(st, SoftmaxState<acc_t>{x[0], x[1]}, alpha_a, alpha_b);
          for (int64_t d = 0; d < Dv; ++d) acc[d] = acc[d] * alpha_a + x[2 + d] * alpha_b;
        }
        emit(r, h, st, acc.data());
      }
    };
    run_balanced(plan, a.rowptr, whole, segment, merge);
  });
  return {out, lse, lse_lo};
}

BackwardResult edge_attention_bwd_cpu(const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse,
                                      const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& out, const at::Tensor& lse, const at::Tensor& lse_lo,
                                      const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& colptr,
                                      const at::Tensor& row, const at::Tensor& perm,
                                      const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& gate,
                                      const std::optional<at::Tensor>& edge_key,
                                      const std::optional<at::Tensor>& edge_value, double scale, bool need_kv,
                                      bool need_bias, bool need_gate, bool need_edge_key, bool need_edge_value) {
  TORCH_CHECK(q.device().is_cpu(), "edge_attention_bwd (CPU kernel) got q on ", q.device());
  const Sizes sz = check_backward(grad_out, grad_lse, q, k, v, out, lse, lse_lo, rowptr, col, colptr, row, perm, bias,
                                  gate, edge_key, edge_value, need_kv, need_bias, need_gate, need_edge_key,
                                  need_edge_value);
  check_offsets(rowptr, "rowptr", sz.edges);
  check_indices(col, "col", sz.n_src, "N_src");
  if (need_kv) {
    check_offsets(colptr, "colptr", sz.edges);  // once for both of its index lists
    check_indices(row, "row", sz.n_dst, "N_dst");
    check_indices(perm, "perm", sz.edges, "E");
  }
  const auto acc_type = at::toOpMathType(q.scalar_type());
  const int64_t H = sz.heads, D = sz.d, Dv = sz.dv, E = sz.edges;
  at::Tensor dq = output_empty(q.sizes(), q.options());
  at::Tensor dk = need_kv ? output_empty(k.sizes(), k.options()) : at::empty({0}, q.options());
  at::Tensor dv = need_kv ? output_empty(v.sizes(), v.options()) : at::empty({0}, q.options());
  // ds (the bias gradient when one is asked for) and gate * p per edge, from the destination pass
  // to the source pass; from the output cache, so a training loop does not fault their pages in
  // on every call.
  at::Tensor ds = output_empty({E, H}, q.options().dtype(acc_type));
  at::Tensor pg = output_empty({E, H}, q.options().dtype(acc_type));
  at::Tensor dgate = need_gate ? output_empty({E, H}, q.options().dtype(acc_type)) : at::Tensor();
  at::Tensor dek = need_edge_key ? output_empty({E, H, D}, q.options()) : no_grad_tensor(q);
  at::Tensor dev = need_edge_value ? output_empty({E, H, Dv}, q.options()) : no_grad_tensor(q);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "edge_attention_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    BwdArgs<scalar_t> a{q.const_data_ptr<scalar_t>(),
                        k.const_data_ptr<scalar_t>(),
                        v.const_data_ptr<scalar_t>(),
                        grad_out.const_data_ptr<scalar_t>(),
                        out.const_data_ptr<scalar_t>(),
                        bias ? bias->const_data_ptr<scalar_t>() : nullptr,
                        gate ? gate->const_data_ptr<scalar_t>() : nullptr,
                        edge_key ? edge_key->const_data_ptr<scalar_t>() : nullptr,
                        edge_value ? edge_value->const_data_ptr<scalar_t>() : nullptr,
                        need_edge_key ? dek.mutable_data_ptr<scalar_t>() : nullptr,
                        need_edge_value ? dev.mutable_data_ptr<scalar_t>() : nullptr,
                        rowptr.const_data_ptr<int64_t>(),
                        col.const_data_ptr<int64_t>(),
                        need_kv ? colptr.const_data_ptr<int64_t>() : nullptr,
                        need_kv ? row.const_data_ptr<int64_t>() : nullptr,
                        need_kv ? perm.const_data_ptr<int64_t>() : nullptr,
                        lse.const_data_ptr<acc_t>(),
                        lse_lo.const_data_ptr<acc_t>(),
                        grad_lse ? grad_lse->const_data_ptr<acc_t>() : nullptr,
                        ds.mutable_data_ptr<acc_t>(),
                        pg.mutable_data_ptr<acc_t>(),
                        need_gate ? dgate.mutable_data_ptr<acc_t>() : nullptr,
                        H,
                        D,
                        Dv,
                        static_cast<acc_t>(scale)};
    const auto kern = pick_kernels<scalar_t>(D, Dv);
    // A gradient's rows as the kernels' accumulator type when that is its own type (float, double:
    // the kernels write straight into it), else null (half, bfloat16: through a row of acc_t).
    auto acc_view = [](auto* p) -> acc_t* {  // generic: the discarded branch is not compiled
      if constexpr (std::is_same_v<std::remove_pointer_t<decltype(p)>, acc_t>) {
        return p;
      } else {
        return nullptr;
      }
    };

    // Destination pass: grad_q, the per-edge gradients (gate, edge_key, edge_value), and ds /
    // gate * p per edge for the source pass.
    {
      scalar_t* gq = dq.mutable_data_ptr<scalar_t>();
      acc_t* const gq_acc = acc_view(gq);
      const Plan plan = make_plan(a.rowptr, sz.n_dst);
      std::vector<acc_t> scratch(plan.segments.size() * H * D);
      auto emit = [&](int64_t r, int64_t h, const acc_t* x) {
        for (int64_t d = 0; d < D; ++d) gq[(r * H + h) * D + d] = static_cast<scalar_t>(x[d]);
      };
      auto whole = [&](int64_t r) {
        const int64_t lo = a.rowptr[r], hi = a.rowptr[r + 1];
        prefetch_row(a.q, r + kPrefetchRows, H * D);
        prefetch_row(a.dout, r + kPrefetchRows, H * Dv);
        prefetch_row(a.out, r + kPrefetchRows, H * Dv);
        if (r + kPrefetchRows < sz.n_dst) {
          const int64_t pr = r + kPrefetchRows;
          prefetch_span(a.ds, a.rowptr[pr] * H, a.rowptr[pr + 1] * H, true);
          prefetch_span(a.pg, a.rowptr[pr] * H, a.rowptr[pr + 1] * H, true);
        }
        if (kern.is_short(hi - lo, H)) {
          kern.dst_short(a, r, lo, hi, gq + r * H * D);
          return;
        }
        for (int64_t h = 0; h < H; ++h) {
          if (gq_acc) {
            kern.dst(a, r, h, lo, hi, gq_acc + (r * H + h) * D);
          } else {
            thread_local std::vector<acc_t> x;
            x.resize(D);
            kern.dst(a, r, h, lo, hi, x.data());
            emit(r, h, x.data());
          }
        }
      };
      auto segment = [&](int64_t s, const Segment& g) {
        for (int64_t h = 0; h < H; ++h) kern.dst(a, g.row, h, g.lo, g.hi, scratch.data() + (s * H + h) * D);
      };
      auto merge = [&](int64_t r, int64_t s0, int64_t s1) {
        std::vector<acc_t> x(D);
        for (int64_t h = 0; h < H; ++h) {
          std::fill(x.begin(), x.end(), acc_t(0));
          for (int64_t s = s0; s < s1; ++s) {
            for (int64_t d = 0; d < D; ++d) x[d] += scratch[(s * H + h) * D + d];
          }
          emit(r, h, x.data());
        }
      };
      run_balanced(plan, a.rowptr, whole, segment, merge);
    }

    // Source pass over the transpose: grad_k, grad_v, each source row written by one thread.
    if (need_kv) {
      scalar_t* gk = dk.mutable_data_ptr<scalar_t>();
      scalar_t* gv = dv.mutable_data_ptr<scalar_t>();
      acc_t* const gk_acc = acc_view(gk);
      acc_t* const gv_acc = acc_view(gv);
      const int64_t slot = D + Dv;
      const Plan plan = make_plan(a.colptr, sz.n_src);
      std::vector<acc_t> scratch(plan.segments.size() * H * slot);
      auto emit = [&](int64_t j, int64_t h, const acc_t* x) {
        for (int64_t d = 0; d < D; ++d) gk[(j * H + h) * D + d] = static_cast<scalar_t>(x[d]);
        for (int64_t d = 0; d < Dv; ++d) gv[(j * H + h) * Dv + d] = static_cast<scalar_t>(x[D + d]);
      };
      const int G = gk_acc && H >= kGroupMinHeads ? kern.group : 0;
      auto whole = [&](int64_t j) {
        const int64_t lo = a.colptr[j], hi = a.colptr[j + 1];
        const int64_t j0 = G ? j - j % G : j;
        if (G && is_group(a.colptr, a.row, j0, G, sz.n_src)) {
          if (j != j0) return;  // the group's first member runs the group
          thread_local std::vector<GroupStep> steps;
          group_steps(a.colptr, a.row, a.perm, j0, G, steps);
          acc_t* gkm[kMaxGroup];
          acc_t* gvm[kMaxGroup];
          for (int64_t h = 0; h < H; ++h) {
            for (int m = 0; m < G; ++m) {
              gkm[m] = gk_acc + ((j0 + m) * H + h) * D;
              gvm[m] = gv_acc + ((j0 + m) * H + h) * Dv;
            }
            kern.src_group(a, h, steps.data(), static_cast<int64_t>(steps.size()), gkm, gvm);
          }
          return;
        }
        for (int64_t h = 0; h < H; ++h) {
          if (gk_acc) {
            kern.src(a, j, h, lo, hi, gk_acc + (j * H + h) * D, gv_acc + (j * H + h) * Dv);
          } else {
            thread_local std::vector<acc_t> x;
            x.resize(slot);
            kern.src(a, j, h, lo, hi, x.data(), x.data() + D);
            emit(j, h, x.data());
          }
        }
      };
      auto segment = [&](int64_t s, const Segment& g) {
        for (int64_t h = 0; h < H; ++h) {
          acc_t* x = scratch.data() + (s * H + h) * slot;
          kern.src(a, g.row, h, g.lo, g.hi, x, x + D);
        }
      };
      auto merge = [&](int64_t j, int64_t s0, int64_t s1) {
        std::vector<acc_t> x(slot);
        for (int64_t h = 0; h < H; ++h) {
          std::fill(x.begin(), x.end(), acc_t(0));
          for (int64_t s = s0; s < s1; ++s) {
            for (int64_t d = 0; d < slot; ++d) x[d] += scratch[(s * H + h) * slot + d];
          }
          emit(j, h, x.data());
        }
      };
      run_balanced(plan, a.colptr, whole, segment, merge);
    }
  });

  return backward_outputs(q, dq, dk, dv, ds, dgate, dek, dev, need_bias, need_gate);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(graphattn, m) {
  m.def("cpu_kernel(int d, int dv) -> str", &cpu_kernel);
}

TORCH_LIBRARY_IMPL(graphattn, CPU, m) {
  m.impl("edge_attention_fwd", &edge_attention_fwd_cpu);
  m.impl("edge_attention_bwd", &edge_attention_bwd_cpu);
}

// No tensor arguments: the dispatcher has no device to go by.
TORCH_LIBRARY_IMPL(graphattn, CompositeExplicitAutograd, m) { m.impl("empty_cpu_cache", &empty_cpu_cache); }

}  // namespace graphattn
