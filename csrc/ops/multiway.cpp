// multiway_linear on any backend: the two experts write straight into their token ranges of one
// output, reading their token ranges of x in place (no gathered copies, no concatenation).
#include <torch/library.h>

#include "ops/checks.h"

namespace vlmzoo::ops {
namespace {

// x: [B, T, D]; weight_a/b: [N, D]. Tokens [:split] use a, [split:] use b.
at::Tensor multiway_linear_impl(const at::Tensor& x, int64_t split, const at::Tensor& weight_a,
                                const std::optional<at::Tensor>& bias_a, const at::Tensor& weight_b,
                                const std::optional<at::Tensor>& bias_b) {
  check_multiway("vlmzoo::multiway_linear", x, split, weight_a, bias_a, weight_b, bias_b, /*linear=*/true);
  const int64_t batch = x.size(0), tokens = x.size(1);
  auto out = at::empty({batch, tokens, weight_a.size(0)}, x.options());
  struct Part {
    const at::Tensor& weight;
    const std::optional<at::Tensor>& bias;
    int64_t start, length;
  };
  for (const Part& part : {Part{weight_a, bias_a, 0, split}, Part{weight_b, bias_b, split, tokens - split}}) {
    if (part.length == 0) continue;
    auto weight_t = part.weight.t();
    for (int64_t b = 0; b < batch; ++b) {  // out[b, start:start+length] is one contiguous block
      auto dst = out.select(0, b).narrow(0, part.start, part.length);
      auto src = x.select(0, b).narrow(0, part.start, part.length);
      if (part.bias.has_value()) at::addmm_out(dst, *part.bias, src, weight_t);
      else at::mm_out(dst, src, weight_t);
    }
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(vlmzoo, CompositeExplicitAutograd, m) { m.impl("multiway_linear", &multiway_linear_impl); }

}  // namespace vlmzoo::ops
