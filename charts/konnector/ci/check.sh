#!/usr/bin/env bash
# Lints the konnector chart, renders it for both modes and validates every rendered manifest and
# every CRD against the Kubernetes schemas, offline: no helm binary and no cluster, only python3
# and PyPI (helm-python-sdk bundles Helm's Go library; kubernetes-validate carries the schemas).
#
#   bash charts/konnector/ci/check.sh            # check (CI)
#   bash charts/konnector/ci/check.sh --update   # also rewrite ci/rendered/*.yaml
#
# The tools are installed once into a cache directory (KONNECTOR_CHART_TOOLS, default
# ~/.cache/konnector-chart-ci) and reused while their pinned versions stay the same.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
requirements=("helm-python-sdk==0.2.2" "kubernetes-validate==1.37.0")
tools="${KONNECTOR_CHART_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/konnector-chart-ci}"
site="$tools/site-packages"
stamp="$site/.installed"
wanted="$("$python" -c 'import sys; print(sys.version_info[:2])') ${requirements[*]}"

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
  echo "== installing ${requirements[*]} into $site"
  rm -rf "$site"
  mkdir -p "$site"
  # --target instead of a virtualenv: works where python3-venv is missing and where the system
  # Python is marked externally managed.
  "$python" -m pip install --quiet --disable-pip-version-check --no-input \
    --target "$site" "${requirements[@]}"
  echo "$wanted" >"$stamp"
fi

PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" exec "$python" "$here/check.py" "$@"
