// The Renderer as a library: progress, cancel, stats, and reuse for several renders.
#include "lipsync/render.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "avatar_test_util.h"
#include "lipsync/face.h"
#include "runtime/scheduler.h"

namespace lipsync {
namespace {

using testing::FixturePath;
using testing::ImportTinyAvatar;
using testing::ScratchDir;
using testing::TestModelPath;

// A video file whose sound track is `seconds` of a gliding tone: render reads the audio of any
// media file.
std::string WriteSpeechVideo(const ScratchDir& dir, double seconds) {
  const std::string path = dir / "speech.mp4";
  VideoWriterOptions o;
  o.width = 32;
  o.height = 32;
  o.audio_sample_rate = 16000;
  auto writer = VideoWriter::Create(path, o);
  EXPECT_TRUE(writer.ok());
  std::vector<float> pcm(static_cast<size_t>(seconds * 16000));
  for (size_t i = 0; i < pcm.size(); ++i) {
    pcm[i] = 0.4f * static_cast<float>(std::sin(0.05 * i + 1e-6 * i * i));
  }
  EXPECT_TRUE((*writer)->WriteAudio(pcm.data(), pcm.size()).ok());
  const Image black{32, 32, std::vector<uint8_t>(32 * 32 * 3)};
  for (int i = 0; i < static_cast<int>(seconds * 25); ++i) {
    EXPECT_TRUE((*writer)->WriteFrame(black).ok());
  }
  EXPECT_TRUE((*writer)->Finish().ok());
  return path;
}

TEST(Renderer, ProgressStatsAndReuse) {
  ScratchDir dir;
  const Avatar avatar = ImportTinyAvatar(dir);
  const std::string speech = WriteSpeechVideo(dir, 2.0);
  auto renderer = Renderer::Create(avatar);
  ASSERT_TRUE(renderer.ok()) << renderer.status().ToString();

  RenderOptions options;
  options.batch = 3;
  std::vector<RenderProgress> seen;
  options.progress = [&](const RenderProgress& p) { seen.push_back(p); };
  auto stats = (*renderer)->Render(speech, RenderOutput::Video(dir / "a.mp4"), options);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  ASSERT_EQ(static_cast<int64_t>(seen.size()), stats->frames);
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i].frames_done, int64_t(i) + 1);
  EXPECT_TRUE(seen.back().total_known);
  EXPECT_EQ(seen.back().frames_total, stats->frames);
  EXPECT_EQ(stats->batch, 3);
  EXPECT_EQ(stats->batches, (stats->frames + 2) / 3);
  ASSERT_EQ(stats->stages.size(), 5u);
  for (const StageStats& s : stats->stages) EXPECT_EQ(s.items, stats->frames) << s.name;
  EXPECT_NEAR(stats->video_seconds, stats->frames / 25.0, 1e-9);
  EXPECT_NEAR(stats->audio_seconds, 2.0, 0.1);

  // The same renderer again, to image files.
  options.progress = nullptr;
  auto again = (*renderer)->Render(speech, RenderOutput::Frames(dir / "frames"), options);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->frames, stats->frames);
  EXPECT_EQ(static_cast<int64_t>(dir.List("frames").size()), stats->frames);
}

TEST(Renderer, CancelLeavesNothing) {
  ScratchDir dir;
  const Avatar avatar = ImportTinyAvatar(dir);
  const std::string speech = WriteSpeechVideo(dir, 3.0);
  std::atomic<bool> cancel{false};
  RenderOptions options;
  options.cancel = &cancel;
  options.progress = [&](const RenderProgress& p) {
    if (p.frames_done == 5) cancel = true;
  };
  const auto before = dir.List();
  for (int runs : {1, 2}) {
    RendererOptions renderer_options;
    renderer_options.model_runs = runs;
    auto renderer = Renderer::Create(avatar, {}, "", renderer_options);
    ASSERT_TRUE(renderer.ok());
    for (const RenderOutput& out :
         {RenderOutput::Video(dir / "out.mp4"), RenderOutput::Frames(dir / "frames")}) {
      cancel = false;
      auto stats = (*renderer)->Render(speech, out, options);
      EXPECT_EQ(stats.status().code(), StatusCode::kCancelled) << runs << " runs";
      EXPECT_EQ(dir.List(), before);
    }
  }
}

// What a stage throws (here a failed allocation in the progress callback, on the output thread)
// ends that render with an error and leaves nothing behind; the next render of the renderer works.
TEST(Renderer, AThrowingStageFailsTheRenderNotTheProcess) {
  ScratchDir dir;
  const Avatar avatar = ImportTinyAvatar(dir);
  const std::string speech = WriteSpeechVideo(dir, 1.0);
  auto renderer = Renderer::Create(avatar);
  ASSERT_TRUE(renderer.ok()) << renderer.status().ToString();
  const auto before = dir.List();
  RenderOptions options;
  options.progress = [](const RenderProgress& p) {
    if (p.frames_done == 3) throw std::bad_alloc();
  };
  auto failed = (*renderer)->Render(speech, RenderOutput::Frames(dir / "frames"), options);
  EXPECT_EQ(failed.status().code(), StatusCode::kResourceExhausted) << failed.status().ToString();
  EXPECT_NE(failed.status().message().find("out of memory"), std::string::npos);
  EXPECT_EQ(dir.List(), before);
  auto rendered = (*renderer)->Render(speech, RenderOutput::Frames(dir / "frames"), {});
  ASSERT_TRUE(rendered.ok()) << rendered.status().ToString();
  EXPECT_GT(rendered->frames, 3);
}

// On lipsync's own backends the UNet runs there and an audio encoder they cannot compile (the
// tiny one's MatMul) on ONNX Runtime's CPU provider.
TEST(Renderer, NativeBackendRunsTheEncoderOnOnnxRuntime) {
  ScratchDir dir;
  const Avatar avatar = ImportTinyAvatar(dir);
  EngineOptions native;
  native.backend = "reference";
  native.intra_op_threads = 1;
  auto renderer = Renderer::Create(avatar, native, TestModelPath("demo/demo.onnx"));
  ASSERT_TRUE(renderer.ok()) << renderer.status().ToString();
  EXPECT_EQ((*renderer)->unet().info().backend, "reference");
  EXPECT_EQ((*renderer)->audio_encoder().engine().info().backend, "ort");
  EXPECT_FALSE((*renderer)->audio_encoder().fallback_reason().empty());
}

std::string FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Two renders' frame folders under `dir` hold the same `frames` files, byte for byte.
void ExpectSameFrames(const ScratchDir& dir, const std::string& a, const std::string& b,
                      int64_t frames) {
  const std::vector<std::string> names = dir.List(a);
  EXPECT_EQ(static_cast<int64_t>(names.size()), frames) << a;
  ASSERT_EQ(names, dir.List(b)) << a << " and " << b;
  for (const std::string& name : names) {
    // Compared whole, not printed: a frame is kilobytes of PNG.
    EXPECT_TRUE(FileBytes(dir / (a + "/" + name)) == FileBytes(dir / (b + "/" + name)))
        << a << " and " << b << ": " << name << " differ";
  }
}

// Several UNet runs at once take batches in frame order and hand them on in that order: the same
// frames as one run, byte for byte, including the last, short batch.
TEST(Renderer, SeveralModelRunsGiveTheSameFramesInOrder) {
  ScratchDir dir;
  const Avatar avatar = ImportTinyAvatar(dir);
  const std::string speech = WriteSpeechVideo(dir, 2.0);
  RenderOptions options;
  options.batch = 3;
  int64_t frames = 0;
  for (int runs : {1, 3}) {
    EngineOptions engine;
    engine.intra_op_threads = runs;  // one thread for each run
    RendererOptions renderer_options;
    renderer_options.model_runs = runs;
    auto renderer = Renderer::Create(avatar, engine, "", renderer_options);
    ASSERT_TRUE(renderer.ok()) << renderer.status().ToString();
    EXPECT_EQ((*renderer)->model_runs(), runs);
    const std::string out = dir / ("frames" + std::to_string(runs));
    auto stats = (*renderer)->Render(speech, RenderOutput::Frames(out), options);
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    EXPECT_EQ(stats->model_runs, runs);
    EXPECT_NE(stats->frames % 3, 0) << "the test wants a short last batch";
    EXPECT_EQ(stats->batches, (stats->frames + 2) / 3);
    for (const StageStats& s : stats->stages) EXPECT_EQ(s.items, stats->frames) << s.name;
    frames = stats->frames;
  }
  ExpectSameFrames(dir, "frames1", "frames3", frames);
}

// Faces handed to the UNet as uint8 frames (Engine::RunFrames, what a GPU backend converts
// itself) give the frames that float tensors built by the frames stage give, byte for byte: with a
// short last batch, two runs at once, and a model of fixed batch 3 whose last batch is padded.
TEST(Renderer, FacesAsFramesOrTensorsGiveTheSameFrames) {
  ScratchDir dir;
  const Avatar avatar = ImportTinyAvatar(dir);
  const std::string speech = WriteSpeechVideo(dir, 1.4);
  for (const std::string model : {"tiny.onnx", "tiny_fixed3.onnx"}) {
    EngineOptions engine;
    engine.intra_op_threads = 2;
    auto renderer = Renderer::Create(avatar, engine, TestModelPath(model));
    ASSERT_TRUE(renderer.ok()) << renderer.status().ToString();
    ASSERT_EQ((*renderer)->model_runs(), 2);
    int64_t frames = 0;
    for (FaceInput input : {FaceInput::kAuto, FaceInput::kFrames}) {
      RenderOptions options;
      options.batch = 3;
      options.face_input = input;
      const std::string out = model + "-" + FaceInputName(input);
      auto stats = (*renderer)->Render(speech, RenderOutput::Frames(dir / out), options);
      ASSERT_TRUE(stats.ok()) << stats.status().ToString();
      // On the CPU, automatic means tensors: the frames stage builds them off the model's thread.
      EXPECT_EQ(stats->face_input,
                input == FaceInput::kAuto ? FaceInput::kTensors : FaceInput::kFrames);
      EXPECT_NE(stats->frames % stats->batch, 0) << model << ": the test wants a short last batch";
      for (const StageStats& s : stats->stages) EXPECT_EQ(s.items, stats->frames) << s.name;
      frames = stats->frames;
    }
    ExpectSameFrames(dir, model + "-auto", model + "-frames", frames);
  }
  EXPECT_EQ(ParseFaceInput("tensors").value(), FaceInput::kTensors);
  auto bad = ParseFaceInput("float");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("must be auto, frames or tensors"), std::string::npos);
}

// Avatar frames decoded ahead on helper threads give the frames the frames stage decodes itself,
// byte for byte, with no frame kept (each one decoded as the walk reaches it); a frame file that
// does not decode fails the render with its name, ahead or not.
TEST(Renderer, FramesDecodedAheadGiveTheSameFrames) {
  ScratchDir dir;
  const Avatar avatar = ImportTinyAvatar(dir);
  const std::string speech = WriteSpeechVideo(dir, 1.4);
  auto renderer = Renderer::Create(avatar);
  ASSERT_TRUE(renderer.ok()) << renderer.status().ToString();
  int64_t frames = 0;
  for (int threads : {0, 3}) {
    RenderOptions options;
    options.batch = 2;
    options.frame_cache_mb = 0;
    options.frame_threads = threads;
    auto stats = (*renderer)->Render(
        speech, RenderOutput::Frames(dir / ("threads" + std::to_string(threads))), options);
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    ASSERT_GT(stats->frames, avatar.frame_count()) << "the test wants the walk to come back";
    // Nothing kept: every frame is decoded, and at most the frames announced past the end more.
    EXPECT_GE(stats->frames_decoded, stats->frames);
    EXPECT_LE(stats->frames_decoded, stats->frames + 2 * threads);
    if (threads == 0) {
      EXPECT_EQ(stats->frames_decoded_ahead, 0);
    } else {
      EXPECT_GT(stats->frames_decoded_ahead, 0);
    }
    frames = stats->frames;
  }
  ExpectSameFrames(dir, "threads0", "threads3", frames);
  // Kept frames are decoded once.
  auto kept = (*renderer)->Render(speech, RenderOutput::Frames(dir / "kept"), {});
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_LE(kept->frames_decoded, avatar.frame_count());

  // A broken frame file, reached ahead of the frames stage and by it.
  const std::string broken = avatar.frame_files()[3];
  std::ofstream(broken, std::ios::binary | std::ios::trunc) << "not a picture";
  for (int threads : {0, 3}) {
    RenderOptions options;
    options.frame_threads = threads;
    auto failed = (*renderer)->Render(speech, RenderOutput::Frames(dir / "broken"), options);
    EXPECT_EQ(failed.status().code(), StatusCode::kDataLoss) << failed.status().ToString();
    EXPECT_NE(failed.status().message().find(broken), std::string::npos)
        << failed.status().message();
    EXPECT_FALSE(std::filesystem::exists(dir / "broken"));
  }
}

// The UNet's batches go through the device's scheduler (a given one here, which counts them as
// render frames), and the frames equal those of the engine called directly, one frame at a time,
// on the same faces and audio windows: byte for byte, with two runs at once and a short last batch.
TEST(Renderer, FramesThroughTheSchedulerEqualTheEngineCalledDirectly) {
  ScratchDir dir;
  const Avatar avatar = ImportTinyAvatar(dir);
  const std::string speech = WriteSpeechVideo(dir, 1.4);
  auto scheduler = std::make_shared<runtime::Scheduler>(runtime::SchedulerOptions{});
  EngineOptions engine;
  engine.intra_op_threads = 2;
  RendererOptions renderer_options;
  renderer_options.scheduler = scheduler;
  auto renderer = Renderer::Create(avatar, engine, "", renderer_options);
  ASSERT_TRUE(renderer.ok()) << renderer.status().ToString();
  ASSERT_EQ((*renderer)->model_runs(), 2);
  RenderOptions options;
  options.batch = 3;
  auto stats = (*renderer)->Render(speech, RenderOutput::Frames(dir / "rendered"), options);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_NE(stats->frames % 3, 0) << "the test wants a short last batch";
  const runtime::SchedulerTotals totals = scheduler->totals();
  EXPECT_EQ(totals.rows_by_origin[static_cast<size_t>(runtime::Origin::kRender)], stats->frames);
  EXPECT_EQ(totals.batches, stats->batches);

  // The same frames, the engine called directly.
  auto pcm = DecodeAudioFile(speech);
  ASSERT_TRUE(pcm.ok()) << pcm.status().ToString();
  auto mel = MelSpectrogram(pcm->data(), pcm->size(), options.mel);
  ASSERT_TRUE(mel.ok()) << mel.status().ToString();
  auto windows = ComputeAudioWindows((*renderer)->audio_encoder(), *mel, avatar.manifest().fps,
                                     options.window_edge);
  ASSERT_TRUE(windows.ok()) << windows.status().ToString();
  ASSERT_EQ(windows->shape()[0], stats->frames);
  Engine& unet = (*renderer)->unet();
  const UnetInputs roles = FindUnetInputs(unet.info()).value();
  const FaceLayout layout = FaceLayout::ForInputSize(roles.size).value();
  auto sequence = FrameSequence::Create(avatar.frame_count(), options.order, options.start_frame);
  ASSERT_TRUE(sequence.ok()) << sequence.status().ToString();
  auto reader = avatar.OpenFrames();
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  const int s = layout.inner_size;
  const size_t window = 32 * 16 * 16;
  std::vector<float> visual(static_cast<size_t>(6) * s * s), out(static_cast<size_t>(3) * s * s);
  std::vector<uint8_t> face(static_cast<size_t>(3) * s * s);
  Shape audio_shape = unet.info().inputs[roles.audio].shape;
  audio_shape[0] = 1;
  std::filesystem::create_directories(dir / "direct");
  for (int64_t i = 0; i < stats->frames; ++i) {
    const int64_t index = (*sequence)(i);
    auto frame = (*reader)->Read(index);
    ASSERT_TRUE(frame.ok()) << frame.status().ToString();
    const CropRect rect = avatar.crop_rects()[static_cast<size_t>(index)];
    auto crop = CropFace(*frame, rect, layout);
    ASSERT_TRUE(crop.ok()) << crop.status().ToString();
    const size_t row = static_cast<size_t>(crop->width) * 3;
    FillVisualInput(crop->bgr.data() + layout.inner_offset * (row + 3), row, layout, visual.data());
    std::vector<TensorView> inputs(2);
    inputs[roles.visual] = {DataType::kFloat32, {1, 6, s, s}, visual.data()};
    inputs[roles.audio] = {DataType::kFloat32, audio_shape,
                           windows->data_as<float>() + static_cast<size_t>(i) * window};
    ASSERT_TRUE(unet.Run(inputs, {{DataType::kFloat32, {1, 3, s, s}, out.data()}}).ok());
    OutputToImage(out.data(), s, face.data());
    ASSERT_TRUE(PasteFace(face.data(), layout, *crop, rect, *frame).ok());
    char name[32];
    std::snprintf(name, sizeof(name), "direct/%06lld.png", static_cast<long long>(i));
    ASSERT_TRUE(SaveImage(dir / name, *frame).ok());
  }
  ExpectSameFrames(dir, "rendered", "direct", stats->frames);
}

TEST(Renderer, ModelRunsByDefaultAndOutOfRange) {
  ScratchDir dir;
  const Avatar avatar = ImportTinyAvatar(dir);
  auto runs_for = [&](const EngineOptions& engine, const std::string& model = "") {
    auto renderer = Renderer::Create(avatar, engine, model);
    EXPECT_TRUE(renderer.ok()) << renderer.status().ToString();
    return renderer.ok() ? (*renderer)->model_runs() : -1;
  };
  EngineOptions engine;
  engine.intra_op_threads = 2;
  EXPECT_EQ(runs_for(engine), 2);  // ONNX Runtime's CPU provider, two threads: two runs of one
  engine.intra_op_threads = 1;
  EXPECT_EQ(runs_for(engine), 1);
  // The default thread count stands for the physical cores this thread may use: one CPU, one run.
  engine.intra_op_threads = 0;
  cpu_set_t all, one;
  ASSERT_EQ(sched_getaffinity(0, sizeof(all), &all), 0);
  CPU_ZERO(&one);
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &all)) {
      CPU_SET(cpu, &one);
      break;
    }
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
  const int runs_on_one_cpu = runs_for(engine);
  ASSERT_EQ(sched_setaffinity(0, sizeof(all), &all), 0);
  EXPECT_EQ(runs_on_one_cpu, 1);
  engine.backend = "reference";  // lipsync's own backends: one run
  engine.intra_op_threads = 2;
  EXPECT_EQ(runs_for(engine, TestModelPath("demo/demo.onnx")), 1);
  for (int bad : {-1, 17}) {
    RendererOptions renderer_options;
    renderer_options.model_runs = bad;
    auto refused = Renderer::Create(avatar, {}, "", renderer_options);
    EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(refused.status().message().find("is outside 0..16"), std::string::npos)
        << refused.status().message();
  }
}

TEST(Renderer, RejectsBadOptions) {
  ScratchDir dir;
  const Avatar avatar = ImportTinyAvatar(dir);
  const std::string speech = WriteSpeechVideo(dir, 1.0);
  auto renderer = Renderer::Create(avatar);
  ASSERT_TRUE(renderer.ok());
  RenderOptions options;
  options.batch = 65;  // above the engine's default largest batch (64)
  auto big = (*renderer)->Render(speech, RenderOutput::Video(dir / "o.mp4"), options);
  EXPECT_NE(big.status().message().find("above the engine's largest batch 64"), std::string::npos)
      << big.status().message();
  options.batch = 2;
  RenderOutput both = RenderOutput::Video(dir / "o.mp4");
  both.frames_dir = dir / "f";
  EXPECT_EQ((*renderer)->Render(speech, both, options).status().code(),
            StatusCode::kInvalidArgument);
  auto gif = (*renderer)->Render(speech, RenderOutput::Frames(dir / "f", "gif"), options);
  EXPECT_NE(gif.status().message().find("frames must be png or jpg"), std::string::npos);
  auto expect_refused = [&](RenderOptions bad, const std::string& message) {
    auto r = (*renderer)->Render(speech, RenderOutput::Video(dir / "o.mp4"), bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << message;
    EXPECT_NE(r.status().message().find(message), std::string::npos) << r.status().message();
  };
  RenderOptions bad = options;
  bad.crf = 52;
  expect_refused(bad, "crf 52 is outside H.264's 0..51");
  bad = options;
  bad.queue_frames = -1;
  expect_refused(bad, "queue of -1 frames");
  bad = options;
  bad.frame_threads = -2;
  expect_refused(bad, "-2 frame threads: give -1 (automatic), 0 (none) or up to 64");
  bad = options;
  bad.background_nice = 20;
  expect_refused(bad, "background nice value 20 is outside 0..19");
  // A model with a second output is not a lip-sync UNet: the services run faces by the frame form.
  auto two = Renderer::Create(avatar, {}, TestModelPath("tiny_two_outputs.onnx"));
  EXPECT_EQ(two.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(two.status().message().find("2 inputs (face, audio) and one output, it has 2 inputs "
                                        "and 2 outputs"),
            std::string::npos)
      << two.status().message();
  // A UNet of the other face size does not fit the avatar.
  auto small = Renderer::Create(avatar, {}, TestModelPath("tiny160.onnx"));
  EXPECT_NE(small.status().message().find("model_size 320, the model takes 160x160 faces"),
            std::string::npos)
      << small.status().message();
  EXPECT_EQ(dir.List(), (std::vector<std::string>{"avatar", "speech.mp4"}));
}

}  // namespace
}  // namespace lipsync
