# Sourced by scripts/cluster.sh: renders deploy/nginx.conf for a cluster on this machine.
#
# render_nginx_conf SRC DIR LISTEN NODE_ADDR...
#   Prints SRC with every proxy setting kept and only these lines rewritten:
#   - `daemon off;` added (the script supervises nginx and records its pid), `user` set to the
#     current user when nginx starts as root (dropped otherwise: nginx ignores it then);
#   - `pid`, `error_log`, `access_log` and every temp path under DIR;
#   - `listen`'s address set to LISTEN (its options kept);
#   - `worker_rlimit_nofile` and `worker_connections` lowered to this shell's hard RLIMIT_NOFILE
#     (a master without CAP_SYS_RESOURCE cannot raise it);
#   - the server lines between `# BEGIN c10m nodes` and `# END c10m nodes` replaced by one per
#     NODE_ADDR, with the parameters of the first one (max_fails=...).
#   Fails when SRC lacks one of these, so a change to deploy/nginx.conf that the rendering no
#   longer understands is an error here (and in scripts/test-cluster.sh), not a silently
#   different configuration.
render_nginx_conf() {
  local src=$1 dir=$2 listen=$3
  shift 3
  local nofile user="" temps="" module
  nofile=$(ulimit -Hn)
  [ "$nofile" = unlimited ] && nofile=1048576
  if [ "$(id -u)" = 0 ]; then user="$(id -un) $(id -gn)"; fi
  # Every temp path nginx was built with: it creates them all at start, even the unused ones.
  temps="client_body_temp_path $dir/tmp/body; proxy_temp_path $dir/tmp/proxy;"
  for module in fastcgi uwsgi scgi; do
    if ! nginx -V 2>&1 | grep -q -- "--without-http_${module}_module"; then
      temps="$temps ${module}_temp_path $dir/tmp/$module;"
    fi
  done
  awk -v dir="$dir" -v listen="$listen" -v nofile="$nofile" -v user="$user" \
    -v nodes="$*" -v temps="$temps" -v src="$src" '
    function indent(line) { match(line, /^[ \t]*/); return substr(line, 1, RLENGTH) }
    # The line with its second word (the value) replaced, the indentation and a trailing ";" kept.
    function value(line, v,    ind) {
      ind = indent(line)
      if ($2 ~ /;$/) v = v ";"
      $2 = v
      return ind $0
    }
    function lower(line, cap,    n) {
      n = $2; sub(/;$/, "", n)
      return (n + 0 > cap + 0) ? value(line, cap) : line
    }
    BEGIN {
      print "# Rendered by scripts/cluster.sh from " src "; do not edit."
      print "daemon off;"
      if (user != "") print "user " user ";"
    }
    /^[ \t]*# BEGIN c10m nodes/ { print; block = 1; next }
    /^[ \t]*# END c10m nodes/ {
      marker = $0
      if (template == "") { print "no server line between the c10m nodes markers" > "/dev/stderr"; bad = 1 }
      n = split(nodes, addr, " ")
      for (i = 1; i <= n; i++) {
        $0 = template
        print value(template, addr[i])
        servers++
      }
      print marker; block = 0; next
    }
    block { if ($1 == "server" && template == "") template = $0; next }
    $1 == "user" { next }
    $1 == "pid" { print value($0, dir "/nginx.pid"); seen["pid"]++; next }
    $1 == "error_log" { print value($0, dir "/error.log"); seen["error_log"]++; next }
    $1 == "access_log" && $2 != "off;" { print value($0, dir "/access.log"); seen["access_log"]++; next }
    $1 == "listen" { print value($0, listen); seen["listen"]++; next }
    $1 == "worker_rlimit_nofile" { print lower($0, nofile); seen["worker_rlimit_nofile"]++; next }
    $1 == "worker_connections" { print lower($0, nofile); seen["worker_connections"]++; next }
    $1 == "http" && $2 == "{" {
      print
      n = split(temps, t, ";")
      for (i = 1; i <= n; i++) if (t[i] ~ /[^ ]/) { sub(/^ +/, "", t[i]); print "    " t[i] ";" }
      seen["http"]++; next
    }
    { print }
    END {
      split("pid error_log access_log listen worker_rlimit_nofile worker_connections http", want, " ")
      for (i in want) if (seen[want[i]] != 1) {
        printf "%s: expected one %s line, found %d\n", src, want[i], seen[want[i]] > "/dev/stderr"; bad = 1
      }
      if (servers == 0) { print src ": no c10m nodes block" > "/dev/stderr"; bad = 1 }
      exit bad
    }
  ' "$src"
}
