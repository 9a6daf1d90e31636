# syntax=docker/dockerfile:1
#
# The labelwall image: one image runs both the operator (Deployment, uid 65532) and the
# agent (DaemonSet, uid 0 with CAP_BPF/NET_ADMIN/PERFMON only; see charts/labelwall).
#
#   docker build -t ghcr.io/labelwall/labelwall:0.1.0 .
#
# Without docker or a registry, tools/images/build.sh (`make images`) builds the same contents
# as an OCI archive, docker.io/library/labelwall:dev, for `ctr images import` on the real-node
# testenv (tools/images/README.md).
#
# Stage 1 builds the wheel: setup.py's build_py hook compiles bpf_src/labelwall.bpf.c with
# clang (flags in bpf_src/build.py) into labelwall/datapath/bpf/, so the object inside the
# image is always built from source, never copied from a developer tree (.dockerignore
# drops *.o). Stage 2 installs that wheel and its dependencies from wheels built in stage 1.
#
# Choice on clang: the runtime image KEEPS clang, libbpf-dev and bpf_src/ (about 150 MB).
# pylibbpf 0.0.6 cannot change a map's max_entries before load, so an agent configured with
# non-default mapSizes must recompile the object with -DLW_<MAP>_MAX=<n>; with default sizes
# it loads the object shipped in the wheel and never runs clang. amd64 only for now:
# bpf_src/build.py adds the x86_64 multiarch include directory.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY bpf_src/ bpf_src/
COPY labelwall/ labelwall/
# The package and every dependency as wheels, so the runtime stage installs offline.
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
 && python -c "import sys, zipfile, glob; \
names = zipfile.ZipFile(glob.glob('/wheels/labelwall-*.whl')[0]).namelist(); \
sys.exit(0 if 'labelwall/datapath/bpf/labelwall.bpf.o' in names else 'BPF object missing from the wheel')"

FROM ${PYTHON_IMAGE} AS runtime
# iproute2: tc/ip for operators debugging a node (the agent itself attaches through
#   netlink with pyroute2).
# libbpf1 (via libbpf-dev): the ctypes fallback in labelwall/datapath/libbpf.py loads
#   libbpf.so.1. libbpf-dev, clang, llvm, libc6-dev: the agent's rebuild of the object for
#   non-default mapSizes (see above).
# bpftool: inspecting pinned maps and programs from `kubectl exec`.
# mount (util-linux) and stat (coreutils), used by the chart's mount-bpffs init
#   container, are part of the base image.
# nftables: `nft list ruleset` beside kube-proxy's nftables tables when debugging a node.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 nftables bpftool libbpf-dev clang llvm libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /tmp/wheels
# A venv at /opt/labelwall, first on PATH: the same layout as the image tools/images/build.sh
# makes without docker (on a debootstrap'd Debian base, whose python3 is in /usr/bin).
ENV PATH=/opt/labelwall/bin:$PATH
RUN python -m venv /opt/labelwall \
 && /opt/labelwall/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels labelwall \
 && rm -rf /tmp/wheels \
 && labelwall --help >/dev/null
# Sources for the agent's runtime rebuild (bpf_src/build.py and the headers).
COPY bpf_src/ /opt/labelwall/bpf_src/
# The operator's unprivileged user; the chart's agent DaemonSet sets runAsUser: 0.
RUN groupadd --system --gid 65532 labelwall \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin labelwall
# Read-only root filesystem in the chart: never write .pyc files; log lines unbuffered.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LABELWALL_BPF_SRC=/opt/labelwall/bpf_src
USER 65532:65532
# The chart always sets the command (`labelwall operator ...` / `labelwall agent ...`).
CMD ["labelwall", "--help"]
