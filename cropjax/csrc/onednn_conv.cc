// oneDNN convolutions for XLA:CPU, as typed XLA FFI handlers.
//
// Three handlers, float32, activations NHWC and kernels HWIO (flax's layouts):
//   cropjax_onednn_conv_fwd          (x, w)  -> y
//   cropjax_onednn_conv_bwd_data     (dy, w) -> dx
//   cropjax_onednn_conv_bwd_weights  (x, dy) -> dw
// Attributes: strides (sh, sw) and explicit paddings (pt, pb, pl, pr). Each
// primitive is created once per shape and kept; kernels are reordered to and
// from oneDNN's blocked weight layout on every call (they change every step).
// Called from cropjax/onednn.py; the Python side checks shapes before calling.

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using Tag = dnnl::memory::format_tag;

enum Kind : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// n, h, w, c (input), kh, kw, o (kernel), sh, sw, pt, pb, pl, pr, kind.
using Key = std::array<int64_t, 14>;

struct Plan {
  memory::desc x, y, w_user, w;  // w: the primitive's weight layout
  memory::desc scratch;
  dnnl::primitive primitive;
  dnnl::reorder w_reorder;  // hwio -> w (forward, data), w -> hwio (weights)
  bool reorder = false;
};

std::mutex cache_mutex;
std::map<Key, std::shared_ptr<const Plan>>& Cache() {
  static auto* cache = new std::map<Key, std::shared_ptr<const Plan>>();
  return *cache;
}

std::shared_ptr<const Plan> MakePlan(const Key& k) {
  const auto [n, h, w, c, kh, kw, o, sh, sw, pt, pb, pl, pr, kind] = k;
  const int64_t oh = (h + pt + pb - kh) / sh + 1, ow = (w + pl + pr - kw) / sw + 1;
  auto plan = std::make_shared<Plan>();
  plan->x = memory::desc({n, c, h, w}, memory::data_type::f32, Tag::nhwc);
  plan->y = memory::desc({n, o, oh, ow}, memory::data_type::f32, Tag::nhwc);
  plan->w_user = memory::desc({o, c, kh, kw}, memory::data_type::f32, Tag::hwio);
  const memory::desc w_any({o, c, kh, kw}, memory::data_type::f32, Tag::any);
  const memory::dims strides{sh, sw}, pad_l{pt, pl}, pad_r{pb, pr};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const auto fwd = dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      plan->x, w_any, plan->y, strides, pad_l, pad_r, attr);
  if (kind == kForward) {
    plan->w = fwd.weights_desc();
    plan->scratch = fwd.scratchpad_desc();
    plan->primitive = dnnl::convolution_forward(fwd);
  } else if (kind == kBackwardData) {
    const auto pd = dnnl::convolution_backward_data::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, plan->x, w_any, plan->y, strides,
        pad_l, pad_r, fwd, attr);
    plan->w = pd.weights_desc();
    plan->scratch = pd.scratchpad_desc();
    plan->primitive = dnnl::convolution_backward_data(pd);
  } else {
    const auto pd = dnnl::convolution_backward_weights::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, plan->x, w_any, plan->y, strides,
        pad_l, pad_r, fwd, attr);
    plan->w = pd.diff_weights_desc();
    plan->scratch = pd.scratchpad_desc();
    plan->primitive = dnnl::convolution_backward_weights(pd);
  }
  plan->reorder = plan->w != plan->w_user;
  if (plan->reorder) {
    const memory user(plan->w_user, Engine(), nullptr), ours(plan->w, Engine(), nullptr);
    plan->w_reorder = kind == kBackwardWeights ? dnnl::reorder(ours, user) : dnnl::reorder(user, ours);
  }
  return plan;
}

std::shared_ptr<const Plan> GetPlan(const Key& k) {
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = Cache().find(k);
    if (it != Cache().end()) return it->second;
  }
  auto plan = MakePlan(k);  // outside the lock: creation compiles kernels
  std::lock_guard<std::mutex> lock(cache_mutex);
  return Cache().emplace(k, plan).first->second;
}

// A 64-byte aligned buffer for the scratchpad and the reordered weights.
struct Aligned {
  explicit Aligned(size_t bytes) : ptr(bytes ? std::aligned_alloc(64, (bytes + 63) / 64 * 64) : nullptr) {}
  ~Aligned() { std::free(ptr); }
  void* ptr;
};

ffi::Error Run(Kind kind, const float* a, const float* b, float* out,
               ffi::Span<const int64_t> x_dims, ffi::Span<const int64_t> w_dims,
               int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  if (x_dims.size() != 4 || w_dims.size() != 4) {
    return ffi::Error::InvalidArgument("cropjax oneDNN conv: expected NHWC and HWIO arrays");
  }
  try {
    const Key key{x_dims[0], x_dims[1], x_dims[2], x_dims[3], w_dims[0], w_dims[1], w_dims[3],
                  sh, sw, pt, pb, pl, pr, kind};
    const auto plan = GetPlan(key);
    dnnl::stream stream(Engine());
    Aligned scratch(plan->scratch.get_size());
    memory scratchpad(plan->scratch, Engine(), scratch.ptr);
    Aligned w_buffer(plan->reorder ? plan->w.get_size() : 0);
    auto in = [](const float* p) { return const_cast<float*>(p); };
    if (kind == kBackwardWeights) {
      memory x(plan->x, Engine(), in(a)), dy(plan->y, Engine(), in(b));
      memory dw_user(plan->w_user, Engine(), out);
      memory dw = plan->reorder ? memory(plan->w, Engine(), w_buffer.ptr) : dw_user;
      plan->primitive.execute(stream, {{DNNL_ARG_SRC, x}, {DNNL_ARG_DIFF_DST, dy},
                                       {DNNL_ARG_DIFF_WEIGHTS, dw}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
      if (plan->reorder) plan->w_reorder.execute(stream, dw, dw_user);
    } else {
      memory w_user(plan->w_user, Engine(), in(b));
      memory w = plan->reorder ? memory(plan->w, Engine(), w_buffer.ptr) : w_user;
      if (plan->reorder) plan->w_reorder.execute(stream, w_user, w);
      if (kind == kForward) {
        memory x(plan->x, Engine(), in(a)), y(plan->y, Engine(), out);
        plan->primitive.execute(stream, {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, w},
                                         {DNNL_ARG_DST, y}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
      } else {
        memory dy(plan->y, Engine(), in(a)), dx(plan->x, Engine(), out);
        plan->primitive.execute(stream, {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_WEIGHTS, w},
                                         {DNNL_ARG_DIFF_SRC, dx}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
      }
    }
    stream.wait();
  } catch (const std::exception& e) {  // dnnl::error included
    return ffi::Error::Internal(std::string("cropjax oneDNN conv: ") + e.what());
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

ffi::Error Forward(F32 x, F32 w, F32Out y, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
                   int64_t pl, int64_t pr) {
  return Run(kForward, x.typed_data(), w.typed_data(), y->typed_data(), x.dimensions(),
             w.dimensions(), sh, sw, pt, pb, pl, pr);
}

ffi::Error BackwardData(F32 dy, F32 w, F32Out dx, int64_t sh, int64_t sw, int64_t pt,
                        int64_t pb, int64_t pl, int64_t pr) {
  return Run(kBackwardData, dy.typed_data(), w.typed_data(), dx->typed_data(), dx->dimensions(),
             w.dimensions(), sh, sw, pt, pb, pl, pr);
}

ffi::Error BackwardWeights(F32 x, F32 dy, F32Out dw, int64_t sh, int64_t sw, int64_t pt,
                           int64_t pb, int64_t pl, int64_t pr) {
  return Run(kBackwardWeights, x.typed_data(), dy.typed_data(), dw->typed_data(), x.dimensions(),
             dw->dimensions(), sh, sw, pt, pb, pl, pr);
}

}  // namespace

#define CROPJAX_BINDING                                                                       \
  ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>().Attr<int64_t>("sh").Attr<int64_t>("sw") \
      .Attr<int64_t>("pt").Attr<int64_t>("pb").Attr<int64_t>("pl").Attr<int64_t>("pr")

#pragma GCC visibility push(default)
extern "C" {
XLA_FFI_DEFINE_HANDLER_SYMBOL(CropjaxOnednnConvForward, Forward, CROPJAX_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CropjaxOnednnConvBackwardData, BackwardData, CROPJAX_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CropjaxOnednnConvBackwardWeights, BackwardWeights, CROPJAX_BINDING);
}
#pragma GCC visibility pop
