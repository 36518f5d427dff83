#!/usr/bin/env bash
# Pull and push against a local docker-registry (plain HTTP on 127.0.0.1),
# kiln side by side with skopeo (+ umoci unpack for a ready-to-run result)
# and docker (when an engine answers; see ../shared/peers/dockerd.sh).
#
#   cargo build --release && sudo bench/registry.sh
#   KILN=path/to/kiln REPS=5 LAYERS=6 MB=50 bench/registry.sh
#
# Each cold pull starts from an empty store (kiln: a fresh --root, which ends
# with ready-to-run snapshots; skopeo: a fresh OCI dir, then umoci unpack;
# docker: the image removed first). Each cold push goes to a fresh registry.
# Warm runs move nothing. Prints medians in ms and kiln/peer ratios.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
REPS=${REPS:-5}
WARM_REPS=${WARM_REPS:-10}
LAYERS=${LAYERS:-6}
MB=${MB:-50}
KILN=${KILN:-${CARGO_TARGET_DIR:-$here/../target}/release/kiln}
[ -x "$KILN" ] || { echo "no kiln binary at $KILN (cargo build --release, or set KILN)" >&2; exit 1; }
for tool in docker-registry skopeo umoci python3 pigz; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install docker-registry skopeo umoci pigz)" >&2; exit 1; }
done

work=$(mktemp -d /var/tmp/kiln-bench-registry.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_registry NAME: a registry with empty storage; sets $registry_host.
start_registry() {
  local name=$1 port
  port=$(free_port)
  mkdir -p "$work/$name/storage"
  cat > "$work/$name/config.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/$name/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: kiln-bench
YML
  docker-registry serve "$work/$name/config.yml" >"$work/$name/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
    sleep 0.05
  done
  registry_host=127.0.0.1:$port
}

# ms COMMAND...: runs it quietly, prints wall milliseconds.
ms() {
  local start end
  start=$(date +%s%N)
  "$@" >/dev/null 2>&1 || { echo "FAILED: $*" >&2; return 1; }
  end=$(date +%s%N)
  echo $(((end - start) / 1000000))
}

declare -A times
record() { times[$1]="${times[$1]:-} $2"; }
median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(int(statistics.median(v)) if v else "")' $1; }

have_docker=false
docker() { /usr/bin/docker "$@"; }
if [ -z "${NO_DOCKER:-}" ]; then
  dockerd_script=${DOCKERD_SCRIPT:-$(cd "$(dirname "$0")/../.." && pwd)/shared/peers/dockerd.sh}
  if [ -x "$dockerd_script" ] && eval "$("$dockerd_script")" && /usr/bin/docker info >/dev/null 2>&1; then
    have_docker=true
  fi
fi

echo "making the image ($LAYERS layers x $MB MB)..." >&2
python3 "$here/make-image.py" "$work/layout" bench "$LAYERS" "$MB" >&2
start_registry source
src=$registry_host
image=$src/bench:v1
skopeo copy --quiet --dest-tls-verify=false "oci:$work/layout:bench" "docker://$image"
echo "registry at $src; docker: $have_docker; $REPS cold / $WARM_REPS warm repetitions" >&2

# Removes the bench image from docker under every tag (earlier pushes tagged
# it too), so its layers go and the next docker pull is cold.
docker_forget() {
  local id
  id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null) || return 0
  docker rmi -f "$id" >/dev/null 2>&1 || true
}

sync_drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

for rep in $(seq "$REPS"); do
  echo "rep $rep: cold pulls" >&2
  rm -rf "$work/kroot"; sync_drop
  record kiln_pull "$(ms "$KILN" --root "$work/kroot" pull -q "$image")"
  rm -rf "$work/oci" "$work/bundle"; sync_drop
  record skopeo_umoci_pull "$(ms bash -c "skopeo copy --quiet --src-tls-verify=false docker://$image oci:$work/oci:v1 && umoci unpack --image $work/oci:v1 $work/bundle")"
  rm -rf "$work/oci2"; sync_drop
  record skopeo_pull "$(ms skopeo copy --quiet --src-tls-verify=false "docker://$image" "oci:$work/oci2:v1")"
  if $have_docker; then
    docker_forget
    sync_drop
    record docker_pull "$(ms docker pull -q "$image")"
  fi

  echo "rep $rep: cold pushes" >&2
  start_registry "kiln-push-$rep"
  "$KILN" --root "$work/kroot" tag "$image" "$registry_host/bench:v1"
  record kiln_push "$(ms "$KILN" --root "$work/kroot" push -q "$registry_host/bench:v1")"
  kiln_push_target=$registry_host/bench:v1
  start_registry "skopeo-push-$rep"
  record skopeo_push "$(ms skopeo copy --quiet --dest-tls-verify=false "oci:$work/oci2:v1" "docker://$registry_host/bench:v1")"
  skopeo_push_target=$registry_host/bench:v1
  if $have_docker; then
    start_registry "docker-push-$rep"
    docker tag "$image" "$registry_host/bench:v1"
    record docker_push "$(ms docker push -q "$registry_host/bench:v1")"
    docker_push_target=$registry_host/bench:v1
  fi
done

echo "warm pulls and pushes" >&2
for rep in $(seq "$WARM_REPS"); do
  record kiln_warm_pull "$(ms "$KILN" --root "$work/kroot" pull -q "$image")"
  record kiln_warm_push "$(ms "$KILN" --root "$work/kroot" push -q "$kiln_push_target")"
  record skopeo_warm_push "$(ms skopeo copy --quiet --dest-tls-verify=false "oci:$work/oci2:v1" "docker://$skopeo_push_target")"
  if $have_docker; then
    record docker_warm_pull "$(ms docker pull -q "$image")"
    record docker_warm_push "$(ms docker push -q "$docker_push_target")"
  fi
done
if $have_docker; then
  docker_forget
fi

row() { printf '%-28s %10s\n' "$1" "$2"; }
ratio() { python3 -c 'import sys; a,b=sys.argv[1],sys.argv[2]; print(f"{float(a)/float(b):.2f}" if a and b else "-")' "$1" "$2"; }
echo
printf '%-28s %10s\n' "operation" "median ms"
for key in kiln_pull skopeo_umoci_pull skopeo_pull docker_pull kiln_push skopeo_push docker_push \
           kiln_warm_pull docker_warm_pull kiln_warm_push skopeo_warm_push docker_warm_push; do
  [ -n "${times[$key]:-}" ] && row "$key" "$(median "${times[$key]}")"
done
echo
m() { [ -n "${times[$1]:-}" ] && median "${times[$1]}" || echo ""; }
echo "kiln cold pull / docker pull:          $(ratio "$(m kiln_pull)" "$(m docker_pull)")"
echo "kiln cold pull / skopeo+umoci:         $(ratio "$(m kiln_pull)" "$(m skopeo_umoci_pull)")"
echo "kiln cold pull / skopeo copy alone:    $(ratio "$(m kiln_pull)" "$(m skopeo_pull)")"
echo "kiln cold push / skopeo:               $(ratio "$(m kiln_push)" "$(m skopeo_push)")"
echo "kiln cold push / docker:               $(ratio "$(m kiln_push)" "$(m docker_push)")"
echo "kiln warm pull / docker warm pull:     $(ratio "$(m kiln_warm_pull)" "$(m docker_warm_pull)")"
echo "kiln warm push / skopeo warm push:     $(ratio "$(m kiln_warm_push)" "$(m skopeo_warm_push)")"
echo "kiln warm push / docker warm push:     $(ratio "$(m kiln_warm_push)" "$(m docker_warm_push)")"
