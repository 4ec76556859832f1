// The straight-through family's commonest eager call in one compiled step: the seed drawn from
// the caller's torch.Generator (as `_streams.seed_int` draws it, by random_ into a 0-dim int64
// tensor), the outputs allocated, the fused draw kernel called, and a C++ autograd node that
// calls the fused backward kernel. The kernels are those of the loaded `_kernels` library,
// handed over by address (`set_kernels`), so this module is not linked to it.
//
// Python checks the call first (`_eager.shortest`): eager, CPU, float32/float64, contiguous,
// categories last, a fresh draw, a gradient wanted, no torch.func transform, no compile.

#include <torch/extension.h>
#include <torch/csrc/Generator.h>
#include <torch/csrc/autograd/functions/basic_ops.h>

#include <cstdint>
#include <limits>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <typename T>
using draw_t = int64_t (*)(const T *, T *, T *, int64_t *, uint64_t, int64_t, int64_t, int);
template <typename T>
using grad_t = void (*)(const T *, const int64_t *, const T *, T *, int, T, int64_t, int64_t, int);

draw_t<float> draw_f32 = nullptr;
draw_t<double> draw_f64 = nullptr;
grad_t<float> grad_f32 = nullptr;
grad_t<double> grad_f64 = nullptr;
thread_local int64_t last_bad = 0;   // rows the last draw on this thread refused
constexpr size_t kPackMinBytes = 128 << 10;   // `_buffers.PACK_MIN_BYTES`

void set_kernels(int64_t df, int64_t dd, int64_t gf, int64_t gd) {
  draw_f32 = reinterpret_cast<draw_t<float>>(df);
  draw_f64 = reinterpret_cast<draw_t<double>>(dd);
  grad_f32 = reinterpret_cast<grad_t<float>>(gf);
  grad_f64 = reinterpret_cast<grad_t<double>>(gd);
}

struct Kept : public torch::autograd::Function<Kept> {
  static torch::Tensor forward(AutogradContext *ctx, torch::Tensor x, int64_t key, int64_t mode, double cap) {
    const int64_t n = x.size(-1), rows = x.numel() / n;
    auto batch = x.sizes().vec();
    batch.pop_back();
    auto e = at::empty_like(x);
    at::Tensor d, index;
    if (x.nbytes() < kPackMinBytes) {
      d = at::empty_like(x);
      index = at::empty(batch, x.options().dtype(at::kLong));
    } else {
      // the one-hot and the index side by side in one allocation, each its own tensor, as
      // `_buffers.keep_outputs` allocates them (apart, their frees can leave glibc's heap top
      // past its trim threshold on some calls and fault pages back in on the next)
      const int64_t at_index = (static_cast<int64_t>(x.nbytes()) + 7) / 8 * 8;
      auto storage = at::empty({at_index + rows * 8}, x.options().dtype(at::kByte)).storage();
      d = at::empty({0}, x.options()).set_(storage, 0, x.sizes());
      index = at::empty({0}, x.options().dtype(at::kLong)).set_(storage, at_index / 8, batch);
    }
    const int threads = std::max(1, at::get_num_threads());
    int64_t bad;
    if (x.scalar_type() == at::kFloat)
      bad = draw_f32(x.const_data_ptr<float>(), d.data_ptr<float>(), e.data_ptr<float>(), index.data_ptr<int64_t>(),
                     static_cast<uint64_t>(key), rows, n, threads);
    else
      bad = draw_f64(x.const_data_ptr<double>(), d.data_ptr<double>(), e.data_ptr<double>(), index.data_ptr<int64_t>(),
                     static_cast<uint64_t>(key), rows, n, threads);
    ctx->save_for_backward({e, index});
    ctx->saved_data["mode"] = mode;
    ctx->saved_data["cap"] = cap;
    ctx->saved_data["threads"] = static_cast<int64_t>(threads);
    last_bad = bad;
    return d;
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &e = saved[0];
    const auto &index = saved[1];
    auto g = grads[0];
    if (g.scalar_type() != e.scalar_type()) g = g.to(e.scalar_type());
    g = g.resolve_neg().resolve_conj().contiguous();
    auto out = at::empty_like(e);
    const int64_t n = e.size(-1), rows = e.numel() / n;
    const int mode = static_cast<int>(ctx->saved_data["mode"].toInt());
    const double cap = ctx->saved_data["cap"].toDouble();
    const int threads = static_cast<int>(ctx->saved_data["threads"].toInt());
    if (e.scalar_type() == at::kFloat)
      grad_f32(e.const_data_ptr<float>(), index.const_data_ptr<int64_t>(), g.const_data_ptr<float>(),
               out.data_ptr<float>(), mode, static_cast<float>(cap), rows, n, threads);
    else
      grad_f64(e.const_data_ptr<double>(), index.const_data_ptr<int64_t>(), g.const_data_ptr<double>(),
               out.data_ptr<double>(), mode, cap, rows, n, threads);
    if (at::GradMode::is_enabled()) {
      // a pass that builds a graph: the result refuses to be differentiated again, as with
      // Python's once_differentiable
      auto alias = out.detach();
      alias.set_requires_grad(true);
      torch::autograd::DelayedError err(
          "trying to differentiate twice a function that was marked with @once_differentiable", 1);
      out = err.apply({alias})[0];
    }
    return {out, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// (one-hot, number of bad rows) for logits x, the seed drawn from `generator` (None: the default).
std::tuple<torch::Tensor, int64_t> categorical(const torch::Tensor &x, py::handle generator, int64_t mode,
                                               double cap) {
  thread_local at::Tensor box;
  if (!box.defined()) {
    c10::InferenceMode off(false);
    box = at::empty({}, at::TensorOptions().dtype(at::kLong));
  }
  std::optional<at::Generator> gen;
  if (!generator.is_none()) {
    TORCH_CHECK(THPGenerator_Check(generator.ptr()), "generator must be a torch.Generator");
    gen = reinterpret_cast<THPGenerator *>(generator.ptr())->cdata;
  }
  {
    at::NoGradGuard no_grad;
    box.random_(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), gen);
  }
  const int64_t key = box.item<int64_t>();
  auto out = Kept::apply(x, key, mode, cap);
  return {out, last_bad};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_kernels", &set_kernels);
  m.def("categorical", &categorical);
}
