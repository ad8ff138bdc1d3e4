"""Shared by the grpcio client tests: Python stubs generated from the project's protos at test
time, and free loopback ports."""
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
