// The attention kernel's own VNNI packing must lay bfloat16 out exactly as oneDNN's pack does, since
// oneDNN's brgemm reads it.
#include <ATen/native/CPUBlas.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ops/cpu/vnni_pack.h"

namespace {

TEST(VnniPack, KeysTransposedMatchOneDnnPackOfKTransposed) {
  if (!at::native::cpublas::could_pack(at::kBFloat16)) GTEST_SKIP() << "no oneDNN bf16 pack on this CPU";
  const int64_t d = 96, n = 64, ld = 112, valid = 53;
  auto keys = torch::randn({n, ld}).to(torch::kBFloat16);  // rows ld apart, of which d are read
  auto kt = torch::zeros({d, n}, torch::kBFloat16);
  kt.narrow(1, 0, valid).copy_(keys.narrow(0, 0, valid).narrow(1, 0, d).t());
  auto expected = torch::empty({d * n}, torch::kBFloat16);
  at::native::cpublas::pack(d, n, n, n, at::kBFloat16, at::kBFloat16, kt.data_ptr(), expected.data_ptr());
  auto ours = torch::empty({d * n}, torch::kBFloat16);
  vlmzoo::ops::cpu::pack_keys_transposed_vnni(keys.data_ptr<c10::BFloat16>(), valid, ld, d, n, n,
                                              ours.data_ptr<c10::BFloat16>());
  EXPECT_TRUE(torch::equal(ours, expected));
}

TEST(VnniPack, RowsMatchOneDnnPack) {
  if (!at::native::cpublas::could_pack(at::kBFloat16)) GTEST_SKIP() << "no oneDNN bf16 pack on this CPU";
  const int64_t k = 64, width = 64, ld = 80, valid = 41;
  auto rows = torch::randn({k, ld}).to(torch::kBFloat16);
  auto dense = torch::zeros({k, width}, torch::kBFloat16);
  dense.narrow(0, 0, valid).copy_(rows.narrow(0, 0, valid).narrow(1, 0, width));
  auto expected = torch::empty({k * width}, torch::kBFloat16);
  at::native::cpublas::pack(k, width, width, width, at::kBFloat16, at::kBFloat16, dense.data_ptr(),
                            expected.data_ptr());
  auto ours = torch::empty({k * width}, torch::kBFloat16);
  vlmzoo::ops::cpu::pack_rows_vnni(rows.data_ptr<c10::BFloat16>(), valid, k, ld, width, ours.data_ptr<c10::BFloat16>());
  EXPECT_TRUE(torch::equal(ours, expected));
}

}  // namespace
