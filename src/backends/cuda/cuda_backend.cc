#include "backends/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "backends/cuda/autotune.h"
#include "backends/cuda/cuda_memory.h"
#include "backends/cuda/kernels/frames.cuh"
#include "backends/cuda/step_runner.h"
#include "core/arena_pool.h"
#include "graph/compiler.h"
#include "graph/side_branch.h"
#include "lipsync/face_layout.h"

namespace lipsync {
namespace cuda {
namespace {

// Offsets inside a borrowed arena: what cudaMalloc guarantees, enough for every kernel's loads.
constexpr size_t kArenaAlign = 256;

size_t AlignUp(size_t bytes) { return (bytes + kArenaAlign - 1) / kArenaAlign * kArenaAlign; }

int64_t ItemElements(const graph::PlanTensor& t) {
  int64_t n = 1;
  for (size_t d = 1; d < t.nchw.size(); ++d) n *= t.nchw[d];
  return n;
}

// What one concurrent Run() of an engine owns: its streams, the pinned host mirrors of its inputs
// and outputs (sized for `capacity` items) and the graphs it captured. Its device buffers are
// borrowed from the device's arena pool for the run (Borrow): activations, then every input and
// output (float32 NCHW, `rows` items each), then the faces of the frame form.
struct RunContext {
  cudaStream_t stream = nullptr;
  // The side branch's stream, and the events that fork it from and join it to `stream`.
  cudaStream_t side = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
  int64_t capacity = 0;
  PinnedMemory staging;  // host mirror of the inputs and outputs, `capacity` items each
  // The frame form: uint8 faces in (`face_capacity` crops at most) then faces out.
  int64_t face_capacity = 0;
  PinnedMemory face_staging;
  // The borrowed arena of the run under way, laid out for `rows` items.
  void* arena = nullptr;
  float* io = nullptr;
  uint8_t* faces = nullptr;
  int64_t rows = 0;
  uint64_t generation = 0;  // of the borrowed arena (ArenaPool::Lease::generation)
  int slot = -1;            // the pool slot last borrowed: asked for again, so graphs stay valid
  // Graphs of the device work by (arena generation, batch, form): the copies stay outside, so one
  // graph serves host and device callers alike.
  std::map<std::tuple<uint64_t, int64_t, int>, cudaGraphExec_t> graphs;

  void DropGraphs() {
    for (auto& [key, exec] : graphs) cudaGraphExecDestroy(exec);
    graphs.clear();
  }
  ~RunContext() {
    if (stream) cudaStreamSynchronize(stream);
    if (side) cudaStreamSynchronize(side);
    DropGraphs();
    if (fork) cudaEventDestroy(fork);
    if (join) cudaEventDestroy(join);
    if (side) cudaStreamDestroy(side);
    if (stream) cudaStreamDestroy(stream);
  }
};

// What the device work of one call does with its inputs and outputs.
struct Form {
  bool frames = false;
  FaceGeometry geometry;  // frames: source size and offset of the faces
  FaceLayout layout;      // frames: the model's face layout (sizes the face buffers)
  size_t visual = 0, audio = 1;
  bool bytes_out = false;  // frames: uint8 BGR out instead of the float32 output

  // A small key for the graph map: tensors 0; frames 1 + crop * 2 + bytes_out.
  int Key() const {
    if (!frames) return 0;
    return 1 + (geometry.offset != 0 ? 2 : 0) + (bytes_out ? 1 : 0);
  }
};

// A download to a caller's pageable buffer, finished by a host copy after the stream syncs.
struct PendingCopy {
  void* dst;
  const void* src;
  size_t bytes;
};

// Everything a backend is made of, decided at load.
struct Setup {
  graph::Plan plan;
  int device = 0;
  Storage storage = Storage::kFloat32;
  bool use_graphs = false;
  int64_t max_batch = 1;
  int max_contexts = 1;
  std::vector<bool> fused_starts;  // CudaOptions::fused_blocks: the CUDA-core blocks, unchecked
  KernelSchedule schedule;         // the fused groups and the kernel chosen for each
  graph::SideBranch side;          // steps run on a second stream
  DeviceMemory weights;
  ArenaPool* pool = nullptr;  // the device's working memory
};

class CudaBackend : public Backend {
 public:
  explicit CudaBackend(Setup setup)
      : plan_(std::move(setup.plan)),
        fused_starts_(std::move(setup.fused_starts)),
        schedule_(std::move(setup.schedule)),
        side_(std::move(setup.side)),
        device_(setup.device),
        storage_(setup.storage),
        use_graphs_(setup.use_graphs),
        max_batch_(setup.max_batch),
        max_contexts_(static_cast<size_t>(setup.max_contexts)),
        weights_(std::move(setup.weights)),
        pool_(setup.pool) {
    int64_t offset = 0;
    for (const auto& t : plan_.inputs) {
      io_offsets_.push_back(offset);
      io_elements_.push_back(ItemElements(t));
      offset += io_elements_.back();
    }
    for (const auto& t : plan_.outputs) {
      io_offsets_.push_back(offset);
      io_elements_.push_back(ItemElements(t));
      offset += io_elements_.back();
    }
    io_item_elements_ = offset;
  }

  ~CudaBackend() override {
    cudaSetDevice(device_);
    contexts_.clear();
    weights_.reset();
  }

  Status Run(const std::vector<TensorView>& inputs,
             const std::vector<MutableTensorView>& outputs) override {
    LIPSYNC_ASSIGN_OR_RETURN(int64_t batch, CheckIo(inputs, outputs));
    LIPSYNC_RETURN_IF_ERROR(
        CudaCheck(cudaSetDevice(device_), "cudaSetDevice", "selecting the backend's device"));
    LIPSYNC_ASSIGN_OR_RETURN(RunContext * ctx, Acquire());
    const Status status = RunTensors(*ctx, batch, inputs, outputs);
    Release(ctx);
    return status;
  }

  Status RunFrames(const FrameFormInfo& info, const FaceBatch& batch,
                   const MutableTensorView& output) override {
    const int64_t n = batch.faces.shape[0];
    Form form;
    form.frames = true;
    form.visual = info.visual_index;
    form.audio = info.audio_index;
    form.bytes_out = output.dtype == DataType::kUInt8;
    form.layout = info.layout;
    const FaceLayout& l = info.layout;
    form.geometry.size = l.inner_size;
    form.geometry.source_size = static_cast<int>(batch.faces.shape[1]);
    form.geometry.offset = form.geometry.source_size == l.inner_size ? 0 : l.inner_offset;
    form.geometry.mask_x = l.mask_x;
    form.geometry.mask_y = l.mask_y;
    form.geometry.mask_w = l.mask_w;
    form.geometry.mask_h = l.mask_h;
    LIPSYNC_RETURN_IF_ERROR(
        CudaCheck(cudaSetDevice(device_), "cudaSetDevice", "selecting the backend's device"));
    LIPSYNC_ASSIGN_OR_RETURN(RunContext * ctx, Acquire());
    const Status status = RunFaces(*ctx, n, form, batch, output);
    Release(ctx);
    return status;
  }

 private:
  Result<int64_t> CheckIo(const std::vector<TensorView>& inputs,
                          const std::vector<MutableTensorView>& outputs) const {
    if (inputs.size() != plan_.inputs.size() || outputs.size() != plan_.outputs.size()) {
      return InvalidArgument("CUDA backend: expected " + std::to_string(plan_.inputs.size()) +
                             " inputs and " + std::to_string(plan_.outputs.size()) +
                             " outputs, got " + std::to_string(inputs.size()) + " and " +
                             std::to_string(outputs.size()));
    }
    const int64_t batch = inputs.empty() || inputs[0].shape.empty() ? 0 : inputs[0].shape[0];
    if (batch < 1 || batch > max_batch_) {
      return InvalidArgument("CUDA backend: batch " + std::to_string(batch) + " is outside 1.." +
                             std::to_string(max_batch_));
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      const size_t want = static_cast<size_t>(io_elements_[i] * batch) * sizeof(float);
      if (inputs[i].dtype != DataType::kFloat32 || inputs[i].byte_size() != want ||
          !inputs[i].data) {
        return InvalidArgument("CUDA backend: input '" + plan_.inputs[i].name +
                               "' must be float32 with " + std::to_string(want) +
                               " bytes for batch " + std::to_string(batch));
      }
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      const size_t want =
          static_cast<size_t>(io_elements_[inputs.size() + i] * batch) * sizeof(float);
      if (outputs[i].dtype != DataType::kFloat32 || outputs[i].byte_size() != want ||
          !outputs[i].data) {
        return InvalidArgument("CUDA backend: output buffer '" + plan_.outputs[i].name +
                               "' must be float32 with " + std::to_string(want) +
                               " bytes for batch " + std::to_string(batch));
      }
    }
    return batch;
  }

  Result<RunContext*> Acquire() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (idle_.empty() && contexts_.size() >= max_contexts_) available_.wait(lock);
    if (!idle_.empty()) {
      RunContext* ctx = idle_.back();
      idle_.pop_back();
      return ctx;
    }
    auto ctx = std::make_unique<RunContext>();
    LIPSYNC_RETURN_IF_ERROR(
        CudaCheck(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking),
                  "cudaStreamCreateWithFlags", "creating a run stream"));
    if (side_.usable()) {
      LIPSYNC_RETURN_IF_ERROR(
          CudaCheck(cudaStreamCreateWithFlags(&ctx->side, cudaStreamNonBlocking),
                    "cudaStreamCreateWithFlags", "creating a side stream"));
      for (cudaEvent_t* e : {&ctx->fork, &ctx->join}) {
        LIPSYNC_RETURN_IF_ERROR(CudaCheck(cudaEventCreateWithFlags(e, cudaEventDisableTiming),
                                          "cudaEventCreateWithFlags", "creating stream events"));
      }
    }
    contexts_.push_back(std::move(ctx));
    return contexts_.back().get();
  }

  void Release(RunContext* ctx) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      idle_.push_back(ctx);
    }
    available_.notify_one();
  }

  // Pinned mirrors for at least `batch` items. The copies run outside the graphs, so growing
  // them invalidates none.
  Status ReserveStaging(RunContext& ctx, int64_t batch) {
    if (batch <= ctx.capacity) return Status::Ok();
    LIPSYNC_RETURN_IF_ERROR(CudaCheck(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize",
                                      "waiting to grow the staging buffers"));
    ctx.staging.reset();
    ctx.capacity = 0;
    const size_t bytes = static_cast<size_t>(io_item_elements_ * batch) * sizeof(float);
    LIPSYNC_ASSIGN_OR_RETURN(ctx.staging, AllocatePinned(bytes, "the inputs and outputs of batch " +
                                                                    std::to_string(batch)));
    ctx.capacity = batch;
    return Status::Ok();
  }

  // Pinned mirrors of the faces for `batch` crops in and `batch` inner faces out.
  Status ReserveFaceStaging(RunContext& ctx, int64_t batch, const FaceLayout& layout) {
    if (batch <= ctx.face_capacity) return Status::Ok();
    LIPSYNC_RETURN_IF_ERROR(CudaCheck(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize",
                                      "waiting to grow the face staging buffers"));
    ctx.face_staging.reset();
    ctx.face_capacity = 0;
    const size_t bytes = FaceItemBytes(layout) * static_cast<size_t>(batch);
    LIPSYNC_ASSIGN_OR_RETURN(ctx.face_staging,
                             AllocatePinned(bytes, "the faces of batch " + std::to_string(batch)));
    ctx.face_capacity = batch;
    return Status::Ok();
  }

  // Where the device buffers of a batch lie in a borrowed arena.
  struct ArenaLayout {
    size_t io = 0, faces = 0, total = 0;
  };
  ArenaLayout LayoutFor(int64_t batch, const FaceLayout* faces) const {
    ArenaLayout l;
    l.io = AlignUp(static_cast<size_t>(plan_.arena_floats * batch) * StorageSize(storage_));
    l.faces = AlignUp(l.io + static_cast<size_t>(io_item_elements_ * batch) * sizeof(float));
    l.total = l.faces + (faces ? FaceItemBytes(*faces) * static_cast<size_t>(batch) : 0);
    return l;
  }

  // The device buffers of one run: a slot of the device's pool, its arena laid out for `batch`
  // items (and faces when `faces` is set). Graphs captured over another arena are dropped.
  Result<ArenaPool::Lease> Borrow(RunContext& ctx, int64_t batch, const FaceLayout* faces) {
    const ArenaLayout l = LayoutFor(batch, faces);
    auto lease = pool_->Acquire(l.total, ctx.slot);
    if (!lease.ok()) {
      return Status(lease.status().code(), "CUDA backend: batch " + std::to_string(batch) + ": " +
                                               lease.status().message());
    }
    auto* base = static_cast<char*>(lease->data());
    ctx.arena = base;
    ctx.io = reinterpret_cast<float*>(base + l.io);
    ctx.faces = reinterpret_cast<uint8_t*>(base + l.faces);
    ctx.rows = batch;
    ctx.generation = lease->generation();
    ctx.slot = lease->slot();
    for (auto it = ctx.graphs.begin(); it != ctx.graphs.end();) {
      if (pool_->Live(std::get<0>(it->first))) {
        ++it;
      } else {
        cudaGraphExecDestroy(it->second);
        it = ctx.graphs.erase(it);
      }
    }
    return lease;
  }

  // Before a borrowed arena goes back: nothing of this run may still use it when the next
  // borrower, of any engine, starts on its own stream.
  static void Settle(RunContext& ctx) {
    cudaStreamSynchronize(ctx.stream);
    if (ctx.side) cudaStreamSynchronize(ctx.side);
    ctx.arena = nullptr;
    ctx.io = nullptr;
    ctx.faces = nullptr;
  }

  static size_t CropBytes(const FaceLayout& l) {
    return static_cast<size_t>(l.crop_size) * l.crop_size * 3;
  }
  static size_t FaceItemBytes(const FaceLayout& l) {
    return CropBytes(l) + static_cast<size_t>(l.inner_size) * l.inner_size * 3;
  }
  // Faces in, then faces out, `items` of each.
  static uint8_t* FacesIn(void* base) { return static_cast<uint8_t*>(base); }
  static uint8_t* FacesOut(void* base, int64_t items, const FaceLayout& l) {
    return static_cast<uint8_t*>(base) + CropBytes(l) * static_cast<size_t>(items);
  }

  float* DeviceIo(RunContext& ctx, size_t slot) const {
    return ctx.io + io_offsets_[slot] * ctx.rows;
  }
  float* StagingIo(RunContext& ctx, size_t slot) const {
    return static_cast<float*>(ctx.staging.get()) + io_offsets_[slot] * ctx.capacity;
  }

  // A caller's input into device memory on the stream: device views are copied on the device,
  // pinned ones uploaded as they are, pageable ones through the context's pinned staging.
  Status Upload(RunContext& ctx, const TensorView& v, void* device, void* staging,
                const std::string& what) {
    const size_t bytes = v.byte_size();
    const void* src = v.data;
    cudaMemcpyKind kind = cudaMemcpyHostToDevice;
    if (v.memory == MemoryType::kDevice) {
      kind = cudaMemcpyDeviceToDevice;
    } else if (v.memory == MemoryType::kHost) {
      std::memcpy(staging, v.data, bytes);
      src = staging;
    }
    return CudaCheck(cudaMemcpyAsync(device, src, bytes, kind, ctx.stream), "cudaMemcpyAsync",
                     "uploading " + what);
  }

  // The reverse; a pageable destination is filled from staging once the stream has finished.
  Status Download(RunContext& ctx, const void* device, const MutableTensorView& v, void* staging,
                  const std::string& what, std::vector<PendingCopy>* pending) {
    const size_t bytes = v.byte_size();
    void* dst = v.data;
    cudaMemcpyKind kind = cudaMemcpyDeviceToHost;
    if (v.memory == MemoryType::kDevice) {
      kind = cudaMemcpyDeviceToDevice;
    } else if (v.memory == MemoryType::kHost) {
      dst = staging;
      pending->push_back({v.data, staging, bytes});
    }
    return CudaCheck(cudaMemcpyAsync(dst, device, bytes, kind, ctx.stream), "cudaMemcpyAsync",
                     "downloading " + what);
  }

  // The device work of one call, from the device input buffers to the device output buffers.
  Status Enqueue(RunContext& ctx, int64_t batch, const Form& form) {
    const DeviceTensors tensors{storage_, ctx.arena, weights_.get()};
    for (size_t i = 0; i < plan_.inputs.size(); ++i) {
      if (form.frames && i == form.visual) {
        LIPSYNC_RETURN_IF_ERROR(EnqueueFacesInput(plan_, i, FacesIn(ctx.faces), form.geometry,
                                                  batch, tensors, ctx.stream));
      } else {
        LIPSYNC_RETURN_IF_ERROR(
            EnqueueInput(plan_, i, DeviceIo(ctx, i), batch, tensors, ctx.stream));
      }
    }
    if (side_.usable()) {
      // The side branch waits for the inputs, and the main stream for it where it is first read.
      LIPSYNC_RETURN_IF_ERROR(CudaCheck(cudaEventRecord(ctx.fork, ctx.stream), "cudaEventRecord",
                                        "forking the side stream"));
      LIPSYNC_RETURN_IF_ERROR(CudaCheck(cudaStreamWaitEvent(ctx.side, ctx.fork, 0),
                                        "cudaStreamWaitEvent", "forking the side stream"));
      LIPSYNC_RETURN_IF_ERROR(EnqueueSteps(ctx, batch, tensors, true));
      LIPSYNC_RETURN_IF_ERROR(CudaCheck(cudaEventRecord(ctx.join, ctx.side), "cudaEventRecord",
                                        "joining the side stream"));
    }
    LIPSYNC_RETURN_IF_ERROR(EnqueueSteps(ctx, batch, tensors, false));
    const size_t inputs = plan_.inputs.size();
    for (size_t o = 0; o < plan_.outputs.size(); ++o) {
      if (form.bytes_out) {
        LIPSYNC_RETURN_IF_ERROR(EnqueueOutputBytes(
            plan_, o, batch, tensors, FacesOut(ctx.faces, ctx.rows, form.layout), ctx.stream));
      } else {
        LIPSYNC_RETURN_IF_ERROR(
            EnqueueOutput(plan_, o, batch, tensors, DeviceIo(ctx, inputs + o), ctx.stream));
      }
    }
    return Status::Ok();
  }

  // The steps of one stream in plan order: the side branch's on ctx.side, or the others on
  // ctx.stream (which waits for the side branch before its first reader).
  Status EnqueueSteps(RunContext& ctx, int64_t batch, const DeviceTensors& tensors, bool side) {
    const cudaStream_t stream = side ? ctx.side : ctx.stream;
    for (size_t s = 0; s < plan_.steps.size(); ++s) {
      if (side_.usable() && side_.on_side[s] != side) continue;
      if (!side && side_.usable() && s == side_.join) {
        LIPSYNC_RETURN_IF_ERROR(CudaCheck(cudaStreamWaitEvent(ctx.stream, ctx.join, 0),
                                          "cudaStreamWaitEvent", "joining the side stream"));
      }
      const int group = schedule_.group_at[s];
      if (group >= 0) {
        const FusedGroup& g = schedule_.groups[group].group;
        LIPSYNC_RETURN_IF_ERROR(
            EnqueueGroup(plan_, g, schedule_.VariantFor(group, batch), batch, tensors, stream));
        s += g.count - 1;
      } else if (fused_starts_[s]) {
        LIPSYNC_RETURN_IF_ERROR(EnqueueFusedBlock(plan_, s, batch, tensors, stream));
        s += 2;
      } else {
        LIPSYNC_RETURN_IF_ERROR(EnqueueStep(plan_, s, batch, tensors, stream));
      }
    }
    return Status::Ok();
  }

  Result<cudaGraphExec_t> Capture(RunContext& ctx, int64_t batch, const Form& form) {
    const std::string during = "capturing the CUDA graph of batch " + std::to_string(batch);
    // Thread-local mode: other threads' CUDA calls (other contexts) do not disturb the capture.
    LIPSYNC_RETURN_IF_ERROR(
        CudaCheck(cudaStreamBeginCapture(ctx.stream, cudaStreamCaptureModeThreadLocal),
                  "cudaStreamBeginCapture", during));
    const Status enqueued = Enqueue(ctx, batch, form);
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(ctx.stream, &graph);
    if (!enqueued.ok()) {
      if (graph) cudaGraphDestroy(graph);
      return enqueued;
    }
    LIPSYNC_RETURN_IF_ERROR(CudaCheck(ended, "cudaStreamEndCapture", during));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    LIPSYNC_RETURN_IF_ERROR(CudaCheck(instantiated, "cudaGraphInstantiate", during));
    return exec;
  }

  // The device work, replayed from a graph when graphs are on.
  Status Compute(RunContext& ctx, int64_t batch, const Form& form) {
    if (!use_graphs_) return Enqueue(ctx, batch, form);
    const auto key = std::make_tuple(ctx.generation, batch, form.Key());
    auto it = ctx.graphs.find(key);
    if (it == ctx.graphs.end()) {
      LIPSYNC_ASSIGN_OR_RETURN(cudaGraphExec_t exec, Capture(ctx, batch, form));
      it = ctx.graphs.emplace(key, exec).first;
    }
    return CudaCheck(cudaGraphLaunch(it->second, ctx.stream), "cudaGraphLaunch",
                     "launching the graph of batch " + std::to_string(batch));
  }

  // Waits for the stream, then finishes the downloads to pageable memory.
  Status Finish(RunContext& ctx, int64_t batch, const std::vector<PendingCopy>& pending) {
    LIPSYNC_RETURN_IF_ERROR(
        CudaCheck(cudaStreamSynchronize(ctx.stream), "cudaStreamSynchronize",
                  "running the forward pass of batch " + std::to_string(batch)));
    if (ctx.side) {  // finished when the main stream is, unless an enqueue failed halfway
      LIPSYNC_RETURN_IF_ERROR(
          CudaCheck(cudaStreamSynchronize(ctx.side), "cudaStreamSynchronize",
                    "running the side branch of batch " + std::to_string(batch)));
    }
    for (const auto& p : pending) std::memcpy(p.dst, p.src, p.bytes);
    return Status::Ok();
  }

  Status RunTensors(RunContext& ctx, int64_t batch, const std::vector<TensorView>& inputs,
                    const std::vector<MutableTensorView>& outputs) {
    LIPSYNC_RETURN_IF_ERROR(ReserveStaging(ctx, batch));
    LIPSYNC_ASSIGN_OR_RETURN(ArenaPool::Lease lease, Borrow(ctx, batch, nullptr));
    const Status status = TensorsOnDevice(ctx, batch, inputs, outputs);
    Settle(ctx);
    return status;
  }

  Status TensorsOnDevice(RunContext& ctx, int64_t batch, const std::vector<TensorView>& inputs,
                         const std::vector<MutableTensorView>& outputs) {
    for (size_t i = 0; i < inputs.size(); ++i) {
      LIPSYNC_RETURN_IF_ERROR(Upload(ctx, inputs[i], DeviceIo(ctx, i), StagingIo(ctx, i),
                                     "input '" + plan_.inputs[i].name + "'"));
    }
    LIPSYNC_RETURN_IF_ERROR(Compute(ctx, batch, Form{}));
    std::vector<PendingCopy> pending;
    for (size_t o = 0; o < outputs.size(); ++o) {
      const size_t slot = inputs.size() + o;
      LIPSYNC_RETURN_IF_ERROR(Download(ctx, DeviceIo(ctx, slot), outputs[o], StagingIo(ctx, slot),
                                       "output '" + plan_.outputs[o].name + "'", &pending));
    }
    return Finish(ctx, batch, pending);
  }

  Status RunFaces(RunContext& ctx, int64_t batch, const Form& form, const FaceBatch& faces,
                  const MutableTensorView& output) {
    LIPSYNC_RETURN_IF_ERROR(ReserveStaging(ctx, batch));
    LIPSYNC_RETURN_IF_ERROR(ReserveFaceStaging(ctx, batch, form.layout));
    LIPSYNC_ASSIGN_OR_RETURN(ArenaPool::Lease lease, Borrow(ctx, batch, &form.layout));
    const Status status = FacesOnDevice(ctx, batch, form, faces, output);
    Settle(ctx);
    return status;
  }

  Status FacesOnDevice(RunContext& ctx, int64_t batch, const Form& form, const FaceBatch& faces,
                       const MutableTensorView& output) {
    const FaceLayout& layout = form.layout;
    LIPSYNC_RETURN_IF_ERROR(
        Upload(ctx, faces.faces, FacesIn(ctx.faces), FacesIn(ctx.face_staging.get()), "the faces"));
    LIPSYNC_RETURN_IF_ERROR(Upload(ctx, faces.audio, DeviceIo(ctx, form.audio),
                                   StagingIo(ctx, form.audio),
                                   "input '" + plan_.inputs[form.audio].name + "'"));
    LIPSYNC_RETURN_IF_ERROR(Compute(ctx, batch, form));
    std::vector<PendingCopy> pending;
    if (form.bytes_out) {
      LIPSYNC_RETURN_IF_ERROR(Download(ctx, FacesOut(ctx.faces, ctx.rows, layout), output,
                                       FacesOut(ctx.face_staging.get(), ctx.face_capacity, layout),
                                       "the output faces", &pending));
    } else {
      const size_t slot = plan_.inputs.size();
      LIPSYNC_RETURN_IF_ERROR(Download(ctx, DeviceIo(ctx, slot), output, StagingIo(ctx, slot),
                                       "output '" + plan_.outputs[0].name + "'", &pending));
    }
    return Finish(ctx, batch, pending);
  }

  // The weights (the plan keeps its float32 copy on the host too). The device buffers of runs are
  // the device pool's (DeviceMemoryPools), not the engine's.
  EngineMemory Memory() const override {
    EngineMemory m;
    m.host_weights = static_cast<int64_t>(plan_.weights.size() * sizeof(float));
    m.device_weights =
        static_cast<int64_t>(std::max<size_t>(plan_.weights.size(), 1) * StorageSize(storage_));
    return m;
  }

  graph::Plan plan_;
  const std::vector<bool> fused_starts_;  // steps that start a CUDA-core block (fused_blocks)
  const KernelSchedule schedule_;         // fused groups and their kernels per batch size
  const graph::SideBranch side_;
  const int device_;
  const Storage storage_;
  const bool use_graphs_;
  const int64_t max_batch_;
  const size_t max_contexts_;
  DeviceMemory weights_;
  std::vector<int64_t> io_offsets_;   // per-item float offset of each input, then each output
  std::vector<int64_t> io_elements_;  // per-item floats of each
  int64_t io_item_elements_ = 0;

  std::mutex mutex_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<RunContext>> contexts_;
  std::vector<RunContext*> idle_;
  ArenaPool* const pool_;  // the device's, shared with every engine there
};

// The plan's weight blob in the storage type, same element offsets.
Result<DeviceMemory> UploadWeights(const graph::Plan& plan, Storage storage) {
  const size_t count = plan.weights.size();
  const std::string what = "the weights (" + std::to_string(count) + " values)";
  LIPSYNC_ASSIGN_OR_RETURN(DeviceMemory memory,
                           AllocateDevice(std::max<size_t>(count, 1) * StorageSize(storage), what));
  if (count == 0) return memory;
  if (storage == Storage::kFloat32) {
    LIPSYNC_RETURN_IF_ERROR(CudaCheck(cudaMemcpy(memory.get(), plan.weights.data(),
                                                 count * sizeof(float), cudaMemcpyHostToDevice),
                                      "cudaMemcpy", "uploading " + what));
    return memory;
  }
  std::vector<uint16_t> halves(count);
  for (size_t i = 0; i < count; ++i) {
    halves[i] = FloatToHalf(plan.weights[i]);
    if (std::isfinite(plan.weights[i]) && (halves[i] & 0x7c00u) == 0x7c00u) {
      return InvalidArgument("CUDA backend: weight value " + std::to_string(plan.weights[i]) +
                             " at offset " + std::to_string(i) +
                             " is outside the float16 range; run this model in float32");
    }
  }
  LIPSYNC_RETURN_IF_ERROR(CudaCheck(
      cudaMemcpy(memory.get(), halves.data(), count * sizeof(uint16_t), cudaMemcpyHostToDevice),
      "cudaMemcpy", "uploading " + what + " as float16"));
  return memory;
}

// A key for the tuning cache: the plan's structure (steps, their parameters and buffers; not the
// weights' values, which no kernel's correctness or speed depends on), the precision, the device,
// the choice of kernels and the tuning batches. Models of one architecture (the avatars' UNets)
// share one tuning.
std::string TuningKey(const graph::Plan& plan, Storage storage, const EngineOptions& options,
                      int64_t max_batch) {
  uint64_t hash = 1469598103934665603ull;  // FNV-1a over the fields below
  const auto mix = [&hash](int64_t v) {
    for (int byte = 0; byte < 8; ++byte) {
      hash ^= static_cast<uint64_t>(v >> (8 * byte)) & 0xffu;
      hash *= 1099511628211ull;
    }
  };
  for (const graph::PlanStep& step : plan.steps) {
    mix(static_cast<int>(step.kind));
    for (int id : step.inputs) mix(id);
    mix(step.output);
    const graph::ConvParams& c = step.conv;
    for (int64_t v : {static_cast<int64_t>(c.kind), c.cin, c.cout, c.kh, c.kw, c.stride_h,
                      c.stride_w, c.pad_top, c.pad_left, c.pad_bottom, c.pad_right, c.groups}) {
      mix(v);
    }
    mix(static_cast<int>(step.resize.mode));
    for (int64_t v : {step.resize.out_h, step.resize.out_w, step.resize.pad_top,
                      step.resize.pad_left, step.pad.top, step.pad.left}) {
      mix(v);
    }
    mix(step.epilogue.residual);
    mix(static_cast<int>(step.epilogue.activation));
    mix(step.weight_offset);
    mix(step.bias_offset);
  }
  for (const graph::PlanBuffer& b : plan.buffers) {
    for (int64_t v : {b.shape.h, b.shape.w, b.shape.c, b.offset, int64_t{b.first_step},
                      int64_t{b.last_step}, int64_t{b.is_input}, int64_t{b.is_output}}) {
      mix(v);
    }
  }
  mix(plan.arena_floats);
  std::vector<int64_t> fields = {static_cast<int64_t>(plan.steps.size()), options.device_id,
                                 static_cast<int64_t>(options.cuda.kernels),
                                 options.cuda.side_stream};
  for (int64_t b : TuningBatches(max_batch)) fields.push_back(b);
  std::string key = std::to_string(hash);
  key += StorageName(storage);
  for (int64_t v : fields) {
    key += '|';
    key += std::to_string(v);
  }
  return key;
}

// Tuning results of this process by TuningKey: engines made again on the same architecture
// (benchmarks, tests, avatars) reuse the checks and timings instead of repeating them.
Result<KernelSchedule> CachedSchedule(const std::string& key,
                                      const std::function<Result<KernelSchedule>()>& tune) {
  static std::mutex mutex;
  static std::map<std::string, KernelSchedule> cache;
  std::lock_guard<std::mutex> lock(mutex);  // concurrent loads of one model tune it once
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  LIPSYNC_ASSIGN_OR_RETURN(KernelSchedule schedule, tune());
  cache.emplace(key, schedule);
  return schedule;
}

// Whether every fused group and block lies on one stream.
bool OneStreamEach(const Setup& setup) {
  const auto same = [&setup](size_t first, size_t count) {
    for (size_t s = first; s < first + count; ++s) {
      if (setup.side.on_side[s] != setup.side.on_side[first]) return false;
    }
    return true;
  };
  for (const TunedGroup& g : setup.schedule.groups) {
    if (!same(g.group.first, g.group.count)) return false;
  }
  for (size_t s = 0; s < setup.fused_starts.size(); ++s) {
    if (setup.fused_starts[s] && !same(s, 3)) return false;
  }
  return true;
}

// Kernel launches of one forward pass outside the fused groups: input and output conversions, and
// one per step (a CUDA-core block counts once).
int KernelsOutsideGroups(const graph::Plan& plan, const Setup& setup) {
  int kernels = static_cast<int>(plan.inputs.size() + plan.outputs.size());
  for (size_t s = 0; s < plan.steps.size(); ++s) {
    const int group = setup.schedule.group_at[s];
    if (group >= 0) {
      s += setup.schedule.groups[group].group.count - 1;
      continue;
    }
    ++kernels;
    if (setup.fused_starts[s]) s += 2;
  }
  return kernels;
}

TensorInfo Describe(const graph::PlanTensor& t) {
  return TensorInfo{t.name, DataType::kFloat32, Shape(t.nchw.begin(), t.nchw.end())};
}

}  // namespace

Status CheckCudaDevice(int device_id) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    return Unavailable("no CUDA device: cudaGetDeviceCount: " + CudaErrorText(e));
  }
  if (count == 0) return Unavailable("no CUDA device: the driver reports no GPU");
  if (device_id < 0 || device_id >= count) {
    return Unavailable("CUDA device " + std::to_string(device_id) +
                       " does not exist (this machine has " + std::to_string(count) + ")");
  }
  cudaDeviceProp prop{};
  LIPSYNC_RETURN_IF_ERROR(CudaCheck(cudaGetDeviceProperties(&prop, device_id),
                                    "cudaGetDeviceProperties", "reading the device's properties"));
  if (prop.major < 8) {
    return Unavailable("CUDA device " + std::to_string(device_id) + " (" + prop.name +
                       ") has compute capability " + std::to_string(prop.major) + "." +
                       std::to_string(prop.minor) + "; the CUDA backend needs 8.0 or newer");
  }
  return Status::Ok();
}

}  // namespace cuda

Result<LoadedBackend> CreateCudaBackend(const std::string& model_path,
                                        const EngineOptions& options) {
  if (options.cuda.max_contexts < 1) {
    return InvalidArgument("CUDA backend: max_contexts must be at least 1, got " +
                           std::to_string(options.cuda.max_contexts));
  }
  LIPSYNC_RETURN_IF_ERROR(cuda::CheckCudaDevice(options.device_id));
  Result<graph::Plan> compiled = Internal("not compiled");
  try {
    compiled = graph::CompilePlanFromFile(model_path);
  } catch (const std::exception& e) {
    return Internal("compiling '" + model_path + "' for the CUDA backend: " + e.what());
  }
  if (!compiled.ok()) return compiled.status();
  graph::Plan plan = std::move(compiled).value();
  const bool dynamic = plan.fixed_batch < 0;
  const int64_t max_batch = dynamic ? options.max_batch : plan.fixed_batch;
  LIPSYNC_RETURN_IF_ERROR(cuda::CheckPlanSupported(plan, max_batch));

  LIPSYNC_RETURN_IF_ERROR(cuda::CudaCheck(cudaSetDevice(options.device_id), "cudaSetDevice",
                                          "selecting device " + std::to_string(options.device_id)));
  const cuda::Storage storage =
      options.precision == Precision::kFloat16 ? cuda::Storage::kFloat16 : cuda::Storage::kFloat32;
  LIPSYNC_ASSIGN_OR_RETURN(cuda::DeviceMemory weights, cuda::UploadWeights(plan, storage));
  plan.weights = {};  // on the device now; the steps only need the offsets

  if (options.cuda.fused_blocks || options.cuda.kernels != CudaKernels::kUnfused) {
    LIPSYNC_RETURN_IF_ERROR(cuda::PlanForFusion(&plan));
  }
  cuda::Setup setup;
  // Before the fused kernels are planned: moving the branch's buffers changes which buffers
  // share memory, which decides where a fused kernel may run.
  if (options.cuda.side_stream) {
    setup.side = graph::SplitSideBranch(&plan);
  } else {
    setup.side.description = "no second stream (turned off)";
  }
  LIPSYNC_ASSIGN_OR_RETURN(cuda::DeviceLimits limits, cuda::QueryDeviceLimits(options.device_id));
  if (options.cuda.fused_blocks) {
    LIPSYNC_RETURN_IF_ERROR(cuda::PrepareFusedBlocks());
    setup.fused_starts = cuda::FusedBlockStarts(plan, storage);
    setup.schedule.batches = {1};
    setup.schedule.group_at.assign(plan.steps.size(), -1);
  } else {
    if (options.cuda.kernels != CudaKernels::kUnfused) {
      LIPSYNC_RETURN_IF_ERROR(cuda::PrepareFusedKernels(limits));
    }
    cuda::TuneOptions tune;
    tune.batches = cuda::TuningBatches(max_batch);
    tune.mode = options.cuda.kernels;
    const std::string key = cuda::TuningKey(plan, storage, options, max_batch);
    LIPSYNC_ASSIGN_OR_RETURN(setup.schedule, cuda::CachedSchedule(key, [&] {
                               return cuda::TuneKernels(plan, storage, weights.get(), limits, tune);
                             }));
    setup.fused_starts.assign(plan.steps.size(), false);
  }
  if (setup.side.usable() && !cuda::OneStreamEach(setup)) {
    setup.side = graph::SideBranch{};
    setup.side.description = "no second stream: a fused kernel would span both streams";
  }

  LoadedBackend loaded;
  ModelInfo& info = loaded.info;
  info.path = model_path;
  info.backend = "cuda";
  info.provider = "cuda";
  info.opset = plan.opset;
  info.producer = plan.producer;
  for (const auto& t : plan.inputs) info.inputs.push_back(cuda::Describe(t));
  for (const auto& t : plan.outputs) info.outputs.push_back(cuda::Describe(t));
  info.dynamic_batch = dynamic;
  info.max_batch = max_batch;
  loaded.capabilities.device_memory = true;
  loaded.capabilities.device_id = options.device_id;
  loaded.capabilities.frames_on_device = true;
  loaded.capabilities.overlapping_runs = options.cuda.max_contexts;
  info.kernels = cuda::MakeKernelReport(setup.schedule, cuda::KernelsOutsideGroups(plan, setup));
  info.kernels.side_stream = setup.side.description;
  setup.plan = std::move(plan);
  setup.device = options.device_id;
  setup.storage = storage;
  setup.use_graphs = options.cuda.cuda_graph;
  setup.max_batch = max_batch;
  setup.max_contexts = options.cuda.max_contexts;
  setup.weights = std::move(weights);
  setup.pool = &cuda::DevicePool(options.device_id);
  setup.pool->EnsureSlots(options.cuda.max_contexts);
  loaded.backend = std::make_unique<cuda::CudaBackend>(std::move(setup));
  return loaded;
}

}  // namespace lipsync
