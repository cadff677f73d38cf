#!/usr/bin/env bash
# Builds the upstream programs the tests run against, from their Go modules: kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, the kubelet and kube-proxy of the real nodes
# (tool `node`), etcd, Flux source-controller, the Pulumi CLI with its YAML language host (and
# a test provider of ours), grpcurl, PKO's agent, CoreDNS (the real nodes' cluster DNS) and kube-router (its firewall
# controller enforces NetworkPolicy on the nodes), Helm (installs PKO's own chart with our
# image), gofakes3 (an S3-compatible server for Flux's Bucket source) and the Pulumi Kubernetes
# provider (programs that manage objects in the test cluster: drift detection). Those are what
# the tests use
# (tests/README.md says which test needs which); the crictl wrapper is kept for debugging nodes
# and PKO's manager (`pko-manager`) is what the benchmarks compare ours with; both are built only
# when named, so a cold CI run does not pay for them.
#
# Each tool has a small wrapper module in tests/tools/<tool>/ (go.mod and go.sum: the replace
# lines upstream needs, and the pinned versions; a few hold a main package of ours too). No upstream source or binary is
# committed. Binaries land in a cache keyed by tool and version, outside the repository:
#
#   ${E2E_TOOLS_DIR:-${XDG_CACHE_HOME:-~/.cache}/pulumi-flux-operator/tools}/<tool>-<version>/
#
# The script is idempotent (a complete build is never redone) and says what it built and how
# long it took. It prints the bin directories, one per line, on the last line prefixed "PATH+=".
#
#   tests/tools/build.sh                 build every tool the tests use ($ALL_TOOLS)
#   tests/tools/build.sh k8s etcd        build some
#   tests/tools/build.sh --update k8s    re-create a wrapper's go.mod/go.sum from the pins below
#   tests/tools/build.sh --dir k8s       print where a tool's build is cached
set -euo pipefail

K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
FLUX_SOURCE_VERSION=v1.9.3
PULUMI_VERSION=v3.259.0
PULUMI_YAML_VERSION=v1.38.1
PKO_VERSION=v2.9.0
GRPCURL_VERSION=v1.9.4
COREDNS_VERSION=v1.14.7
CRICTL_VERSION=v1.34.0
# kube-router enforces NetworkPolicy on the test nodes (its firewall controller only). v2.1.0
# is the only version the module proxy serves, and security flaws are reported against it:
# acceptable only because it runs inside this throwaway loopback test cluster, never anywhere
# else. Nothing this project ships depends on it.
KUBE_ROUTER_VERSION=v2.1.0
# Helm renders and installs PKO's own chart (from the PKO snapshot) with our image.
HELM_VERSION=v4.3.2
# An S3-compatible server (its directfs backend serves a directory as a bucket) for Flux's
# Bucket source.
GOFAKES3_VERSION=v1.2.0
# source-controller v1.9.4+ needs github.com/fluxcd/pkg/artifact v0.18.2+, which the module
# proxy refuses (403); v1.9.3 is the newest v1.9 whose whole module graph it serves.
# Flux's own NetworkPolicies for flux-system (manifests/policies, what `flux install` applies)
# come from the flux2 module of the release that ships source-controller v1.9 (v1.9.5), checked
# against its go.sum hash: in_cluster.rs installs them beside source-controller.
FLUX2_VERSION=v2.9.5
# Flux's kustomize-controller proves that Flux reads a Stack's health (kstatus): v1.9.3, the
# newest v1.9 whose module graph the proxy serves (as for source-controller).
KUSTOMIZE_CONTROLLER_VERSION=v1.9.3
FLUX2_SUM=h1:jwCccxvkD+2QnsjN+pl5QqM8KnFUwA8pIoQ1Lf0avkA=
# The Pulumi Kubernetes provider (pulumi-resource-kubernetes), for programs that manage real
# objects in the test cluster. The module proxy serves its provider module only at this
# 2026-01 pseudo-version (sdk/v4 v4.24.0 is its SDK), so the plugin reports a pre-release of
# the next patch: newer than 4.24.0, older than any release after it.
PULUMI_KUBERNETES_PIN=v4.0.0-20260115033456-f47bc2d6f199
PULUMI_KUBERNETES_VERSION=4.24.1-dev.20260115
# Flux and PKO pin go-digest to a commit with BLAKE3 support.
GO_DIGEST_PIN=github.com/opencontainers/go-digest@v1.0.1-0.20220411205349-bde1400a84be

# What the tests use; the others are built only when named.
ALL_TOOLS="k8s node etcd flux pulumi grpcurl pko coredns kube-router helm gofakes3 kustomize-controller pulumi-kubernetes"
KNOWN_TOOLS="$ALL_TOOLS crictl pko-manager"
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${E2E_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pulumi-flux-operator/tools}
export CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local

log() { printf '[tools] %s\n' "$*" >&2; }

version_of() {
  case $1 in
    k8s|node) echo "$K8S_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    flux) echo "$FLUX_SOURCE_VERSION-policies-$FLUX2_VERSION" ;;
    pulumi) echo "$PULUMI_VERSION-yaml-$PULUMI_YAML_VERSION" ;;
    pko|pko-manager) echo "$PKO_VERSION" ;;
    grpcurl) echo "$GRPCURL_VERSION" ;;
    coredns) echo "$COREDNS_VERSION" ;;
    crictl) echo "$CRICTL_VERSION" ;;
    kube-router) echo "$KUBE_ROUTER_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    gofakes3) echo "$GOFAKES3_VERSION" ;;
    kustomize-controller) echo "$KUSTOMIZE_CONTROLLER_VERSION" ;;
    pulumi-kubernetes) echo "$PULUMI_KUBERNETES_VERSION" ;;
    *) log "unknown tool $1 (known: $KNOWN_TOOLS)"; exit 2 ;;
  esac
}

# --- wrappers: (re)create go.mod/go.sum from the pins --------------------------------------

update_k8s() {
  local staging=v0.${K8S_VERSION#v1.} mod
  go mod init e2etools/k8s
  mod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  # Upstream maps every staging module to ./staging; a dependency needs the published tags.
  for m in $(sed -n 's|^[[:space:]]*\(k8s.io/[^ ]*\) => \./staging/src/.*|\1|p' "$mod"); do
    go mod edit "-replace=$m=$m@$staging"
  done
  go mod edit -godebug=default=go1.24
  GOFLAGS=-mod=mod go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kubelet@$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kube-proxy@$K8S_VERSION"
}

update_etcd() {
  go mod init e2etools/etcd
  GOFLAGS=-mod=mod go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
}

update_flux() {
  go mod init e2etools/flux
  go mod edit "-replace=${GO_DIGEST_PIN%@*}=$GO_DIGEST_PIN"
  GOFLAGS=-mod=mod go get -tool "github.com/fluxcd/source-controller@$FLUX_SOURCE_VERSION"
}

update_kustomize-controller() {
  go mod init e2etools/kustomize-controller
  go mod edit "-replace=${GO_DIGEST_PIN%@*}=$GO_DIGEST_PIN"
  GOFLAGS=-mod=mod go get -tool "github.com/fluxcd/kustomize-controller@$KUSTOMIZE_CONTROLLER_VERSION"
}

update_pulumi() {
  go mod init e2etools/pulumi
  go mod edit -replace=github.com/atotto/clipboard=github.com/tgummerer/clipboard@v0.0.0-20241001131231-d02d263e614e
  # pkg requires the sdk one release behind; in-repo builds use ../sdk, so pin it to match.
  GOFLAGS=-mod=mod go get -tool "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi@$PULUMI_VERSION" \
    "github.com/pulumi/pulumi/sdk/v3@$PULUMI_VERSION"
}

# The wrapper's main.go (ours, committed) imports the provider; its embedded JSON comes from
# the module at build time, and is here only while go.sum is made.
update_pulumi-kubernetes() {
  local m=github.com/pulumi/pulumi-kubernetes/provider/v4
  go mod init e2etools/pulumi-kubernetes
  GOFLAGS=-mod=mod go get "$m@$PULUMI_KUBERNETES_PIN"
  provider_json
  GOFLAGS=-mod=mod go mod tidy
  rm -f schema.json terraform-mapping.json
}

# Copies the provider's schema and Terraform mapping from its module into the current (the
# wrapper's) directory, where main.go embeds them.
provider_json() {
  local module=github.com/pulumi/pulumi-kubernetes/provider/v4 src
  # `go list -m` names the module's directory only once it is in the module cache, which on a
  # fresh machine it is not until something downloads it.
  go mod download "$module"
  src=$(go list -m -f '{{.Dir}}' "$module")
  [ -n "$src" ] || { log "pulumi-kubernetes: $module is not in the module cache"; return 1; }
  cp "$src/cmd/pulumi-resource-kubernetes/schema.json" \
    "$src/cmd/pulumi-resource-kubernetes/terraform-mapping.json" .
  chmod u+w schema.json terraform-mapping.json
}

# A Go gRPC client: proves a Go peer (grpc-go, protoc-compatible descriptors) reads the agent's
# protocol as this project defines it.
update_grpcurl() {
  go mod init e2etools/grpcurl
  GOFLAGS=-mod=mod go get -tool "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
}

update_coredns() {
  go mod init e2etools/coredns
  GOFLAGS=-mod=mod go get -tool "github.com/coredns/coredns@$COREDNS_VERSION"
}

update_crictl() {
  go mod init e2etools/crictl
  GOFLAGS=-mod=mod go get -tool "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
}

update_kube-router() {
  go mod init e2etools/kube-router
  GOFLAGS=-mod=mod go get -tool "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
}

update_helm() {
  go mod init e2etools/helm
  GOFLAGS=-mod=mod go get -tool "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
}

update_gofakes3() {
  go mod init e2etools/gofakes3
  GOFLAGS=-mod=mod go get -tool "github.com/johannesboyne/gofakes3/cmd/gofakes3@$GOFAKES3_VERSION"
}

update() {
  local tool=$1 dir="$HERE/$1"
  log "re-creating the $tool wrapper module"
  # Only the module files go: a wrapper may hold a main package of ours (pulumi-kubernetes).
  mkdir -p "$dir" && rm -f "$dir/go.mod" "$dir/go.sum"
  (cd "$dir" && "update_$tool" && go mod edit -go=1.26.0)
  # `go mod tidy` drops tool requirements' go.sum lines on some versions; re-add them.
  (cd "$dir" && GOFLAGS=-mod=mod go list -e tool >/dev/null)
}

# --- builds ---------------------------------------------------------------------------------

# The wrapper module a tool builds from: the node binaries come from the same Kubernetes pin as
# the control plane, so they share its module (and a cold build compiles the shared packages
# once), but are cached apart so that the control plane's cache stays valid without them.
wrapper_of() {
  case $1 in
    node) echo k8s ;;
    *) echo "$1" ;;
  esac
}

# PKO's agent (`pko`) and manager build from PKO's source and its own go.mod, not a wrapper.
from_pko() {
  [ "$1" = pko ] || [ "$1" = pko-manager ]
}

# A short digest of what decides a tool's build: its wrapper module and its build function.
wrapper_digest() {
  local tool=$1 wrapper
  wrapper=$(wrapper_of "$tool")
  {
    if from_pko "$tool"; then echo "$PKO_KEY"; else cat "$HERE/$wrapper/go.mod" "$HERE/$wrapper/go.sum"; fi
    cat "$HERE/$wrapper"/*.go "$HERE/$wrapper"/*/*.go 2>/dev/null || true
    declare -f "build_$tool"
  } | sha256sum | cut -c1-10
}

k8s_ldflags() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local f="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f="$f -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    f="$f -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$f"
}

build_k8s() {
  go build -trimpath -tags selinux,notest -ldflags "$(k8s_ldflags)" -o "$1/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
}

# What a real node runs besides containerd (tests/src/node.rs): built with the control plane's
# version stamp, since the kubelet reports it and the apiserver checks the skew.
build_node() {
  go build -trimpath -tags selinux,notest -ldflags "$(k8s_ldflags)" -o "$1/" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
}

build_etcd() {
  go build -trimpath -o "$1/etcd" go.etcd.io/etcd/server/v3
}

build_flux() {
  go build -trimpath -tags netgo,osusergo,static_build -o "$1/source-controller" \
    github.com/fluxcd/source-controller
  # The CRDs and the kustomize config (what users install, tests/src/in_cluster.rs) ship in
  # the module zip.
  local src
  src=$(go list -m -f '{{.Dir}}' github.com/fluxcd/source-controller)
  mkdir -p "$1/crds" && cp "$src"/config/crd/bases/*.yaml "$1/crds/" && chmod u+w "$1"/crds/*
  mkdir -p "$1/config"
  cp -r "$src"/config/crd "$src"/config/rbac "$src"/config/manager "$src"/config/default "$1/config/"
  chmod -R u+w "$1/config"
  # Outside any module (/), so that the download touches no wrapper's go.mod.
  local json sum
  json=$(cd / && GOFLAGS= go mod download -json "github.com/fluxcd/flux2/v2@$FLUX2_VERSION")
  sum=$(sed -n 's/.*"Sum": "\(.*\)",*/\1/p' <<<"$json")
  if [ "$sum" != "$FLUX2_SUM" ]; then
    log "flux: flux2 $FLUX2_VERSION has hash '$sum', expected $FLUX2_SUM; refusing it"
    return 1
  fi
  src=$(sed -n 's/.*"Dir": "\(.*\)",*/\1/p' <<<"$json")
  mkdir -p "$1/policies" && cp "$src"/manifests/policies/*.yaml "$1/policies/"
  chmod -R u+w "$1/policies"
}

build_kustomize-controller() {
  go build -trimpath -tags netgo,osusergo,static_build -o "$1/kustomize-controller" \
    github.com/fluxcd/kustomize-controller
  # Its kustomize config (CRDs, RBAC, Deployment), as for source-controller.
  local src
  src=$(go list -m -f '{{.Dir}}' github.com/fluxcd/kustomize-controller)
  mkdir -p "$1/config"
  cp -r "$src"/config/crd "$src"/config/rbac "$src"/config/manager "$src"/config/default "$1/config/"
  chmod -R u+w "$1/config"
}

build_pulumi() {
  go build -trimpath -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION" \
    -o "$1/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
  # The YAML language host has no replace lines: a plain install, put next to pulumi so it is
  # found as a bundled plugin and nothing is downloaded.
  GOFLAGS=-mod=mod GOBIN="$1" go install -trimpath \
    -ldflags "-s -w -X github.com/pulumi/pulumi-yaml/pkg/version.Version=$PULUMI_YAML_VERSION" \
    "github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml@$PULUMI_YAML_VERSION"
  # Ours (gate/main.go): a provider whose resources wait at a named pipe while created, so
  # that a test can kill `pulumi up` in the middle of a provider operation. From this
  # module's graph, so it costs only its own package.
  go build -trimpath -ldflags "-s -w" -o "$1/pulumi-resource-gate" ./gate
}

# PKO's module is refused by the module proxy this project's machines use (403 for every
# github.com/pulumi/pulumi-kubernetes-operator/v2 version), so its agent is built from a source
# tree at the pinned tag, as its own main module: its go.mod and go.sum pin every dependency,
# which the proxy does serve (checked against the checksum database). The tree comes from, in
# this order:
#   PKO_SRC      a directory holding PKO's repository at $PKO_VERSION, or a .tar.gz of it
#   ../shared/peers/pulumi-kubernetes-operator-$PKO_VERSION.tar.gz beside the repository,
#                checked against the sha256 below (from ../shared/peers/README.md)
#   a shallow git clone of the tag from GitHub.
PKO_TARBALL_SHA256=7304af1aec4b9dd3c250b034309d26c0697c675165020442d8d1bdbcaf1acefc
PKO_TARBALL="$HERE/../../../shared/peers/pulumi-kubernetes-operator-$PKO_VERSION.tar.gz"
PKO_REPO=https://github.com/pulumi/pulumi-kubernetes-operator

# What identifies the PKO source the next build would use, so that builds from different trees
# never share a cache entry: the checked tarball's sha256, a PKO_SRC archive's sha256, a
# PKO_SRC directory's file digests, or the commit the tag names on GitHub (checked again after
# the clone). Fails when the source cannot be identified.
pko_source_digest() {
  local sum commit
  if [ -n "${PKO_SRC:-}" ]; then
    if [ -d "$PKO_SRC" ]; then
      sum=$(cd "$PKO_SRC" && find . -path ./.git -prune -o -type f -print0 | LC_ALL=C sort -z \
        | xargs -0 -r sha256sum | sha256sum | cut -d' ' -f1)
      echo "pko-src-dir:$sum"
    elif [ -f "$PKO_SRC" ]; then
      echo "pko-src-archive:$(sha256sum "$PKO_SRC" | cut -d' ' -f1)"
    else
      log "pko: PKO_SRC=$PKO_SRC is neither a directory nor a file"
      return 1
    fi
  elif [ -f "$PKO_TARBALL" ]; then
    # Only the pinned tarball is ever used (pko_source refuses any other), so its pin is its key.
    echo "pko-tarball:$PKO_TARBALL_SHA256"
  else
    commit=$(pko_tag_commit) || return 1
    echo "pko-git:$commit"
  fi
}

# The commit $PKO_VERSION names in $PKO_REPO (the peeled tag).
pko_tag_commit() {
  local commit
  commit=$(git ls-remote "$PKO_REPO" "refs/tags/$PKO_VERSION^{}" "refs/tags/$PKO_VERSION" \
    | sort -k2 | tail -n1 | cut -f1)
  [ -n "$commit" ] || { log "pko: $PKO_REPO has no tag $PKO_VERSION"; return 1; }
  echo "$commit"
}

# Unpacks (or clones) PKO's tree into $1; fails when none of the sources works.
pko_source() {
  local into=$1 sum
  if [ -n "${PKO_SRC:-}" ]; then
    if [ -d "$PKO_SRC" ]; then
      log "pko: source from PKO_SRC=$PKO_SRC"
      cp -a "$PKO_SRC/." "$into/"
    elif [ -f "$PKO_SRC" ]; then
      log "pko: source from the archive PKO_SRC=$PKO_SRC"
      tar -xzf "$PKO_SRC" -C "$into" --strip-components=1
    else
      log "pko: PKO_SRC=$PKO_SRC is neither a directory nor a file"
      return 1
    fi
  elif [ -f "$PKO_TARBALL" ]; then
    sum=$(sha256sum "$PKO_TARBALL" | cut -d' ' -f1)
    if [ "$sum" != "$PKO_TARBALL_SHA256" ]; then
      log "pko: $PKO_TARBALL has sha256 $sum, expected $PKO_TARBALL_SHA256; refusing it"
      return 1
    fi
    log "pko: source from $PKO_TARBALL (sha256 checked)"
    tar -xzf "$PKO_TARBALL" -C "$into" --strip-components=1
  else
    log "pko: no PKO_SRC and no $PKO_TARBALL; cloning $PKO_REPO at $PKO_VERSION"
    git clone -q --depth 1 --branch "$PKO_VERSION" "$PKO_REPO" "$into"
    # The cache key named the commit seen by ls-remote; a tag moved since is another source.
    local want=${PKO_KEY#pko-git:} got
    got=$(git -C "$into" rev-parse HEAD)
    if [ "$got" != "$want" ]; then
      log "pko: the clone of $PKO_VERSION is at $got, not $want as seen a moment ago; retry"
      return 1
    fi
  fi
  [ -f "$into/go.mod" ] && [ -d "$into/agent" ] || {
    log "pko: the source tree has no go.mod or agent/ (is it PKO's repository at $PKO_VERSION?)"
    return 1
  }
}

# Makes a temporary copy of PKO's source the working directory; it goes when the build's
# subshell ends.
into_pko_source() {
  local src
  src=$(mktemp -d)
  trap "rm -rf '$src'" EXIT
  pko_source "$src"
  cd "$src"
}

build_pko() {
  into_pko_source
  GOFLAGS=-mod=readonly go build -trimpath \
    -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes-operator/v2/agent/version.Version=$PKO_VERSION" \
    -o "$1/pulumi-kubernetes-agent" ./agent
  # PKO's Helm chart, quickstart manifest and examples, which the drop-in tests install and
  # apply with our image.
  cp -r deploy/helm/pulumi-operator "$1/chart"
  cp -r deploy/quickstart "$1/quickstart"
  cp -r examples "$1/examples"
  chmod -R u+w "$1/chart" "$1/quickstart" "$1/examples"
}

# PKO's manager, for the benchmarks that run it beside ours on the same Stacks (tests/bench).
build_pko-manager() {
  into_pko_source
  GOFLAGS=-mod=readonly go build -trimpath \
    -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes-operator/v2/operator/version.Version=$PKO_VERSION" \
    -o "$1/manager" ./operator/cmd
}

build_coredns() {
  go build -trimpath -ldflags "-s -w" -o "$1/coredns" github.com/coredns/coredns
}

build_crictl() {
  go build -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" \
    -o "$1/crictl" sigs.k8s.io/cri-tools/cmd/crictl
}

build_kube-router() {
  go build -trimpath -ldflags "-s -w" -o "$1/kube-router" \
    github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
}

build_helm() {
  go build -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    -o "$1/helm" helm.sh/helm/v4/cmd/helm
}

build_pulumi-kubernetes() {
  provider_json
  go build -trimpath \
    -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$PULUMI_KUBERNETES_VERSION" \
    -o "$1/pulumi-resource-kubernetes" .
  rm -f schema.json terraform-mapping.json
}

build_gofakes3() {
  go build -trimpath -ldflags "-s -w" -o "$1/gofakes3" github.com/johannesboyne/gofakes3/cmd/gofakes3
}

build_grpcurl() {
  go build -trimpath -ldflags "-s -w -X main.version=$GRPCURL_VERSION" -o "$1/grpcurl" \
    github.com/fullstorydev/grpcurl/cmd/grpcurl
}

# Sets `version` and `out` (where the tool's build is, or would be, cached) in the caller's
# scope; for pko also PKO_KEY, which its build checks a clone against. Not called in `$(...)`
# for that reason. The cache key names the wrapper's content too: a wrapper that gains a binary
# or changes a pin is a new build, never a stale one.
locate() {
  local tool=$1 digest
  version=$(version_of "$tool")
  if from_pko "$tool"; then
    PKO_KEY=$(pko_source_digest)
  fi
  digest=$(wrapper_digest "$tool")
  out="$CACHE/$tool-$version-$digest"
}

# Builds one tool unless its complete build is cached; appends its directory to `dirs`. Any
# failure ends the script (non-zero) and leaves no stamp, so a failed build is never cached.
build() {
  local tool=$1 version out start
  if ! from_pko "$tool" && [ ! -f "$HERE/$(wrapper_of "$tool")/go.mod" ]; then
    update "$(wrapper_of "$tool")"
  fi
  locate "$tool"
  if [ -f "$out/.complete" ]; then
    log "$tool $version: cached in $out"
  else
    # PKO's programs build from its own go.mod (see build_pko); the others from a wrapper
    # module here.
    start=$(date +%s)
    log "$tool $version: building into $out"
    rm -rf "$out.tmp" && mkdir -p "$out.tmp"
    # Not inside `if`, `||` or `$(...)`: there bash ignores `set -e` for everything the build
    # runs, and a failed step would be followed by the next one and the stamp.
    local status=0
    set +e
    (
      set -e
      cd "$HERE"
      from_pko "$tool" || cd "$(wrapper_of "$tool")"
      "build_$tool" "$out.tmp"
    )
    status=$?
    set -e
    if [ "$status" -ne 0 ]; then
      rm -rf "$out.tmp"
      log "$tool $version: BUILD FAILED (exit $status; nothing cached)"
      exit 1
    fi
    # Each step checked on its own: in an `a && b && c` list a failed `mv` would not end the
    # script, and the directory would be handed out unstamped.
    rm -rf "$out"
    if ! mv "$out.tmp" "$out" || ! touch "$out/.complete"; then
      rm -rf "$out.tmp" "$out"
      log "$tool $version: cannot move the build into $out (nothing cached)"
      exit 1
    fi
    log "$tool $version: built in $(( $(date +%s) - start ))s"
  fi
  dirs+=("$out")
}

command -v go >/dev/null || { log "go is required (Go >= 1.26)"; exit 1; }
PKO_KEY=
mode=build
if [ "${1:-}" = "--update" ]; then mode=update; shift; fi
if [ "${1:-}" = "--dir" ]; then
  # Where a tool's build is (or would be) cached, without building it.
  locate "$2"
  echo "$out"
  exit 0
fi
tools=("$@")
[ ${#tools[@]} -gt 0 ] || read -r -a tools <<<"$ALL_TOOLS"

total_start=$(date +%s)
dirs=()
for t in "${tools[@]}"; do
  version_of "$t" >/dev/null
  if [ "$mode" = update ]; then update "$(wrapper_of "$t")"; else build "$t"; fi
done
[ "$mode" = update ] && exit 0
log "all done in $(( $(date +%s) - total_start ))s"
echo "PATH+=$(IFS=:; echo "${dirs[*]}")"
