// Autoregressive decoding with a KV cache, entirely in C++: greedy or sampled (temperature, top-k,
// top-p), repetition penalty, n-gram blocking, a minimum length, per-row stopping at eos, streaming
// to a callback, and left-padded batches as transformers' generate does them.
#include "models/decoder_vlm.h"

#include <map>

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

// transformers' RepetitionPenaltyLogitsProcessor: scores of tokens already in the row are divided
// by the penalty when positive, multiplied when negative. logits: [B, V]; seen: [B, L].
torch::Tensor penalise_repetition(const torch::Tensor& logits, const torch::Tensor& seen, double penalty) {
  auto scores = logits.gather(1, seen);
  scores = torch::where(scores < 0, scores * penalty, scores / penalty);
  return logits.scatter(1, seen, scores);
}

// transformers' NoRepeatNGramLogitsProcessor, kept incrementally: per row, every (n-1)-gram seen so
// far (prompt included, padding included, as transformers counts them) -> the tokens that followed it.
class NgramBlocker {
 public:
  NgramBlocker(int64_t n, const torch::Tensor& prompt) : n_(n), rows_(prompt.size(0)), seen_(prompt.size(0)) {
    if (n_ <= 0) return;
    auto ids = prompt.to(torch::kCPU).to(torch::kLong).contiguous();
    auto a = ids.accessor<int64_t, 2>();
    for (int64_t r = 0; r < rows_; ++r) {
      for (int64_t t = 0; t < ids.size(1); ++t) append(r, a[r][t]);
    }
  }
  // tokens: [B] on any device; appends each row's token and records the n-gram it closes.
  void push(const torch::Tensor& tokens) {
    if (n_ <= 0) return;
    auto cpu = tokens.to(torch::kCPU).to(torch::kLong).contiguous();
    auto a = cpu.accessor<int64_t, 1>();
    for (int64_t r = 0; r < rows_; ++r) append(r, a[r]);
  }
  // logits: [B, V]; the tokens that would repeat an n-gram get -inf.
  void ban(torch::Tensor& logits) const {
    if (n_ <= 0) return;
    std::vector<int64_t> rows, cols;
    for (int64_t r = 0; r < rows_; ++r) {
      const auto& history = seen_[r].history;
      if (static_cast<int64_t>(history.size()) + 1 < n_) continue;
      std::vector<int64_t> key(history.end() - (n_ - 1), history.end());
      auto found = seen_[r].next.find(key);
      if (found == seen_[r].next.end()) continue;
      for (int64_t token : found->second) {
        rows.push_back(r);
        cols.push_back(token);
      }
    }
    if (rows.empty()) return;
    auto index_options = torch::TensorOptions().dtype(torch::kLong);
    auto r = torch::tensor(rows, index_options).to(logits.device());
    auto c = torch::tensor(cols, index_options).to(logits.device());
    logits.index_put_({r, c}, -std::numeric_limits<float>::infinity());
  }

 private:
  struct Row {
    std::vector<int64_t> history;
    std::map<std::vector<int64_t>, std::vector<int64_t>> next;
  };
  void append(int64_t r, int64_t token) {
    auto& row = seen_[r];
    row.history.push_back(token);
    if (static_cast<int64_t>(row.history.size()) < n_) return;
    std::vector<int64_t> key(row.history.end() - n_, row.history.end() - 1);
    row.next[key].push_back(token);
  }
  int64_t n_, rows_;
  std::vector<Row> seen_;
};

void check_options(const GenerateOptions& o) {
  TORCH_CHECK_VALUE(o.max_new_tokens >= 0, "max_new_tokens: must be >= 0, got ", o.max_new_tokens);
  TORCH_CHECK_VALUE(o.min_new_tokens >= 0, "min_new_tokens: must be >= 0, got ", o.min_new_tokens);
  TORCH_CHECK_VALUE(!o.do_sample || o.temperature > 0, "temperature: must be > 0 when sampling, got ", o.temperature);
  TORCH_CHECK_VALUE(o.top_p > 0 && o.top_p <= 1, "top_p: must lie in (0, 1], got ", o.top_p);
  TORCH_CHECK_VALUE(o.top_k >= 0, "top_k: must be >= 0, got ", o.top_k);
  TORCH_CHECK_VALUE(o.repetition_penalty > 0, "repetition_penalty: must be > 0, got ", o.repetition_penalty);
  TORCH_CHECK_VALUE(o.no_repeat_ngram_size >= 0, "no_repeat_ngram_size: must be >= 0, got ", o.no_repeat_ngram_size);
}

}  // namespace

torch::Tensor DecoderVlmImpl::generate(const VlmInputs& in, const GenerateOptions& o) {
  check_options(o);
  check_inputs(in);
  torch::NoGradGuard no_grad;
  const int64_t batch = in.input_ids.size(0), prompt_len = in.input_ids.size(1);
  auto ids_options = in.input_ids.options().dtype(torch::kLong);
  auto mask = in.attention_mask.defined() ? in.attention_mask.to(torch::kLong)
                                          : torch::ones({batch, prompt_len}, ids_options);
  if (prompt_len > 0) {
    // A right-padded row would continue after its padding: transformers warns, we refuse.
    auto right_padded = (mask.select(1, prompt_len - 1) == 0).nonzero();
    TORCH_CHECK_VALUE(right_padded.numel() == 0, "attention_mask: row ", right_padded.numel() ? right_padded[0].item<int64_t>() : 0,
                      " is right-padded; generate needs left padding (tokenizer.padding_side = \"left\")");
  }
  torch::Tensor visual;
  if (in.pixel_values.defined()) visual = encode_images(in.pixel_values, in.abstractor_text);
  auto fused = fusion->fuse(in.input_ids, llm->embed_tokens(in.input_ids), mask, torch::Tensor(), visual, *llm);
  mask = fused.attention_mask.defined() ? fused.attention_mask.to(torch::kLong) : mask;

  std::vector<nn::KVCache> caches(llm->num_layers());
  for (auto& cache : caches) cache.capacity = fused.embeds.size(1) + o.max_new_tokens;
  // Cross-attention keys and values of the visual tokens: computed at the prompt, reused at every step.
  std::vector<nn::KVCache> cross_caches(llm->num_layers());
  DecoderContext ctx;
  ctx.attention_mask = mask;
  ctx.positions = llm->prompt_positions(mask);
  ctx.self_caches = &caches;
  ctx.cross_caches = &cross_caches;
  ctx.visual = visual;
  ctx.media_mask = fusion->media_mask(in.input_ids, in.image_attention_mask, visual);
  auto generator = at::detail::createCPUGenerator(static_cast<uint64_t>(o.seed));
  auto eos = torch::tensor(o.eos_token_ids.empty() ? std::vector<int64_t>{-1} : o.eos_token_ids, ids_options);

  if (o.on_tokens) o.on_tokens(in.input_ids.to(torch::kCPU).to(torch::kLong));
  NgramBlocker ngrams(o.no_repeat_ngram_size, in.input_ids);

  auto hidden = run_layers(fused.embeds, ctx);
  auto logits = head->forward(hidden.narrow(1, hidden.size(1) - 1, 1), *llm).select(1, 0).to(torch::kFloat32);
  auto finished = torch::zeros({batch}, ids_options.dtype(torch::kBool));
  std::vector<torch::Tensor> pieces = {in.input_ids.to(torch::kLong)};
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    // transformers' order: repetition penalty, n-gram blocking, minimum length, then the sampling warpers.
    if (o.repetition_penalty != 1.0) logits = penalise_repetition(logits, torch::cat(pieces, 1), o.repetition_penalty);
    ngrams.ban(logits);
    if (step < o.min_new_tokens && !o.eos_token_ids.empty()) {
      logits.index_fill_(1, eos.clamp_min(0), -std::numeric_limits<float>::infinity());
    }
    auto next = choose_next(logits, o, generator);
    next = torch::where(finished, torch::full_like(next, o.pad_token_id), next);
    pieces.push_back(next.unsqueeze(1));
    ngrams.push(next);
    if (o.on_tokens) o.on_tokens(next.to(torch::kCPU));
    finished = finished | torch::isin(next, eos);
    if (step + 1 == o.max_new_tokens || finished.all().item<bool>()) break;
    ctx.past = caches[0].length;
    ctx.attention_mask = torch::cat({ctx.attention_mask, torch::ones({batch, 1}, ids_options)}, 1);
    ctx.positions = ctx.positions.narrow(1, ctx.positions.size(1) - 1, 1) + 1;
    // A new token reads the images the last prompt token read (transformers' IDEFICS generate).
    if (ctx.media_mask.defined() && ctx.media_mask.size(1) != 1) {
      ctx.media_mask = ctx.media_mask.narrow(1, ctx.media_mask.size(1) - 1, 1);
      ctx.media_state.reset();
    }
    // next comes from the vocabulary's own logits: the embedding's id check cannot fail.
    hidden = run_layers(llm->embed_tokens(next.unsqueeze(1)), ctx);
    logits = head->forward(hidden, *llm).select(1, 0).to(torch::kFloat32);
  }
  return torch::cat(pieces, 1);
}

}  // namespace vlmzoo::models
