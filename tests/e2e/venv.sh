# Shared by the e2e runners: `ensure_venv NAME VENV REQUIREMENTS INSTALL_TIMEOUT` creates the virtualenv VENV
# from the pinned REQUIREMENTS when it is missing or when the requirements changed (a hash stamp records what is
# installed). PYTHON picks the interpreter (>=3.11,<3.15; default python3).
ensure_venv() {
  local name="$1" venv="$2" req="$3" install_timeout="$4"
  local py="${PYTHON:-python3}" stamp="$venv/.requirements.sha256" want have t0
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  have="$(cat "$stamp" 2>/dev/null || true)"
  if [[ -x "$venv/bin/python" && "$want" == "$have" ]]; then
    return 0
  fi
  if ! "$py" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 15) else 1)'; then
    echo "$name: $py is $("$py" -V 2>&1); the pinned requirements need Python >=3.11,<3.15 (set PYTHON=...)" >&2
    exit 2
  fi
  echo "$name: installing $req into $venv" >&2
  t0=$SECONDS
  [[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
  # Keep the venv out of git even without a .gitignore entry in the repo.
  printf '*\n' > "$venv/.gitignore"
  rm -f "$stamp"
  timeout -k 30 "$install_timeout" "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$req"
  echo "$want" > "$stamp"
  echo "$name: venv ready in $((SECONDS - t0))s" >&2
}
