"""Stopping lipsync while calls are in flight, straight on its port: no balancer, no retries.

One call of each service is held open when SIGTERM arrives: a session half-way through its
audio, a lipsyncsrv stream between two requests, a monolithic InferBatchComposite on an avatar
whose UNet takes seconds a frame, and a KServe ModelInfer whose lone frame waits seconds for
company in the batcher. Once lipsync says it is draining, a new call is refused, and every held
call still runs to the end with all its answers, and the server's own counters count each one as
OK. A lipsync that cancelled calls on the stop signal fails here; in test_migration.py the
balancer has already moved the traffic away before the signal, so it could not tell."""
import json
import os
import queue
import re
import shutil
import signal
import sys
import time
import urllib.request
from concurrent import futures

import grpc
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import migration_util as mu

sys.path.insert(0, os.path.join(mu.ROOT, "tests", "server"))
from grpc_stubs import generate_stubs, load_messages  # noqa: E402

BIN = os.environ["LIPSYNC_BIN"]
QUEUE_DELAY_S = 8  # the KServe call's lone frame waits this long for a second one
NO_RETRIES = [("grpc.enable_retries", 0), ("grpc.max_send_message_length", 100 << 20),
              ("grpc.max_receive_message_length", 100 << 20)]


def write_slow_unet(path, size=mu.MODEL_SIZE, layers=24, width=96):
    """The UNet's interface with a deliberately heavy body: `layers` 3x3 convolutions of `width`
    channels at full resolution (measured: 3.1 s for a batch of 4 on one core of a 2-core
    development machine)."""
    rng = np.random.default_rng(5)
    weights, nodes = [], []

    def conv(x, cin, cout, k, name):
        w = rng.normal(0, 1 / np.sqrt(cin * k * k), (cout, cin, k, k)).astype(np.float32)
        weights.append(numpy_helper.from_array(w, name + "_w"))
        nodes.append(helper.make_node("Conv", [x, name + "_w"], [name], pads=[k // 2] * 4))
        return name

    x = conv("visual_input", 6, width, 3, "c0")
    for i in range(1, layers):
        x = conv(x, width, width, 3, f"c{i}")
        nodes.append(helper.make_node("Relu", [x], [x + "_r"]))
        x += "_r"
    v = conv(x, width, 3, 1, "face")
    nodes.append(helper.make_node("GlobalAveragePool", ["audio_input"], ["pooled"]))
    a = conv("pooled", 32, 3, 1, "speech")
    nodes += [helper.make_node("Add", [v, a], ["sum"]),
              helper.make_node("Sigmoid", ["sum"], ["output"])]
    graph = helper.make_graph(
        nodes, "slow_lipsync",
        [helper.make_tensor_value_info("visual_input", TensorProto.FLOAT, ["N", 6, size, size]),
         helper.make_tensor_value_info("audio_input", TensorProto.FLOAT, ["N", 32, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, size, size])],
        weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def make_avatars(root):
    """'sanders' (the tiny UNet, with feature rows for lipsyncsrv) and 'slow' (the heavy UNet)."""
    folder = mu.make_avatar(root)
    np.save(os.path.join(folder, "audio_features.npy"),
            np.random.default_rng(1).normal(0, 1, (mu.FRAMES + 2, 512)).astype(np.float32))
    manifest_path = os.path.join(folder, "avatar.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    manifest["audio_features"] = "audio_features.npy"
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    slow = os.path.join(root, "slow")
    shutil.copytree(folder, slow)
    write_slow_unet(os.path.join(slow, "unet.onnx"))


def metrics(port):
    """lipsync's Prometheus text as {"name{labels}": value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(lipsync_\S+) (\S+)$", text, re.M)}


def requests_ok(values, method):
    return values.get(f'lipsync_requests_total{{method="{method}",code="OK"}}', 0)


def wait_for_metric(port, name, value, proc, timeout=120):
    """Polls /metrics until `name` reaches `value` (the server's own gauge; no event to wait on
    from outside the process)."""
    deadline = time.monotonic() + timeout
    while metrics(port).get(name) != value:
        assert proc.poll() is None, "lipsync exited"
        assert time.monotonic() < deadline, f"{name} never reached {value}"
        time.sleep(0.05)


def video_frames(samples):
    """lipsync render's frame count for `samples` of 16 kHz audio (docs/API.md)."""
    mel_frames = 1 + samples // 200
    return int((mel_frames - 16) / 80 * 25) + 2 + 2


class HeldStream:
    """A bidirectional stream whose requests the test sends one by one; answers are read as
    they come."""

    def __init__(self, call, timeout=300):
        self.outbox = queue.Queue()
        self.responses = call(iter(self.outbox.get, None), timeout=timeout)

    def send(self, message):
        self.outbox.put(message)

    def close(self):
        self.outbox.put(None)


def test_stop_signal_lets_every_call_in_flight_finish(tmp_path):
    root = str(tmp_path / "avatars")
    make_avatars(root)
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    generate_stubs(mu.PROTO_DIR, stubs, "monolithic/monolithic.proto",
                   "lipsyncsrv/lipsyncsrv.proto", "kserve/model_repository.proto",
                   "kserve/grpc_predict_v2.proto")
    from kserve import grpc_predict_v2_pb2 as kserve
    from lipsyncsrv import lipsyncsrv_pb2 as srv
    from monolithic import monolithic_pb2 as mono
    v1 = load_messages(mu.PROTO_DIR, stubs / "v1", "lipsync/v1/lipsync.proto")

    server = mu.Process([BIN, "serve", "--model", os.path.join(root, "sanders", "unet.onnx"),
                         "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--threads", "1",
                         "--max-batch", "2", "--preferred-batch", "2",
                         "--max-queue-delay-us", str(QUEUE_DELAY_S * 1000000), "--monolithic",
                         "--lipsyncsrv", "--avatars", root, "--drain-timeout-s", "300"],
                        str(tmp_path / "lipsync.log"))
    pool = futures.ThreadPoolExecutor(4)
    try:
        port = int(server.wait_for(r"serving model .* \(port (\d+)\)").group(1))
        http = int(server.wait_for(r"metrics on http://\S+ \(port (\d+)\)").group(1))
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=NO_RETRIES)
        grpc.channel_ready_future(channel).result(timeout=60)

        # A session with half its audio sent, and at least one frame back.
        session = HeldStream(channel.stream_stream(
            "/lipsync.v1.Sessions/Session", request_serializer=v1.SessionRequest.SerializeToString,
            response_deserializer=v1.SessionResponse.FromString))
        pcm = (0.3 * np.sin(np.arange(32000) * 0.05)).astype("<f4")
        session.send(v1.SessionRequest(start=v1.SessionStart(
            model_id="sanders", sample_format=v1.SAMPLE_FORMAT_F32LE,
            frame_format=v1.FRAME_FORMAT_JPEG)))
        session.send(v1.SessionRequest(audio=pcm[:16000].tobytes()))
        assert next(session.responses).HasField("started")
        session_frames = 0
        while session_frames == 0:
            session_frames += next(session.responses).HasField("frame")

        # A lipsyncsrv stream with one request answered.
        stream = HeldStream(channel.stream_stream(
            "/lipsyncsrv.LipSyncService/StreamInference",
            request_serializer=srv.InferenceRequest.SerializeToString,
            response_deserializer=srv.InferenceResponse.FromString))
        stream.send(srv.InferenceRequest(model_name="sanders", frame_id=0))
        first = next(stream.responses)
        assert first.success, first.error

        # Two slow unary calls, both accepted (lipsync_inflight_requests counts them).
        composite = channel.unary_unary(
            "/monolithic.MonolithicService/InferBatchComposite",
            request_serializer=mono.CompositeBatchRequest.SerializeToString,
            response_deserializer=mono.CompositeBatchResponse.FromString)
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=kserve.ModelInferRequest.SerializeToString,
            response_deserializer=kserve.ModelInferResponse.FromString)
        composite_call = pool.submit(composite, mu.composite_request(mono, 4, seed=3,
                                                                     model_id="slow"),
                                     timeout=300)
        request = kserve.ModelInferRequest(model_name="lipsync")
        for name, shape in (("visual_input", [1, 6, mu.MODEL_SIZE, mu.MODEL_SIZE]),
                            ("audio_input", [1, 32, 16, 16])):
            request.inputs.add(name=name, datatype="FP32", shape=shape)
            request.raw_input_contents.append(
                np.random.default_rng(4).random(shape, dtype=np.float32).tobytes())
        infer_call = pool.submit(infer, request, timeout=300)
        wait_for_metric(http, "lipsync_inflight_requests", 2, server.proc)

        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(r"received SIGTERM, draining")
        for name, call in (("InferBatchComposite", composite_call), ("ModelInfer", infer_call)):
            # One that failed already is reported by result() below.
            assert not call.done() or call.exception() is not None, \
                f"{name} ended before the drain began, so the test proves nothing"
        # Draining: new calls are refused...
        refused = grpc.insecure_channel(f"127.0.0.1:{port}", options=NO_RETRIES)
        try:
            refused.unary_unary("/monolithic.MonolithicService/Health",
                                request_serializer=mono.HealthRequest.SerializeToString,
                                response_deserializer=mono.HealthResponse.FromString)(
                mono.HealthRequest(), timeout=30)
            raise AssertionError("a new call was served after the stop signal")
        except grpc.RpcError as e:
            # gRPC refuses a call that reaches a server shutting down in one of two ways, by timing:
            # a stream refused on the connection (UNAVAILABLE), or a call that arrived but that no
            # handler took, cancelled by the shutdown (CANCELLED). Neither was served.
            assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), e
        refused.close()

        # ...and the held ones finish. The session gets the rest of its audio and every frame.
        session.send(v1.SessionRequest(audio=pcm[16000:].tobytes()))
        session.send(v1.SessionRequest(end=v1.AudioEnd()))
        session.close()
        session_frames += sum(r.HasField("frame") for r in session.responses)
        assert session_frames == video_frames(len(pcm))
        assert session.responses.code() == grpc.StatusCode.OK

        reply = composite_call.result()
        assert reply.success, reply.error
        assert len(reply.composited_frames) == 4
        out = infer_call.result()
        assert list(out.outputs[0].shape) == [1, 3, mu.MODEL_SIZE, mu.MODEL_SIZE]
        assert len(out.raw_output_contents[0]) == 3 * mu.MODEL_SIZE ** 2 * 4

        for frame in (1, 2):
            stream.send(srv.InferenceRequest(model_name="sanders", frame_id=frame))
            answer = next(stream.responses)
            assert answer.success and answer.frame_id == frame, answer.error
        # Counted while the open stream keeps the server up: every held call as OK.
        counts = metrics(http)
        assert {m: requests_ok(counts, m) for m in
                ("Session", "InferBatchComposite", "ModelInfer", "StreamInference")} == {
            "Session": 1, "InferBatchComposite": 1, "ModelInfer": 1, "StreamInference": 3}
        assert counts["lipsync_inflight_requests"] == 0
        stream.close()
        assert list(stream.responses) == []
        assert stream.responses.code() == grpc.StatusCode.OK
        assert server.proc.wait(120) == 0, server.output()[-3000:]
        assert "stopped" in server.output()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        server.stop(signal.SIGKILL if server.proc.poll() is None else signal.SIGTERM)

