"""Shared by the grpcio client tests: Python stubs generated from the project's protos at test
time, free loopback ports, and a server started on them."""
import importlib.util
import os
import socket
import subprocess
import sys
import time


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


def free_ports(count):
    """`count` distinct free loopback ports (their sockets held open together while chosen)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            sockets.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_on_free_ports(command_for, count, ready=0, options=(), timeout=120, tries=3):
    """Runs `command_for(*ports)` on `count` free ports (its output to a pipe) and waits until
    port `ready` answers gRPC. A server that exits first is started again on other ports (another
    process may have taken one between choosing and binding it), up to `tries` times; one that
    never answers fails with its output. Returns the process, the ports and a channel to `ready`."""
    import grpc
    output = ""
    for _ in range(tries):
        ports = free_ports(count)
        proc = subprocess.Popen(command_for(*ports), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        channel = grpc.insecure_channel(f"127.0.0.1:{ports[ready]}", options=list(options))
        ready_future = grpc.channel_ready_future(channel)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                ready_future.result(timeout=0.5)
                return proc, ports, channel
            except grpc.FutureTimeoutError:
                pass
        channel.close()
        if proc.poll() is None:
            proc.kill()
            output = proc.communicate()[0]
            raise RuntimeError(f"the server did not answer within {timeout} s:\n{output[-4000:]}")
        output = proc.communicate()[0]
    raise RuntimeError(f"the server exited {tries} times before answering; last output:\n"
                       f"{output[-4000:]}")
