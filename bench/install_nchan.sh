#!/usr/bin/env bash
# Installs nginx with the Nchan module (Debian packages) if they are missing. Never starts the
# system nginx: the bench runs its own nginx with its own config (see nginx.conf.template).
set -euo pipefail

if command -v nginx >/dev/null 2>&1 && [[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
  exit 0
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  sudo=(sudo -n)
fi
# A fresh machine's package lists may be empty or stale.
if ! apt-cache show libnginx-mod-nchan >/dev/null 2>&1; then
  ${sudo[@]+"${sudo[@]}"} apt-get update -qq
fi
${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends nginx libnginx-mod-nchan
# Debian's post-install may have started the system nginx where services can start; it is not
# the bench's and would hold port 80.
if command -v service >/dev/null 2>&1 && service nginx status >/dev/null 2>&1; then
  ${sudo[@]+"${sudo[@]}"} service nginx stop || true
fi
command -v nginx >/dev/null 2>&1 || { echo "install_nchan.sh: nginx is still missing" >&2; exit 1; }
