// cross_entropy on CPU: per-row loss and log-sum-exp over the vocabulary, and its backward written
// straight into dlogits. Rows are read where they lie (any row stride): the caller passes the logits
// unshifted, with the labels shifted, so no slice of the logits is ever copied. Per row the forward
// reads the logits twice (max, then sum of exp; a row of 32k floats stays in L2) and the backward
// reads them once and writes dlogits once.
#include "ops/cpu/vec.h"
// (vec.h first: it selects the instruction set for this file)
#include <cmath>
#include <limits>

#include "ops/cpu/training_kernels.h"

namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS {
namespace {

template <typename V>
inline V exp_fast(const V& x) {
  if constexpr (std::is_same_v<typename V::value_type, float>) return x.exp_u20();
  else return x.exp();
}

// log(sum(exp(row))), in acc_t.
template <typename T>
acc_t<T> row_logsumexp(const T* row, int64_t V_) {
  using A = acc_t<T>;
  using Vec = AccVec<T>;
  constexpr int64_t n = Vec::size();
  Vec vmax(-std::numeric_limits<A>::infinity());
  int64_t j = 0;
  for (; j + n <= V_; j += n) vmax = at::vec::maximum(vmax, load(row + j, n));
  A m = lanes_max(vmax);
  for (; j < V_; ++j) m = std::max(m, static_cast<A>(row[j]));
  if (std::isinf(m)) return m;  // all -inf (or an inf): exp would give nan
  const Vec vm(m);
  Vec vsum(A(0));
  for (j = 0; j + n <= V_; j += n) vsum = vsum + exp_fast(load(row + j, n) - vm);
  A s = lanes_sum(vsum);
  for (; j < V_; ++j) s += std::exp(static_cast<A>(row[j]) - m);
  return m + std::log(s);
}

template <typename T>
void forward_rows(const at::Tensor& logits, const at::Tensor& labels, int64_t ignore_index, const at::Tensor& loss,
                  const at::Tensor& lse) {
  using A = acc_t<T>;
  const int64_t rows = logits.size(0), V_ = logits.size(1), stride = logits.stride(0);
  const T* xp = logits.const_data_ptr<T>();
  const int64_t* lp = labels.const_data_ptr<int64_t>();
  A* lossp = loss.mutable_data_ptr<A>();
  A* lsep = lse.mutable_data_ptr<A>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 65536 / std::max<int64_t>(V_, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t label = lp[r];
      if (label == ignore_index) {  // no gradient flows to the row: its lse is not needed either
        lossp[r] = A(0);
        lsep[r] = A(0);
        continue;
      }
      const T* row = xp + r * stride;
      const A l = row_logsumexp(row, V_);
      lsep[r] = l;
      lossp[r] = l - static_cast<A>(row[label]);
    }
  });
}

template <typename T>
void backward_rows(const at::Tensor& grad, const at::Tensor& logits, const at::Tensor& labels, const at::Tensor& lse,
                   int64_t ignore_index, const at::Tensor& out) {
  using A = acc_t<T>;
  using Vec = AccVec<T>;
  constexpr int64_t n = Vec::size();
  const int64_t rows = logits.size(0), V_ = logits.size(1), stride = logits.stride(0);
  const T* xp = logits.const_data_ptr<T>();
  const int64_t* lp = labels.const_data_ptr<int64_t>();
  const A* gp = grad.const_data_ptr<A>();
  const A* lsep = lse.const_data_ptr<A>();
  T* op = out.mutable_data_ptr<T>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 65536 / std::max<int64_t>(V_, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t label = lp[r];
      T* orow = op + r * V_;
      if (label == ignore_index || gp[r] == A(0)) {
        std::fill(orow, orow + V_, T(0));
        continue;
      }
      const T* row = xp + r * stride;
      const Vec g(gp[r]), l(lsep[r]);
      for (int64_t j = 0; j < V_; j += n) {
        const int64_t c = std::min(n, V_ - j);
        store(orow + j, g * exp_fast(load(row + j, c) - l), c);
      }
      // softmax - one_hot at the label, from the rounded softmax as the ATen composite does.
      orow[label] = static_cast<T>(static_cast<A>(orow[label]) - gp[r]);
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> cross_entropy(const at::Tensor& logits_in, const at::Tensor& labels_in,
                                                 int64_t ignore_index) {
  auto logits = as_rows(logits_in);
  auto labels = labels_in.reshape({-1}).contiguous();
  const auto acc = at::promote_types(logits.scalar_type(), at::kFloat);
  auto loss = at::empty(labels_in.sizes(), logits.options().dtype(acc));
  auto lse = at::empty(labels_in.sizes(), logits.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "vlmzoo::cross_entropy", [&] {
    forward_rows<scalar_t>(logits, labels, ignore_index, loss.view({-1}), lse.view({-1}));
  });
  return {loss, lse};
}

at::Tensor cross_entropy_backward(const at::Tensor& grad_in, const at::Tensor& logits_in, const at::Tensor& labels_in,
                                  const at::Tensor& lse_in, int64_t ignore_index) {
  auto logits = as_rows(logits_in);
  auto labels = labels_in.reshape({-1}).contiguous();
  const auto acc = at::promote_types(logits.scalar_type(), at::kFloat);
  auto grad = grad_in.to(acc).reshape({-1}).contiguous();
  auto lse = lse_in.reshape({-1}).contiguous();
  auto out = empty_contiguous(logits_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "vlmzoo::cross_entropy_backward",
                                  [&] {
                                    backward_rows<scalar_t>(grad, logits, labels, lse, ignore_index,
                                                            out.view({-1, logits.size(1)}));
                                  });
  return out;
}

}  // namespace vlmzoo::ops::cpu::VLMZOO_CPU_ISA_NS
