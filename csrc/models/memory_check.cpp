#include "models/memory_check.h"

#include <unistd.h>

#include <iomanip>
#include <sstream>

#include "config/json_reader.h"

namespace vlmzoo::models {

void refuse_if_larger_than_memory(const torch::nn::Module& shapes, torch::ScalarType dtype) {
  int64_t count = 0;
  for (const auto& p : shapes.parameters()) count += p.numel();
  const double bytes = static_cast<double>(count) * static_cast<double>(c10::elementSize(dtype));
  const double memory = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
  if (memory > 0 && bytes > memory) {
    std::ostringstream msg;
    msg << std::fixed << std::setprecision(1) << "config: the model has " << count << " parameters, "
        << bytes / (1 << 30) << " GiB in " << c10::getDtypeNames(dtype).first << ", more than this machine's "
        << memory / (1 << 30) << " GiB of memory; inspect it with vlmzoo.info or device=\"meta\", or build it in a "
        << "smaller dtype";
    throw config::ConfigError(msg.str());
  }
}

}  // namespace vlmzoo::models
