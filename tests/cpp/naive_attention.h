#pragma once
// The definition of masked softmax attention for the C++ tests (test_ops, test_attention).
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace vlmzoo_test {

// Scalar loops over float64, nothing shared with the code under test. q: [B, H, Tq, d], k and v:
// [B, Hkv, Tk, d], allowed: undefined or broadcastable to [B, H, Tq, Tk] -> float64 [B, H, Tq, d];
// a row with nothing to attend to is zeros.
inline torch::Tensor naive_attention(const torch::Tensor& q_in, const torch::Tensor& k_in, const torch::Tensor& v_in,
                                   const torch::Tensor& allowed_in, double scale) {
  auto q = q_in.to(torch::kFloat64).contiguous(), k = k_in.to(torch::kFloat64).contiguous();
  auto v = v_in.to(torch::kFloat64).contiguous();
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), d = q.size(3), Hkv = k.size(1), Tk = k.size(2);
  auto allowed = allowed_in.defined() ? allowed_in.expand({B, H, Tq, Tk}).contiguous()
                                      : torch::ones({B, H, Tq, Tk}, torch::kBool);
  auto out = torch::zeros({B, H, Tq, d}, torch::kFloat64);
  auto qa = q.accessor<double, 4>(), ka = k.accessor<double, 4>(), va = v.accessor<double, 4>();
  auto ma = allowed.accessor<bool, 4>();
  auto oa = out.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t hk = h / (H / Hkv);
        std::vector<double> scores(Tk, -std::numeric_limits<double>::infinity());
        double top = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < Tk; ++j) {
          if (!ma[b][h][i][j]) continue;
          double s = 0;
          for (int64_t c = 0; c < d; ++c) s += qa[b][h][i][c] * ka[b][hk][j][c];
          scores[j] = s * scale;
          top = std::max(top, scores[j]);
        }
        if (top == -std::numeric_limits<double>::infinity()) continue;  // nothing to attend to: zeros
        double total = 0;
        for (auto& s : scores) total += (s = std::exp(s - top));
        for (int64_t j = 0; j < Tk; ++j)
          for (int64_t c = 0; c < d; ++c) oa[b][h][i][c] += scores[j] / total * va[b][hk][j][c];
      }
  return out;
}

}  // namespace vlmzoo_test
