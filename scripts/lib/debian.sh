# Installs Debian packages for commands a step needs, when the commands are missing.
#   need_commands redis-server:redis-server nginx:nginx-light
# Each argument is COMMAND:PACKAGE. Needs root (apt-get) only when something is missing; a
# failure to install is an error, never a skip.
need_commands() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "installing ${missing[*]} (Debian packages)"
  if [ "$(id -u)" != 0 ]; then
    echo "need root to apt-get install ${missing[*]}" >&2
    return 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || { echo "${pair%%:*} still missing after installing ${pair#*:}" >&2; return 1; }
  done
}
