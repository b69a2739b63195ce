# Shell set-up for the curl walkthroughs of docs/api.md: `source docs/examples/qb.sh` (bash; needs curl,
# jq and openssl). Then $QB is the server, $QB_TMP a directory of this shell's own for downloads (removed
# when the shell exits), and requests go through helpers that stop at the first unexpected answer:
#   qb_curl [CURL OPTIONS…] URL                          must succeed (2xx); prints the body
#   qb_problem CODE [CURL OPTIONS…] URL                  must be refused with problem CODE; prints the problem
#   qb_signed METHOD PATH[?QUERY] [BODY [CURL OPTIONS…]]  qb_curl, signed with an API key
# Any other answer prints its status and problem+json body on stderr and returns 22: a script running
# with `set -e` stops there.
QB=${QB:-http://127.0.0.1:8000}
if [ -z "${QB_TMP-}" ] || [ ! -d "$QB_TMP" ]; then
  QB_TMP=$(mktemp -d)
  trap 'rm -rf "$QB_TMP"' EXIT
fi
# In a script (set -e), name the command that stopped it, also when it was jq -e finding no value.
case $- in *e*) trap 'echo "stopped at: $BASH_COMMAND" >&2' ERR ;; esac

# _qb_request EXPECTED CURL-ARGS…: sends the request with curl and prints the body if the answer is the
# expected one (a 2xx when EXPECTED is empty, else a problem whose code is EXPECTED). A 429 is sent again
# after its Retry-After (a rate-limited request ran nothing), up to twice, if that is at most two minutes;
# not a signed one (qb_signed sets QB_SIGNED): its nonce would be refused as replayed.
_qb_request() {
  local expected=$1 attempt answer body status request code wait
  shift
  for attempt in 1 2 3; do
    answer=$(curl -sS -w '\n%{http_code} %{method} %{url_effective}' "$@") || return
    body=${answer%$'\n'*} request=${answer##*$'\n'}
    status=${request%% *} code=""
    if [[ $status != 2* ]]; then
      code=$(jq -r 'objects | .code // empty' <<<"$body" 2>/dev/null || true)
    fi
    if [[ -z $expected && $status == 2* ]] || [[ -n $expected && $code == "$expected" ]]; then
      [ -z "$body" ] || printf '%s\n' "$body"
      return 0
    fi
    wait=$(jq -r 'objects | .retry_after // empty' <<<"$body" 2>/dev/null || true)
    if [[ $status == 429 && -z ${QB_SIGNED-} && $attempt -lt 3 && $wait =~ ^[0-9]+$ && $wait -le 120 ]]; then
      echo "rate limited (${request#* }): trying again in $wait s" >&2
      sleep "$wait"
      continue
    fi
    printf '%s answered %s, expected %s:\n%s\n' "${request#* }" "$status" "${expected:-2xx}" "$body" >&2
    return 22
  done
}

qb_curl() { _qb_request '' "$@"; }

qb_problem() {
  local code=$1
  shift
  _qb_request "$code" "$@"
}

# qb_new_phone: a mobile number for a new sandbox user, +86 137 and eight random digits: every run signs
# up users of its own (the Python walkthroughs use +86 136, the demo users +86 138).
qb_new_phone() {
  printf '+86137%08d\n' $((16#$(openssl rand -hex 4) % 100000000))
}

# qb_new_key: a new Idempotency-Key. One per operation you mean to do once; reuse it only to retry it.
qb_new_key() {
  openssl rand -hex 16
}

# qb_signed METHOD PATH[?QUERY] [BODY [MORE CURL OPTIONS…]]
# A request signed with the API key in $QB_KEY_ID / $QB_KEY_SECRET: HMAC-SHA256 over the method, the path,
# the raw query string, a timestamp, a nonce and the SHA-256 of the body, one per line.
qb_signed() {
  local method=$1 target=$2 body=${3-}
  shift 2
  [ $# -gt 0 ] && shift
  local path=${target%%\?*} query=""
  [ "$path" != "$target" ] && query=${target#*\?}
  local timestamp nonce body_sha signature
  timestamp=$(date +%s)
  nonce=$(openssl rand -hex 16)
  body_sha=$(printf '%s' "$body" | openssl dgst -sha256 -r | cut -d' ' -f1)
  signature=$(printf '%s\n%s\n%s\n%s\n%s\n%s' "$method" "$path" "$query" "$timestamp" "$nonce" "$body_sha" \
    | openssl dgst -sha256 -hmac "$QB_KEY_SECRET" -r | cut -d' ' -f1)
  local data=() QB_SIGNED=1
  [ -n "$body" ] && data=(-H 'Content-Type: application/json' --data-binary "$body")
  qb_curl -X "$method" "$QB$target" \
    -H "Qianbao-Key: $QB_KEY_ID" -H "Qianbao-Timestamp: $timestamp" \
    -H "Qianbao-Nonce: $nonce" -H "Qianbao-Signature: v1=$signature" \
    "${data[@]}" "$@"
}
