// Autoregressive decoding with a KV cache, entirely in C++: greedy or sampled (temperature,
// top-k, top-p), per-row stopping at eos, left-padded batches as transformers' generate.
#include "models/vlm_model.h"

namespace vlmzoo::models {

namespace {

// logits: [B, V] float32 -> next token ids [B].
torch::Tensor choose_next(torch::Tensor logits, const GenerateOptions& o, at::Generator& generator) {
  if (!o.do_sample) return logits.argmax(-1);
  logits = logits / o.temperature;
  const auto neg_inf = -std::numeric_limits<float>::infinity();
  if (o.top_k > 0 && o.top_k < logits.size(-1)) {
    auto kth = std::get<0>(logits.topk(o.top_k, -1)).narrow(-1, o.top_k - 1, 1);
    logits = logits.masked_fill(logits < kth, neg_inf);
  }
  if (o.top_p < 1.0) {
    // Drop the tokens whose cumulative probability, counted from the least likely, stays <= 1 - top_p.
    auto [sorted, order] = logits.sort(-1, /*descending=*/false);
    auto cumulative = sorted.softmax(-1).cumsum(-1);
    auto drop_sorted = cumulative <= (1.0 - o.top_p);
    drop_sorted.narrow(-1, drop_sorted.size(-1) - 1, 1).fill_(false);  // keep at least one
    auto drop = drop_sorted.scatter(-1, order, drop_sorted);
    logits = logits.masked_fill(drop, neg_inf);
  }
  auto probs = logits.softmax(-1);
  // Inverse-CDF sampling from a seeded CPU generator: the same draws on every device.
  auto u = torch::rand({probs.size(0), 1}, generator, torch::TensorOptions().dtype(torch::kFloat64)).to(probs.device());
  auto below = probs.to(torch::kFloat64).cumsum(-1) < u;
  return below.sum(-1).clamp_max(probs.size(-1) - 1);
}

}  // namespace

torch::Tensor VlmModelImpl::generate(const torch::Tensor& input_ids, const torch::Tensor& pixel_values,
                                     const torch::Tensor& attention_mask, const GenerateOptions& o) {
  TORCH_CHECK_VALUE(o.max_new_tokens >= 0, "max_new_tokens: must be >= 0, got ", o.max_new_tokens);
  TORCH_CHECK_VALUE(!o.do_sample || o.temperature > 0, "temperature: must be > 0 when sampling, got ", o.temperature);
  TORCH_CHECK_VALUE(o.top_p > 0 && o.top_p <= 1, "top_p: must lie in (0, 1], got ", o.top_p);
  TORCH_CHECK_VALUE(o.top_k >= 0, "top_k: must be >= 0, got ", o.top_k);
  torch::NoGradGuard no_grad;
  const int64_t batch = input_ids.size(0), prompt_len = input_ids.size(1);
  auto ids_options = input_ids.options().dtype(torch::kLong);
  auto mask = attention_mask.defined() ? attention_mask.to(torch::kLong) : torch::ones({batch, prompt_len}, ids_options);
  TORCH_CHECK_VALUE(mask.sizes() == input_ids.sizes(), "attention_mask: expected the shape of input_ids ",
                    input_ids.sizes(), ", got ", mask.sizes());
  // Positions count real tokens only, so left padding does not shift them (as transformers).
  auto positions = (mask.cumsum(-1) - 1).clamp_min(0);
  auto generator = at::detail::createCPUGenerator(static_cast<uint64_t>(o.seed));
  auto eos = torch::tensor(o.eos_token_ids.empty() ? std::vector<int64_t>{-1} : o.eos_token_ids, ids_options);

  std::vector<nn::KVCache> caches(config_.llm.layers);
  for (auto& cache : caches) cache.capacity = prompt_len + o.max_new_tokens;

  auto hidden = llm(input_embeddings(input_ids, pixel_values), mask, positions, &caches);
  auto logits = llm->logits(hidden.select(1, hidden.size(1) - 1)).to(torch::kFloat32);
  auto finished = torch::zeros({batch}, ids_options.dtype(torch::kBool));
  std::vector<torch::Tensor> pieces = {input_ids.to(torch::kLong)};
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    auto next = choose_next(logits, o, generator);
    next = torch::where(finished, torch::full_like(next, o.pad_token_id), next);
    pieces.push_back(next.unsqueeze(1));
    finished = finished | torch::isin(next, eos);
    if (step + 1 == o.max_new_tokens || finished.all().item<bool>()) break;
    mask = torch::cat({mask, torch::ones({batch, 1}, ids_options)}, 1);
    positions = positions.narrow(1, positions.size(1) - 1, 1) + 1;
    // next comes from the vocabulary's own logits: no id check needed.
    hidden = llm(llm->embed_tokens(next.unsqueeze(1)), mask, positions, &caches);
    logits = llm->logits(hidden.select(1, 0)).to(torch::kFloat32);
  }
  return torch::cat(pieces, 1);
}

}  // namespace vlmzoo::models
