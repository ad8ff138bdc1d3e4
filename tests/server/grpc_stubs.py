"""Shared by the grpcio client tests: Python stubs generated from the project's protos at test
time, and free loopback ports."""
import importlib.util
import os
import socket
import subprocess
import sys


def generate_stubs(proto_dir, out, *protos):
    """Writes the messages and gRPC stubs of `protos` (paths under `proto_dir`) to `out` and makes
    them importable. Debian's protoc (the python3-protobuf runtime's version) with gRPC's Python
    plugin: the protoc inside python3-grpc-tools predates proto3 `optional`."""
    subprocess.run(["protoc", f"-I{proto_dir}", f"--python_out={out}",
                    "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
                    f"--grpc_python_out={out}", *protos], check=True)
    sys.path.insert(0, str(out))


def load_messages(proto_dir, out, proto):
    """The message classes of `proto` (no gRPC stubs), loaded from their file rather than imported
    by package path: lipsync/v1's path would resolve to the project's own Python package
    `lipsync`. Call its methods with channel.unary_unary/stream_stream and the classes'
    SerializeToString and FromString."""
    os.makedirs(out, exist_ok=True)
    subprocess.run(["protoc", f"-I{proto_dir}", f"--python_out={out}", proto], check=True)
    path = os.path.join(out, proto[:-len(".proto")] + "_pb2.py")
    spec = importlib.util.spec_from_file_location(proto.replace("/", "_")[:-6] + "_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
