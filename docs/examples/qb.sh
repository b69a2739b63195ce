# Shell set-up for the curl walkthroughs of docs/api.md: `source docs/examples/qb.sh` (bash; needs curl,
# jq and openssl). Then $QB is the server and `qb_signed` makes requests signed with an API key.
QB=${QB:-http://127.0.0.1:8000}

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
  local data=()
  [ -n "$body" ] && data=(-H 'Content-Type: application/json' --data-binary "$body")
  curl -s -X "$method" "$QB$target" \
    -H "Qianbao-Key: $QB_KEY_ID" -H "Qianbao-Timestamp: $timestamp" \
    -H "Qianbao-Nonce: $nonce" -H "Qianbao-Signature: v1=$signature" \
    "${data[@]}" "$@"
}
