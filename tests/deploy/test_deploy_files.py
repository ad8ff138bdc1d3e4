"""Checks the deployment files (deploy/docker, deploy/k8s) against the built `lipsync` and Debian.

Nothing here needs Docker or a cluster: the manifests are parsed, every `lipsync serve` command
line in them is checked against `lipsync serve --help` and then run (with the model path pointed
at a missing file, so the run stops at the model after the flags were accepted), ports and probe
paths are matched across the files and the server's sources, and the Dockerfiles' runtime
packages are looked up with apt and matched against the libraries the binary links.
"""
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
BIN = os.environ["LIPSYNC_BIN"]
DOCKERFILES = ["deploy/docker/Dockerfile", "deploy/docker/Dockerfile.cuda"]
# Present in every Debian image (libc6, the GCC runtime): needed by any C++ program.
BASE_PACKAGES = {"libc6", "libstdc++6", "libgcc-s1"}


# --- helpers --------------------------------------------------------------------------------------

def serve_help():
    """{flag: (takes_value, default or None)} from `lipsync serve --help`."""
    out = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    flags = {}
    for m in re.finditer(r"^\s+(?:-\w,)?(--[\w-]+)(?:\s+([A-Z]+)(?:=(\S+))?)?", out, re.M):
        flags[m.group(1)] = (m.group(2) is not None, m.group(3))
    assert "--model" in flags and "--listen" in flags, out
    return flags


HELP = serve_help()


def parse_args(args):
    """`lipsync serve` arguments -> {flag: value}, checking each flag against --help."""
    values, i = {}, 0
    while i < len(args):
        token = str(args[i])
        assert token.startswith("--"), f"expected a flag, got {token!r} in {args}"
        flag, eq, inline = token.partition("=")
        assert flag in HELP, f"{flag} is not an option of `lipsync serve` (see --help)"
        takes_value = HELP[flag][0]
        if not takes_value:
            assert not eq, f"{flag} takes no value"
            values[flag] = True
        elif eq:
            values[flag] = inline
        else:
            assert i + 1 < len(args) and not str(args[i + 1]).startswith("--"), f"{flag} needs a value"
            i += 1
            values[flag] = str(args[i])
        i += 1
    return values


def setting(values, flag):
    """The value a serve command line gives `flag`, or the server's default from --help."""
    return values.get(flag, HELP[flag][1])


def port_of(address):
    host, _, port = address.rpartition(":")
    assert host and port.isdigit(), f"{address!r} is not host:port"
    return int(port)


def check_serve_command(args, avatar_config=None):
    """Flags exist and values are accepted: `lipsync serve` with the model path (or, without a
    model, the avatars path) replaced by a missing file must fail on that file (exit 2), not on the
    command line (CLI11 exits >= 100). An avatar config file given as `avatar_config` (its text)
    is checked too: read with its avatars_root emptied, the server must stop at its first
    preload, having accepted every key."""
    values = parse_args(args)
    assert "--model" in values or "--avatars" in values, f"no --model or --avatars in {args}"
    replace = {}
    missing = "/nonexistent-model-dir/model.onnx"
    expected = missing
    if "--model" in values:
        replace[values["--model"]] = missing
    if "--avatars" in values and avatar_config is not None:
        tmp = tempfile.mkdtemp(prefix="lipsync-deploy-")
        config = yaml.safe_load(avatar_config)
        assert config.get("preload"), "the avatar config preloads nothing: readiness would not wait"
        config["avatars_root"] = os.path.join(tmp, "avatars")
        os.mkdir(config["avatars_root"])
        path = os.path.join(tmp, "avatars.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        replace[values["--avatars"]] = path
        if "--model" not in values:
            expected = f"preloading '{config['preload'][0]}'"
    elif "--avatars" in values and "--model" not in values:
        replace[values["--avatars"]] = "/nonexistent-avatars"
        expected = "/nonexistent-avatars"
    # Port 0 everywhere: the check must not depend on which ports are free on this machine.
    run_args = [replace.get(str(a), str(a)) for a in args]
    run_args = [re.sub(r":\d+$", ":0", a) if re.match(r"[\w.]+:\d+$", a) else a for a in run_args]
    proc = subprocess.run([BIN, "serve", *run_args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and expected in proc.stderr, (
        f"`lipsync serve {shlex.join(run_args)}` should fail on {expected}, got exit "
        f"{proc.returncode}: {proc.stderr}")
    preferred = setting(values, "--preferred-batch")
    if preferred != "auto":
        assert 1 <= int(preferred) <= int(setting(values, "--max-batch"))
    return values


def load_yaml(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def k8s_docs():
    docs = []
    for path in sorted(glob.glob(os.path.join(DEPLOY, "k8s", "**", "*.yaml"), recursive=True)):
        docs += [(path, d) for d in load_yaml(path)]
    return docs


def one(kind):
    found = [d for _, d in k8s_docs() if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def http_paths_served():
    """The paths the server's HTTP endpoint registers (src/server/http_endpoint.cc)."""
    with open(os.path.join(ROOT, "src", "server", "http_endpoint.cc")) as f:
        paths = set(re.findall(r'\.Get\("([^"]+)"', f.read()))
    assert {"/healthz", "/readyz"} <= paths, paths
    return paths


def container_port(container, ref):
    """A probe's or Service's port (a name or a number) -> the container port number."""
    for p in container.get("ports", []):
        if ref in (p.get("name"), p["containerPort"]):
            return p["containerPort"]
    raise AssertionError(f"port {ref!r} is not a port of container {container['name']}")


def mebibytes(quantity):
    q = str(quantity)
    units = {"Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for unit, scale in units.items():
        if q.endswith(unit):
            return float(q[:-len(unit)]) * scale
    return float(q) / 2**20


def cpu_cores(quantity):
    q = str(quantity)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def parse_dockerfile(path):
    """[(stage, INSTRUCTION, arguments)], continuation lines joined and comments dropped."""
    with open(os.path.join(ROOT, path)) as f:
        lines = [l.rstrip("\n") for l in f if not l.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    out, stage = [], None
    for line in text.splitlines():
        if not line.strip():
            continue
        instr, _, rest = line.strip().partition(" ")
        instr, rest = instr.upper(), rest.strip()
        if instr == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", rest, re.I)
            stage = m.group(2) or m.group(1)
        out.append((stage, instr, rest))
    return out


def stage_of(instructions, name):
    return [(i, r) for s, i, r in instructions if s == name]


def runtime_packages(path):
    """Package names in the runtime stage's `apt-get install`."""
    runs = [r for i, r in stage_of(parse_dockerfile(path), "runtime") if i == "RUN"]
    for run in runs:
        m = re.search(r"apt-get install ([^&;]*)", run)
        if m:
            return [t for t in m.group(1).split() if not t.startswith("-")]
    raise AssertionError(f"{path}: the runtime stage installs no packages")


def package_of_library(path):
    """The Debian package that owns a library file (checked under / and /usr: merged /usr)."""
    candidates = [path, os.path.realpath(path)]
    candidates += [c[4:] if c.startswith("/usr/") else "/usr" + c for c in list(candidates)]
    for c in candidates:
        proc = subprocess.run(["dpkg", "-S", c], capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout.split(":")[0]
    raise AssertionError(f"no Debian package owns {path}")


def needed_libraries():
    """{soname: resolved path} of the libraries the binary links directly."""
    dyn = subprocess.run(["readelf", "-d", BIN], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
    ldd = subprocess.run(["ldd", BIN], capture_output=True, text=True, check=True).stdout
    paths = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
    assert needed, dyn
    return {n: paths.get(n, n) for n in needed}


# --- YAML -----------------------------------------------------------------------------------------

def test_every_manifest_parses_and_names_its_kind():
    docs = k8s_docs()
    kinds = sorted(d["kind"] for _, d in docs)
    assert kinds == sorted(["ConfigMap", "Deployment", "Service", "Kustomization", "Kustomization",
                            "Kustomization", "ServingRuntime", "InferenceService", "Gateway",
                            "GRPCRoute", "GRPCRoute"]), kinds
    for path, d in docs:
        assert d.get("apiVersion"), f"{path}: no apiVersion"
        if d["kind"] != "Kustomization":
            assert d.get("metadata", {}).get("name"), f"{path}: no metadata.name"


def test_kustomizations_list_existing_files_that_parse():
    for path in glob.glob(os.path.join(DEPLOY, "k8s", "**", "kustomization.yaml"), recursive=True):
        (k,) = load_yaml(path)
        assert k["resources"], path
        for r in k["resources"]:
            target = os.path.join(os.path.dirname(path), r)
            assert os.path.isfile(target), f"{path}: {r} does not exist"
            assert load_yaml(target), f"{target} is empty"


def test_yamllint_passes():
    assert shutil.which("yamllint"), "yamllint is not installed: run scripts/setup.sh"
    proc = subprocess.run(["yamllint", "-s", "-c", os.path.join(DEPLOY, "yamllint.yaml"), DEPLOY],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- Kubernetes Deployment and Service ------------------------------------------------------------

def deployment_container():
    dep = one("Deployment")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return dep, container


def avatar_config_of(pod, container, values):
    """The text of the avatar config file `--avatars` names, from the ConfigMap mounted there."""
    path = values["--avatars"]
    mount = next(m for m in container["volumeMounts"]
                 if path.startswith(m["mountPath"].rstrip("/") + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "configMap" in volume, f"{path} is not on a ConfigMap volume"
    cm = one("ConfigMap")
    assert cm["metadata"]["name"] == volume["configMap"]["name"]
    return cm["data"][os.path.basename(path)]


def test_deployment_command_line_is_accepted_by_lipsync_serve():
    dep, c = deployment_container()
    values = parse_args(c["args"])
    config = avatar_config_of(dep["spec"]["template"]["spec"], c, values)
    check_serve_command(c["args"], avatar_config=config)
    assert port_of(values["--listen"]) == container_port(c, "grpc")
    assert port_of(values["--metrics"]) == container_port(c, "metrics")
    # The old servers' services on the old servers' ports.
    assert "--monolithic" in values and "--lipsyncsrv" in values
    assert port_of(values["--monolithic-listen"]) == container_port(c, "monolithic") == 50053
    assert port_of(values["--lipsyncsrv-listen"]) == container_port(c, "lipsyncsrv") == 50051


def test_deployment_probes_hit_the_metrics_port_and_served_paths():
    _, c = deployment_container()
    metrics = container_port(c, "metrics")
    served = http_paths_served()
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        if probe == "startupProbe" and probe not in c:
            continue
        get = c[probe]["httpGet"]
        assert get["path"] == path and path in served, f"{probe}: {get['path']}"
        assert container_port(c, get["port"]) == metrics, f"{probe} is not on the metrics port"


def test_grace_period_covers_prestop_and_drain():
    dep, c = deployment_container()
    values = parse_args(c["args"])
    drain = int(setting(values, "--drain-timeout-s"))
    pre_stop = 0
    command = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if command:
        assert command[0] == "sleep", command
        pre_stop = int(command[1])
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pre_stop + drain, f"grace {grace}s <= preStop {pre_stop}s + drain {drain}s"


def test_deployment_avatars_come_from_mounted_volumes_and_it_runs_as_non_root():
    dep, c = deployment_container()
    pod = dep["spec"]["template"]["spec"]
    config = yaml.safe_load(avatar_config_of(pod, c, parse_args(c["args"])))
    root = config["avatars_root"]
    volumes = {v["name"] for v in pod["volumes"]}
    mounts = [m for m in c["volumeMounts"] if root.rstrip("/") == m["mountPath"].rstrip("/")]
    assert mounts and mounts[0]["name"] in volumes, f"{root} is on no mounted volume"
    assert mounts[0].get("readOnly") is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    # A read-only root file system leaves the server /tmp, on its own volume.
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_memory_request_covers_the_avatar_budget():
    dep, c = deployment_container()
    config = yaml.safe_load(avatar_config_of(dep["spec"]["template"]["spec"], c,
                                             parse_args(c["args"])))
    limit_mb = mebibytes(c["resources"]["limits"]["memory"])
    request_mb = mebibytes(c["resources"]["requests"]["memory"])
    assert request_mb <= limit_mb
    # The avatars' budget plus what the server needs beside them fits under the limit.
    assert config["host_memory_mb"] + request_mb <= limit_mb, (config, c["resources"])


def test_thread_pool_fits_the_cpu_limit():
    _, c = deployment_container()
    threads = int(setting(parse_args(c["args"]), "--threads"))
    limit = cpu_cores(c["resources"]["limits"]["cpu"])
    # 0 means one thread per core of the node, which ignores the container's limit.
    assert 1 <= threads <= limit, f"--threads {threads} with a CPU limit of {limit}"
    for key in ("cpu", "memory"):
        assert key in c["resources"]["requests"], key


def test_service_exposes_every_port_of_the_pods():
    dep, c = deployment_container()
    svc = one("Service")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert set(ports) == {p["name"] for p in c["ports"]}, ports
    for name, p in ports.items():
        assert container_port(c, p["targetPort"]) == container_port(c, name)
        assert p["appProtocol"] == ("http" if name == "metrics" else "grpc"), p


# --- Migration routes (Gateway API) ---------------------------------------------------------------

def proto_services():
    """{"package.Service"} of the proto files the server is built from."""
    found = set()
    for path in glob.glob(os.path.join(ROOT, "proto", "**", "*.proto"), recursive=True):
        with open(path) as f:
            text = f.read()
        package = re.search(r"^package ([\w.]+);", text, re.M)
        for service in re.findall(r"^service (\w+)", text, re.M):
            found.add(f"{package.group(1)}.{service}")
    return found


def test_migration_routes_split_the_old_ports_between_old_servers_and_lipsync():
    gateway = one("Gateway")
    listeners = {lst["name"]: lst for lst in gateway["spec"]["listeners"]}
    svc = one("Service")
    svc_ports = {p["port"]: p for p in svc["spec"]["ports"]}
    routes = [d for _, d in k8s_docs() if d["kind"] == "GRPCRoute"]
    services = proto_services()
    covered = set()
    for route in routes:
        (parent,) = route["spec"]["parentRefs"]
        assert parent["name"] == gateway["metadata"]["name"]
        listener = listeners[parent["sectionName"]]
        for rule in route["spec"]["rules"]:
            for match in rule["matches"]:
                assert match["method"]["service"] in services, match
                covered.add(match["method"]["service"])
            refs = rule["backendRefs"]
            assert sum(r["weight"] for r in refs) == 100, refs
            ours = [r for r in refs if r["name"] == svc["metadata"]["name"]]
            assert len(ours) == 1 and len(refs) == 2, refs
            # lipsync answers on the Service port the old server had: the clients keep theirs.
            old = next(r for r in refs if r is not ours[0])
            assert ours[0]["port"] == old["port"] == listener["port"], refs
            assert svc_ports[ours[0]["port"]]["appProtocol"] == "grpc"
    assert covered == {"monolithic.MonolithicService", "lipsyncsrv.LipSyncService"}, covered


# --- KServe ---------------------------------------------------------------------------------------

def test_kserve_runtime_serves_grpc_v2_on_its_h2c_port():
    rt = one("ServingRuntime")
    assert rt["spec"]["protocolVersions"] == ["grpc-v2"]
    (c,) = rt["spec"]["containers"]
    assert c["name"] == "kserve-container"
    values = check_serve_command(c["args"])
    assert values["--model"].startswith("/mnt/models/"), "KServe puts the model in /mnt/models"
    assert port_of(values["--listen"]) == container_port(c, "h2c")
    annotations = rt["spec"]["annotations"]
    assert int(annotations["prometheus.kserve.io/port"]) == port_of(values["--metrics"])
    assert annotations["prometheus.kserve.io/path"] in http_paths_served()


def test_inference_service_uses_the_runtime_and_its_model_format():
    rt, isvc = one("ServingRuntime"), one("InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == rt["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in rt["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in rt["spec"]["protocolVersions"]
    assert model["storageUri"]


# --- Dockerfiles ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", DOCKERFILES)
def test_build_stage_runs_setup_then_the_build(path):
    build = stage_of(parse_dockerfile(path), "build")
    assert build and re.match(r"debian:(12|bookworm)\b", build[0][1]), build[:1]
    runs = [r for i, r in build if i == "RUN"]
    setup = [n for n, r in enumerate(runs) if "bash scripts/setup.sh" in r]
    make = [n for n, r in enumerate(runs) if re.search(r"\bmake build\b|cmake --build", r)]
    assert setup and make and setup[0] < make[0], runs
    with open(os.path.join(ROOT, "Makefile")) as f:
        assert re.search(r"^build:", f.read(), re.M), "the Makefile has no build target"


@pytest.mark.parametrize("path", DOCKERFILES)
def test_runtime_stage_entrypoint_ports_user_and_healthcheck(path):
    runtime = stage_of(parse_dockerfile(path), "runtime")
    assert runtime and re.match(r"debian:(12|bookworm)", runtime[0][1]), "runtime is not Debian 12"
    instr = {}
    for i, r in runtime:
        instr.setdefault(i, []).append(r)
    assert json.loads(instr["ENTRYPOINT"][-1]) == ["lipsync", "serve"]
    # By default the avatar server, avatars from the volume at /avatars, the old services on the
    # old ports.
    values = check_serve_command(json.loads(instr["CMD"][-1]))
    assert values["--avatars"] == "/avatars" and "--model" not in values
    assert "--monolithic" in values and "--lipsyncsrv" in values
    ports = {port_of(values[f]) for f in
             ("--listen", "--metrics", "--monolithic-listen", "--lipsyncsrv-listen")}
    assert port_of(values["--monolithic-listen"]) == 50053
    assert port_of(values["--lipsyncsrv-listen"]) == 50051
    metrics = port_of(values["--metrics"])
    exposed = {int(p.split("/")[0]) for r in instr["EXPOSE"] for p in r.split()}
    assert exposed == ports
    assert "/tmp" in " ".join(instr.get("VOLUME", [])), "no /tmp volume: a read-only root breaks"
    (health,) = instr["HEALTHCHECK"]
    assert f"http://127.0.0.1:{metrics}/healthz" in health
    user = instr["USER"][-1].split(":")[0]
    assert user not in ("root", "0"), user
    copies = " ".join(instr["COPY"])
    assert "build/tools/lipsync/lipsync /usr/local/bin/lipsync" in copies
    assert BIN.endswith("/tools/lipsync/lipsync")


def test_cuda_build_uses_the_supplied_onnxruntime():
    build = stage_of(parse_dockerfile("deploy/docker/Dockerfile.cuda"), "build")
    copy = [r for i, r in build if i == "COPY" and r.startswith("--from=onnxruntime ")]
    assert copy, "Dockerfile.cuda does not copy the onnxruntime build context"
    dest = copy[0].split()[-1].rstrip("/")
    env = " ".join(r for i, r in build if i == "ENV")
    assert f"ONNXRUNTIME_ROOT={dest}" in env, env
    with open(os.path.join(ROOT, "scripts", "setup.sh")) as f:
        assert "ONNXRUNTIME_ROOT" in f.read(), "setup.sh no longer honours ONNXRUNTIME_ROOT"


def test_runtime_packages_exist_in_debian():
    # scripts/setup.sh fetches apt's package lists when there are none.
    assert glob.glob("/var/lib/apt/lists/*_Packages*"), \
        "apt has no package lists here: run scripts/setup.sh (it runs apt-get update)"
    wanted = {pkg: path for path in DOCKERFILES for pkg in runtime_packages(path)}
    # One apt-cache call for all (each call reads the whole package cache).
    proc = subprocess.run(["apt-cache", "show", "--no-all-versions", *sorted(wanted)],
                          capture_output=True, text=True)
    found = set(re.findall(r"^Package: (\S+)$", proc.stdout, re.M))
    missing = {pkg: path for pkg, path in wanted.items() if pkg not in found}
    assert not missing, f"no such Debian packages: {missing}"


def test_runtime_packages_provide_every_library_the_binary_links():
    cpu = runtime_packages(DOCKERFILES[0])
    assert sorted(cpu) == sorted(runtime_packages(DOCKERFILES[1])), "the two lists differ"
    missing = {}
    for soname, path in needed_libraries().items():
        if soname.startswith("libonnxruntime.") or soname.startswith("ld-linux"):
            continue  # ONNX Runtime is copied from the build stage; the loader is libc6's.
        pkg = package_of_library(path)
        if pkg not in cpu and pkg not in BASE_PACKAGES:
            missing[soname] = pkg
    assert not missing, f"add these packages to the runtime stages: {missing}"
