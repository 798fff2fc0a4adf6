// vision kind "patch_linear": Fuyu's image input (transformers' FuyuModel.vision_embed_tokens; Bavishi et
// al. 2023, "Fuyu-8B: A Multimodal Architecture for AI Agents"). No encoder: an image of any height and
// width is padded at the bottom and right to a multiple of the patch size, cut into patches in raster
// order, each flattened as (patch_h, patch_w, channels) like FuyuImageProcessor.patchify_image, and
// projected linearly to the LM width. The number of tokens depends on the image's size.
//   pixel_values [N, C, H, W] -> features [N, ceil(H/p) * ceil(W/p), llm hidden]
//   image patches [N, P, p*p*C] (or [P, p*p*C], the batch's patches concatenated) -> [N, P, llm hidden]
#include "models/registry.h"
#include "nn/linear.h"
#include "nn/vit.h"

namespace vlmzoo::models {
namespace {

struct PatchLinearConfig : SlotConfig {
  int image_size = 300;  // the nominal image side (FuyuConfig.image_size): tokens and FLOPs counted for it
  int patch_size = 30, channels = 3;
  // What pads an image to whole patches, in normalised units: FuyuImageProcessor pads with 1 (of 255)
  // before normalising with mean 0.5, std 0.5, so (1 / 255 - 0.5) / 0.5.
  double pad_value = 1.0 / 255.0 / 0.5 - 1.0;
};

void check_patch_linear(JsonReader& r, PatchLinearConfig& c) {
  if (c.patch_size > c.image_size) {
    r.fail("patch_size", std::to_string(c.patch_size) + " is larger than " + r.path_of("image_size") + " " +
                             std::to_string(c.image_size));
  }
}

const config::Schema<PatchLinearConfig>& patch_linear_schema() {
  using P = PatchLinearConfig;
  static const auto schema = config::Schema<P>()
                                 .integer("image_size", &P::image_size, config::kImageSize)
                                 .integer("patch_size", &P::patch_size, {1, 1024})
                                 .integer("channels", &P::channels, {1, 64})
                                 .number("pad_value", &P::pad_value, /*positive=*/false)
                                 .after(check_patch_linear);
  return schema;
}

int64_t patches_along(int64_t pixels, int64_t patch) { return (pixels + patch - 1) / patch; }

class PatchLinearEncoder : public VisionEncoder {
 public:
  PatchLinearEncoder(const PatchLinearConfig& c, const BuildContext& b) : c_(c), width_(b.llm_hidden) {
    proj = register_module("proj", nn::Linear(patch_width(), width_, true, b.options));
  }

  int64_t output_width() const override { return width_; }
  int64_t output_tokens() const override { return tokens_for_image(c_.image_size, c_.image_size); }
  int64_t tokens_for_image(int64_t height, int64_t width) const override {
    return patches_along(height, c_.patch_size) * patches_along(width, c_.patch_size);
  }

  torch::Tensor forward(const torch::Tensor& pixel_values) override {
    const auto& x = pixel_values;
    TORCH_CHECK_VALUE(x.dim() >= 2 && x.dim() <= 4, "pixel_values: vision.kind \"patch_linear\" takes images [N, ",
                      c_.channels, ", H, W] or patches [N, P, ", patch_width(), "] / [P, ", patch_width(), "], got ",
                      x.sizes());
    if (x.dim() == 4) {
      check_images(x);
      nn::check_pixel_dtype_and_values(x);
      return proj(patchify(x.to(dtype())));
    }
    TORCH_CHECK_VALUE(x.size(-1) == patch_width(), "pixel_values: read as image patches [N, P, ", patch_width(),
                      "] or [P, ", patch_width(), "], each must hold patch_size ", c_.patch_size, " x ", c_.patch_size,
                      " x channels ", c_.channels, " = ", patch_width(), " values, got ", x.size(-1), " (shape ",
                      x.sizes(), "); images are [N, ", c_.channels, ", H, W]");
    nn::check_pixel_dtype_and_values(x);
    return proj((x.dim() == 2 ? x.unsqueeze(0) : x).to(dtype()));
  }

  double flops(int64_t images) const override {
    return 2.0 * static_cast<double>(images) * output_tokens() * patch_width() * width_;
  }

  nn::Linear proj{nullptr};

 private:
  int64_t patch_width() const { return int64_t{c_.patch_size} * c_.patch_size * c_.channels; }
  // The model's dtype: the bias stays a float tensor of it whatever format the weight is packed in.
  torch::ScalarType dtype() const { return proj->bias.scalar_type(); }

  void check_images(const torch::Tensor& images) const {
    TORCH_CHECK_VALUE(images.size(1) == c_.channels, "pixel_values: expected [num_images, ", c_.channels,
                      ", H, W] (vision.channels; any H and W), got ", images.sizes());
    TORCH_CHECK_VALUE(images.size(2) >= c_.patch_size && images.size(3) >= c_.patch_size, "pixel_values: an image of ",
                      images.size(2), " x ", images.size(3), " pixels is smaller than one patch (vision.patch_size ",
                      c_.patch_size, ")");
  }

  // [N, C, H, W] -> [N, rows * cols, p * p * C], rows and cols after padding to whole patches.
  torch::Tensor patchify(const torch::Tensor& images) const {
    const int64_t n = images.size(0), p = c_.patch_size;
    const int64_t rows = patches_along(images.size(2), p), cols = patches_along(images.size(3), p);
    auto padded = images;
    if (rows * p != images.size(2) || cols * p != images.size(3)) {
      padded = torch::constant_pad_nd(images, {0, cols * p - images.size(3), 0, rows * p - images.size(2)}, c_.pad_value);
    }
    // [N, C, rows, p, cols, p] -> [N, rows, cols, p, p, C]
    return padded.view({n, c_.channels, rows, p, cols, p}).permute({0, 2, 4, 3, 5, 1}).reshape({n, rows * cols, p * p * c_.channels});
  }

  PatchLinearConfig c_;
  int64_t width_;
};

std::shared_ptr<VisionEncoder> build_patch_linear(const PatchLinearConfig& c, const BuildContext& b) {
  return std::make_shared<PatchLinearEncoder>(c, b);
}

const bool patch_linear_registered =
    register_kind<VisionEncoder, PatchLinearConfig>("patch_linear", patch_linear_schema(), build_patch_linear);

}  // namespace
}  // namespace vlmzoo::models
