"""A client no one on the team wrote: Debian's Python grpcio, with stubs generated from the KServe v2
proto at test time, against `lipsync serve`. The expected output is computed independently with
numpy from the test model's weights (tiny.onnx: sigmoid(conv1x1(visual) + conv1x1(mean(audio))))."""
import os
import subprocess
import time

import grpc
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from grpc_stubs import free_port, generate_stubs

BIN = os.environ["LIPSYNC_BIN"]
DATA = os.environ["LIPSYNC_TEST_DATA_DIR"]
PROTO_DIR = os.environ["LIPSYNC_PROTO_DIR"]
MODEL = os.path.join(DATA, "tiny.onnx")


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    generate_stubs(PROTO_DIR, tmp_path_factory.mktemp("stubs"),
                   "kserve/model_repository.proto", "kserve/grpc_predict_v2.proto")
    from kserve import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
    return grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc


@pytest.fixture(scope="module")
def server(pb):
    port = free_port()
    proc = subprocess.Popen([BIN, "serve", "--model", MODEL, "--listen", f"127.0.0.1:{port}",
                             "--threads", "1", "--max-batch", "4", "--model-name", "tiny"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=30)
    stub = pb[1].GRPCInferenceServiceStub(channel)
    yield stub
    proc.send_signal(2)  # SIGINT: drain and exit 0
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "stopped" in out


def reference(visual, audio):
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(MODEL).graph.initializer}
    v = np.einsum("oc,nchw->nohw", init["w"][:, :, 0, 0], visual) + init["b"][None, :, None, None]
    a = np.einsum("oc,nc->no", init["wa"][:, :, 0, 0], audio.mean(axis=(2, 3)))
    return 1.0 / (1.0 + np.exp(-(v + a[:, :, None, None])))


def infer_request(pb, visual, audio, name="tiny"):
    req = pb[0].ModelInferRequest(model_name=name, id="py-1")
    for tensor_name, arr in (("visual_input", visual), ("audio_input", audio)):
        req.inputs.add(name=tensor_name, datatype="FP32", shape=list(arr.shape))
        req.raw_input_contents.append(arr.astype(np.float32).tobytes())
    return req


def test_health_and_metadata(pb, server):
    assert server.ServerLive(pb[0].ServerLiveRequest()).live
    assert server.ServerReady(pb[0].ServerReadyRequest()).ready
    assert server.ModelReady(pb[0].ModelReadyRequest(name="tiny")).ready
    meta = server.ServerMetadata(pb[0].ServerMetadataRequest())
    assert meta.name == "lipsync"
    model = server.ModelMetadata(pb[0].ModelMetadataRequest(name="tiny"))
    assert [t.name for t in model.inputs] == ["visual_input", "audio_input"]
    assert list(model.inputs[1].shape) == [-1, 32, 16, 16]
    assert model.outputs[0].datatype == "FP32"


def test_model_infer_matches_an_independent_reference(pb, server):
    rng = np.random.default_rng(0)
    visual = rng.random((3, 6, 320, 320), dtype=np.float32)
    audio = rng.random((3, 32, 16, 16), dtype=np.float32)
    resp = server.ModelInfer(infer_request(pb, visual, audio))
    assert resp.id == "py-1" and resp.model_name == "tiny"
    out = resp.outputs[0]
    assert out.name == "output" and out.datatype == "FP32" and list(out.shape) == [3, 3, 320, 320]
    got = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(3, 3, 320, 320)
    assert np.abs(got - reference(visual, audio)).max() < 1e-5


def test_fp32_contents_form_works_too(pb, server):
    rng = np.random.default_rng(1)
    visual = rng.random((1, 6, 320, 320), dtype=np.float32)
    audio = rng.random((1, 32, 16, 16), dtype=np.float32)
    req = pb[0].ModelInferRequest(model_name="tiny")
    for tensor_name, arr in (("visual_input", visual), ("audio_input", audio)):
        t = req.inputs.add(name=tensor_name, datatype="FP32", shape=list(arr.shape))
        t.contents.fp32_contents.extend(arr.ravel().tolist())
    resp = server.ModelInfer(req)
    got = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(1, 3, 320, 320)
    assert np.abs(got - reference(visual, audio)).max() < 1e-5


def test_bad_input_is_invalid_argument_naming_the_tensor(pb, server):
    visual = np.zeros((1, 6, 320, 320), np.float32)
    audio = np.zeros((1, 32, 16, 8), np.float32)
    with pytest.raises(grpc.RpcError) as err:
        server.ModelInfer(infer_request(pb, visual, audio))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'audio_input': expected shape [N,32,16,16], got [1,32,16,8]" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        server.ModelInfer(infer_request(pb, visual, np.zeros((1, 32, 16, 16)), name="other"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # Still serving.
    ok = server.ModelInfer(infer_request(pb, visual, np.zeros((1, 32, 16, 16), np.float32)))
    assert len(ok.raw_output_contents[0]) == 3 * 320 * 320 * 4
