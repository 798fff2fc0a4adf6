#pragma once
// A block that Python may hook or replace (vlmzoo/models/blocks.py): norms, attentions, MLPs, Flamingo's
// gated cross-attention blocks, the LM head. While a hook or a replacement exists, the block's forward
// hands a BlockCall to `override_forward` instead of computing; the Python view then runs the block's
// own computation through the call (its hooks seeing the real inputs and outputs) or a replacement
// runs instead. Unset (the usual case), a forward pays one test of an empty std::function.
// (nn::Linear keeps its own x -> y override: it needs no call context.)
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <vector>

namespace vlmzoo::nn {

// One call of an overridden block, alive only while the override runs (`own` is cleared after it).
struct BlockCall {
  // What the view's forward receives: the main input [.., hidden] first, then the block's other tensor
  // inputs (Flamingo's block: visual tokens and media mask); undefined for "none".
  std::vector<torch::Tensor> inputs;
  // The block's own computation on such inputs with this call's other arguments (mask, rotary tables,
  // KV cache, the LM it reads).
  std::function<torch::Tensor(const std::vector<torch::Tensor>&)> own;
};
using BlockOverride = std::function<torch::Tensor(const std::shared_ptr<BlockCall>&)>;

class Overridable {
 public:
  virtual ~Overridable() = default;
  // The block's computation called alone, outside any forward (what its Python view runs when called):
  // the inputs BlockCall::inputs names, with no mask, positions or caches. Blocks that need their
  // model's context to run refuse here; the assembly runs them (models/decoder_blocks.cpp).
  virtual torch::Tensor run_alone(const std::vector<torch::Tensor>& inputs) {
    TORCH_CHECK_VALUE(false, "this block runs only with its model's context; call it through the model's view");
    return {};
  }
  bool overridden() const { return static_cast<bool>(override_forward); }

  BlockOverride override_forward;

 protected:
  // Hands the call to the override; `own` must not outlive this call (it may capture the caller's locals).
  torch::Tensor call_override(std::vector<torch::Tensor> inputs,
                              std::function<torch::Tensor(const std::vector<torch::Tensor>&)> own) const {
    auto call = std::make_shared<BlockCall>(BlockCall{std::move(inputs), std::move(own)});
    struct Expire {
      BlockCall& call;
      ~Expire() { call.own = nullptr; }
    } expire{*call};
    const auto fn = override_forward;  // a copy: Python may clear the override while it runs
    return fn(call);
  }
};

}  // namespace vlmzoo::nn
